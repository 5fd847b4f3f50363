"""ERC metrics computed offline: weighted F1 (the headline), accuracy, per-class F1."""

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score


def classification_metrics(labels: Sequence[int], predictions: Sequence[int], label_names: Sequence[str]) -> dict:
    """Weighted F1 and accuracy in percent, and per-class F1, over the utterances whose label is not -100."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    keep = labels != -100
    labels, predictions = labels[keep], predictions[keep]
    classes = list(range(len(label_names)))
    per_class = f1_score(labels, predictions, labels=classes, average=None, zero_division=0)
    return {
        "weighted_f1": 100.0 * f1_score(labels, predictions, labels=classes, average="weighted", zero_division=0),
        "accuracy": 100.0 * accuracy_score(labels, predictions),
        "per_class_f1": {name: 100.0 * score for name, score in zip(label_names, per_class)},
        "num_utterances": int(keep.sum()),
    }
