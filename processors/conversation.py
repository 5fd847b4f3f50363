"""Conversations as `MagtkdProcessor` receives them: every input form (utterance mappings, dataset rows, column
batches) checked and normalised into `Conversation`s, and the conversation structure tensors of its output. Every input
error raises `MagtkdInputError` naming the conversation and the utterance."""

from __future__ import annotations

import math
import numbers
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from .media import MediaError, TimeWindow
from .prompt import MagtkdInputError

# The label to ignore; the model side declares it too (magtkd_hf/losses.py): each side travels alone as remote code.
IGNORE_INDEX = -100
ROW_COLUMNS = {"speakers": "speaker", "utterance_ids": "id", "labels": "label", "video_paths": "video",
               "audio_paths": "audio", "start_times": "start", "end_times": "end"}


@dataclass
class Utterance:
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

    def where(self, utterance: Utterance) -> str:
        return f"conversation {self.name}, utterance {utterance.name}"

    @contextmanager
    def naming(self, utterance: Utterance):
        """Re-raise media errors with the conversation and utterance in the message."""
        try:
            yield
        except MediaError as error:
            raise MagtkdInputError(f"{self.where(utterance)}, {error}") from error


def normalise_input(conversations, window_choice) -> list[Conversation]:
    """A conversation, a list of them, a dataset row, a list of rows or a column batch -> its conversations."""
    if conversations is None:
        raise MagtkdInputError("no conversations given")
    if isinstance(conversations, Mapping):
        if "texts" not in conversations:
            raise MagtkdInputError("a mapping input must be a dataset row (with 'texts', 'speakers', ...); "
                                   "give a conversation as a list of utterance mappings")
        texts = conversations["texts"]
        if texts and isinstance(texts[0], (list, tuple)):  # a column batch (`datasets.map(batched=True)`)
            rows = [{key: values[i] for key, values in conversations.items()} for i in range(len(texts))]
        else:
            rows = [conversations]
        return [_row_to_conversation(row, i, window_choice) for i, row in enumerate(rows)]
    conversations = list(conversations)
    if not conversations:
        raise MagtkdInputError("no conversations given (empty list)")
    if isinstance(conversations[0], Mapping) and "texts" in conversations[0]:
        return [_row_to_conversation(row, i, window_choice) for i, row in enumerate(conversations)]
    if isinstance(conversations[0], Mapping):
        conversations = [conversations]
    return [_to_conversation(f"#{i}", c, window_choice is not False) for i, c in enumerate(conversations)]


def _row_to_conversation(row: Mapping, index: int, window_choice) -> Conversation:
    """A dataset row (parallel per-utterance columns) -> its utterance mappings -> a conversation."""
    dialogue = row.get("dialogue_id")
    name = f"{dialogue!r} (#{index})" if dialogue is not None else f"#{index}"
    texts = list(row.get("texts") or [])
    if not texts:
        raise MagtkdInputError(f"conversation {name}: the row has no utterances")
    columns = {key: list(row[key]) for key in ROW_COLUMNS if row.get(key) is not None}
    for key, values in columns.items():
        if len(values) != len(texts):
            raise MagtkdInputError(f"conversation {name}: column {key!r} has {len(values)} entries for "
                                   f"{len(texts)} texts")
    if "speakers" not in columns:
        raise MagtkdInputError(f"conversation {name}: the row has no 'speakers' column")
    has_times = ("start_times" in columns, "end_times" in columns)
    if window_choice is not False and has_times[0] != has_times[1]:
        given, missing = ("start_times", "end_times") if has_times[0] else ("end_times", "start_times")
        raise MagtkdInputError(f"conversation {name}: the row has a {given!r} column but no {missing!r}; "
                               "give both or neither")
    # "auto" cuts when the utterances share a video file (IEMOCAP dialogue videos), never MELD's per-utterance clips.
    videos = [video for video in columns.get("video_paths", []) if video is not None]
    shared_video = len(set(videos)) < len(videos)
    cut = all(has_times) and (window_choice is True or (window_choice == "auto" and shared_video))
    kept = {key: values for key, values in columns.items() if cut or key not in ("start_times", "end_times")}
    utterances = [{"text": text, **{ROW_COLUMNS[key]: values[j] for key, values in kept.items()}}
                  for j, text in enumerate(texts)]
    conversation = _to_conversation(name, utterances, cut)
    conversation.has_previous_speakers = "previous_speakers" in row
    previous = row.get("previous_speakers")
    conversation.previous_speakers = None if previous is None else list(previous)
    return conversation


def _to_conversation(name: str, utterances, use_windows: bool) -> Conversation:
    if not isinstance(utterances, (list, tuple)) or not utterances:
        raise MagtkdInputError(f"conversation {name}: expected a non-empty list of utterance mappings")
    normalised = []
    for position, item in enumerate(utterances):
        if not isinstance(item, Mapping):
            raise MagtkdInputError(f"conversation {name}, utterance #{position}: expected a mapping")
        label = f"{item['id']!r} (#{position})" if item.get("id") is not None else f"#{position}"
        where = f"conversation {name}, utterance {label}"
        if "speaker" not in item or "text" not in item:
            raise MagtkdInputError(f"{where}: needs 'speaker' and 'text'")
        window = _time_window(item.get("start"), item.get("end"), where) if use_windows else None
        normalised.append(Utterance(
            speaker=_speaker_name(item["speaker"], where), text=item["text"], audio=_optional_path(item.get("audio")),
            video=_optional_path(item.get("video")), window=window, label=item.get("label"), name=label,
        ))
    return Conversation(name=name, utterances=normalised)


def structure(batch: list[Conversation], speaker_indices) -> dict[str, torch.Tensor]:
    """speaker_ids, utterance_mask (+ labels) (B, N); conversation_index, utterance_index (U,)."""
    longest = max(len(c.utterances) for c in batch)
    speaker_ids = torch.zeros(len(batch), longest, dtype=torch.long)
    utterance_mask = torch.zeros(len(batch), longest, dtype=torch.long)
    labels = torch.full((len(batch), longest), IGNORE_INDEX, dtype=torch.long)
    conversation_index, utterance_index, any_label = [], [], False
    for b, (conversation, indices) in enumerate(zip(batch, speaker_indices)):
        count = len(conversation.utterances)
        speaker_ids[b, :count] = torch.tensor(indices, dtype=torch.long)
        utterance_mask[b, :count] = 1
        conversation_index += [b] * count
        utterance_index += list(range(count))
        for n, utterance in enumerate(conversation.utterances):
            if utterance.label is None:
                continue
            if isinstance(utterance.label, (bool, np.bool_)) or not isinstance(utterance.label, (int, np.integer)):
                raise MagtkdInputError(f"{conversation.where(utterance)}: label must be an int class index, "
                                       f"got {utterance.label!r}")
            labels[b, n], any_label = int(utterance.label), True
    data = {
        "speaker_ids": speaker_ids,
        "utterance_mask": utterance_mask,
        "conversation_index": torch.tensor(conversation_index, dtype=torch.long),
        "utterance_index": torch.tensor(utterance_index, dtype=torch.long),
    }
    return {**data, "labels": labels} if any_label else data


def _speaker_name(value, where: str) -> str:
    """A name, or an integer id kept as its decimal string; None, booleans, floats and empty names are refused."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise MagtkdInputError(f"{where}: the speaker must be a non-empty name or an integer id, got {value!r}")


def _optional_path(value):
    if isinstance(value, Mapping) and "array" not in value and value.get("path") is not None:
        return os.fspath(value["path"])  # `datasets` Audio/Video(decode=False) values
    return os.fspath(value) if isinstance(value, (str, os.PathLike)) else value  # else None or in-memory audio


def _time_window(start, end, where: str) -> TimeWindow | None:
    """An utterance's `start`/`end` (seconds) -> a validated window; None when both are absent."""
    if start is None and end is None:
        return None
    if start is None or end is None:
        given, missing, value = ("an end", "start", end) if start is None else ("a start", "end", start)
        raise MagtkdInputError(f"{where}: the time window has {given} ({value!r}) but no {missing}; "
                               "give both or neither")
    start_s, end_s = _seconds(start, "start", where), _seconds(end, "end", where)
    if start_s < 0:
        raise MagtkdInputError(f"{where}: time window start {start!r} is negative")
    if not start_s < end_s:
        raise MagtkdInputError(f"{where}: time window start {start!r} is not before its end {end!r}")
    return TimeWindow(start_s, end_s)


def _seconds(value, which: str, where: str) -> float:
    """A finite number of seconds: an int/float (numpy scalars included) or a numeric string."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, str)):
        raise MagtkdInputError(f"{where}: time window {which} must be a number of seconds, got {value!r}")
    try:
        seconds = float(value.strip() if isinstance(value, str) else value)
    except ValueError:
        raise MagtkdInputError(f"{where}: time window {which} {value!r} is not a number of seconds") from None
    if not math.isfinite(seconds):
        raise MagtkdInputError(f"{where}: time window {which} {value!r} is not finite")
    return seconds
