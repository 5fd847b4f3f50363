"""ERC metrics computed offline with scikit-learn: weighted F1 (the headline), accuracy, per-class F1, the confusion
matrix, over the utterances whose label is not -100. One implementation ([`erc_scores`]) behind the plain functions,
the package's `evaluate` module ([`load_erc_metric`]) and Trainer's `compute_metrics` ([`erc_compute_metrics`])."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .losses import IGNORE_INDEX

# The folder of the `evaluate` module: `evaluate.load` takes a folder holding a script of the folder's name.
ERC_METRIC_PATH = str(Path(__file__).with_name("erc_metric"))


def _flat(values) -> np.ndarray:
    """An array of any shape, or ragged per-conversation lists (the `evaluate` module's sequence input) -> 1-D."""
    if isinstance(values, (list, tuple)) and values and all(np.ndim(value) > 0 for value in values):
        return np.concatenate([np.asarray(value).reshape(-1) for value in values])
    return np.asarray(values).reshape(-1)


def _labelled(labels, predictions) -> tuple[np.ndarray, np.ndarray]:
    """The (labels, predictions) of the utterances whose label is not -100 (padding, unlabelled), flattened."""
    labels, predictions = _flat(labels), _flat(predictions)
    if labels.shape != predictions.shape:
        raise ValueError(f"{predictions.size} predictions for {labels.size} labels: they must be aligned.")
    keep = labels != IGNORE_INDEX
    return labels[keep], predictions[keep]


def classification_metrics(labels: Sequence[int], predictions: Sequence[int], label_names: Sequence[str]) -> dict:
    """Weighted F1 and accuracy in percent, and per-class F1, over the utterances whose label is not -100."""
    from sklearn.metrics import accuracy_score, f1_score  # here: `import magtkd_hf` (and `--help`) stays without it

    labels, predictions = _labelled(labels, predictions)
    classes = list(range(len(label_names)))
    per_class = f1_score(labels, predictions, labels=classes, average=None, zero_division=0)
    return {
        "weighted_f1": 100.0 * f1_score(labels, predictions, labels=classes, average="weighted", zero_division=0),
        "accuracy": 100.0 * accuracy_score(labels, predictions),
        "per_class_f1": {name: 100.0 * score for name, score in zip(label_names, per_class)},
        "num_utterances": int(labels.size),
    }


def confusion_matrix(labels, predictions, num_labels: int) -> list[list[int]]:
    """Counts, rows = true class, columns = predicted class, over the utterances whose label is not -100."""
    labels, predictions = _labelled(labels, predictions)
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix.tolist()


def _default_label_names(labels, predictions, num_labels: int | None = None) -> list[str]:
    """Class indices as names, for callers without label names: 0 .. the largest class seen (or `num_labels` - 1)."""
    if num_labels is None:
        labels, predictions = _labelled(labels, predictions)
        num_labels = int(max(labels.max(initial=-1), predictions.max(initial=-1))) + 1
    return [str(index) for index in range(num_labels)]


def erc_scores(predictions, references, label_names: Sequence[str] | None = None) -> dict:
    """
    The ERC metric (the `evaluate` module's `_compute`): [`classification_metrics`] plus `confusion_matrix`.

    Args:
        predictions, references: class indices per utterance, aligned: flat, (conversations, utterances) arrays or
            ragged per-conversation lists; references of -100 are left out (with their predictions).
        label_names: the class names in index order (the per-class keys and the matrix size); default: the indices
            up to the largest class seen.
    """
    names = list(label_names) if label_names is not None else _default_label_names(references, predictions)
    return {
        **classification_metrics(references, predictions, names),
        "confusion_matrix": confusion_matrix(references, predictions, len(names)),
    }


def load_erc_metric(**kwargs):
    """The ERC metric as an `evaluate.EvaluationModule`, loaded from the package's script (no Hub needed).
    `kwargs` go to `evaluate.load` (e.g. `experiment_id`, `keep_in_memory`)."""
    import evaluate

    return evaluate.load(ERC_METRIC_PATH, **kwargs)


def erc_compute_metrics(label_names: Sequence[str] | None = None, per_class: bool = True) -> Callable[..., dict]:
    """
    A `compute_metrics` for `transformers.Trainer`: `trainer.evaluate()` then reports `eval_weighted_f1`,
    `eval_accuracy`, `eval_num_utterances` and, with `per_class`, `eval_f1_<label name>` (percent). It takes logits
    (conversations, utterances, classes) or arg-maxed predictions, and labels padded with -100 (not counted).

    Args:
        label_names: class names in index order, e.g. `model.config.label_names`; default: the class indices.
    """

    def compute_metrics(eval_prediction) -> dict:
        logits, labels = eval_prediction.predictions, np.asarray(eval_prediction.label_ids)
        if isinstance(logits, (tuple, list)):  # a model whose extra outputs were not dropped: the logits come first
            logits = logits[0]
        logits = np.asarray(logits)
        predictions = logits.argmax(-1) if logits.ndim == labels.ndim + 1 else logits
        num_labels = logits.shape[-1] if logits.ndim == labels.ndim + 1 else None
        names = list(label_names) if label_names is not None else _default_label_names(labels, predictions, num_labels)
        scores = classification_metrics(labels, predictions, names)
        flat = {key: scores[key] for key in ("weighted_f1", "accuracy", "num_utterances")}
        if per_class:
            flat.update({f"f1_{name}": value for name, value in scores["per_class_f1"].items()})
        return flat

    return compute_metrics


__all__ = [
    "ERC_METRIC_PATH",
    "classification_metrics",
    "confusion_matrix",
    "erc_compute_metrics",
    "erc_scores",
    "load_erc_metric",
]
