"""MELD (Poria et al., 2019): the official split CSVs and clip folders -> `datasets.DatasetDict`, a row per dialogue."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Optional, Union

from datasets import ClassLabel

from ..configuration_magtkd import MELD_LABELS
from .corpus import (
    DEFAULT_MAX_CLIP_DURATION,
    Corpus,
    LabelFilesError,
    LabelRow,
    build_dataset_dict,
    check_release_root,
    conversation_features,
    decode_text_file,
)
from .media import MediaFile

MELD_SENTIMENTS = ("negative", "neutral", "positive")
MELD_FEATURES = conversation_features("int32", MELD_LABELS, sentiments=ClassLabel(names=list(MELD_SENTIMENTS)))

# split -> (label CSV, clip folder), as in the official release.
MELD_SPLIT_FILES = {
    "train": ("train_sent_emo.csv", "train_splits"),
    "validation": ("dev_sent_emo.csv", "dev_splits_complete"),
    "test": ("test_sent_emo.csv", "output_repeated_splits_test"),
}
MELD_REQUIRED_COLUMNS = ("Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "StartTime",
                         "EndTime")

MELD_DESCRIPTION = (
    "MELD (Poria et al., 2019, GPL-3.0): multi-party conversations from the TV series Friends, one row per dialogue. "
    "Video (with its sound track) stays a path to the official clip dia{d}_utt{u}.mp4; times are the CSV's, in seconds."
)

# `0:02:57,802` and `00:02:48,021` both occur; three rows have two fraction digits (`00:05:11,82`), read as a decimal
# fraction of a second.
_TIMESTAMP = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2})(?:[,.](\d+))?$")


def parse_meld_timestamp(timestamp: str) -> float:
    """`"0:02:57,802"` or `"00:02:48,021"` (hours:minutes:seconds,fraction) -> seconds as a float."""
    match = _TIMESTAMP.match(timestamp.strip())
    if match is None:
        raise ValueError(f"not a MELD timestamp (H:MM:SS,mmm): {timestamp!r}")
    hours, minutes, seconds, fraction = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + int(seconds) + float(f"0.{fraction or 0}")


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


def _meld_utterance(row: dict[str, str], clip_dir: Path) -> dict:
    """One CSV row -> the utterance's columns and media; `ValueError` for a bad value."""
    if any(row[column] is None for column in MELD_REQUIRED_COLUMNS):
        raise ValueError("the row has fewer fields than the header")
    dialogue_id, utterance_id = int(row["Dialogue_ID"]), int(row["Utterance_ID"])
    emotion, sentiment = row["Emotion"].strip().lower(), row["Sentiment"].strip().lower()
    if emotion not in MELD_LABELS:
        raise ValueError(f"unknown emotion {row['Emotion']!r} (expected one of {MELD_LABELS})")
    if sentiment not in MELD_SENTIMENTS:
        raise ValueError(f"unknown sentiment {row['Sentiment']!r} (expected one of {MELD_SENTIMENTS})")
    video_path = meld_clip_path(clip_dir, dialogue_id, utterance_id)
    return {
        "utterance_ids": utterance_id, "speakers": row["Speaker"], "texts": row["Utterance"], "labels": emotion,
        "sentiments": sentiment, "video_paths": video_path, "start_times": parse_meld_timestamp(row["StartTime"]),
        "end_times": parse_meld_timestamp(row["EndTime"]), "media": (MediaFile(video_path, ("video", "audio")),),
    }


def _read_meld_split(corpus: Corpus, split: str, csv_path: Path, clip_dir: Path) -> None:
    """Adds one split; a bad row is a label fault naming the file, line, dialogue and utterance."""
    if not csv_path.is_file():
        corpus.label_faults.append(f"{split}: label file {csv_path} not found")
        return
    try:
        csv_rows = read_meld_csv(csv_path)
    except LabelFilesError as error:
        corpus.label_faults += error.faults
        return
    rows = []
    for line, row in enumerate(csv_rows, start=2):
        try:
            utterance = _meld_utterance(row, clip_dir)
        except ValueError as error:
            where = f"{csv_path}, line {line}, dialogue {row['Dialogue_ID']!r}, utterance {row['Utterance_ID']!r}"
            corpus.label_faults.append(f"{where}: {error}")
            continue
        rows.append(LabelRow(int(row["Dialogue_ID"]), utterance, str(csv_path), line, row["StartTime"].strip(),
                             row["EndTime"].strip()))
    corpus.add_split(split, rows, sort=True)


def read_meld_corpus(root: Union[str, Path]) -> Corpus:
    """The three official CSVs under `root`, every fault (an absent file or column, a bad row) in `label_faults`."""
    root = Path(root).expanduser().absolute()
    csv_names = [csv_name for csv_name, _ in MELD_SPLIT_FILES.values()]
    check_release_root("MELD", root, csv_names, f"the MELD release folder, holding {', '.join(csv_names)} and the "
                       "clip folders")
    corpus = Corpus("MELD", str(root), MELD_FEATURES)
    for split, (csv_name, clip_folder) in MELD_SPLIT_FILES.items():
        corpus.split_sources[split] = str(root / csv_name)
        _read_meld_split(corpus, split, root / csv_name, root / clip_folder)
    return corpus


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
        check_media (`bool`, defaults to `True`): open every clip's header (PyAV, no decoding) to find missing and
            unreadable clips and their durations. `False` builds from the CSVs alone.
        on_missing (`str`, defaults to `"raise"`): `"raise"`: rows with EndTime < StartTime, an utterance on
            several rows and an empty split raise one `LabelProblemsError`; then one `MediaProblemsError` lists every
            missing or unreadable clip. `"drop"`: those rows and utterances are left out (of identical repeated rows
            the first is kept), a split left empty is built empty, all logged and recorded in each split's
            `info.description`. A clip is never replaced.
        max_clip_duration (`float`, *optional*, defaults to 30): clips longer than this many seconds are logged
            (the official test split has a few clips minutes long). `None` turns this off.
        num_workers (`int`, defaults to 8): threads opening (or decoding) clips.
        decode (`bool`, defaults to `False`): decode every clip fully, so that a clip cut after a good header counts
            as unreadable (tens to hundreds of milliseconds a 720p clip).

    Raises:
        `LabelFilesError`: a CSV is absent or has bad rows; `LabelProblemsError` (a `LabelFilesError`) and
        `MediaProblemsError` as `on_missing` says. Each lists every fault with its split, file, line or utterance.
    """
    corpus = read_meld_corpus(root)
    return build_dataset_dict(corpus, MELD_DESCRIPTION, check_media, on_missing, max_clip_duration, num_workers, decode)
