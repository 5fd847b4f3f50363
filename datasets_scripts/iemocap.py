"""IEMOCAP (Busso et al., 2008), 6-class setting: the `IEMOCAP_full_release` folder -> `datasets.DatasetDict`."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import NamedTuple, Optional, Union

from datasets import Value

from ..configuration_magtkd import IEMOCAP_LABELS
from .corpus import (
    DEFAULT_MAX_CLIP_DURATION,
    Corpus,
    LabelRow,
    build_dataset_dict,
    check_release_root,
    conversation_features,
    counts_text,
    decode_text_file,
)
from .media import MediaFile

logger = logging.getLogger(__name__)

# The standard MAGTKD/TelME dialogue split (sessions 1-4 train/dev, session 5 test), shipped with the package.
DEFAULT_IEMOCAP_SPLIT_FILE = Path(__file__).with_name("iemocap_split.json")
# split.json's keys -> the DatasetDict's split names.
IEMOCAP_SPLIT_KEYS = {"train": "train", "dev": "validation", "test": "test"}
IEMOCAP_FEATURES = conversation_features("string", IEMOCAP_LABELS, audio_paths=Value("string"))

IEMOCAP_DESCRIPTION = (
    "IEMOCAP (Busso et al., 2008), 6-class setting (ang, exc, fru, hap, neu, sad; other labels dropped): dyadic "
    "sessions, one row per dialogue, utterances in the order of the EmoEvaluation file. Audio is the utterance WAV, "
    "video the whole dialogue's AVI, to be cut to [start - 1 s, end + 1 s] by the processor; times in seconds."
)

# `[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]`
_EVALUATION_LINE = re.compile(r"^\[\s*(\d+(?:\.\d*)?)\s*-\s*(\d+(?:\.\d*)?)\s*\]\s+(\S+)\s+(\S+)\s+\[")
# `Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.`
_TRANSCRIPTION_LINE = re.compile(r"^(\S+)\s+\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s*:\s?(.*)$")
_DIALOGUE_NAME = re.compile(r"^Ses(\d{2})[FM]_\S+$")


class EvaluatedUtterance(NamedTuple):
    """One `[start - end]  utterance_id  label  [v, a, d]` line of an EmoEvaluation file (`line`: its number)."""

    utterance_id: str
    label: str
    start_time: float
    end_time: float
    line: int = 0


def read_iemocap_split_file(split_file: Union[str, Path]) -> dict[str, list[str]]:
    """`{"train": [...], "validation": [...], "test": [...]}` dialogue names from a split.json (`{"splits": {...}}`)."""
    content = json.loads(Path(split_file).read_text(encoding="utf-8"))
    splits = content.get("splits", content)
    absent = [key for key in IEMOCAP_SPLIT_KEYS if key not in splits]
    if absent:
        raise ValueError(f"{split_file}: no dialogue list for {absent} (expected keys {list(IEMOCAP_SPLIT_KEYS)})")
    return {name: list(splits[key]) for key, name in IEMOCAP_SPLIT_KEYS.items()}


def iemocap_dialogue_files(root: Union[str, Path], dialogue: str) -> dict[str, Path]:
    """The release's files of one dialogue: `evaluation`, `transcription`, `video`, and the `wav_dir` folder."""
    match = _DIALOGUE_NAME.match(dialogue)
    if match is None:
        raise ValueError(f"not an IEMOCAP dialogue name: {dialogue!r}")
    session = Path(root) / f"Session{int(match.group(1))}"
    return {
        "evaluation": session / "dialog" / "EmoEvaluation" / f"{dialogue}.txt",
        "transcription": session / "dialog" / "transcriptions" / f"{dialogue}.txt",
        "video": session / "dialog" / "avi" / "DivX" / f"{dialogue}.avi",
        "wav_dir": session / "sentences" / "wav" / dialogue,
    }


def parse_emo_evaluation(text: str) -> list[EvaluatedUtterance]:
    """The utterance lines of an EmoEvaluation file, in file order (annotator and header lines are ignored)."""
    utterances = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = _EVALUATION_LINE.match(line.strip())
        if match:
            start, end, utterance_id, label = match.groups()
            utterances.append(EvaluatedUtterance(utterance_id, label, float(start), float(end), number))
    return utterances


def parse_transcription(text: str) -> dict[str, str]:
    """`{utterance_id: text}` from a transcription file; lines without `id [start-end]:` are ignored."""
    matches = (_TRANSCRIPTION_LINE.match(line.strip()) for line in text.splitlines())
    return {match.group(1): match.group(2).strip() for match in matches if match}


def _iemocap_utterance(item: EvaluatedUtterance, text: str, files: dict[str, Path]) -> dict:
    audio_path, video_path = str(files["wav_dir"] / f"{item.utterance_id}.wav"), str(files["video"])
    return {
        "utterance_ids": item.utterance_id, "speakers": item.utterance_id.rsplit("_", 1)[-1][:1], "texts": text,
        "labels": item.label, "audio_paths": audio_path, "video_paths": video_path, "start_times": item.start_time,
        "end_times": item.end_time,
        "media": (MediaFile(audio_path, ("audio",)), MediaFile(video_path, ("video",), is_utterance_clip=False)),
    }


def _read_iemocap_dialogue(corpus: Corpus, split: str, dialogue: str) -> list[LabelRow]:
    """The label rows of one dialogue's six-class utterances; faults name split, dialogue, utterance and file."""
    files = iemocap_dialogue_files(corpus.root, dialogue)
    where = f"{split} / dialogue {dialogue}"
    absent = [f"{where}: {kind} file {files[kind]} not found" for kind in ("evaluation", "transcription")
              if not files[kind].is_file()]
    if absent:
        corpus.label_faults += absent
        return []
    evaluated = parse_emo_evaluation(decode_text_file(files["evaluation"]))
    texts = parse_transcription(decode_text_file(files["transcription"]))
    if not evaluated:
        corpus.label_faults.append(f"{where}: no utterance line in {files['evaluation']}")
    rows = []
    for item in evaluated:
        fault = None
        if item.label not in IEMOCAP_LABELS:
            corpus.excluded_labels[split][item.label] += 1
        elif not item.utterance_id.startswith(f"{dialogue}_"):
            fault = f"the id does not belong to this dialogue ({files['evaluation']})"
        elif item.utterance_id not in texts:
            fault = f"no transcript line in {files['transcription']}"
        else:
            utterance = _iemocap_utterance(item, texts[item.utterance_id], files)
            rows.append(LabelRow(dialogue, utterance, str(files["evaluation"]), item.line, str(item.start_time),
                                 str(item.end_time)))
        if fault:
            corpus.label_faults.append(f"{where} / utterance {item.utterance_id}: {fault}")
    return rows


def read_iemocap_corpus(root: Union[str, Path], split_file: Union[str, Path, None] = None) -> Corpus:
    """
    The label and transcription files of every split.json dialogue, every fault in `label_faults` (the faulty
    utterances left out). A split file that cannot be read raises (`ValueError`, `OSError`).
    """
    split_file = Path(split_file) if split_file is not None else DEFAULT_IEMOCAP_SPLIT_FILE
    dialogues = read_iemocap_split_file(split_file)
    root = Path(root).expanduser().absolute()
    sessions = [f"Session{number}" for number in range(1, 6)]
    check_release_root("IEMOCAP", root, sessions, "the IEMOCAP_full_release folder, holding Session1 ... Session5")
    corpus = Corpus("IEMOCAP", str(root), IEMOCAP_FEATURES)
    for key, split in IEMOCAP_SPLIT_KEYS.items():
        corpus.split_sources[split] = f"{split_file}, list {key!r}"
        corpus.excluded_labels[split] = Counter()
        corpus.add_split(split, [row for name in dialogues[split]
                                 for row in _read_iemocap_dialogue(corpus, split, name)])
        if corpus.excluded_labels[split]:
            logger.info("IEMOCAP %s: left out labels %s", split, counts_text(corpus.excluded_labels[split]))
    return corpus


def load_iemocap(
    root: Union[str, Path],
    split_file: Union[str, Path, None] = None,
    check_media: bool = True,
    on_missing: str = "raise",
    max_clip_duration: Optional[float] = DEFAULT_MAX_CLIP_DURATION,
    num_workers: int = 8,
    decode: bool = False,
):
    r"""
    Builds IEMOCAP (6 classes) from the `IEMOCAP_full_release` folder.

    Reads `SessionK/dialog/EmoEvaluation/<dialog>.txt` (labels, times) and `SessionK/dialog/transcriptions/<dialog>.txt`
    for every dialogue of the split file. Returns a `DatasetDict` with `train`, `validation` (split.json's `dev`) and
    `test`, one row per dialogue in the split file's order, with `dialogue_id` and the per-utterance lists
    `utterance_ids`, `speakers` (`F`/`M`), `texts`, `labels` (`ClassLabel` over `IEMOCAP_LABELS`), `audio_paths`
    (`SessionK/sentences/wav/<dialog>/<utt>.wav`), `video_paths` (the dialogue's
    `SessionK/dialog/avi/DivX/<dialog>.avi`), `start_times`, `end_times` (seconds, float32). Utterances keep the
    EmoEvaluation file's order; those labelled other than ang, exc, fru, hap, neu, sad are dropped.

    Args:
        root (`str` or `Path`): the `IEMOCAP_full_release` folder (holding `Session1` ... `Session5`).
        split_file (`str` or `Path`, *optional*): a split.json (`{"splits": {"train": [...], "dev": [...], "test":
            [...]}}`); defaults to the standard split shipped with the package.
        check_media, on_missing, max_clip_duration, num_workers, decode: as in `load_meld`, for every utterance WAV
            and dialogue AVI (a missing AVI drops its whole dialogue under `on_missing="drop"`; only the WAVs are
            held to `max_clip_duration`; `decode` is much dearer here: whole dialogue videos). An empty split (e.g.
            every validation utterance labelled outside the six classes) is refused like in `load_meld`.

    Raises:
        As `load_meld`; `LabelFilesError` also for absent or inconsistent transcription files.
    """
    corpus = read_iemocap_corpus(root, split_file)
    return build_dataset_dict(corpus, IEMOCAP_DESCRIPTION, check_media, on_missing, max_clip_duration, num_workers,
                              decode)
