"""What every media loader of the MAGTKD processor shares: the error, time windows, file checks.

Time windows: a window that starts at or past the end of the media is an error (the file,
the window and the media's length are named); one that ends past the end is cut there and
logged as a warning.

Every failure raises `MediaError`, which names the file; the processor adds the
conversation and utterance.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

# Logged under the name of the `media` module, where the loaders are imported from, so one
# logger (`<package>.media`) controls the warnings of audio and video loading alike.
logger = logging.getLogger(f"{__package__}.media" if __package__ else "media")


class MediaError(ValueError):
    """A media file (or in-memory array) that cannot be used; the message names the file."""

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"file {source}: {reason}")


@dataclass(frozen=True)
class TimeWindow:
    """A span of a media file, in seconds (`end=None`: to the end)."""

    start: float
    end: float | None

    def widened(self, seconds: float) -> "TimeWindow":
        """The window widened by `seconds` on each side, its start clamped at 0."""
        end = None if self.end is None else self.end + seconds
        return TimeWindow(max(self.start - seconds, 0.0), end)

    def __str__(self) -> str:
        end = "end" if self.end is None else f"{self.end:g}"
        return f"[{self.start:g}, {end}] s"


def check_window(
    window: TimeWindow, length: float, label: str, what: str, context: str | None = None, detail: str = ""
) -> None:
    """Refuse a window that starts at or past the end of the media (`length` seconds); log a
    warning for one that ends past it (it is cut at the end). `what` names the media
    ("audio", "video"), `detail` is added after its length."""
    if window.start >= length:
        raise MediaError(label, f"the time window {window} starts past the end of the {what} ({length:g} s{detail})")
    if window.end is not None and window.end > length:
        prefix = f"{context}, " if context else ""
        logger.warning(
            "%sfile %s: the time window %s ends past the end of the %s (%g s%s); cut at the end",
            prefix, label, window, what, length, detail,
        )


def _require_file(path: str) -> None:
    if not os.path.exists(path):
        raise MediaError(path, "no such file")
    if not os.path.isfile(path):
        raise MediaError(path, "not a regular file")
