"""Cost of the training recipe, stage by stage, through `magtkd_hf.training` (the Accelerate loop) on CPU by default.

1. Encoder stages (text, audio, video, distill-audio, distill-video, extract-features) at TINY encoder sizes on a
   synthetic MELD-layout release: the real CSV rows of the first `--conversations` train dialogues (plus a few dev
   and test ones), every clip one tiny generated MP4. Prints seconds per epoch and the per-epoch time extrapolated
   to MELD's 9,989 training utterances (this measures the loop, processor and media decoding, not real encoders).
2. The fusion stage at real width (H = 768, the released MELD recipe: batch 16, dropout 0.5, AdamW 1e-4) on
   MELD-sized synthetic features (1,038 train conversations with the real utterance counts of train_sent_emo.csv,
   the real dev/test counts), through `magtkd-hf train fusion`'s code path: training seconds per epoch, dev
   evaluation seconds, and the same model trained alone in a bare loop (benchmarks/fusion.py's `train_epoch`,
   length-grouped batches, fused AdamW) on the same rows: the loop's overhead. Goal: within 1.3x of that floor.
3. The released fusion loop (`multimodel_fusion.py`'s `train_or_eval_model`) on the same features, when
   `--released-code DIR` (the authors' MELD/ folder, outside this repository; never committed) is given AND a CUDA
   device is present: that code calls `.cuda()` unconditionally, so on CPU the comparison is skipped (and said so).

    python benchmarks/recipe.py [--threads 2] [--epochs 1] [--conversations 40] [--skip-encoders] [--skip-fusion]
                                [--fusion-conversations 1038] [--released-code /path/to/MAGTKD/MELD]
"""

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

SHARED_MELD = HERE.parents[1] / "shared" / "data" / "meld"
CSV_NAMES = {"train": "train_sent_emo.csv", "validation": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
MELD_TRAIN_UTTERANCES = 9989


def meld_lengths(split: str) -> list[int]:
    with open(SHARED_MELD / CSV_NAMES[split], newline="", encoding="utf-8", errors="replace") as handle:
        counts = Counter(row["Dialogue_ID"] for row in csv.DictReader(handle))
    return list(counts.values())


# ----------------------------------------------------------------------------------------------- encoder stages


def tiny_release(folder: Path, train_conversations: int, eval_conversations: int = 6) -> Path:
    from transformers import Data2VecAudioModel, RobertaModel, TimesformerModel

    from magtkd_hf.datasets_scripts.synthetic import write_meld_tree
    from media_fixtures import write_mp4
    from tiny_magtkd import tiny_audio_config, tiny_processor, tiny_text_config, tiny_video_config

    processor = tiny_processor()
    processor.save_pretrained(str(folder / "processor"))
    RobertaModel(tiny_text_config(len(processor.tokenizer)), add_pooling_layer=False).save_pretrained(
        str(folder / "text-encoder")
    )
    Data2VecAudioModel(tiny_audio_config()).save_pretrained(str(folder / "audio-encoder"))
    TimesformerModel(tiny_video_config()).save_pretrained(str(folder / "video-encoder"))
    rows = {}
    for split, name in CSV_NAMES.items():
        wanted = train_conversations if split == "train" else eval_conversations
        with open(SHARED_MELD / name, encoding="utf-8", newline="") as handle:
            all_rows = list(csv.DictReader(handle))
        dialogues = list(dict.fromkeys(row["Dialogue_ID"] for row in all_rows))[:wanted]
        rows[split] = [row for row in all_rows if row["Dialogue_ID"] in set(dialogues)]
    clip = write_mp4(folder / "clip.mp4", num_frames=24, width=64, height=48, audio_seconds=2.0)
    write_meld_tree(folder / "MELD.Raw", rows, clip)
    return folder


def bench_encoder_stages(args, work: Path) -> list[dict]:
    from magtkd_hf.training import TrainingContext, load_recipe, run_stage

    release = tiny_release(work / "tiny", args.conversations)
    settings = {"epochs": args.epochs, "num_workers": args.num_workers, "eval_batch_size": 16}
    context = TrainingContext(
        output_dir=work / "run", recipe=load_recipe("meld"), data=str(release / "MELD.Raw"),
        processor_path=str(release / "processor"),
        encoders={m: str(release / f"{m}-encoder") for m in ("text", "audio", "video")},
        overrides={"*": settings}, model_overrides={"num_attention_heads": 4, "dropout": 0.1}, cpu=True,
    )
    results = []
    for stage in ("text", "audio", "video", "distill-audio", "distill-video", "extract-features"):
        started = time.perf_counter()
        metrics = run_stage(stage, context)
        total = time.perf_counter() - started
        if stage == "extract-features":
            utterances = sum(metrics["utterances"].values())
            results.append({"stage": stage, "epoch_s": metrics["seconds"], "utterances": utterances,
                            "per_meld_epoch_s": None, "total_s": total})
            continue
        history = metrics["history"]
        train_s = sum(entry["train_seconds"] for entry in history) / len(history)
        dev_s = sum(entry["dev_seconds"] for entry in history) / len(history)
        utterances = metrics["utterances"]["train"]
        results.append({
            "stage": stage, "epoch_s": train_s, "dev_s": dev_s, "utterances": utterances,
            "per_meld_epoch_s": train_s * MELD_TRAIN_UTTERANCES / utterances, "total_s": total,
        })
    return results


# ----------------------------------------------------------------------------------------------- fusion stage


def meld_sized_features(folder: Path, train_conversations: int, hidden: int, seed: int = 0) -> dict:
    import datasets
    import numpy as np

    from magtkd_hf import MELD_LABELS
    from magtkd_hf.features import feature_dataset_features

    rng = np.random.default_rng(seed)
    schema = feature_dataset_features(hidden, MELD_LABELS)
    sizes = {}
    splits = {}
    for split in CSV_NAMES:
        lengths = meld_lengths(split)
        if split == "train":
            lengths = lengths[:train_conversations]
        rows = {column: [] for column in schema}
        for index, length in enumerate(lengths):
            rows["dialogue_id"].append(str(index))
            rows["utterance_ids"].append([str(u) for u in range(length)])
            for source in ("text", "audio", "video", "audio_kd", "video_kd"):
                rows[source].append(rng.standard_normal((length, hidden), dtype=np.float32))
            rows["speaker_ids"].append(rng.integers(0, 3, length).tolist())
            rows["labels"].append(rng.integers(0, 7, length).tolist())
        splits[split] = datasets.Dataset.from_dict(rows, features=schema)
        sizes[split] = (len(lengths), sum(lengths))
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    return sizes


def bare_model_epoch(features_dir: Path, batch_size: int, epochs: int) -> float:
    """The fusion model alone (benchmarks/fusion.py's loop: forward, backward, clip, fused AdamW), same rows."""
    from fusion import train_epoch
    from torch.utils.data import DataLoader
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from magtkd_hf import MagtkdFusionConfig, MagtkdFusionModel
    from magtkd_hf.features import FusionFeatureCollator
    from magtkd_hf.training.data import FeatureRows, load_feature_splits

    splits = load_feature_splits(features_dir)
    rows = FeatureRows(splits["train"], ("text", "audio_kd", "video_kd"), 7)
    torch.manual_seed(0)
    model = MagtkdFusionModel(MagtkdFusionConfig.for_meld())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-6, fused=True)
    sampler = LengthGroupedSampler(batch_size, lengths=rows.lengths(), generator=torch.Generator().manual_seed(0))
    loader = DataLoader(rows, batch_size=batch_size, sampler=sampler, collate_fn=FusionFeatureCollator())
    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        train_epoch(model, loader, optimizer, torch.device("cpu"))
        seconds.append(time.perf_counter() - started)
    return min(seconds)


def bench_fusion(args, work: Path) -> dict:
    from magtkd_hf.training import TrainingContext, load_recipe, run_stage

    features = work / "features"
    started = time.perf_counter()
    sizes = meld_sized_features(features, args.fusion_conversations, 768)
    built = time.perf_counter() - started
    context = TrainingContext(
        output_dir=work / "fusion-run", recipe=load_recipe("meld"), features=str(features),
        overrides={"*": {"epochs": args.epochs, "keep_checkpoints": 1}}, cpu=True,
    )
    started = time.perf_counter()
    metrics = run_stage("fusion", context)
    total = time.perf_counter() - started
    history = metrics["history"]
    result = {
        "sizes": sizes, "features_build_s": built, "stage_total_s": total,
        "loop_train_s": min(entry["train_seconds"] for entry in history),
        "dev_eval_s": min(entry["dev_seconds"] for entry in history),
        "epoch_with_eval_and_checkpoint_s": min(entry["seconds"] for entry in history),
        "bare_model_train_s": bare_model_epoch(features, 16, args.epochs),
    }
    result["overhead_ratio"] = result["loop_train_s"] / result["bare_model_train_s"]
    if args.released_code:
        result["released"] = bench_released(args, features)
    return result


def bench_released(args, features_dir: Path) -> dict | str:
    """The released fusion loop's epoch on the same features (CUDA only: it calls .cuda() unconditionally)."""
    code = Path(args.released_code)
    if not (code / "multimodel_fusion.py").is_file():
        return f"skipped: {code} holds no multimodel_fusion.py"
    if not torch.cuda.is_available():
        return "skipped: the released code is CUDA-only (it calls .cuda()); no CUDA device here"
    import pickle
    import types

    import datasets

    splits = datasets.load_from_disk(str(features_dir))
    folder = Path(tempfile.mkdtemp(prefix="released-features-"))
    paths = {}
    for split, dataset in splits.items():
        rows = dataset.with_format("numpy")
        data = {key: {} for key in ("text", "audio", "video", "audio_kd", "video_kd", "speakers", "labels", "dia2utt")}
        for row in rows:
            dialogue = int(row["dialogue_id"])
            for key in ("text", "audio", "video", "audio_kd", "video_kd"):
                data[key][dialogue] = list(row[key])
            data["speakers"][dialogue] = [int(s) for s in row["speaker_ids"]]
            data["labels"][dialogue] = [int(x) for x in row["labels"]]
            data["dia2utt"][dialogue] = list(range(len(row["labels"])))
        data["vids"] = [int(d) for d in rows["dialogue_id"]]
        paths[split] = folder / f"{split}.pkl"
        with open(paths[split], "wb") as handle:
            pickle.dump(data, handle)
    sys.path.insert(0, str(code))
    import multimodel_fusion as released  # noqa: E402  (the authors' script, outside this repository)
    from dataset import MELD_MM_Dataset  # noqa: E402

    released_args = types.SimpleNamespace(lr=1e-4, l2=1e-6, batch_size=16, seed=2024, epochs=30, dropout=0.5,
                                          hidden_dim=768, n_head=8, temp=2.0, clsNum=7, train=True)
    released.args = released_args
    train = MELD_MM_Dataset(str(paths["train"]))
    loader = torch.utils.data.DataLoader(train, batch_size=16, shuffle=True, collate_fn=train.collate_fn)
    model = released.Transformer_Based_Model(released_args).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-6)
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, len(train), len(train) * 30)
    seconds = []
    for epoch in range(args.epochs):
        torch.cuda.synchronize()
        started = time.perf_counter()
        released.train_or_eval_model(model, loader, epoch, optimizer, scheduler, True)
        torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    shutil.rmtree(folder, ignore_errors=True)
    return {"released_train_s": min(seconds)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--conversations", type=int, default=40, help="train conversations of the tiny-encoder part")
    parser.add_argument("--fusion-conversations", type=int, default=1038, help="train conversations (MELD: 1038)")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers of the encoder stages")
    parser.add_argument("--skip-encoders", action="store_true")
    parser.add_argument("--skip-fusion", action="store_true")
    parser.add_argument("--released-code", help="the authors' MELD/ folder (multimodel_fusion.py, model.py, dataset.py)")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    work = Path(tempfile.mkdtemp(prefix="magtkd-recipe-bench-"))
    report = {"threads": args.threads, "epochs": args.epochs}
    try:
        if not args.skip_encoders:
            report["encoder_stages"] = bench_encoder_stages(args, work)
            print(f"\nEncoder stages at tiny sizes ({args.conversations} train conversations, "
                  f"{args.threads} threads, {args.epochs} epoch(s)):")
            print(f"{'stage':18s} {'utterances':>10s} {'train s/epoch':>14s} {'dev s':>7s} {'MELD-sized epoch s':>19s}")
            for row in report["encoder_stages"]:
                meld = f"{row['per_meld_epoch_s']:.0f}" if row["per_meld_epoch_s"] else "-"
                dev = f"{row['dev_s']:.1f}" if "dev_s" in row else "-"
                print(f"{row['stage']:18s} {row['utterances']:10d} {row['epoch_s']:14.1f} {dev:>7s} {meld:>19s}")
        if not args.skip_fusion:
            fusion = bench_fusion(args, work)
            report["fusion"] = fusion
            sizes = fusion["sizes"]
            print(f"\nFusion stage, H=768, released MELD recipe, {sizes['train'][0]} train conversations "
                  f"({sizes['train'][1]} utterances), {args.threads} threads:")
            print(f"  loop (magtkd-hf train fusion) training epoch   {fusion['loop_train_s']:7.1f} s")
            print(f"  fusion model alone, bare loop, same rows       {fusion['bare_model_train_s']:7.1f} s")
            print(f"  ratio loop / bare model                         {fusion['overhead_ratio']:7.2f} (goal <= 1.3)")
            print(f"  dev evaluation ({sizes['validation'][1]} utterances)             {fusion['dev_eval_s']:7.1f} s")
            print(f"  whole epoch (train + dev + best save + checkpoint) {fusion['epoch_with_eval_and_checkpoint_s']:5.1f} s")
            released = fusion.get("released", "skipped: --released-code not given")
            if isinstance(released, dict):
                print(f"  released fusion loop training epoch            {released['released_train_s']:7.1f} s")
            else:
                print(f"  released fusion loop: {released}")
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
