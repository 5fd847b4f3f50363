"""Cost of the training recipe, stage by stage, through `magtkd_hf.training` (the Accelerate loop) on CPU by default.

1. Encoder stages (text, audio, video, distill-audio, distill-video, extract-features) at TINY encoder sizes on a
   synthetic MELD-layout release: the real CSV rows of the first `--conversations` train dialogues (plus a few dev
   and test ones), every clip one tiny generated MP4. Prints seconds per epoch and the per-epoch time extrapolated
   to MELD's 9,989 training utterances (this measures the loop, processor and media decoding, not real encoders).
2. The fusion stage at real width (H = 768, the released MELD recipe: batch 16, dropout 0.5, AdamW 1e-4) on
   MELD-sized synthetic features (1,038 train conversations with the real utterance counts of train_sent_emo.csv,
   the real dev/test counts), through `magtkd-hf train fusion`'s code path (`run_stage`): training seconds per
   epoch, dev evaluation seconds, and the same model trained alone in a bare loop (forward, backward, clip, fused
   AdamW over the same length-grouped batches): the loop's overhead. The two alternate, `--rounds` times, and the
   fastest round of each counts, in wall-clock and in CPU seconds (the process's own, less sensitive to other work
   on a shared machine). Goal: within 1.3x of that floor.
3. The released fusion loop (`multimodel_fusion.py`'s `train_or_eval_model`) on the same features, when
   `--released-code DIR` (the authors' MELD/ folder, outside this repository; never committed) is given AND a CUDA
   device is present: that code calls `.cuda()` unconditionally, so on CPU the comparison is skipped (and said so).

    python benchmarks/recipe.py [--threads 2] [--epochs 1] [--rounds 3] [--conversations 40] [--skip-encoders]
                                [--skip-fusion] [--fusion-conversations 1038] [--released-code /path/to/MAGTKD/MELD]
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
SHARED_MELD = HERE.parents[1] / "shared" / "data" / "meld"
CSV_NAMES = {"train": "train_sent_emo.csv", "validation": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
MELD_TRAIN_UTTERANCES = 9989


def meld_lengths(split: str) -> list[int]:
    with open(SHARED_MELD / CSV_NAMES[split], newline="", encoding="utf-8", errors="replace") as handle:
        counts = Counter(row["Dialogue_ID"] for row in csv.DictReader(handle))
    return list(counts.values())


# ----------------------------------------------------------------------------------------------- encoder stages


def tiny_release(folder: Path, train_conversations: int, eval_conversations: int = 6) -> dict:
    """Tiny encoders and processor (magtkd_hf.apps.tiny: a tokenizer trained on the rows' utterances) and a MELD-layout
    release of the first real CSV rows, every clip one generated 2-second MP4."""
    from magtkd_hf.datasets_scripts.synthetic import write_meld_tree, write_mp4
    from magtkd_hf.apps.tiny import write_tiny_components

    rows = {}
    for split, name in CSV_NAMES.items():
        wanted = train_conversations if split == "train" else eval_conversations
        with open(SHARED_MELD / name, encoding="utf-8", newline="") as handle:
            all_rows = list(csv.DictReader(handle))
        dialogues = set(list(dict.fromkeys(row["Dialogue_ID"] for row in all_rows))[:wanted])
        rows[split] = [row for row in all_rows if row["Dialogue_ID"] in dialogues]
    texts = [row["Utterance"] for split_rows in rows.values() for row in split_rows]
    components = write_tiny_components(folder, texts)
    clip = write_mp4(folder / "clip.mp4", duration=2.0, size=48, fps=12)
    write_meld_tree(folder / "MELD.Raw", rows, clip)
    return components


def bench_encoder_stages(args, work: Path) -> list[dict]:
    from magtkd_hf.training import ModelSettings, TrainingConfig, run_stage

    components = tiny_release(work / "tiny", args.conversations)
    settings = {"epochs": args.epochs, "num_workers": args.num_workers, "eval_batch_size": 16}
    config = TrainingConfig(
        output_dir=str(work / "run"), recipe="meld", data=str(work / "tiny" / "MELD.Raw"),
        processor=str(components["processor"]),
        **{f"{m}_encoder": str(components[f"{m}-encoder"]) for m in ("text", "audio", "video")},
        overrides={"*": settings}, model=ModelSettings(num_attention_heads=4, dropout=0.1), cpu=True,
    )
    results = []
    for stage in ("text", "audio", "video", "distill-audio", "distill-video", "extract-features"):
        started = time.perf_counter()
        metrics = run_stage(stage, config)
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


class Clock:
    """Wall-clock and CPU seconds (this process's, all its threads) of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def bare_model_epoch(features_dir: Path, batch_size: int, seed: int = 2024) -> Clock:
    """The fusion model alone over the loop's first-epoch batches (the same length-grouped order, `EpochSampler` of
    the recipe's seed, epoch 0, so both pad alike): forward, backward, clipping at 10, fused AdamW; no Accelerate,
    scheduler, progress bar or loss logging."""
    from torch.utils.data import DataLoader

    from magtkd_hf import MagtkdFusionConfig, MagtkdFusionModel
    from magtkd_hf.features import FusionFeatureCollator
    from magtkd_hf.training.data import EpochSampler, FeatureRows, load_feature_splits

    config = MagtkdFusionConfig.for_meld()
    rows = FeatureRows(load_feature_splits(features_dir)["train"], ("text", "audio_kd", "video_kd"), 7)
    torch.manual_seed(seed)
    model = MagtkdFusionModel(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-6, fused=True)
    sampler = EpochSampler(len(rows), seed, rows.lengths(), batch_size)
    loader = DataLoader(rows, batch_size=batch_size, sampler=sampler, collate_fn=FusionFeatureCollator.from_config(config))
    with Clock() as clock:
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return clock


def loop_epoch(features_dir: Path, output_dir: Path) -> tuple[Clock, dict]:
    """One epoch of `magtkd-hf train fusion` (the released MELD recipe) through `run_stage`: the training part is
    timed around the loop's `train_epoch`, the rest (dev evaluation, best-model save, checkpoint, test) is in the
    metrics."""
    from magtkd_hf.training import TrainingConfig, loop, run_stage

    clocks, original = [], loop.train_epoch

    def timed_train_epoch(*args, **kwargs):
        with Clock() as clock:
            entry = original(*args, **kwargs)
        clocks.append(clock)
        return entry

    loop.train_epoch = timed_train_epoch
    try:
        config = TrainingConfig(output_dir=str(output_dir), recipe="meld", features=str(features_dir), cpu=True,
                                overrides={"*": {"epochs": 1, "keep_checkpoints": 1}})
        metrics = run_stage("fusion", config)
    finally:
        loop.train_epoch = original
    return clocks[0], metrics


def bench_fusion(args, work: Path) -> dict:
    """Bare epoch and loop epoch alternately, `args.rounds` times; the fastest of each (wall and CPU) and ratios."""
    features = work / "features"
    with Clock() as built:
        sizes = meld_sized_features(features, args.fusion_conversations, 768)
    bare, looped, rest = [], [], []
    for round_index in range(args.rounds):
        bare.append(bare_model_epoch(features, 16))
        clock, metrics = loop_epoch(features, work / f"fusion-run-{round_index}")
        looped.append(clock)
        entry = metrics["history"][0]
        rest.append({"dev_eval_s": entry["dev_seconds"], "epoch_s": entry["seconds"]})
        print(f"  round {round_index + 1}: bare {bare[-1].wall:.1f} s wall / {bare[-1].cpu:.1f} s CPU, loop "
              f"{clock.wall:.1f} s wall / {clock.cpu:.1f} s CPU", flush=True)
    result = {
        "sizes": sizes, "features_build_s": built.wall, "rounds": args.rounds,
        "loop_train_s": min(c.wall for c in looped), "loop_train_cpu_s": min(c.cpu for c in looped),
        "bare_model_train_s": min(c.wall for c in bare), "bare_model_train_cpu_s": min(c.cpu for c in bare),
        "dev_eval_s": min(r["dev_eval_s"] for r in rest),
        "epoch_with_eval_and_checkpoint_s": min(r["epoch_s"] for r in rest),
        "all_rounds": {"bare": [(c.wall, c.cpu) for c in bare], "loop": [(c.wall, c.cpu) for c in looped]},
    }
    result["overhead_ratio"] = result["loop_train_s"] / result["bare_model_train_s"]
    result["overhead_ratio_cpu"] = result["loop_train_cpu_s"] / result["bare_model_train_cpu_s"]
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


def print_encoder_stages(args, rows) -> None:
    print(f"\nEncoder stages at tiny sizes ({args.conversations} train conversations, "
          f"{args.threads} threads, {args.epochs} epoch(s)):")
    print(f"{'stage':18s} {'utterances':>10s} {'train s/epoch':>14s} {'dev s':>7s} {'MELD-sized epoch s':>19s}")
    for row in rows:
        meld = f"{row['per_meld_epoch_s']:.0f}" if row["per_meld_epoch_s"] else "-"
        dev = f"{row['dev_s']:.1f}" if "dev_s" in row else "-"
        print(f"{row['stage']:18s} {row['utterances']:10d} {row['epoch_s']:14.1f} {dev:>7s} {meld:>19s}")


def print_fusion(args, fusion) -> None:
    sizes = fusion["sizes"]
    print(f"\nFusion stage, H=768, released MELD recipe, {sizes['train'][0]} train conversations "
          f"({sizes['train'][1]} utterances), {args.threads} threads, fastest of {fusion['rounds']} rounds:")
    print(f"{'':48s} {'wall s':>7s} {'CPU s':>7s}")
    print(f"  {'loop (magtkd-hf train fusion) training epoch':46s} {fusion['loop_train_s']:7.1f} "
          f"{fusion['loop_train_cpu_s']:7.1f}")
    print(f"  {'fusion model alone, bare loop, same rows':46s} {fusion['bare_model_train_s']:7.1f} "
          f"{fusion['bare_model_train_cpu_s']:7.1f}")
    print(f"  {'ratio loop / bare model (goal <= 1.3)':46s} {fusion['overhead_ratio']:7.2f} "
          f"{fusion['overhead_ratio_cpu']:7.2f}")
    print(f"  dev evaluation ({sizes['validation'][1]} utterances)             {fusion['dev_eval_s']:7.1f} s")
    print(f"  whole epoch (train + dev + best save + checkpoint) {fusion['epoch_with_eval_and_checkpoint_s']:5.1f} s")
    released = fusion.get("released", "skipped: --released-code not given")
    if isinstance(released, dict):
        print(f"  released fusion loop training epoch            {released['released_train_s']:7.1f} s")
    else:
        print(f"  released fusion loop: {released}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1, help="epochs of the encoder stages")
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/loop fusion epochs")
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
            print_encoder_stages(args, report["encoder_stages"])
        if not args.skip_fusion:
            report["fusion"] = bench_fusion(args, work)
            print_fusion(args, report["fusion"])
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
