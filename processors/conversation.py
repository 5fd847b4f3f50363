"""Conversations as `MagtkdProcessor` receives them: the accepted input forms (utterance
mappings, dataset rows, column batches) checked and normalised into `Conversation`s, and the
conversation structure tensors of the processor's output.

Every input error raises `MagtkdInputError` naming the conversation and the utterance.
"""

from __future__ import annotations

import math
import numbers
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from .media_common import MediaError, TimeWindow
from .prompt import MagtkdInputError

IGNORE_INDEX = -100


@dataclass
class Utterance:
    """One utterance, normalised from a mapping or a dataset row."""

    speaker: str
    text: Any
    audio: Any = None
    video: str | None = None
    window: TimeWindow | None = None
    label: int | None = None
    name: str = ""


@dataclass
class Conversation:
    name: str
    utterances: list[Utterance]
    previous_speakers: list[str] | None = None
    has_previous_speakers: bool = False


# ---------------------------------------------------------------------- input forms


def normalise_input(conversations, window_choice) -> list[Conversation]:
    """Any input form of `MagtkdProcessor.__call__` (a conversation, a list of them, a dataset
    row, a list of rows or a column batch) -> its conversations, validated."""
    if conversations is None:
        raise MagtkdInputError("no conversations given")
    if isinstance(conversations, Mapping):
        if "texts" not in conversations:
            raise MagtkdInputError(
                "a mapping input must be a dataset row (with 'texts', 'speakers', ...); "
                "give a conversation as a list of utterance mappings"
            )
        rows = _column_batch_to_rows(conversations) if _is_column_batch(conversations) else [conversations]
        return [_row_to_conversation(r, i, window_choice) for i, r in enumerate(rows)]
    conversations = list(conversations)
    if not conversations:
        raise MagtkdInputError("no conversations given (empty list)")
    first = conversations[0]
    if isinstance(first, Mapping) and "texts" in first:
        return [_row_to_conversation(r, i, window_choice) for i, r in enumerate(conversations)]
    if isinstance(first, Mapping):
        conversations = [conversations]
    return [_list_to_conversation(c, i, window_choice) for i, c in enumerate(conversations)]


def _list_to_conversation(utterances, index: int, window_choice) -> Conversation:
    name = f"#{index}"
    if not isinstance(utterances, (list, tuple)) or not utterances:
        raise MagtkdInputError(f"conversation {name}: expected a non-empty list of utterance mappings")
    normalised = []
    for position, item in enumerate(utterances):
        if not isinstance(item, Mapping):
            raise MagtkdInputError(f"conversation {name}, utterance #{position}: expected a mapping")
        label = f"{item['id']!r} (#{position})" if item.get("id") is not None else f"#{position}"
        if "speaker" not in item or "text" not in item:
            raise MagtkdInputError(f"conversation {name}, utterance {label}: needs 'speaker' and 'text'")
        window = None
        if window_choice is not False:
            window = _time_window(item.get("start"), item.get("end"), f"conversation {name}, utterance {label}")
        normalised.append(
            Utterance(
                speaker=_speaker_name(item["speaker"], f"conversation {name}, utterance {label}"),
                text=item["text"],
                audio=item.get("audio"),
                video=_optional_path(item.get("video")),
                window=window,
                label=item.get("label"),
                name=label,
            )
        )
    return Conversation(name=name, utterances=normalised)


def _row_to_conversation(row: Mapping, index: int, window_choice) -> Conversation:
    dialogue = row.get("dialogue_id")
    name = f"{dialogue!r} (#{index})" if dialogue is not None else f"#{index}"
    texts = list(row.get("texts") or [])
    if not texts:
        raise MagtkdInputError(f"conversation {name}: the row has no utterances")
    count = len(texts)
    columns = {}
    for key in ("speakers", "utterance_ids", "labels", "video_paths", "audio_paths", "start_times", "end_times"):
        value = row.get(key)
        if value is not None:
            if len(value) != count:
                raise MagtkdInputError(
                    f"conversation {name}: column {key!r} has {len(value)} entries for {count} texts"
                )
            columns[key] = list(value)
    if "speakers" not in columns:
        raise MagtkdInputError(f"conversation {name}: the row has no 'speakers' column")
    if window_choice is not False and ("start_times" in columns) != ("end_times" in columns):
        given, missing = ("start_times", "end_times") if "start_times" in columns else ("end_times", "start_times")
        raise MagtkdInputError(
            f"conversation {name}: the row has a {given!r} column but no {missing!r}; give both or neither"
        )
    cut = _row_uses_windows(columns, window_choice)
    utterances = []
    for j in range(count):
        uid = columns.get("utterance_ids", [None] * count)[j]
        label = f"{uid!r} (#{j})" if uid is not None else f"#{j}"
        window = None
        if cut:
            window = _time_window(
                columns["start_times"][j], columns["end_times"][j], f"conversation {name}, utterance {label}"
            )
        utterances.append(
            Utterance(
                speaker=_speaker_name(columns["speakers"][j], f"conversation {name}, utterance {label}"),
                text=texts[j],
                audio=_optional_path(columns.get("audio_paths", [None] * count)[j]),
                video=_optional_path(columns.get("video_paths", [None] * count)[j]),
                window=window,
                label=columns.get("labels", [None] * count)[j],
                name=label,
            )
        )
    has_previous = "previous_speakers" in row
    previous = row.get("previous_speakers")
    return Conversation(
        name=name,
        utterances=utterances,
        previous_speakers=None if previous is None else list(previous),
        has_previous_speakers=has_previous,
    )


def _row_uses_windows(columns: Mapping, window_choice) -> bool:
    """Explicit True/False, or "auto": cut when the row has times and its utterances share
    a video file (IEMOCAP dialogue videos); MELD's per-utterance clips are never cut."""
    has_times = "start_times" in columns and "end_times" in columns
    if window_choice is False or not has_times:
        return False
    if window_choice is True:
        return True
    videos = [v for v in columns.get("video_paths", []) if v is not None]
    return len(set(videos)) < len(videos)


# ---------------------------------------------------------------------- helpers


def _structure(batch: list[Conversation], speaker_indices) -> dict[str, torch.Tensor]:
    """speaker_ids, utterance_mask (+ labels) (B, N); conversation_index, utterance_index (U,)."""
    longest = max(len(c.utterances) for c in batch)
    speaker_ids = torch.zeros(len(batch), longest, dtype=torch.long)
    utterance_mask = torch.zeros(len(batch), longest, dtype=torch.long)
    labels = torch.full((len(batch), longest), IGNORE_INDEX, dtype=torch.long)
    conversation_index, utterance_index = [], []
    any_label = False
    for b, (conversation, indices) in enumerate(zip(batch, speaker_indices)):
        count = len(conversation.utterances)
        speaker_ids[b, :count] = torch.tensor(indices, dtype=torch.long)
        utterance_mask[b, :count] = 1
        conversation_index += [b] * count
        utterance_index += list(range(count))
        for n, utterance in enumerate(conversation.utterances):
            if utterance.label is not None:
                labels[b, n] = _label_value(conversation, utterance)
                any_label = True
    data = {
        "speaker_ids": speaker_ids,
        "utterance_mask": utterance_mask,
        "conversation_index": torch.tensor(conversation_index, dtype=torch.long),
        "utterance_index": torch.tensor(utterance_index, dtype=torch.long),
    }
    if any_label:
        data["labels"] = labels
    return data


def _label_value(conversation: Conversation, utterance: Utterance) -> int:
    label = utterance.label
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
        raise MagtkdInputError(
            f"conversation {conversation.name}, utterance {utterance.name}: label must be an int "
            f"class index, got {label!r}"
        )
    return int(label)


def _where(conversation: Conversation, utterance: Utterance) -> str:
    return f"conversation {conversation.name}, utterance {utterance.name}"


@contextmanager
def _naming(conversation: Conversation, utterance: Utterance):
    """Re-raise media errors with the conversation and utterance in the message."""
    try:
        yield
    except MediaError as error:
        raise MagtkdInputError(f"{_where(conversation, utterance)}, {error}") from error


def _is_column_batch(row: Mapping) -> bool:
    texts = row.get("texts")
    return bool(texts) and isinstance(texts[0], (list, tuple))


def _column_batch_to_rows(columns: Mapping) -> list[dict]:
    count = len(columns["texts"])
    return [{key: values[i] for key, values in columns.items()} for i in range(count)]


def _speaker_name(value, where: str) -> str:
    """A speaker is a name or an integer id (kept as its decimal string); None, booleans, floats and empty names are
    refused rather than becoming a speaker called "None" or "1.0"."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise MagtkdInputError(f"{where}: the speaker must be a non-empty name or an integer id, got {value!r}")


def _optional_path(value):
    if value is None:
        return None
    if isinstance(value, Mapping) and "array" not in value and value.get("path") is not None:
        return os.fspath(value["path"])  # `datasets` Audio/Video(decode=False) values
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    return value  # in-memory audio (array + rate)


def _time_window(start, end, where: str) -> TimeWindow | None:
    """An utterance's `start`/`end` (seconds) -> a validated window; None when both are absent."""
    if start is None and end is None:
        return None
    if start is None or end is None:
        given, missing, value = ("an end", "start", end) if start is None else ("a start", "end", start)
        raise MagtkdInputError(
            f"{where}: the time window has {given} ({value!r}) but no {missing}; give both or neither"
        )
    start_s, end_s = _seconds(start, "start", where), _seconds(end, "end", where)
    if start_s < 0:
        raise MagtkdInputError(f"{where}: time window start {start!r} is negative")
    if not start_s < end_s:
        raise MagtkdInputError(f"{where}: time window start {start!r} is not before its end {end!r}")
    return TimeWindow(start_s, end_s)


def _seconds(value, which: str, where: str) -> float:
    """A number of seconds: an int/float (numpy scalars included) or a numeric string; finite."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, str)):
        raise MagtkdInputError(f"{where}: time window {which} must be a number of seconds, got {value!r}")
    try:
        seconds = float(value.strip() if isinstance(value, str) else value)
    except ValueError:
        raise MagtkdInputError(f"{where}: time window {which} {value!r} is not a number of seconds") from None
    if not math.isfinite(seconds):
        raise MagtkdInputError(f"{where}: time window {which} {value!r} is not finite")
    return seconds
