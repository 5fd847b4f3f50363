"""MELD (Poria et al., 2019): the official split CSVs and clip folders -> `datasets.DatasetDict`, a row per dialogue."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Optional, Union

from datasets import Features, List, Value

from ..configuration_magtkd import MELD_LABELS
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

MELD_SENTIMENTS = ("negative", "neutral", "positive")

# split -> (label CSV, clip folder), as in the official release.
MELD_SPLIT_FILES = {
    "train": ("train_sent_emo.csv", "train_splits"),
    "validation": ("dev_sent_emo.csv", "dev_splits_complete"),
    "test": ("test_sent_emo.csv", "output_repeated_splits_test"),
}
MELD_REQUIRED_COLUMNS = (
    "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "StartTime", "EndTime"
)

MELD_DESCRIPTION = (
    "MELD (Poria et al., 2019, GPL-3.0): multi-party conversations from the TV series Friends, one row per dialogue. "
    "Video (with its sound track) stays a path to the official clip dia{d}_utt{u}.mp4; times are the CSV's, in seconds."
)

# `0:02:57,802` and `00:02:48,021` both occur; three rows have two fraction digits (`00:05:11,82`), read as a decimal
# fraction of a second.
_TIMESTAMP = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2})(?:[,.](\d+))?$")


def meld_features() -> Features:
    """The row schema of `load_meld`."""
    return Features(
        {
            "dialogue_id": Value("int32"),
            "utterance_ids": List(Value("int32")),
            "speakers": List(Value("string")),
            "texts": List(Value("string")),
            "labels": List(class_label(MELD_LABELS)),
            "sentiments": List(class_label(MELD_SENTIMENTS)),
            "video_paths": List(Value("string")),
            "start_times": List(Value("float32")),
            "end_times": List(Value("float32")),
        }
    )


def parse_meld_timestamp(timestamp: str) -> float:
    """`"0:02:57,802"` or `"00:02:48,021"` (hours:minutes:seconds,fraction) -> seconds as a float."""
    match = _TIMESTAMP.match(timestamp.strip())
    if match is None:
        raise ValueError(f"not a MELD timestamp (H:MM:SS,mmm): {timestamp!r}")
    hours, minutes, seconds, fraction = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + int(seconds) + (float(f"0.{fraction}") if fraction else 0.0)


def read_meld_csv(csv_path: Union[str, Path]) -> list[dict[str, str]]:
    """The rows of one official MELD CSV, decoded robustly (see `decode_text_file`), text kept as it is."""
    reader = csv.DictReader(io.StringIO(decode_text_file(csv_path), newline=""))
    absent = [column for column in MELD_REQUIRED_COLUMNS if column not in (reader.fieldnames or ())]
    if absent:
        raise LabelFilesError("MELD", [f"{csv_path}: columns {absent} are missing (found {reader.fieldnames})"])
    return list(reader)


def meld_clip_path(clip_dir: Union[str, Path], dialogue_id: int, utterance_id: int) -> str:
    """The official clip of utterance `utterance_id` of dialogue `dialogue_id`."""
    return str(Path(clip_dir) / f"dia{dialogue_id}_utt{utterance_id}.mp4")


def _meld_utterance(row: dict[str, str], clip_dir: Path, line_number: int, csv_path: Path) -> UtteranceRecord:
    """One CSV row -> an utterance record; raises `ValueError` naming the file, line, dialogue and utterance."""
    where = (
        f"{csv_path}, line {line_number}, dialogue {row.get('Dialogue_ID')!r}, utterance {row.get('Utterance_ID')!r}"
    )
    try:
        dialogue_id, utterance_id = int(row["Dialogue_ID"]), int(row["Utterance_ID"])
        emotion, sentiment = row["Emotion"].strip().lower(), row["Sentiment"].strip().lower()
        if emotion not in MELD_LABELS:
            raise ValueError(f"unknown emotion {row['Emotion']!r} (expected one of {MELD_LABELS})")
        if sentiment not in MELD_SENTIMENTS:
            raise ValueError(f"unknown sentiment {row['Sentiment']!r} (expected one of {MELD_SENTIMENTS})")
        start_time, end_time = parse_meld_timestamp(row["StartTime"]), parse_meld_timestamp(row["EndTime"])
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    video_path = meld_clip_path(clip_dir, dialogue_id, utterance_id)
    values = {
        "utterance_ids": utterance_id,
        "speakers": row["Speaker"],
        "texts": row["Utterance"],
        "labels": class_label_index(MELD_LABELS)[emotion],
        "sentiments": class_label_index(MELD_SENTIMENTS)[sentiment],
        "video_paths": video_path,
        "start_times": start_time,
        "end_times": end_time,
    }
    return UtteranceRecord(utterance_id, values, (MediaFile(video_path, ("video", "audio")),))


def read_meld_split(
    csv_path: Union[str, Path], clip_dir: Union[str, Path], split: str = "train"
) -> tuple[list[DialogueRecord], list[str], list[LabelProblem]]:
    """
    The dialogues of one split (ordered by dialogue id, utterances by utterance id), the faults found (bad rows),
    each naming the file, line, dialogue and utterance, and the rows left out as `LabelProblem`s of `split`:
    EndTime < StartTime, and an utterance (Dialogue_ID + Utterance_ID) on several rows (identical rows: the first
    is kept; rows that differ: all are left out, as which one is right is unknown).
    """
    csv_path, clip_dir = Path(csv_path), Path(clip_dir)
    faults, problems, rows_by_key = [], [], {}
    for line_number, row in enumerate(read_meld_csv(csv_path), start=2):
        try:
            utterance = _meld_utterance(row, clip_dir, line_number, csv_path)
        except ValueError as error:
            faults.append(str(error))
            continue
        dialogue_id = int(row["Dialogue_ID"])
        start, end = utterance.values["start_times"], utterance.values["end_times"]
        if end < start:
            reason = (f"utterance {utterance.utterance_id}: EndTime {row['EndTime'].strip()} is before StartTime "
                      f"{row['StartTime'].strip()}; the row is left out")
            problems.append(LabelProblem(split, END_BEFORE_START, f"{csv_path}, line {line_number}", reason,
                                         dialogue_id, (utterance.utterance_id,)))
            continue
        rows_by_key.setdefault((dialogue_id, utterance.utterance_id), []).append((line_number, utterance))
    by_dialogue: dict[int, dict[int, UtteranceRecord]] = {}
    for (dialogue_id, utterance_id), copies in rows_by_key.items():
        if len(copies) > 1:
            lines = ", ".join(str(line_number) for line_number, _ in copies)
            source = f"{csv_path}, lines {lines}"
            if all(utterance.values == copies[0][1].values for _, utterance in copies):
                reason = (f"utterance {utterance_id} is on {len(copies)} identical rows; the first is kept, "
                          "the repeats are left out")
                problems.append(LabelProblem(split, DUPLICATE, source, reason, dialogue_id))
            else:
                differing = sorted(
                    column for column in copies[0][1].values
                    if any(utterance.values[column] != copies[0][1].values[column] for _, utterance in copies)
                )
                reason = (f"utterance {utterance_id} is on {len(copies)} rows that differ ({', '.join(differing)}); "
                          "all are left out")
                problems.append(LabelProblem(split, DUPLICATE, source, reason, dialogue_id, (utterance_id,)))
                continue
        by_dialogue.setdefault(dialogue_id, {})[utterance_id] = copies[0][1]
    dialogues = [
        DialogueRecord(dialogue_id, tuple(utterances[u] for u in sorted(utterances)))
        for dialogue_id, utterances in sorted(by_dialogue.items())
    ]
    return dialogues, faults, problems


def read_meld_corpus(root: Union[str, Path], strict: bool = True) -> Corpus:
    """
    Reads the three official CSVs under `root`. Faults that make a CSV unreadable (an absent file or column, a bad
    row) raise one `LabelFilesError` listing all of them; with `strict=False` they are returned in the corpus's
    `label_faults` instead (the splits that could be read are kept, without the bad rows). Rows a build refuses
    unless `on_missing="drop"` are in `label_problems`.
    """
    root = Path(root).expanduser().absolute()
    splits, faults, problems, sources = {}, [], [], {}
    for split, (csv_name, clip_folder) in MELD_SPLIT_FILES.items():
        csv_path = root / csv_name
        sources[split] = str(csv_path)
        if not csv_path.is_file():
            faults.append(f"{split}: label file {csv_path} not found")
            continue
        try:
            splits[split], split_faults, split_problems = read_meld_split(csv_path, root / clip_folder, split)
        except LabelFilesError as error:
            faults += error.faults
            continue
        faults += split_faults
        problems += split_problems
    if faults and strict:
        raise LabelFilesError("MELD", faults)
    return Corpus("MELD", str(root), splits, MELD_LABELS, meld_features(), label_problems=problems,
                  label_faults=faults, split_sources=sources)


def load_meld(
    root: Union[str, Path],
    check_media: bool = True,
    on_missing: str = "raise",
    max_clip_duration: Optional[float] = DEFAULT_MAX_CLIP_DURATION,
    num_workers: int = 8,
    decode: bool = False,
):
    r"""
    Builds MELD from the official release folder.

    `root` holds `train_sent_emo.csv`, `dev_sent_emo.csv`, `test_sent_emo.csv` and the clip folders `train_splits/`,
    `dev_splits_complete/`, `output_repeated_splits_test/`. Returns a `DatasetDict` with `train`, `validation` and
    `test`, one row per dialogue (ordered by id) with `dialogue_id` and the per-utterance lists (ordered by
    `Utterance_ID`) `utterance_ids`, `speakers`, `texts`, `labels` (`ClassLabel` over `MELD_LABELS`), `sentiments`,
    `video_paths`, `start_times`, `end_times` (seconds, float32). The audio is the clips' sound track.

    Args:
        root (`str` or `Path`): the release folder.
        check_media (`bool`, defaults to `True`): open every clip's container header (PyAV, no decoding) to find
            missing and unreadable clips and their durations. `False` builds from the CSVs alone.
        on_missing (`str`, defaults to `"raise"`): `"raise"`: rows with EndTime < StartTime, an utterance on
            several rows and an empty split raise one `LabelProblemsError`; then one `MediaProblemsError` lists every
            missing or unreadable clip with its split, dialogue and utterance. `"drop"`: those rows and utterances
            are left out (of identical repeated rows the first is kept) and a split left empty is built empty, all
            logged and recorded in each split's `info.description`. A clip is never replaced.
        max_clip_duration (`float`, *optional*, defaults to 30): clips longer than this many seconds are logged as
            outliers (the official test split has a few clips minutes long). `None` turns this off.
        num_workers (`int`, defaults to 8): threads opening (or decoding) clips.
        decode (`bool`, defaults to `False`): decode every clip fully (every video frame and the whole sound track)
            instead of reading its header, so that a clip cut after a good header counts as unreadable. About 50-500x
            dearer than the header (tens to hundreds of milliseconds a 720p clip).

    Raises:
        `LabelFilesError`: a CSV is absent or has bad rows (all of them listed).
        `LabelProblemsError` (a `LabelFilesError`): with `on_missing="raise"`, rows with EndTime < StartTime,
            repeated utterances or an empty split (all of them listed, with split, file and line).
        `MediaProblemsError`: with `on_missing="raise"`, clips are missing or unreadable (all of them listed).
    """
    corpus = read_meld_corpus(root)
    return build_dataset_dict(
        corpus, MELD_DESCRIPTION, check_media, on_missing, max_clip_duration, num_workers, decode=decode
    )
