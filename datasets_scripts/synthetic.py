"""
Small synthetic release trees in the official MELD layout, with tiny real media files: for tests, demos, and trying
the pipeline without the licensed data. `write_mp4` is the project's one MP4 writer (tests, the shipped sample data,
benchmarks); the tests' IEMOCAP trees are written by tests/iemocap_fixtures.py.
"""

from __future__ import annotations

import csv
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

import av
import numpy as np

from .meld import MELD_SPLIT_FILES, meld_clip_path

PathLike = Union[str, Path]
MELD_CSV_COLUMNS = (
    "Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season", "Episode",
    "StartTime", "EndTime",
)

# The MELD-like clip of the benchmarks: `write_mp4(path, seconds, **MELD_LIKE_CLIP)` writes `seconds` of 1280 x 720
# H.264 at 24 fps (a moving gradient with noise, so the encoder has work; a keyframe every second) with an AAC
# 48 kHz stereo 440 Hz tone (plus a little noise).
MELD_LIKE_CLIP = dict(
    size=1280, height=720, fps=24, pattern="gradient", sample_rate=48000, channels=2, amplitude=0.3, noise=0.01,
    audio_pts=True, encoder_options={"g": "24", "preset": "veryfast"},
)


def _picture(pattern: str, index: int, width: int, height: int, colour=None, colours=None, rng=None) -> np.ndarray:
    """Frame `index` (RGB, height x width) of one of the picture patterns of `write_mp4`."""
    if pattern == "colours":  # solid frames, frame i in colours[i % len(colours)]
        return np.full((height, width, 3), colours[index % len(colours)], dtype=np.uint8)
    if pattern == "gradient":  # a moving gradient plus noise
        y, x = np.mgrid[0:height, 0:width]
        image = np.stack([(x + 8 * index) % 256, (y + 4 * index) % 256, (x + y) % 256], -1)
        return np.clip(image + rng.integers(-12, 12, image.shape), 0, 255).astype(np.uint8)
    if pattern != "grey":
        raise ValueError(f"unknown picture pattern {pattern!r} (grey, colours or gradient)")
    image = np.full((height, width, 3), (index * 23) % 256, dtype=np.uint8)
    if colour is not None:  # a coloured square on the changing grey background
        image[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = colour
    return image


def _write_video(
    path: PathLike, pictures: Iterable[np.ndarray], fps, width: int, height: int, samples: Optional[np.ndarray] = None,
    sample_rate: int = 16000, channels: int = 1, stamped: bool = True, encoder_options=None, header_first=False,
    codec: str = "libx264", container_format: str = "mp4",
) -> Path:
    """
    `pictures` (RGB) as `codec` video and, unless `samples` is None, the mono float32 `samples` (copied to every
    channel) as an AAC track in blocks of 1024, with timestamps when `stamped`. Returns `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "faststart"} if header_first else {}
    with av.open(str(path), "w", format=container_format, options=options) as container:
        video = container.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = dict(encoder_options or {})
        layout = "stereo" if channels == 2 else "mono"
        sound = container.add_stream("aac", rate=sample_rate, layout=layout) if samples is not None else None
        for picture in pictures:
            container.mux(video.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        container.mux(video.encode())
        for start in range(0, 0 if sound is None else len(samples), 1024):
            planar = np.ascontiguousarray(np.repeat(samples[None, start : start + 1024], channels, axis=0))
            frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
            frame.sample_rate = sample_rate
            if stamped:
                frame.pts, frame.time_base = start, Fraction(1, sample_rate)
            container.mux(sound.encode(frame))
        if sound is not None:
            container.mux(sound.encode())
    return path


def _tone(seconds: float, sample_rate: int, tone_hz: float, amplitude: float = 0.1) -> np.ndarray:
    time = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return amplitude * np.sin(2 * np.pi * tone_hz * time)


def write_mp4(
    path: PathLike,
    duration: float = 0.3,
    size: int = 16,
    fps: Union[int, Fraction] = 10,
    sample_rate: int = 16000,
    colour: Optional[Sequence[int]] = None,
    tone_hz: float = 440.0,
    *,
    height: Optional[int] = None,
    num_frames: Optional[int] = None,
    pattern: str = "grey",
    colours: Optional[Sequence[Sequence[int]]] = None,
    audio: bool = True,
    audio_seconds: Optional[float] = None,
    channels: int = 1,
    amplitude: float = 0.1,
    noise: float = 0.0,
    audio_pts: bool = False,
    encoder_options: Optional[Mapping[str, str]] = None,
    header_first: bool = False,
) -> Path:
    """
    A real H.264 (+ AAC) MP4, deterministic. Video: `num_frames` frames (default `duration * fps`, at least 1) of
    `size` x `height` pixels (`height` defaults to `size`) at `fps` in a pattern: "grey" (changing with the index,
    with a `colour` RGB square in the middle when given), "colours" (frame i filled with `colours[i % len(colours)]`)
    or "gradient" (moving, with noise). `encoder_options` go to libx264 (e.g. {"g": "8", "crf": "10"}). Audio, when
    `audio`: `audio_seconds` (default `duration`) of a `tone_hz` sine of `amplitude` plus white noise of standard
    deviation `noise`, AAC at `sample_rate` Hz with `channels` (1 or 2). With `audio_pts` the audio frames carry
    timestamps, so the muxer trims AAC's priming and the track declares exactly `audio_seconds`. `header_first` puts
    the header (moov) before the data, so that a file cut short still opens.
    """
    height = height or size
    rng = np.random.default_rng(0)
    count = max(1, round(duration * fps)) if num_frames is None else num_frames
    pictures = (_picture(pattern, index, size, height, colour, colours, rng) for index in range(count))
    samples = None
    if audio:
        samples = _tone(duration if audio_seconds is None else audio_seconds, sample_rate, tone_hz, amplitude)
        if noise:
            samples = samples + noise * np.random.default_rng(1).standard_normal(len(samples))
        samples = samples.astype(np.float32)
    return _write_video(path, pictures, fps, size, height, samples, sample_rate, channels, audio_pts, encoder_options,
                        header_first)


def write_scenes_mp4(
    path: PathLike, scenes: Sequence[tuple[Sequence[int], float]], size: int = 64, fps: int = 8, sample_rate=16000
) -> Path:
    """One video of `scenes`, each `(colour, tone_hz)` drawn as `write_mp4` draws a 1 s clip but slowed to 3 s (each
    frame shown three times) with its tone (none when None) in the middle second only: a conversation given as one
    video, each utterance cut out by `start`/`end` (3k + 1, 3k + 2) with one second of its own picture around it."""
    pictures = (_picture("grey", index, size, size, colour) for colour, _ in scenes for index in range(fps)
                for _ in range(3))
    silence = np.zeros(sample_rate)
    samples = np.concatenate([part for _, tone in scenes
                              for part in (silence, silence if tone is None else _tone(1, sample_rate, tone), silence)])
    return _write_video(path, pictures, fps, size, size, samples.astype(np.float32), sample_rate)


def write_meld_tree(
    root: PathLike, rows: Mapping[str, Sequence[Mapping[str, str]]], clip: Optional[PathLike] = None
) -> Path:
    """
    The official MELD layout under `root`: for each split its CSV with `rows` (dicts with MELD's column names, e.g.
    copied from a real CSV) and its clip folder, holding, when `clip` is given, a copy of it as every row's clip.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for split, (csv_name, clip_folder) in MELD_SPLIT_FILES.items():
        with open(root / csv_name, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=MELD_CSV_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows.get(split, ()))
        (root / clip_folder).mkdir(exist_ok=True)
        for row in rows.get(split, ()) if clip is not None else ():
            target = meld_clip_path(root / clip_folder, int(row["Dialogue_ID"]), int(row["Utterance_ID"]))
            shutil.copyfile(clip, target)
    return root
