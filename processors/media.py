"""Audio and video loading for the MAGTKD processor.

The loaders are split by concern; this module decodes video and re-exports the rest, so
`media` stays the one place to import them from:

* `media_common.py`: `MediaError`, `TimeWindow` and the time-window check;
* `media_audio.py`: audio files, in-memory arrays and sound tracks, resampling;
* `media_frames.py`: which frames to keep (uniform and released rules);
* `media_pixels.py`: frames -> pixel values.

Video: PyAV with frame threading, decoding straight through in presentation order and
converting only the kept frames to RGB, stopping after the last kept one (on a MELD-like
clip a little faster than decord's `get_batch`, which also decodes nearly every frame, with
identical pixels; seeking to 8 positions is 3-4x slower; see benchmarks/media.py). A frame's index is its position in that
order, which is what the released scripts' sequential OpenCV reading counts. When the first
kept frame lies seconds into the file (an utterance of a long IEMOCAP dialogue video), the
decoder seeks to a keyframe before it and numbers the frames by their rank among the
stream's packet timestamps; any inconsistency (no keyframe first, a gap, a missing frame)
falls back to decoding from the start. (decord's seeking returns wrong frames on AVI files
with B-frames; `decoder="decord"` stays available for comparison.)

Time windows: a window that starts at or past the end of the media is an error; one that
ends past the end is cut there and logged as a warning (see `media_common.py`).

Every failure raises `MediaError`, which names the file; the processor adds the
conversation and utterance.
"""

from __future__ import annotations

import bisect
import functools
import logging
import os

import numpy as np

# Re-exported: other code (and saved processors' own copies of it) imports these from here.
from .media_audio import (  # noqa: F401
    MissingSoundTrack,
    SOUNDFILE_SUFFIXES,
    cut_window,
    load_audio,
    mix_down,
    read_sound_file,
    read_sound_track,
    resample,
    zero_mean_unit_variance,
)
from .media_common import MediaError, TimeWindow, _require_file, check_window  # noqa: F401
from .media_frames import (  # noqa: F401
    FRAME_SELECTIONS,
    choose_frames,
    released_frame_indices,
    released_iemocap_frame_indices,
    uniform_frame_indices,
    window_frame_range,
)
from .media_pixels import (  # noqa: F401
    TORCH_MODES,
    frames_to_pixel_values_processor,
    frames_to_pixel_values_torch,
    resized_shape,
    torch_path_supported,
)

VIDEO_DECODERS = ("pyav", "decord")
SEEK_AFTER_SECONDS = 3.0  # decode from the start when the first kept frame comes earlier than this
SEEK_MARGIN_SECONDS = 1.0  # seek this much before the first kept frame (keyframe flags can be late)

logger = logging.getLogger(__name__)


def read_video_frames(
    path: str,
    num_frames: int = 8,
    selection: str = "uniform",
    window: TimeWindow | None = None,
    num_threads: int = 2,
    empty_frame_size: tuple[int, int] = (224, 224),
    *,
    padding: float = 0.0,
    decoder: str = "pyav",
    context: str | None = None,
) -> np.ndarray:
    """Decode the kept frames of a video, RGB uint8, shape (num_frames, H, W, 3).

    `window` limits the frames to a time span, widened by `padding` seconds on each side
    (start clamped at 0) before the frames are chosen. The window itself (before widening)
    must start before the end of the video (else `MediaError` naming the window and the
    video's length); one ending past the end is cut there, with a warning prefixed by
    `context`. When the clip (or the window) holds no frame at all, the released MELD rule
    gives black frames of `empty_frame_size` (height, width); with the released IEMOCAP rule
    that is an error (the released loader dropped such an utterance).

    `decoder`: "pyav" (default; frame threads, `num_threads` of them, 0 = automatic) or
    "decord" (`get_batch`, kept for comparison: it seeks, and returns wrong frames on AVI
    files with B-frames).
    """
    if decoder not in VIDEO_DECODERS:
        raise ValueError(f"decoder must be one of {VIDEO_DECODERS}, got {decoder!r}")
    _require_file(path)
    video = _PyAVVideo(path, num_threads) if decoder == "pyav" else _DecordVideo(path, num_threads)
    with video:
        plan = functools.partial(
            _plan_frames, path=path, fps=video.fps, num_frames=num_frames, selection=selection,
            window=window, padding=padding, context=context,
        )
        file_indices = plan(video.num_frames)
        if file_indices:
            decoded = video.decode(sorted(set(file_indices)))
            missing = [i for i in file_indices if i not in decoded]
            if missing:
                # Fewer decodable frames than the header says (a cut file): choose among those.
                actual = video.decoded_count
                if not actual or actual >= video.num_frames:
                    raise MediaError(
                        path, f"video decoding failed: frames {missing[:5]} of {video.num_frames} could not be decoded"
                    )
                logger.warning(
                    "file %s: %d frames by its header, %d decodable; frames chosen among those",
                    path, video.num_frames, actual,
                )
                file_indices = plan(actual)
                decoded = video.decode(sorted(set(file_indices)), from_start=True) if file_indices else {}
                if any(i not in decoded for i in file_indices):
                    raise MediaError(path, "video decoding failed: fewer frames than the file's header declares")
    if not file_indices:
        return np.zeros((num_frames, *empty_frame_size, 3), dtype=np.uint8)
    return np.stack([decoded[i] for i in file_indices])


def _plan_frames(count, *, path, fps, num_frames, selection, window, padding, context) -> list[int]:
    """Check the window against a video of `count` frames, then the file indices to keep."""
    if window is not None:
        duration = count / fps if fps > 0 else 0.0
        check_window(window, duration, path, "video", context, f", {count} frames at {fps:g} fps")
        if padding:
            window = window.widened(padding)
    try:
        file_indices = choose_frames(count, fps, num_frames, selection, window)
    except ValueError as error:
        raise MediaError(path, str(error)) from None
    if not file_indices and selection == "released" and window is not None:
        raise MediaError(
            path,
            f"the released IEMOCAP frame rule keeps no frame of the window {window} (the video ends at {count / fps:g} s)",
        )
    return file_indices


class _PyAVVideo:
    """A video file opened with PyAV: frame count, fps, and `decode(sorted indices)`."""

    def __init__(self, path: str, num_threads: int):
        self.path, self.num_threads, self.decoded_count = path, int(num_threads), None
        self.container = self._open()
        try:
            stream = self.container.streams.video[0]
            self.fps = _stream_fps(stream, path)
            self.num_frames = int(stream.frames or 0) or len(_packet_timestamps(path))
        except MediaError:
            self.close()
            raise
        except Exception as error:  # av.error.*
            self.close()
            raise MediaError(path, f"unreadable video ({error})") from error

    def _open(self):
        import av

        try:
            container = av.open(self.path)
        except Exception as error:  # av.error.InvalidDataError, OSError, ...
            raise MediaError(self.path, f"unreadable video ({error})") from error
        if not container.streams.video:
            container.close()
            raise MediaError(self.path, "the file has no video track")
        return container

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.container is not None:
            self.container.close()
            self.container = None

    def _stream(self):
        stream = self.container.streams.video[0]
        stream.thread_type = "FRAME"
        stream.thread_count = max(self.num_threads, 0)
        return stream

    def decode(self, wanted: list[int], from_start: bool = False) -> dict[int, np.ndarray]:
        """{index: RGB frame} for the sorted file indices `wanted` (missing ones absent)."""
        try:
            if not from_start and wanted[0] / self.fps > SEEK_AFTER_SECONDS:
                frames = self._decode_after_seek(wanted)
                if frames is not None:
                    return frames
                from_start = True
            if from_start or self.container is None:  # a fresh container after a seek or a first pass
                self.close()
                self.container = self._open()
            return self._decode_from_start(wanted)
        except MediaError:
            raise
        except Exception as error:  # av.error.*
            raise MediaError(self.path, f"video decoding failed ({error})") from error

    def _decode_from_start(self, wanted: list[int]) -> dict[int, np.ndarray]:
        stream, kept, last, targets = self._stream(), {}, wanted[-1], set(wanted)
        count = 0
        for index, frame in enumerate(self.container.decode(stream)):
            count = index + 1
            if index in targets:
                kept[index] = frame.to_ndarray(format="rgb24")
                if index >= last:
                    return kept
        self.decoded_count = count  # reached the end before the last wanted frame
        return kept

    def _decode_after_seek(self, wanted: list[int]) -> dict[int, np.ndarray] | None:
        """Seek to a keyframe before the first wanted frame; None when anything is inconsistent."""
        timestamps = _packet_timestamps(self.path)
        if len(timestamps) != self.num_frames or wanted[-1] >= len(timestamps):
            return None
        stream = self._stream()
        target = timestamps[max(wanted[0] - round(SEEK_MARGIN_SECONDS * self.fps), 0)]
        self.container.seek(target, stream=stream, backward=True, any_frame=False)
        kept, last, targets, previous = {}, wanted[-1], set(wanted), None
        for frame in self.container.decode(stream):
            if frame.pts is None:
                return None
            index = bisect.bisect_left(timestamps, frame.pts)
            if index >= len(timestamps) or timestamps[index] != frame.pts:
                return None
            if previous is None:
                if not frame.key_frame or index > wanted[0]:
                    return None
            elif index != previous + 1:
                return None
            previous = index
            if index in targets:
                kept[index] = frame.to_ndarray(format="rgb24")
                if index >= last:
                    return kept
        return None


class _DecordVideo:
    """The same interface over decord's `VideoReader` (comparison path)."""

    def __init__(self, path: str, num_threads: int):
        import decord

        self.path, self.decoded_count = path, None
        try:
            self.reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads)
        except Exception as error:  # decord.DECORDError, RuntimeError
            raise MediaError(path, f"unreadable video ({error})") from error
        self.num_frames, self.fps = len(self.reader), float(self.reader.get_avg_fps())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.reader = None

    def decode(self, wanted: list[int], from_start: bool = False) -> dict[int, np.ndarray]:
        try:
            batch = self.reader.get_batch(wanted).asnumpy()
        except Exception as error:
            raise MediaError(self.path, f"video decoding failed ({error})") from error
        return dict(zip(wanted, batch))


def _stream_fps(stream, path: str) -> float:
    """The stream's average frame rate (what OpenCV's CAP_PROP_FPS and decord report), else the
    guessed or base rate."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    raise MediaError(path, "the video track declares no frame rate")


def _packet_timestamps(path: str) -> tuple[int, ...]:
    """Sorted presentation timestamps of the first video stream's packets (cached per file
    version): frame k in presentation order has the k-th smallest."""
    status = os.stat(path)
    return _cached_packet_timestamps(path, status.st_mtime_ns, status.st_size)


@functools.lru_cache(maxsize=8)
def _cached_packet_timestamps(path: str, mtime_ns: int, size: int) -> tuple[int, ...]:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stamps = [packet.pts for packet in container.demux(stream) if packet.pts is not None and packet.size]
    return tuple(sorted(stamps))
