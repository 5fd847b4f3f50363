"""What a stage reports: its metrics (selection, final evaluation, history, schedule), the confusion matrix (counts
and a PNG, matplotlib's Agg backend: no display needed), written as JSON."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..datasets_scripts.sample import SAMPLE_MELD_ROOT

# The counts are the ERC metric's (one implementation); imported here for the stages that write reports.
from ..metrics import confusion_matrix  # noqa: F401


def save_confusion_matrix_png(matrix: Sequence[Sequence[int]], label_names: Sequence[str], path, title: str = "") -> Path:
    """A row-normalised heat map (scikit-learn's `ConfusionMatrixDisplay`) with the counts written in the cells."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay

    counts = np.asarray(matrix, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    size = max(4.0, 0.7 * len(label_names) + 2)
    figure = Figure(figsize=(size, size * 0.9))
    display = ConfusionMatrixDisplay(np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0),
                                     display_labels=list(label_names))
    display.plot(ax=figure.subplots(), cmap="Blues", xticks_rotation=45, im_kw={"vmin": 0.0, "vmax": 1.0},
                 text_kw={"fontsize": 8}, colorbar=False)
    for text, count in zip(display.text_.flat, counts.flat):
        text.set_text(str(int(count)))
    display.ax_.set(xlabel="predicted", ylabel="true")
    display.ax_.set_title(title, fontsize=9)
    figure.colorbar(display.im_, ax=display.ax_, fraction=0.046, pad=0.04, label="share of the true class")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def _plain(value):
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path, data) -> Path:
    """Write `data` as JSON (NaN and infinities as null, numpy scalars as numbers, paths as strings) so that `path`
    holds either its old content or the whole new one (a temporary file, then `os.replace`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        temporary.write_text(json.dumps(_plain(data), indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


METRICS_FILE = "metrics.json"
CONFUSION_MATRIX_PNG = "confusion_matrix.png"


def data_record(data, dataset: str, splits: Mapping) -> dict:
    """What metrics.json records of the conversations a stage was trained and measured on; a model card names datasets
    (and gives a model-index) from this record alone. `name`: "sample" for the shipped sample conversations, the
    recipe's dataset ("meld", "iemocap") for a release folder, None for a saved DatasetDict (its source is unknown);
    `source`: the folder; `splits`: conversations and utterances of each split used (after --train-dialogues)."""
    path = Path(data)
    if path.resolve() == SAMPLE_MELD_ROOT:
        name = "sample"
    else:
        name = None if (path / "dataset_dict.json").is_file() else dataset
    sizes = {split: {"conversations": len(rows), "utterances": sum(len(labels) for labels in rows["labels"])}
             for split, rows in splits.items()}
    return {"name": name, "source": str(path.resolve()), "splits": sizes}


def stage_metrics(job, settings, state: dict, final_split: str, final_metrics: dict, num_processes: int,
                  schedule: tuple[int, int]) -> dict:
    """The stage's metrics JSON: the dev-selected epoch, its dev metrics, the final split's metrics of the selected
    model, the history, the settings and the schedule; with `track_test`, the released scripts' test-selected
    figure, labelled as leaking the test set."""
    metrics = {
        "stage": job.name,
        "selection": "best dev (validation) weighted F1; test evaluated once, on the selected model",
        "selected_epoch": state["best_epoch"],
        "validation": state.get("best_validation"),
        final_split: final_metrics,
        "history": state["history"],
        "num_processes": num_processes,
        "settings": asdict(settings),
        "schedule": {"warmup_steps": schedule[0], "total_steps": schedule[1], "optimizer_steps": state["global_step"]},
        **job.description,
    }
    tracked = [entry for entry in state["history"] if "test" in entry] if settings.track_test else []
    if tracked:
        best = max(tracked, key=lambda entry: entry["test"]["weighted_f1"])
        metrics["test_selected_on_test"] = {
            "note": "the released scripts' selection (best test F1 over epochs): leaks the test set; for comparison "
            "with published numbers only",
            "epoch": best["epoch"], **best["test"],
        }
    return metrics


def write_stage_report(folder, metrics: dict, final_split: str, label_names: Sequence[str]) -> None:
    folder = Path(folder)
    write_json(folder / METRICS_FILE, metrics)
    final = metrics[final_split]
    save_confusion_matrix_png(
        final["confusion_matrix"], list(label_names), folder / CONFUSION_MATRIX_PNG,
        title=f"{metrics['stage']}: {final_split} (epoch {metrics['selected_epoch']}, weighted F1 "
        f"{final['weighted_f1']:.2f})",
    )


def load_metrics(folder) -> dict:
    return json.loads((Path(folder) / METRICS_FILE).read_text())
