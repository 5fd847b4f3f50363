"""IEMOCAP (Busso et al., 2008), 6-class setting: the `IEMOCAP_full_release` folder -> `datasets.DatasetDict`."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from datasets import Features, List, Value

from ..configuration_magtkd import IEMOCAP_LABELS
from .corpus import (
    DEFAULT_MAX_CLIP_DURATION,
    DUPLICATE,
    END_BEFORE_START,
    Corpus,
    DialogueRecord,
    LabelFilesError,
    LabelProblem,
    UtteranceRecord,
    build_dataset_dict,
    class_label,
    class_label_index,
    decode_text_file,
)
from .media import MediaFile

logger = logging.getLogger(__name__)

# The standard MAGTKD/TelME dialogue split (sessions 1-4 train/dev, session 5 test), shipped with the package.
DEFAULT_IEMOCAP_SPLIT_FILE = Path(__file__).with_name("iemocap_split.json")
# split.json's keys -> the DatasetDict's split names.
_SPLIT_NAMES = {"train": "train", "dev": "validation", "test": "test"}

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


@dataclass(frozen=True)
class EvaluatedUtterance:
    """One `[start - end]  utterance_id  label  [v, a, d]` line of an EmoEvaluation file."""

    utterance_id: str
    label: str
    start_time: float
    end_time: float


def iemocap_features() -> Features:
    """The row schema of `load_iemocap`."""
    return Features(
        {
            "dialogue_id": Value("string"),
            "utterance_ids": List(Value("string")),
            "speakers": List(Value("string")),
            "texts": List(Value("string")),
            "labels": List(class_label(IEMOCAP_LABELS)),
            "audio_paths": List(Value("string")),
            "video_paths": List(Value("string")),
            "start_times": List(Value("float32")),
            "end_times": List(Value("float32")),
        }
    )


def read_iemocap_split_file(split_file: Union[str, Path, None] = None) -> dict[str, list[str]]:
    """`{"train": [...], "validation": [...], "test": [...]}` dialogue names from a split.json (`{"splits": {...}}`)."""
    split_file = Path(split_file) if split_file is not None else DEFAULT_IEMOCAP_SPLIT_FILE
    content = json.loads(Path(split_file).read_text(encoding="utf-8"))
    splits = content.get("splits", content)
    absent = [key for key in _SPLIT_NAMES if key not in splits]
    if absent:
        raise ValueError(f"{split_file}: no dialogue list for {absent} (expected keys {list(_SPLIT_NAMES)})")
    return {name: list(splits[key]) for key, name in _SPLIT_NAMES.items()}


def iemocap_session_dir(root: Union[str, Path], dialogue: str) -> Path:
    """`Ses03M_impro02` -> `root/Session3`."""
    match = _DIALOGUE_NAME.match(dialogue)
    if match is None:
        raise ValueError(f"not an IEMOCAP dialogue name: {dialogue!r}")
    return Path(root) / f"Session{int(match.group(1))}"


def iemocap_dialogue_files(root: Union[str, Path], dialogue: str) -> dict[str, Path]:
    """The release's files of one dialogue: `evaluation`, `transcription`, `video`, and the `wav_dir` folder."""
    session = iemocap_session_dir(root, dialogue)
    return {
        "evaluation": session / "dialog" / "EmoEvaluation" / f"{dialogue}.txt",
        "transcription": session / "dialog" / "transcriptions" / f"{dialogue}.txt",
        "video": session / "dialog" / "avi" / "DivX" / f"{dialogue}.avi",
        "wav_dir": session / "sentences" / "wav" / dialogue,
    }


def iemocap_speaker(utterance_id: str) -> str:
    """`Ses01F_impro01_F000` -> `F`: the character after the last `_`."""
    return utterance_id.rsplit("_", 1)[-1][:1]


def parse_emo_evaluation(text: str) -> list[EvaluatedUtterance]:
    """The utterance lines of an EmoEvaluation file, in file order (annotator and header lines are ignored)."""
    utterances = []
    for line in text.splitlines():
        match = _EVALUATION_LINE.match(line.strip())
        if match:
            start, end, utterance_id, label = match.groups()
            utterances.append(EvaluatedUtterance(utterance_id, label, float(start), float(end)))
    return utterances


def parse_transcription(text: str) -> dict[str, str]:
    """`{utterance_id: text}` from a transcription file; lines without `id [start-end]:` are ignored."""
    texts = {}
    for line in text.splitlines():
        match = _TRANSCRIPTION_LINE.match(line.strip())
        if match:
            texts[match.group(1)] = match.group(2).strip()
    return texts


def read_iemocap_dialogue(
    root: Union[str, Path], split: str, dialogue: str
) -> tuple[Optional[DialogueRecord], Counter, list[str], list[LabelProblem]]:
    """
    One dialogue's kept utterances (6 classes, EmoEvaluation order), the count of other labels left out, the faults
    found (absent files, utterances without transcript), each naming split, dialogue, utterance and file, and the
    utterances left out as `LabelProblem`s: end before start, and an utterance on several lines (identical lines:
    the first is kept; lines that differ: all are left out).
    """
    files = iemocap_dialogue_files(root, dialogue)
    absent = [f"{split} / dialogue {dialogue}: {kind} file {files[kind]} not found"
              for kind in ("evaluation", "transcription") if not files[kind].is_file()]
    if absent:
        return None, Counter(), absent, []
    evaluated = parse_emo_evaluation(decode_text_file(files["evaluation"]))
    texts = parse_transcription(decode_text_file(files["transcription"]))
    label_index = class_label_index(IEMOCAP_LABELS)
    faults, problems, excluded, by_id = [], [], Counter(), {}
    if not evaluated:
        faults.append(f"{split} / dialogue {dialogue}: no utterance line in {files['evaluation']}")
    source = str(files["evaluation"])
    for item in evaluated:
        where = f"{split} / dialogue {dialogue} / utterance {item.utterance_id}"
        if item.label not in label_index:
            excluded[item.label] += 1
            continue
        if not item.utterance_id.startswith(f"{dialogue}_"):
            faults.append(f"{where}: the id does not belong to this dialogue ({files['evaluation']})")
            continue
        if item.utterance_id not in texts:
            faults.append(f"{where}: no transcript line in {files['transcription']}")
            continue
        if item.end_time < item.start_time:
            reason = (f"utterance {item.utterance_id}: end {item.end_time:g} s is before start {item.start_time:g} s; "
                      "it is left out")
            problems.append(LabelProblem(split, END_BEFORE_START, source, reason, dialogue, (item.utterance_id,)))
            continue
        by_id.setdefault(item.utterance_id, []).append(item)
    utterances = []
    for utterance_id, copies in by_id.items():
        if len(copies) > 1:
            if all(copy == copies[0] for copy in copies):
                reason = f"utterance {utterance_id} is listed {len(copies)} times; the first is kept"
                problems.append(LabelProblem(split, DUPLICATE, source, reason, dialogue))
            else:
                reason = (f"utterance {utterance_id} is listed {len(copies)} times with different labels or "
                          "times; all are left out")
                problems.append(LabelProblem(split, DUPLICATE, source, reason, dialogue, (utterance_id,)))
                continue
        utterances.append(_iemocap_utterance(copies[0], texts[utterance_id], files, label_index))
    return DialogueRecord(dialogue, tuple(utterances)), excluded, faults, problems


def _iemocap_utterance(item: EvaluatedUtterance, text: str, files: dict[str, Path], label_index) -> UtteranceRecord:
    audio_path = str(files["wav_dir"] / f"{item.utterance_id}.wav")
    video_path = str(files["video"])
    values = {
        "utterance_ids": item.utterance_id,
        "speakers": iemocap_speaker(item.utterance_id),
        "texts": text,
        "labels": label_index[item.label],
        "audio_paths": audio_path,
        "video_paths": video_path,
        "start_times": item.start_time,
        "end_times": item.end_time,
    }
    media = (MediaFile(audio_path, ("audio",)), MediaFile(video_path, ("video",), is_utterance_clip=False))
    return UtteranceRecord(item.utterance_id, values, media)


def read_iemocap_corpus(
    root: Union[str, Path], split_file: Union[str, Path, None] = None, strict: bool = True
) -> Corpus:
    """
    Reads the label and transcription files of every split.json dialogue; one `LabelFilesError` lists all faults
    (with `strict=False` they are returned in the corpus's `label_faults` instead, the faulty utterances left out).
    Utterances a build refuses unless `on_missing="drop"` are in `label_problems`. A split file that cannot be read
    raises in both modes.
    """
    root = Path(root).expanduser().absolute()
    split_path = Path(split_file) if split_file is not None else DEFAULT_IEMOCAP_SPLIT_FILE
    splits, excluded_labels, faults, problems = {}, {}, [], []
    split_keys = {name: key for key, name in _SPLIT_NAMES.items()}
    sources = {split: f"{split_path}, list {split_keys[split]!r}" for split in _SPLIT_NAMES.values()}
    for split, dialogue_names in read_iemocap_split_file(split_file).items():
        splits[split], excluded_labels[split] = [], Counter()
        for dialogue in dialogue_names:
            record, excluded, dialogue_faults, dialogue_problems = read_iemocap_dialogue(root, split, dialogue)
            faults += dialogue_faults
            problems += dialogue_problems
            excluded_labels[split] += excluded
            if record is not None and record.utterances:
                splits[split].append(record)
    if faults and strict:
        raise LabelFilesError("IEMOCAP", faults)
    for split, counts in excluded_labels.items():
        if counts:
            logger.info("IEMOCAP %s: left out %d utterance(s) labelled %s", split, sum(counts.values()), dict(counts))
    return Corpus("IEMOCAP", str(root), splits, IEMOCAP_LABELS, iemocap_features(), excluded_labels,
                  label_problems=problems, label_faults=faults, split_sources=sources)


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
        check_media (`bool`, defaults to `True`): open every WAV's and dialogue AVI's header (PyAV, no decoding).
            `False` builds from the label files alone.
        on_missing (`str`, defaults to `"raise"`): `"raise"`: utterances whose end is before their start, an
            utterance listed twice and an empty split (e.g. every validation utterance labelled outside the six
            classes) raise one `LabelProblemsError`; then one `MediaProblemsError` lists every missing or unreadable
            file. `"drop"`: those utterances and the ones needing missing files are left out (a missing AVI drops
            its whole dialogue; of identical repeated lines the first is kept) and a split left empty is built
            empty, all logged and recorded in `info.description`. A file is never replaced.
        max_clip_duration (`float`, *optional*, defaults to 30): utterance WAVs longer than this many seconds are
            logged. `None` turns this off.
        num_workers (`int`, defaults to 8): threads opening (or decoding) media files.
        decode (`bool`, defaults to `False`): decode every WAV and dialogue AVI fully instead of reading its header,
            so that a file cut after a good header counts as unreadable (much dearer: whole dialogue videos).

    Raises:
        `LabelFilesError`: label or transcription files are absent or inconsistent (all faults listed).
        `LabelProblemsError` (a `LabelFilesError`): with `on_missing="raise"`, end-before-start or repeated
            utterances, or an empty split (all of them listed, with split and file).
        `MediaProblemsError`: with `on_missing="raise"`, media files are missing or unreadable (all of them listed).
    """
    corpus = read_iemocap_corpus(root, split_file)
    return build_dataset_dict(
        corpus, IEMOCAP_DESCRIPTION, check_media, on_missing, max_clip_duration, num_workers, decode=decode
    )
