"""Conversation -> model inputs: `MagtkdProcessor` and its helpers."""

from .frame_cache import FrameCache, FrameCacheError, build_frame_cache
from .media import MediaError, TimeWindow
from .processing_magtkd import MagtkdProcessor, MagtkdSettingError
from .prompt import (
    SPEAKER_TOKENS,
    MagtkdInputError,
    build_prompts,
    released_iemocap_previous_speakers,
    released_iemocap_speaker_indices,
)

__all__ = [
    "FrameCache",
    "FrameCacheError",
    "build_frame_cache",
    "MagtkdProcessor",
    "MagtkdInputError",
    "MagtkdSettingError",
    "MediaError",
    "TimeWindow",
    "SPEAKER_TOKENS",
    "build_prompts",
    "released_iemocap_previous_speakers",
    "released_iemocap_speaker_indices",
]
