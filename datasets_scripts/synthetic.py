"""
Small synthetic release trees in the official MELD and IEMOCAP layouts, with tiny real media files: for tests, demos,
and trying the pipeline without the licensed data. Nothing here is used when building from a real release.
`write_mp4` is the project's one MP4 writer (tests, the shipped sample data, benchmarks).
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

import av
import numpy as np
import soundfile

from .iemocap import iemocap_dialogue_files
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


def _picture(pattern: str, index: int, width: int, height: int, colour, colours, rng) -> np.ndarray:
    """Frame `index` (RGB, height x width) of one of the picture patterns of `write_mp4`."""
    if pattern == "colours":  # solid frames, frame i in colours[i % len(colours)]
        image = np.empty((height, width, 3), dtype=np.uint8)
        image[:] = colours[index % len(colours)]
        return image
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


def _encode_video_frames(container, stream, num_frames: int, picture) -> None:
    for index in range(num_frames):
        for packet in stream.encode(av.VideoFrame.from_ndarray(picture(index), format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def _encode_tone(container, stream, samples: np.ndarray, sample_rate: int, channels: int, stamped: bool) -> None:
    """Encodes mono float32 `samples` (copied to every channel) in blocks of 1024, with timestamps when `stamped`."""
    layout = "stereo" if channels == 2 else "mono"
    for start in range(0, len(samples), 1024):
        chunk = samples[start : start + 1024]
        planar = np.ascontiguousarray(np.repeat(chunk[None, :], channels, axis=0))
        frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        if stamped:
            frame.pts, frame.time_base = start, Fraction(1, sample_rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


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
    The project's MP4 writer (tests, the sample data, benchmarks): a real H.264 (+ AAC) MP4.

    Video: `num_frames` frames (default `duration * fps`, at least 1) of `size` x `height` pixels (`height` defaults to
    `size`) at `fps` (an int or a Fraction), in one of these patterns: "grey" (grey frames changing with the index,
    with a `colour` RGB square in the middle when given), "colours" (frame i filled with `colours[i % len(colours)]`)
    or "gradient" (a moving gradient with noise). `encoder_options` go to libx264 (e.g. {"g": "8", "crf": "10"}).
    Audio, when `audio`: `audio_seconds` (default `duration`) of a `tone_hz` sine of `amplitude` (plus white noise of
    standard deviation `noise`), AAC at `sample_rate` Hz, mono or stereo (`channels`). With `audio_pts` the audio frames
    carry timestamps, so the muxer trims AAC's 1024-sample priming and the sound track declares exactly `audio_seconds`;
    without (as the shipped sample clips were written), its declared duration includes the priming. `header_first` puts
    the header (moov) before the data ("faststart"), so that a file cut short still opens. Deterministic; returns
    `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size, height or size
    rng = np.random.default_rng(0)
    options = {"movflags": "faststart"} if header_first else {}
    with av.open(str(path), "w", format="mp4", options=options) as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = dict(encoder_options or {})
        layout = "stereo" if channels == 2 else "mono"
        sound = container.add_stream("aac", rate=sample_rate, layout=layout) if audio else None
        count = max(1, round(duration * fps)) if num_frames is None else num_frames
        picture = lambda index: _picture(pattern, index, width, height, colour, colours, rng)  # noqa: E731
        _encode_video_frames(container, video, count, picture)
        if sound is not None:
            seconds = duration if audio_seconds is None else audio_seconds
            time = np.arange(int(round(seconds * sample_rate))) / sample_rate
            samples = amplitude * np.sin(2 * np.pi * tone_hz * time)
            if noise:
                samples = samples + noise * rng.standard_normal(len(time))
            _encode_tone(container, sound, samples.astype(np.float32), sample_rate, channels, audio_pts)
    return path


def write_scenes_mp4(
    path: PathLike, scenes: Sequence[tuple[Sequence[int], float]], size: int = 64, fps: int = 8,
    sample_rate: int = 16000,
) -> Path:
    """One video of `scenes`, each `(colour, tone_hz)` drawn as `write_mp4` draws a 1 s clip but slowed to 3 s (each
    frame shown three times) with its tone in the middle second only: a conversation given as one video, each
    utterance cut out by `start`/`end` (3k + 1, 3k + 2) with one second of its own picture around it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures = [(colour, index) for colour, _ in scenes for index in range(fps) for _ in range(3)]
    second = np.arange(sample_rate) / sample_rate
    silence = np.zeros(sample_rate)
    samples = np.concatenate([piece for _, tone in scenes for piece in (silence, 0.1 * np.sin(2 * np.pi * tone * second), silence)])
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = size, size, "yuv420p"
        sound = container.add_stream("aac", rate=sample_rate, layout="mono")
        picture = lambda frame: _picture("grey", pictures[frame][1], size, size, pictures[frame][0], None, None)  # noqa: E731
        _encode_video_frames(container, video, len(pictures), picture)
        _encode_tone(container, sound, samples.astype(np.float32), sample_rate, 1, True)
    return path


# The former name of `write_mp4` (datasets_scripts/sample.py writes the shipped sample clips with it).
write_tiny_mp4 = write_mp4


def write_tiny_avi(path: PathLike, duration: float = 1.0, size: int = 16, fps: int = 10) -> Path:
    """A real MPEG-4 AVI (video only) of `duration` seconds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="avi") as container:
        video = container.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = size, size, "yuv420p"
        picture = lambda index: _picture("grey", index, size, size, None, None, None)  # noqa: E731
        _encode_video_frames(container, video, max(1, round(duration * fps)), picture)
    return path


def write_tiny_wav(path: PathLike, duration: float = 0.2, sample_rate: int = 16000) -> Path:
    """A 16-bit mono WAV holding a quiet sine."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    time = np.arange(int(duration * sample_rate)) / sample_rate
    samples = (0.1 * np.sin(2 * np.pi * 440.0 * time)).astype(np.float32)
    soundfile.write(str(path), samples, sample_rate, subtype="PCM_16")
    return path


def write_meld_tree(
    root: PathLike, rows: Mapping[str, Sequence[Mapping[str, str]]], clip: Optional[PathLike] = None
) -> Path:
    """
    Writes the official MELD layout under `root`: for each split (`train`, `validation`, `test`) its CSV with `rows`
    (dicts with MELD's column names, e.g. copied from a real CSV) and, when `clip` is given, a copy of that file
    as every row's `dia{d}_utt{u}.mp4`.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for split, (csv_name, clip_folder) in MELD_SPLIT_FILES.items():
        with open(root / csv_name, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=MELD_CSV_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows.get(split, ()))
        (root / clip_folder).mkdir(exist_ok=True)
        if clip is not None:
            for row in rows.get(split, ()):
                target = meld_clip_path(root / clip_folder, int(row["Dialogue_ID"]), int(row["Utterance_ID"]))
                shutil.copyfile(clip, target)
    return root


@dataclass(frozen=True)
class SyntheticIemocapUtterance:
    """One line of an EmoEvaluation file and its transcript."""

    utterance_id: str
    label: str
    start_time: float
    end_time: float
    text: str


def _emo_evaluation_text(utterances: Iterable[SyntheticIemocapUtterance]) -> str:
    lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
    for utterance in utterances:
        lines += [
            f"[{utterance.start_time:.4f} - {utterance.end_time:.4f}]\t{utterance.utterance_id}\t{utterance.label}\t"
            "[2.5000, 2.5000, 2.5000]",
            "C-E2:\tNeutral;\t()",
            "C-E3:\tNeutral;\t()",
            "A-E3:\tval 3; act 2; dom  2;\t()",
            "",
        ]
    return "\n".join(lines) + "\n"


def _transcription_text(utterances: Iterable[SyntheticIemocapUtterance], extra_lines: Sequence[str]) -> str:
    lines = [
        f"{utterance.utterance_id} [{utterance.start_time:08.4f}-{utterance.end_time:08.4f}]: {utterance.text}"
        for utterance in sorted(utterances, key=lambda u: u.start_time)
    ]
    return "\n".join([*lines, *extra_lines]) + "\n"


def write_iemocap_dialogue(
    root: PathLike,
    dialogue: str,
    utterances: Sequence[SyntheticIemocapUtterance],
    extra_transcript_lines: Sequence[str] = (),
    wav: Optional[PathLike] = None,
    video: Optional[PathLike] = None,
) -> dict[str, Path]:
    """
    Writes one dialogue in the `IEMOCAP_full_release` layout: its EmoEvaluation file (header, utterance lines with
    annotator lines, in the given order), its transcription (sorted by start time, plus `extra_transcript_lines`),
    and, when given, a copy of `wav` per utterance and of `video` as the dialogue's AVI. Returns the dialogue's paths.
    """
    files = iemocap_dialogue_files(root, dialogue)
    for kind in ("evaluation", "transcription", "video"):
        files[kind].parent.mkdir(parents=True, exist_ok=True)
    files["evaluation"].write_text(_emo_evaluation_text(utterances), encoding="utf-8")
    files["transcription"].write_text(_transcription_text(utterances, extra_transcript_lines), encoding="utf-8")
    if wav is not None:
        files["wav_dir"].mkdir(parents=True, exist_ok=True)
        for utterance in utterances:
            shutil.copyfile(wav, files["wav_dir"] / f"{utterance.utterance_id}.wav")
    if video is not None:
        shutil.copyfile(video, files["video"])
    return files
