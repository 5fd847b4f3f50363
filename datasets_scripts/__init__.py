"""MELD and IEMOCAP release folders -> datasets.DatasetDict."""

from .check import check_data, format_report
from .corpus import LabelFilesError, MediaProblem, MediaProblemsError
from .iemocap import DEFAULT_IEMOCAP_SPLIT_FILE, load_iemocap
from .meld import load_meld

__all__ = [
    "DEFAULT_IEMOCAP_SPLIT_FILE",
    "LabelFilesError",
    "MediaProblem",
    "MediaProblemsError",
    "check_data",
    "format_report",
    "load_iemocap",
    "load_meld",
]
