"""
Small synthetic release trees in the official MELD and IEMOCAP layouts, with tiny real media files: for tests, demos,
and trying the pipeline without the licensed data. Nothing here is used when building from a real release.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
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


def _encode_video_frames(container, stream, num_frames: int, size: int, colour=None) -> None:
    for index in range(num_frames):
        image = np.full((size, size, 3), (index * 23) % 256, dtype=np.uint8)
        if colour is not None:  # a coloured square on the changing grey background
            image[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = colour
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def _encode_sine(container, stream, duration: float, sample_rate: int, tone_hz: float = 440.0) -> None:
    time = np.arange(int(duration * sample_rate)) / sample_rate
    samples = (0.1 * np.sin(2 * np.pi * tone_hz * time)).astype(np.float32)
    for start in range(0, len(samples), 1024):
        frame = av.AudioFrame.from_ndarray(samples[None, start : start + 1024], format="fltp", layout="mono")
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def write_tiny_mp4(
    path: PathLike,
    duration: float = 0.3,
    size: int = 16,
    fps: int = 10,
    sample_rate: int = 16000,
    colour: Optional[Sequence[int]] = None,
    tone_hz: float = 440.0,
) -> Path:
    """
    A real H.264 + AAC MP4 of `duration` seconds, `size` x `size` pixels (a few kilobytes): grey frames (with a
    `colour` RGB square when given) and a quiet `tone_hz` sine.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = size, size, "yuv420p"
        audio = container.add_stream("aac", rate=sample_rate, layout="mono")
        _encode_video_frames(container, video, max(1, round(duration * fps)), size, colour)
        _encode_sine(container, audio, duration, sample_rate, tone_hz)
    return path


def write_tiny_avi(path: PathLike, duration: float = 1.0, size: int = 16, fps: int = 10) -> Path:
    """A real MPEG-4 AVI (video only) of `duration` seconds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="avi") as container:
        video = container.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = size, size, "yuv420p"
        _encode_video_frames(container, video, max(1, round(duration * fps)), size)
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
