"""The ERC metric: the `evaluate` module loaded offline by path, the plain functions and Trainer's compute_metrics
give the same figures as scikit-learn."""

from pathlib import Path

import evaluate
import numpy as np
import pytest
from sklearn.metrics import accuracy_score
from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix
from sklearn.metrics import f1_score
from transformers import EvalPrediction

import magtkd_hf
from magtkd_hf.metrics import (
    ERC_METRIC_PATH,
    classification_metrics,
    confusion_matrix,
    erc_compute_metrics,
    erc_scores,
    load_erc_metric,
)
from magtkd_hf.training import reporting

NAMES = ["neutral", "joy", "sadness"]
# The -100 utterance is left out with its prediction (the only 2 predicted): "sadness" is never predicted.
REFERENCES = [0, 0, 1, 1, 2, -100, 2]
PREDICTIONS = [0, 1, 1, 1, 0, 2, 0]
# By hand, over the 6 labelled utterances: confusion rows [1 1 0], [0 2 0], [2 0 0]; F1 neutral 2(1/3)(1/2)/(5/6) =
# 0.4, joy 2(2/3)(1)/(5/3) = 0.8, sadness 0; each class has 2 utterances, so weighted F1 = 0.4; accuracy 3/6.
BY_HAND = {"weighted_f1": 40.0, "accuracy": 50.0, "per_class_f1": {"neutral": 40.0, "joy": 80.0, "sadness": 0.0},
           "num_utterances": 6, "confusion_matrix": [[1, 1, 0], [0, 2, 0], [2, 0, 0]]}


def _sklearn(references, predictions, num_labels):
    references, predictions = np.asarray(references), np.asarray(predictions)
    keep = references != -100
    references, predictions, classes = references[keep], predictions[keep], list(range(num_labels))
    return {
        "weighted_f1": 100 * f1_score(references, predictions, labels=classes, average="weighted", zero_division=0),
        "accuracy": 100 * accuracy_score(references, predictions),
        "per_class_f1": list(100 * f1_score(references, predictions, labels=classes, average=None, zero_division=0)),
        "confusion_matrix": sklearn_confusion_matrix(references, predictions, labels=classes).tolist(),
    }


def _assert_scores(scores, expected):
    assert set(scores) == set(expected)
    for key, value in expected.items():
        if key == "per_class_f1":
            assert list(scores[key]) == list(value)
            assert list(scores[key].values()) == pytest.approx(list(value.values()), abs=1e-12)
        elif key == "confusion_matrix":
            assert scores[key] == value
        else:
            assert scores[key] == pytest.approx(value, abs=1e-12)


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(ERC_METRIC_PATH)  # offline: conftest sets HF_HUB_OFFLINE=1


def test_the_metric_is_a_script_in_the_package():
    folder = Path(ERC_METRIC_PATH)
    assert folder.parent == Path(magtkd_hf.__file__).parent
    assert (folder / "erc_metric.py").is_file()


def test_the_metric_loads_offline_by_path_and_gives_the_figures_by_hand(metric):
    assert isinstance(metric, evaluate.Metric)
    scores = metric.compute(predictions=PREDICTIONS, references=REFERENCES, label_names=NAMES)
    _assert_scores(scores, BY_HAND)
    reference = _sklearn(REFERENCES, PREDICTIONS, len(NAMES))
    assert scores["weighted_f1"] == pytest.approx(reference["weighted_f1"], abs=1e-12)
    assert scores["accuracy"] == pytest.approx(reference["accuracy"], abs=1e-12)
    assert list(scores["per_class_f1"].values()) == pytest.approx(reference["per_class_f1"], abs=1e-12)
    assert scores["confusion_matrix"] == reference["confusion_matrix"]
    # The package's helper loads the same module.
    _assert_scores(load_erc_metric().compute(predictions=PREDICTIONS, references=REFERENCES, label_names=NAMES),
                   BY_HAND)


def test_the_metric_takes_batches_of_conversations(metric):
    """(conversations, utterances) batches padded with -100, and ragged per-conversation lists, count the same
    utterances as the flat lists."""
    metric.add_batch(predictions=np.array([[0, 1, 1], [1, 0, 2]]), references=np.array([[0, 0, 1], [1, 2, -100]]))
    metric.add_batch(predictions=np.array([[0, 2]]), references=np.array([[2, -100]]))
    _assert_scores(metric.compute(label_names=NAMES), BY_HAND)
    ragged = metric.compute(predictions=[[0, 1, 1], [1, 0], [2, 0]], references=[[0, 0, 1], [1, 2], [-100, 2]],
                            label_names=NAMES)
    _assert_scores(ragged, BY_HAND)


def test_without_label_names_the_classes_are_the_indices_seen(metric):
    scores = metric.compute(predictions=PREDICTIONS, references=REFERENCES)
    assert list(scores["per_class_f1"]) == ["0", "1", "2"]
    assert scores["weighted_f1"] == pytest.approx(40.0) and scores["confusion_matrix"] == BY_HAND["confusion_matrix"]


def test_classification_metrics_is_the_metric_without_the_matrix():
    figures = classification_metrics(REFERENCES, PREDICTIONS, NAMES)  # (labels, predictions, label_names), as before
    _assert_scores(figures, {key: value for key, value in BY_HAND.items() if key != "confusion_matrix"})
    assert erc_scores(PREDICTIONS, REFERENCES, NAMES) == {**figures, "confusion_matrix": BY_HAND["confusion_matrix"]}
    # 2-D arrays (conversations, utterances) with -100 padding, as the training loop used to pass them.
    padded = classification_metrics(np.array([[0, 0, 1, 1], [2, 2, -100, -100]]),
                                    np.array([[0, 1, 1, 1], [0, 0, 2, 2]]), NAMES)
    _assert_scores(padded, {key: value for key, value in BY_HAND.items() if key != "confusion_matrix"})


def test_one_confusion_matrix_for_reports_and_metric():
    assert reporting.confusion_matrix is confusion_matrix
    assert confusion_matrix(REFERENCES, PREDICTIONS, 3) == BY_HAND["confusion_matrix"]


def test_misaligned_predictions_are_refused():
    with pytest.raises(ValueError, match="aligned"):
        erc_scores([0, 1], [0, 1, 1], NAMES)


def _padded_logits():
    """Two evaluation batches as Trainer concatenates them: logits (B, N, C) and labels (B, N); the second batch's
    shorter conversations padded with -100 in both (within a batch the model's logits are 0 at padding)."""
    logits = np.full((3, 3, 3), -100.0)
    labels = np.full((3, 3), -100)
    one_hot = np.eye(3) * 5.0
    for row, (conversation_labels, conversation_predictions) in enumerate(
        [([0, 0, 1], [0, 1, 1]), ([1, 2], [1, 0]), ([2], [0])]
    ):
        length = len(conversation_labels)
        logits[row, :length] = one_hot[conversation_predictions]
        labels[row, :length] = conversation_labels
    logits[1, 2] = 0.0  # padding inside the first batch
    return logits, labels


def test_compute_metrics_for_trainer_uses_the_labels_mask():
    logits, labels = _padded_logits()
    compute_metrics = erc_compute_metrics(NAMES)
    expected = {"weighted_f1": 40.0, "accuracy": 50.0, "num_utterances": 6, "f1_neutral": 40.0, "f1_joy": 80.0,
                "f1_sadness": 0.0}
    assert compute_metrics(EvalPrediction(predictions=logits, label_ids=labels)) == pytest.approx(expected)
    # A model whose extra outputs Trainer kept (a tuple, logits first), and arg-maxed predictions, give the same.
    assert compute_metrics(EvalPrediction(predictions=(logits, logits[..., :1]), label_ids=labels)) == pytest.approx(
        expected)
    assert compute_metrics(EvalPrediction(predictions=logits.argmax(-1), label_ids=labels)) == pytest.approx(expected)
    flat = erc_compute_metrics(per_class=False)(EvalPrediction(predictions=logits, label_ids=labels))
    assert flat == pytest.approx({"weighted_f1": 40.0, "accuracy": 50.0, "num_utterances": 6})
    named_by_index = erc_compute_metrics()(EvalPrediction(predictions=logits, label_ids=labels))
    assert {key for key in named_by_index if key.startswith("f1_")} == {"f1_0", "f1_1", "f1_2"}
