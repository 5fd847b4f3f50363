"""Conversation -> model inputs: `MagtkdProcessor` and its helpers."""

from .media import MediaError, TimeWindow
from .processing_magtkd import MagtkdProcessor
from .prompt import (
    SPEAKER_TOKENS,
    MagtkdInputError,
    build_prompts,
    released_iemocap_previous_speakers,
    released_iemocap_speaker_indices,
)

__all__ = [
    "MagtkdProcessor",
    "MagtkdInputError",
    "MediaError",
    "TimeWindow",
    "SPEAKER_TOKENS",
    "build_prompts",
    "released_iemocap_previous_speakers",
    "released_iemocap_speaker_indices",
]
