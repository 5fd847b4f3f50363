"""
Readability and duration checks of media files: the container header by default (about 1-2 ms a file), or with
`decode=True` a full decode of the streams used (50-500x dearer), which finds files cut after a good header.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Iterable, Optional

import av
from tqdm.contrib.concurrent import thread_map

# `skip_frame=all` stops `avformat_find_stream_info` from decoding frames to guess stream parameters, which is what
# makes a plain `av.open` slow (about 30 ms for a 720p H.264 clip instead of about 2.5 ms).
_HEADER_ONLY_OPTIONS = {"skip_frame": "all"}
_AV_ERRORS = (av.FFmpegError, OSError, ValueError)

MISSING = "missing"
UNREADABLE = "unreadable"
TRUNCATED = "truncated"  # the header is readable but the data is cut short (found by the full decode only)

# Encoder padding and rounding make a good file's decoded end differ from its header's by a few milliseconds.
DECODE_TOLERANCE_SECONDS = 0.2


@dataclass(frozen=True)
class MediaFile:
    """A file an utterance needs: the stream types it must have; a clip of one utterance is held to the clip limit."""

    path: str
    required_streams: tuple[str, ...]
    is_utterance_clip: bool = True


@dataclass(frozen=True)
class MediaProbe:
    """A file's duration (seconds, when the header gives it) and, when it is not usable, its status and why."""

    path: str
    duration: Optional[float] = None
    status: Optional[str] = None
    reason: Optional[str] = None

    @property
    def is_usable(self) -> bool:
        return self.status is None


def _container_seconds(container) -> Optional[float]:
    return container.duration / av.time_base if container.duration and container.duration > 0 else None


def _stream_seconds(stream) -> Optional[float]:
    if stream.duration and stream.duration > 0 and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None


def probe_media(media: MediaFile) -> MediaProbe:
    """Opens the container header of `media.path` with PyAV (no decoding) and reports its state and duration."""
    if not os.path.isfile(media.path):
        folder = os.path.dirname(media.path)
        reason = "file not found" if os.path.isdir(folder) else f"folder {folder} not found"
        return MediaProbe(media.path, status=MISSING, reason=reason)
    try:
        with av.open(media.path, options=_HEADER_ONLY_OPTIONS) as container:
            stream_types = {stream.type for stream in container.streams}
            durations = [seconds for seconds in map(_stream_seconds, container.streams) if seconds is not None]
            duration = _container_seconds(container) or max(durations, default=None)
    except _AV_ERRORS as error:
        return MediaProbe(media.path, status=UNREADABLE, reason=f"{type(error).__name__}: {error}")
    absent_streams = [kind for kind in media.required_streams if kind not in stream_types]
    if absent_streams:
        return MediaProbe(media.path, duration, status=UNREADABLE, reason=f"no {' or '.join(absent_streams)} stream")
    return MediaProbe(media.path, duration)


def decode_media(media: MediaFile, tolerance: float = DECODE_TOLERANCE_SECONDS) -> MediaProbe:
    """
    `probe_media`, then a full decode of the streams `media.required_streams` names. `"truncated"`: a stream's frames
    end more than `tolerance` seconds before the end its header declares (a file cut after a good header stops early
    or fails on its last, partial packet), or a WAV's data chunk declares more bytes than the file holds;
    `"unreadable"`: decoding fails otherwise or a stream yields no frame.
    """
    probe = probe_media(media)
    if not probe.is_usable:
        return probe

    def fault(status, reason):
        return MediaProbe(media.path, probe.duration, status, reason)

    try:
        decoded, error = _decode_streams(media)
    except _AV_ERRORS as open_error:  # the header opened once but not now
        return fault(UNREADABLE, f"decoding failed: {type(open_error).__name__}: {open_error}")
    then = f" (then {type(error).__name__}: {error})" if error is not None else ""
    for kind, (frames, decoded_seconds, declared_seconds) in decoded.items():
        if declared_seconds is not None and declared_seconds - decoded_seconds > tolerance:
            return fault(TRUNCATED, f"{kind} decodes to {decoded_seconds:.2f} s ({frames} frame(s)) of the "
                                    f"{declared_seconds:.2f} s its header declares{then}")
    if error is not None:
        return fault(UNREADABLE, f"decoding failed: {type(error).__name__}: {error}")
    for kind, (frames, _, _) in decoded.items():
        if frames == 0:
            return fault(UNREADABLE, f"no {kind} frame decodes")
    shortfall = _wav_data_shortfall(media.path)
    if shortfall is not None:
        return fault(TRUNCATED, "the WAV data chunk declares {} bytes, the file holds {}".format(*shortfall))
    return probe


def _decode_streams(media: MediaFile):
    """
    Decodes the first stream of each required kind, one codec thread each (files run in parallel instead), until the
    data ends or an error. Returns `{kind: (frames, seconds decoded from the stream start, seconds the header
    declares)}` and the error that stopped decoding (`None` at the end of the data).
    """
    with av.open(media.path) as container:
        first_of_type = {stream.type: stream for stream in list(container.streams)[::-1]}
        streams = {kind: first_of_type[kind] for kind in media.required_streams if kind in first_of_type}
        for stream in streams.values():
            stream.codec_context.thread_count = 1
        frames, ends, error = dict.fromkeys(streams, 0), dict.fromkeys(streams, 0.0), None
        try:
            for packet in container.demux(*streams.values()):
                for frame in packet.decode():
                    frames[packet.stream.type] += 1
                    if frame.time is not None:
                        end = frame.time + _frame_seconds(frame, packet.stream)
                        ends[packet.stream.type] = max(ends[packet.stream.type], end)
        except _AV_ERRORS as decode_error:
            error = decode_error
        result = {}
        for kind, stream in streams.items():
            start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            declared = _stream_seconds(stream) or _container_seconds(container)
            result[kind] = (frames[kind], max(ends[kind] - start, 0.0), declared)
        return result, error


def _frame_seconds(frame, stream) -> float:
    """How long a decoded frame lasts: its samples for audio; its duration, else one frame period, for video."""
    if stream.type == "audio":
        return frame.samples / frame.sample_rate if frame.sample_rate else 0.0
    if getattr(frame, "duration", None) and frame.time_base is not None:
        return float(frame.duration * frame.time_base)
    rate = stream.average_rate or stream.guessed_rate
    return 1.0 / float(rate) if rate else 0.0


def _wav_data_shortfall(path: str) -> Optional[tuple[int, int]]:
    """
    `(declared, available)` bytes for a RIFF/WAVE file whose `data` chunk declares more than the file holds, else
    `None` (FFmpeg sizes a WAV by the file, so a cut WAV decodes without error and reports the cut length).
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
            available = size - position - 8
            # 0 and 0xFFFFFFFF mark a streamed WAV (size unknown), not a cut one.
            if chunk_id == b"data":
                return None if chunk_size in (0, 0xFFFFFFFF) or chunk_size <= available else (chunk_size, available)
            position += 8 + chunk_size + (chunk_size & 1)
    return None


def probe_many(
    media_files: Iterable[MediaFile], num_workers: int = 8, decode: bool = False, progress: Optional[bool] = False
) -> dict[str, MediaProbe]:
    """
    Checks every distinct path once, `num_workers` threads at a time (PyAV works without the GIL, so threads use the
    cores and hide slow storage): a full decode with `decode`, else the header. `progress`: a tqdm bar (`None`: only
    on a terminal). Returns `{path: MediaProbe}`.
    """
    unique_files = list({media.path: media for media in media_files}.values())
    probes = thread_map(
        decode_media if decode else probe_media, unique_files, max_workers=max(num_workers, 1),
        desc="Decoding media" if decode else "Opening media headers", unit="file",
        disable=None if progress is None else not progress,
    )
    return {probe.path: probe for probe in probes}
