"""MELD and IEMOCAP release folders -> datasets.DatasetDict."""

from .check import check_data, format_report
from .corpus import LabelFilesError, LabelProblem, LabelProblemsError, MediaProblem, MediaProblemsError
from .iemocap import DEFAULT_IEMOCAP_SPLIT_FILE, load_iemocap
from .meld import load_meld

__all__ = [
    "DEFAULT_IEMOCAP_SPLIT_FILE", "LabelFilesError", "LabelProblem", "LabelProblemsError", "MediaProblem",
    "MediaProblemsError", "check_data", "format_report", "load_iemocap", "load_meld",
]
