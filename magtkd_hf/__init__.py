"""magtkd-hf: MAGTKD for emotion recognition in conversation, Hugging Face compatible."""

from .configuration_magtkd import IEMOCAP_LABELS, MELD_LABELS, MagtkdConfig, MagtkdFusionConfig

__version__ = "0.1.0"
