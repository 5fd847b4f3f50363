"""
Readability and duration checks of media files. The default reads the container header only (no frame is decoded,
about 1-2 ms a file); `decode=True` also decodes every frame of the streams the dataset uses (50-500x dearer), which
finds files whose header is good but whose data is cut or damaged.
"""

from __future__ import annotations

import os
import struct
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Iterable, Optional

import av
from tqdm import tqdm

# `skip_frame=all` stops `avformat_find_stream_info` from decoding frames to guess stream parameters, which is what
# makes a plain `av.open` slow (about 30 ms for a 720p H.264 clip instead of about 2.5 ms).
_HEADER_ONLY_OPTIONS = {"skip_frame": "all"}

MISSING = "missing"
UNREADABLE = "unreadable"
# The header is readable but the data is cut short (found by the full decode only).
TRUNCATED = "truncated"

# How many seconds of a stream may fail to decode at its end before the file counts as truncated (encoder padding and
# rounding make the decoded end differ from the header's by a few milliseconds on a good file).
DECODE_TOLERANCE_SECONDS = 0.2


@dataclass(frozen=True)
class MediaFile:
    """
    A media file a conversation needs.

    Args:
        path (`str`): where the file should be.
        required_streams (`tuple[str, ...]`): stream types (`"video"`, `"audio"`) the container must have.
        is_utterance_clip (`bool`): the file holds one utterance, so its duration is compared with the clip limit
            (a whole dialogue's video is not).
    """

    path: str
    required_streams: tuple[str, ...]
    is_utterance_clip: bool = True


@dataclass(frozen=True)
class MediaProbe:
    """
    What a file's container header says.

    Args:
        path (`str`): the file.
        duration (`float`, *optional*): seconds, when the header gives it.
        status (`str`, *optional*): `None` when usable, else `"missing"`, `"unreadable"` or (full decode only)
            `"truncated"`.
        reason (`str`, *optional*): why the file is not usable.
    """

    path: str
    duration: Optional[float] = None
    status: Optional[str] = None
    reason: Optional[str] = None

    @property
    def is_usable(self) -> bool:
        return self.status is None


def _container_duration(container) -> Optional[float]:
    """Seconds from the container header, or from the longest stream when the container has no duration."""
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    stream_durations = [
        float(stream.duration * stream.time_base)
        for stream in container.streams
        if stream.duration is not None and stream.time_base is not None
    ]
    return max(stream_durations) if stream_durations else None


def probe_media(media: MediaFile) -> MediaProbe:
    """Opens the container header of `media.path` with PyAV (no decoding) and reports its state and duration."""
    if not os.path.isfile(media.path):
        folder = os.path.dirname(media.path)
        reason = "file not found" if os.path.isdir(folder) else f"folder {folder} not found"
        return MediaProbe(media.path, status=MISSING, reason=reason)
    try:
        with av.open(media.path, options=_HEADER_ONLY_OPTIONS) as container:
            stream_types = {stream.type for stream in container.streams}
            duration = _container_duration(container)
    except (av.FFmpegError, OSError, ValueError) as error:
        return MediaProbe(media.path, status=UNREADABLE, reason=f"{type(error).__name__}: {error}")
    absent_streams = [kind for kind in media.required_streams if kind not in stream_types]
    if absent_streams:
        return MediaProbe(media.path, duration, status=UNREADABLE, reason=f"no {' or '.join(absent_streams)} stream")
    return MediaProbe(media.path, duration)


def decode_media(media: MediaFile, tolerance: float = DECODE_TOLERANCE_SECONDS) -> MediaProbe:
    """
    `probe_media`, then a full decode with PyAV of every frame of the streams `media.required_streams` names (for a
    MELD clip every video frame, of which the processor reads some, and the whole sound track). The file is
    `"truncated"` when a stream's decoded frames end more than `tolerance` seconds before the end its header declares
    (a file cut after a good header either decodes without error but stops early, or fails on its last, partial
    packet) or when a WAV's data chunk declares more bytes than the file holds; it is `"unreadable"` when decoding
    fails otherwise or a stream yields no frame.
    """
    probe = probe_media(media)
    if not probe.is_usable:
        return probe
    try:
        decoded, error = _decode_streams(media)
    except (av.FFmpegError, OSError, ValueError) as open_error:  # the header opened once but not now
        reason = f"decoding failed: {type(open_error).__name__}: {open_error}"
        return MediaProbe(media.path, probe.duration, status=UNREADABLE, reason=reason)
    failure = f" (then {type(error).__name__}: {error})" if error is not None else ""
    for kind, (frames, decoded_seconds, declared_seconds) in decoded.items():
        if declared_seconds is not None and declared_seconds - decoded_seconds > tolerance:
            reason = (f"{kind} decodes to {decoded_seconds:.2f} s ({frames} frame(s)) of the {declared_seconds:.2f} s "
                      f"its header declares{failure}")
            return MediaProbe(media.path, probe.duration, status=TRUNCATED, reason=reason)
    if error is not None:
        reason = f"decoding failed: {type(error).__name__}: {error}"
        return MediaProbe(media.path, probe.duration, status=UNREADABLE, reason=reason)
    for kind, (frames, _, _) in decoded.items():
        if frames == 0:
            return MediaProbe(media.path, probe.duration, status=UNREADABLE, reason=f"no {kind} frame decodes")
    wav_shortfall = _wav_data_shortfall(media.path)
    if wav_shortfall is not None:
        declared, available = wav_shortfall
        reason = f"the WAV data chunk declares {declared} bytes, the file holds {available}"
        return MediaProbe(media.path, probe.duration, status=TRUNCATED, reason=reason)
    return probe


def _decode_streams(media: MediaFile) -> tuple[dict[str, tuple[int, float, Optional[float]]], Optional[Exception]]:
    """
    Decodes the first stream of each kind in `media.required_streams`, one codec thread each (files run in parallel
    instead), until the data ends or a decoding error. Returns `{kind: (frames decoded, seconds decoded from the
    stream start, seconds the header declares)}` and the error that stopped decoding (`None` at the end of the data).
    """
    with av.open(media.path) as container:
        streams = {}
        for kind in media.required_streams:
            candidates = [stream for stream in container.streams if stream.type == kind]
            if candidates:
                streams[kind] = candidates[0]
        for stream in streams.values():
            stream.codec_context.thread_count = 1
        by_index = {stream.index: kind for kind, stream in streams.items()}
        frames = dict.fromkeys(streams, 0)
        ends = dict.fromkeys(streams, 0.0)
        error = None
        try:
            for packet in container.demux(*streams.values()):
                kind = by_index[packet.stream.index]
                for frame in packet.decode():
                    frames[kind] += 1
                    if frame.time is not None:
                        ends[kind] = max(ends[kind], frame.time + _frame_seconds(frame, packet.stream))
        except (av.FFmpegError, OSError, ValueError) as decode_error:
            error = decode_error
        result = {}
        for kind, stream in streams.items():
            start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            result[kind] = (frames[kind], max(ends[kind] - start, 0.0), _declared_seconds(stream, container))
        return result, error


def _frame_seconds(frame, stream) -> float:
    """How long a decoded frame lasts: its samples for audio; its duration, else one frame period, for video."""
    if stream.type == "audio":
        return frame.samples / frame.sample_rate if frame.sample_rate else 0.0
    duration = getattr(frame, "duration", None)
    if duration and frame.time_base is not None:
        return float(duration * frame.time_base)
    rate = stream.average_rate or stream.guessed_rate
    return 1.0 / float(rate) if rate else 0.0


def _declared_seconds(stream, container) -> Optional[float]:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _wav_data_shortfall(path: str) -> Optional[tuple[int, int]]:
    """
    For a RIFF/WAVE file whose `data` chunk declares more bytes than the file holds: `(declared, available)`; else
    `None`. (FFmpeg sizes a WAV by the file, so a cut WAV decodes without error and its header reports the cut length.)
    """
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        position = 12
        while position + 8 <= size:
            handle.seek(position)
            chunk_id, chunk_size = struct.unpack("<4sI", handle.read(8))
            if chunk_id == b"data":
                available = size - position - 8
                # 0 and 0xFFFFFFFF mark a streamed WAV (size unknown), not a cut one.
                if chunk_size in (0, 0xFFFFFFFF) or chunk_size <= available:
                    return None
                return chunk_size, available
            position += 8 + chunk_size + (chunk_size & 1)
    return None


def probe_many(
    media_files: Iterable[MediaFile],
    num_workers: int = 8,
    decode: bool = False,
    progress: Optional[bool] = False,
    tolerance: float = DECODE_TOLERANCE_SECONDS,
) -> dict[str, MediaProbe]:
    """
    Checks every distinct path once, `num_workers` at a time (PyAV opens and decodes without the GIL, so threads use
    the cores and hide slow storage). `decode=True` fully decodes each file (`decode_media`), else reads its header
    (`probe_media`). `progress`: a tqdm bar (`None`: only on a terminal). Returns `{path: MediaProbe}`.
    """
    unique_files = list({media.path: media for media in media_files}.values())
    check = (lambda media: decode_media(media, tolerance)) if decode else probe_media
    bar = tqdm(
        total=len(unique_files),
        desc="Decoding media" if decode else "Opening media headers",
        unit="file",
        disable=None if progress is None else not progress,
    )
    probes = {}
    with bar:
        if num_workers <= 1 or len(unique_files) < 2:
            for media in unique_files:
                probes[media.path] = check(media)
                bar.update()
        else:
            with ThreadPoolExecutor(max_workers=num_workers) as executor:
                for future in as_completed([executor.submit(check, media) for media in unique_files]):
                    probe = future.result()
                    probes[probe.path] = probe
                    bar.update()
    return {media.path: probes[media.path] for media in unique_files}
