"""Audio and video loading for the MAGTKD processor. Every failure raises `MediaError`, which names the file.

Audio: soundfile, an in-memory array, or a container's sound track (PyAV, cut to the stream's declared duration, which
drops the AAC encoder padding), mixed to mono and resampled with soxr; a file is read only from the window's start (a
seek) to the crop, block by block. Video: PyAV; a frame's index is its position in presentation order (what the
released scripts' OpenCV reading counts). A first kept frame seconds into the file is reached by a seek, frames
numbered by their rank among the packet timestamps; any inconsistency decodes from the start. Media whose rates or
frame size cannot be speech or video are refused.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import itertools
import logging
import math
import os
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch

from .media_frames import choose_frames, released_frame_indices, released_iemocap_frame_indices  # noqa: F401
from .media_frames import uniform_frame_indices, window_frame_range  # noqa: F401
from .media_pixels import frames_to_pixel_values_processor, frames_to_pixel_values_torch  # noqa: F401

SOUNDFILE_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif")
SEEK_AFTER_SECONDS = 3.0  # decode from the start when the first kept frame or sample comes earlier than this
SEEK_MARGIN_SECONDS = 1.0  # seek this much before it (keyframe flags can be late; AAC needs a frame of history)
RESAMPLE_MARGIN_SECONDS = 0.25  # read this much past a crop: the resampler's filter then sees what the whole gives
BLOCK_SAMPLES = 65536  # sound file frames read (and mixed down) at a time
# Below 4 kHz the second formant of speech (up to ~2.5 kHz) is above the Nyquist frequency, so words cannot be told
# apart; 768 kHz is the highest rate audio hardware records (a larger "rate" is a corrupt header or a time base).
AUDIO_RATE_RANGE = (4_000, 768_000)
# Above 1,000 fps a declared "frame rate" is a time base (e.g. 90,000), not frames; beyond 8K (8,192 pixels a side)
# a frame is a corrupt header, and the kept frames alone would take gigabytes.
VIDEO_MAX_FPS, VIDEO_MAX_SIDE = 1_000, 8_192
REORDER_PACKETS = 32  # more than any codec reorders: the first presented frame is among the first 32 packets
IN_MEMORY = "<in-memory audio>"

logger = logging.getLogger(__name__)


class MediaError(ValueError):
    """A media file (or in-memory array) that cannot be used; the message names the file."""

    def __init__(self, source: str, reason: str):
        self.source, self.reason = source, reason
        super().__init__(f"file {source}: {reason}")


class MissingSoundTrack(MediaError):
    """A container without any audio stream (an utterance whose sound was to come from its video has no audio)."""


@dataclass(frozen=True)
class TimeWindow:
    """A span of a media file, in seconds (`end=None`: to the end)."""

    start: float
    end: float | None

    def widened(self, seconds: float) -> "TimeWindow":
        """The window widened by `seconds` on each side, its start clamped at 0."""
        return TimeWindow(max(self.start - seconds, 0.0), None if self.end is None else self.end + seconds)

    def __str__(self) -> str:
        return f"[{self.start:g}, {'end' if self.end is None else f'{self.end:g}'}] s"


def check_window(window: TimeWindow, length: float, label: str, what: str, context: str | None, detail: str = ""):
    """Refuse a window starting at or past the end of the media (`length` s); warn about one ending past it."""
    if window.start >= length:
        raise MediaError(label, f"the time window {window} starts past the end of the {what} ({length:g} s{detail})")
    if window.end is not None and window.end > length:
        logger.warning("%sfile %s: the time window %s ends past the end of the %s (%g s%s); cut at the end",
                       f"{context}, " if context else "", label, window, what, length, detail)


def require_file(path: str) -> None:
    if not os.path.exists(path):
        raise MediaError(path, "no such file")
    if not os.path.isfile(path):
        raise MediaError(path, "not a regular file")


# ---------------------------------------------------------------------- audio


def load_audio(source, target_rate: int, max_samples: int | None = None, window: TimeWindow | None = None, *,
               context: str | None = None) -> np.ndarray:
    """Any audio source -> mono float32 waveform at `target_rate`, (T,), T <= max_samples (the beginning is kept).

    `source`: a path (soundfile formats directly, anything else as a container's sound track), `(array, rate)`, or a
    mapping with `array` and `sampling_rate` (decoded `datasets` Audio) or with `path` (undecoded). Arrays may be
    (T,), (T, channels) or (channels, T). `window` cuts [start, end] seconds before resampling; warnings about it are
    prefixed with `context`. A file is read in blocks from (a seek near) the window's start up to the crop, never whole
    unless the whole is wanted."""
    if isinstance(source, Mapping) and "array" not in source and source.get("path") is not None:
        source = source["path"]
    if isinstance(source, (str, os.PathLike)):
        source = label = os.fspath(source)
        require_file(label)
        reader = _SoundFile if label.lower().endswith(SOUNDFILE_SUFFIXES) else _SoundTrack
    else:
        label, reader = IN_MEMORY, _InMemoryAudio
    with _reading(label, reader.kind), reader(source) as audio:
        check_sampling_rate(label, audio.rate)
        # enough source samples that the first max_samples resampled ones are those of the whole span
        crop = None if max_samples is None else math.ceil((max_samples / target_rate + RESAMPLE_MARGIN_SECONDS)
                                                          * audio.rate)
        waveform = _read_span(audio, label, window, crop, context)
    if waveform.size == 0:
        raise MediaError(label, "the audio is empty")
    if audio.rate != target_rate:
        import soxr

        waveform = soxr.resample(waveform, audio.rate, target_rate, quality="HQ")
    return waveform.astype(np.float32, copy=False)[:max_samples]


def check_sampling_rate(label: str, rate) -> None:
    """Refuse a sampling rate that cannot be audio of speech (see AUDIO_RATE_RANGE)."""
    low, high = AUDIO_RATE_RANGE
    if not low <= rate <= high:
        raise MediaError(label, f"the sampling rate {rate:,} Hz cannot be speech (allowed: {low:,} to {high:,} Hz)")


@contextlib.contextmanager
def _reading(label: str, kind: str):
    """Any error of the decoding libraries (av.error.*, soundfile's, OSError) as a MediaError naming the file."""
    try:
        yield
    except MediaError:
        raise
    except Exception as error:
        raise MediaError(label, f"unreadable {kind} ({error})") from error


def _read_span(audio, label: str, window: TimeWindow | None, crop: int | None, context: str | None) -> np.ndarray:
    """The mono samples of `window` (all without one), at most `crop` of them, checking the window against the length
    (the declared one, or where decoding ended when that came first)."""
    first = 0 if window is None else int(round(window.start * audio.rate))
    window_end = None if window is None or window.end is None else int(round(window.end * audio.rate))
    stop = _smallest(audio.length, window_end, None if crop is None else first + crop)
    parts = [block[max(first - position, 0) : None if stop is None else stop - position]
             for position, block in (audio.blocks(first, stop) if stop is None or stop > first else ())]
    length = _smallest(audio.length, audio.end)
    if window is not None and length is not None:
        check_window(window, length / audio.rate, label, "audio", context)
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _smallest(*counts: int | None) -> int | None:
    return min((count for count in counts if count is not None), default=None)


class _InMemoryAudio:
    """An array with its rate (see `load_audio`), as the readers below: `rate`, `length`, `end`, `blocks`."""

    kind = "audio"

    def __init__(self, source):
        self.samples, self.rate = _array_and_rate(source)
        self.length = self.end = len(self.samples)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def blocks(self, first: int, stop: int | None):
        """(position, mono samples) from one holding sample `first` on, up to one holding sample `stop - 1`."""
        yield 0, self.samples


class _SoundFile(_InMemoryAudio):
    """A WAV/FLAC/OGG file (soundfile) read in blocks, each mixed down to mono float32 (never the whole file at once).
    `length`: its frame count; `end`: where reading ended at the end of the file (None before)."""

    def __init__(self, path: str):
        import soundfile

        self.file = soundfile.SoundFile(path)
        self.rate, self.length, self.end = int(self.file.samplerate), int(self.file.frames), None

    def __exit__(self, *exc):
        self.file.close()

    def blocks(self, first: int, stop: int | None):
        position = self.file.seek(min(first, self.length))
        while stop is None or position < stop:
            count = BLOCK_SAMPLES if stop is None else min(BLOCK_SAMPLES, stop - position)
            samples = self.file.read(count, dtype="float32", always_2d=True)
            if not len(samples):
                self.end = position
                return
            yield position, samples.mean(axis=1)
            position += len(samples)


class _SoundTrack(_InMemoryAudio):
    """A container's first sound track (PyAV), decoded from a seek near the first wanted sample (from the start when
    that is early, the seek lands past it, or timestamps are missing). `length`: the stream's declared duration in
    samples (None when undeclared; decoding beyond it is dropped: AAC's encoder padding); `end` as `_SoundFile`."""

    kind = "media"

    def __init__(self, path: str):
        self.path, self.end, self.container = path, None, None
        self._open()
        self.rate = int(self.stream.rate or self.stream.sample_rate or 0)
        self.length = None
        if self.stream.duration is not None and self.stream.time_base is not None:
            self.length = int(round(float(self.stream.duration * self.stream.time_base) * self.rate))

    def _open(self):
        import av

        if self.container is not None:
            self.container.close()
        self.container = av.open(self.path)
        if not self.container.streams.audio:
            self.container.close()
            raise MissingSoundTrack(self.path, "the file has no audio track (give the utterance an audio file)")
        self.stream = self.container.streams.audio[0]

    def __exit__(self, *exc):
        self.container.close()

    def blocks(self, first: int, stop: int | None):
        frames, position = self._frames_from(first)
        for frame in frames:
            if stop is not None and position >= stop:
                return
            samples = _frame_to_mono(frame)
            yield position, samples
            position += len(samples)
        self.end = position

    def _frames_from(self, first: int):
        """(decoded frames, sample position of the first): after a seek SEEK_MARGIN_SECONDS before sample `first`
        (positions from the timestamps, relative to the track's first frame), or from the start."""
        if first > SEEK_AFTER_SECONDS * self.rate:
            origin = next(self.container.decode(self.stream), None)
            if origin is not None and origin.pts is not None:
                seconds = first / self.rate - SEEK_MARGIN_SECONDS
                self.container.seek(origin.pts + int(seconds / self.stream.time_base), stream=self.stream)
                frames = self.container.decode(self.stream)
                head = next(frames, None)
                if head is not None and head.pts is not None:
                    position = int(round(float((head.pts - origin.pts) * self.stream.time_base) * self.rate))
                    if 0 <= position <= first:
                        return itertools.chain([head], frames), position
            self._open()  # a fresh container: the seek went wrong
        return self.container.decode(self.stream), 0


def _frame_to_mono(frame) -> np.ndarray:
    """A PyAV audio frame -> mono float32: (channels, T) when planar, (1, T * channels) interleaved when packed."""
    samples = _to_float(frame.to_ndarray())
    if frame.format.is_planar:
        return samples.mean(axis=0)
    return samples.reshape(-1, len(frame.layout.channels)).mean(axis=1)


def _to_float(samples: np.ndarray) -> np.ndarray:
    if np.issubdtype(samples.dtype, np.integer):
        return samples.astype(np.float32) / (float(np.iinfo(samples.dtype).max) + 1.0)
    return samples.astype(np.float32, copy=False)


def _array_and_rate(source) -> tuple[np.ndarray, int]:
    if isinstance(source, Mapping) and "array" in source and "sampling_rate" in source:
        array, rate = source["array"], source["sampling_rate"]
    elif isinstance(source, (tuple, list)) and len(source) == 2:
        array, rate = source
    else:
        raise MediaError(IN_MEMORY, "audio must be a path, (array, sampling_rate) or {'array', 'sampling_rate'}, "
                                    f"got {type(source).__name__}")
    array = _to_float(np.asarray(array.detach().cpu() if isinstance(array, torch.Tensor) else array))
    if rate is None or int(rate) <= 0:
        raise MediaError(IN_MEMORY, f"invalid sampling rate {rate!r}")
    if array.ndim not in (1, 2):
        raise MediaError(IN_MEMORY, f"audio array must be 1-D or 2-D, got shape {array.shape}")
    if array.ndim == 2:  # the shorter axis holds the channels
        array = array.mean(axis=0 if array.shape[0] < array.shape[1] else 1)
    return array, int(rate)


# ---------------------------------------------------------------------- video


def read_video_frames(path: str, num_frames: int = 8, selection: str = "uniform", window: TimeWindow | None = None,
                      num_threads: int = 2, empty_frame_size: tuple[int, int] = (224, 224), *, padding: float = 0.0,
                      context: str | None = None) -> np.ndarray:
    """The kept frames of a video, RGB uint8 (num_frames, H, W, 3).

    `window` (widened by `padding` seconds on each side, start clamped at 0) limits the frames to a time span; it
    must start before the end of the video, and one ending past it is cut there (a warning prefixed by `context`).
    A clip (or window) without frames gives black frames of `empty_frame_size` (released MELD rule), or an error
    with the released IEMOCAP rule. `num_threads`: PyAV frame threads (0 = automatic)."""
    require_file(path)
    with _Video(path, num_threads) as video:
        indices = _plan_frames(video, video.num_frames, num_frames, selection, window, padding, context)
        decoded = video.decode(sorted(set(indices))) if indices else {}
        if any(index not in decoded for index in indices):
            # Fewer decodable frames than the header says (a cut file): choose among those.
            if not video.decoded_count or video.decoded_count >= video.num_frames:
                missing = [index for index in indices if index not in decoded]
                raise MediaError(path, f"video decoding failed: frames {missing[:5]} of {video.num_frames} could "
                                       "not be decoded")
            logger.warning("file %s: %d frames by its header, %d decodable; frames chosen among those",
                           path, video.num_frames, video.decoded_count)
            indices = _plan_frames(video, video.decoded_count, num_frames, selection, window, padding, context)
            decoded = video.decode(sorted(set(indices)), from_start=True) if indices else {}
            if any(index not in decoded for index in indices):
                raise MediaError(path, "video decoding failed: fewer frames than the file's header declares")
    if not indices:
        return np.zeros((num_frames, *empty_frame_size, 3), dtype=np.uint8)
    return np.stack([decoded[index] for index in indices])


def _plan_frames(video, count, num_frames, selection, window, padding, context) -> list[int]:
    """Check the window against a video of `count` frames, then the file indices to keep."""
    if window is not None:
        duration = count / video.fps if video.fps > 0 else 0.0
        check_window(window, duration, video.path, "video", context, f", {count} frames at {video.fps:g} fps")
        window = window.widened(padding) if padding else window
    try:
        indices = choose_frames(count, video.fps, num_frames, selection, window)
    except ValueError as error:
        raise MediaError(video.path, str(error)) from None
    if not indices and selection == "released" and window is not None:
        raise MediaError(video.path, f"the released IEMOCAP frame rule keeps no frame of the window {window} (the "
                                     f"video ends at {count / video.fps:g} s)")
    return indices


def check_video_properties(path: str, fps: float, width: int, height: int) -> None:
    """Refuse a frame rate or size that cannot be a video of people talking (see VIDEO_MAX_FPS, VIDEO_MAX_SIDE)."""
    if not 0 < fps <= VIDEO_MAX_FPS:
        raise MediaError(path, f"the frame rate {fps:g} fps cannot be a video (allowed: above 0, at most "
                               f"{VIDEO_MAX_FPS:,} fps)")
    if not (0 < width <= VIDEO_MAX_SIDE and 0 < height <= VIDEO_MAX_SIDE):
        raise MediaError(path, f"the frame size {width} x {height} cannot be a video (allowed: 1 to {VIDEO_MAX_SIDE:,} "
                               "pixels a side)")


class _Video:
    """A video file opened with PyAV: `fps`, `num_frames` (by the header, else by packets), `decode(sorted indices)`."""

    def __init__(self, path: str, num_threads: int):
        self.path, self.num_threads, self.decoded_count, self.container = path, int(num_threads), None, None
        try:
            self._open()
            stream = self.container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not rate:
                raise MediaError(path, "the video track declares no frame rate")
            self.fps = float(rate)
            check_video_properties(path, self.fps, stream.width, stream.height)
            self.num_frames = int(stream.frames or 0) or len(_packet_timestamps(path))
        except MediaError:
            self.close()
            raise
        except Exception as error:  # av.error.*, OSError
            self.close()
            raise MediaError(path, f"unreadable video ({error})") from error

    def _open(self):
        import av

        self.close()
        self.container = av.open(self.path)
        if not self.container.streams.video:
            raise MediaError(self.path, "the file has no video track")
        stream = self.container.streams.video[0]
        stream.thread_type, stream.thread_count = "FRAME", max(self.num_threads, 0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.container is not None:
            self.container.close()
            self.container = None

    def decode(self, wanted: list[int], from_start: bool = False) -> dict[int, np.ndarray]:
        """{index: RGB frame} for the sorted file indices `wanted` (those the file lacks are absent)."""
        try:
            if not from_start and wanted[0] / self.fps > SEEK_AFTER_SECONDS:
                frames = self._decode_after_seek(wanted)
                if frames is not None:
                    return frames
                from_start = True
            if from_start:  # a fresh container after a seek or a first pass
                self._open()
            return self._decode_from_start(wanted)
        except MediaError:
            raise
        except Exception as error:  # av.error.*
            raise MediaError(self.path, f"video decoding failed ({error})") from error

    def _decode_from_start(self, wanted: list[int]) -> dict[int, np.ndarray]:
        kept, targets, count = {}, set(wanted), 0
        for index, frame in enumerate(self.container.decode(self.container.streams.video[0])):
            count = index + 1
            if index in targets:
                kept[index] = frame.to_ndarray(format="rgb24")
                if index >= wanted[-1]:
                    return kept
        self.decoded_count = count  # the end came before the last wanted frame
        return kept

    def _decode_after_seek(self, wanted: list[int]) -> dict[int, np.ndarray] | None:
        """Seek to a keyframe before the first wanted frame; None when anything is inconsistent."""
        timestamps = self._indexed_timestamps() or _packet_timestamps(self.path)
        if len(timestamps) != self.num_frames or wanted[-1] >= len(timestamps):
            return None
        stream = self.container.streams.video[0]
        target = timestamps[max(wanted[0] - round(SEEK_MARGIN_SECONDS * self.fps), 0)]
        self.container.seek(target, stream=stream, backward=True, any_frame=False)
        kept, targets, previous = {}, set(wanted), None
        for frame in self.container.decode(stream):
            index = -1 if frame.pts is None else bisect.bisect_left(timestamps, frame.pts)
            if not 0 <= index < len(timestamps) or timestamps[index] != frame.pts:
                return None
            first_ok = frame.key_frame and index <= wanted[0]
            if (previous is None and not first_ok) or (previous is not None and index != previous + 1):
                return None
            previous = index
            if index in targets:
                kept[index] = frame.to_ndarray(format="rgb24")
                if index >= wanted[-1]:
                    return kept
        return None

    def _indexed_timestamps(self) -> range | None:
        """The frames' presentation timestamps in order (as `_packet_timestamps`) without a pass over the file: when the
        demuxer's index lists one non-empty packet per frame at one decoding step, the presented timestamps are taken
        as the series of that step from the first presented one, checked at both ends (the packets of the first and of
        the last keyframe's group); None when any of it does not hold."""
        entries = self.container.streams.video[0].index_entries
        if len(entries) != self.num_frames or len(entries) < 2:
            return None
        # one pass, keeping no Python object per entry (tens of thousands of them would set off the garbage collector)
        index = np.fromiter(((entry.timestamp, entry.size) for entry in entries), count=len(entries),
                            dtype=[("dts", np.int64), ("size", np.int64)])
        steps = np.diff(index["dts"])
        if not index["size"].all() or steps[0] <= 0 or (steps != steps[0]).any():
            return None
        first = min(self._presented_from(int(index["dts"][0]), REORDER_PACKETS), default=None)
        last = max(self._presented_from(int(index["dts"][-1]), None), default=None)
        if first is None or last != first + int(steps[0]) * (len(index) - 1):
            return None
        return range(first, last + 1, int(steps[0]))

    def _presented_from(self, timestamp: int, count: int | None) -> list[int]:
        """The presentation timestamps of `count` packets (all to the end: None) from the keyframe at or before
        `timestamp` (decoding order)."""
        stream = self.container.streams.video[0]
        self.container.seek(timestamp, stream=stream, backward=True, any_frame=False)
        packets = itertools.islice(self.container.demux(stream), count)
        return [packet.pts for packet in packets if packet.pts is not None and packet.size]


def _packet_timestamps(path: str) -> tuple[int, ...]:
    """Sorted presentation timestamps of the first video stream's packets (cached per file version): frame k in
    presentation order has the k-th smallest."""
    status = os.stat(path)
    return _cached_packet_timestamps(path, status.st_mtime_ns, status.st_size)


@functools.lru_cache(maxsize=8)
def _cached_packet_timestamps(path: str, mtime_ns: int, size: int) -> tuple[int, ...]:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        return tuple(sorted(packet.pts for packet in container.demux(stream) if packet.pts is not None and packet.size))
