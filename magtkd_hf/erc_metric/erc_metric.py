"""The ERC metric as an `evaluate` module, loaded by path (`magtkd_hf.metrics.load_erc_metric()`). `evaluate` copies
this file into its modules cache, so the import of `erc_scores` must be absolute."""

import datasets
import evaluate

from magtkd_hf.metrics import erc_scores

_DESCRIPTION = """
Emotion recognition in conversation (ERC) scores of MAGTKD: weighted F1 (the headline figure), accuracy and per-class
F1, all in percent, and the confusion matrix (rows: true class, columns: predicted class). Utterances whose reference
is -100 (padding, unlabelled) are left out with their predictions. Computed with scikit-learn (no Hub download).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`, or of per-conversation `list`s of `int`): predicted class indices.
    references (`list` of `int`, or of per-conversation `list`s of `int`): true class indices, -100 = ignore.
    label_names (`list` of `str`, *optional*): class names in index order; default: the indices up to the largest
        class seen.
Returns:
    weighted_f1 (`float`), accuracy (`float`): percent.
    per_class_f1 (`dict` of `str` to `float`): percent, per class name.
    num_utterances (`int`): the utterances counted.
    confusion_matrix (`list` of `list` of `int`): counts, rows = true class, columns = predicted class.
Example:
    >>> import evaluate
    >>> from magtkd_hf.metrics import ERC_METRIC_PATH
    >>> metric = evaluate.load(ERC_METRIC_PATH)
    >>> scores = metric.compute(predictions=[0, 1, 1], references=[0, 1, -100], label_names=["neutral", "joy"])
    >>> scores["weighted_f1"], scores["confusion_matrix"]
    (100.0, [[1, 0], [0, 1]])
"""

@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ErcMetric(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            # Flat utterances, or one list per conversation (ragged: conversations differ in length).
            features=[
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
                datasets.Features({
                    "predictions": datasets.Sequence(datasets.Value("int64")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }),
            ],
        )

    def _compute(self, predictions, references, label_names=None):
        return erc_scores(predictions, references, label_names)
