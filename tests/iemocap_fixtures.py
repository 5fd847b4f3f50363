"""Test-only IEMOCAP trees: tiny AVI and WAV files and one dialogue's label and transcript files in the
`IEMOCAP_full_release` layout (the MELD tree writer and the MP4 writer stay in `magtkd_hf.datasets_scripts.synthetic`,
which the shipped sample and the benchmarks use too)."""

import shutil
from pathlib import Path
from typing import NamedTuple, Optional, Sequence, Union

import numpy as np
import soundfile

from magtkd_hf.datasets_scripts.iemocap import iemocap_dialogue_files
from magtkd_hf.datasets_scripts.synthetic import _picture, _tone, _write_video

PathLike = Union[str, Path]


def write_tiny_avi(path: PathLike, duration: float = 1.0, size: int = 16, fps: int = 10) -> Path:
    """A real MPEG-4 AVI (video only) of `duration` seconds."""
    pictures = (_picture("grey", index, size, size) for index in range(max(1, round(duration * fps))))
    return _write_video(path, pictures, fps, size, size, codec="mpeg4", container_format="avi")


def write_tiny_wav(path: PathLike, duration: float = 0.2, sample_rate: int = 16000) -> Path:
    """A 16-bit mono WAV holding a quiet sine."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), _tone(duration, sample_rate, 440.0).astype(np.float32), sample_rate, subtype="PCM_16")
    return path


# What follows each utterance line of an EmoEvaluation file: the dimensional rating, then annotators' lines.
VAD = "[2.5000, 2.5000, 2.5000]"
ANNOTATOR_LINES = ("C-E2:\tNeutral;\t()", "C-E3:\tNeutral;\t()", "A-E3:\tval 3; act 2; dom  2;\t()", "")


class SyntheticIemocapUtterance(NamedTuple):
    """One line of an EmoEvaluation file and its transcript."""

    utterance_id: str
    label: str
    start_time: float
    end_time: float
    text: str


def write_iemocap_dialogue(
    root: PathLike,
    dialogue: str,
    utterances: Sequence[SyntheticIemocapUtterance],
    extra_transcript_lines: Sequence[str] = (),
    wav: Optional[PathLike] = None,
    video: Optional[PathLike] = None,
) -> dict[str, Path]:
    """
    One dialogue in the `IEMOCAP_full_release` layout: its EmoEvaluation file (header, then the utterance lines in
    the given order, each with annotator lines), its transcription (by start time, plus `extra_transcript_lines`),
    and, when given, a copy of `wav` per utterance and of `video` as the dialogue's AVI. Returns the dialogue's paths.
    """
    files = iemocap_dialogue_files(root, dialogue)
    for kind in ("evaluation", "transcription", "video"):
        files[kind].parent.mkdir(parents=True, exist_ok=True)
    evaluation = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
    for u in utterances:
        evaluation += [f"[{u.start_time:.4f} - {u.end_time:.4f}]\t{u.utterance_id}\t{u.label}\t{VAD}", *ANNOTATOR_LINES]
    files["evaluation"].write_text("\n".join(evaluation) + "\n", encoding="utf-8")
    transcript = [f"{u.utterance_id} [{u.start_time:08.4f}-{u.end_time:08.4f}]: {u.text}"
                  for u in sorted(utterances, key=lambda u: u.start_time)]
    files["transcription"].write_text("\n".join([*transcript, *extra_transcript_lines]) + "\n", encoding="utf-8")
    if wav is not None:
        files["wav_dir"].mkdir(parents=True, exist_ok=True)
        for utterance in utterances:
            shutil.copyfile(wav, files["wav_dir"] / f"{utterance.utterance_id}.wav")
    if video is not None:
        shutil.copyfile(video, files["video"])
    return files
