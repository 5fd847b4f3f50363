"""Prediction over whole datasets: every utterance of a saved `DatasetDict`, a MELD/IEMOCAP release folder or a JSON
lines file of conversations -> one row per utterance, written as JSON lines or parquet.

* Conversations are batched by size (about `max_utterances` utterances per model call, long ones first) and their
  media decoded in DataLoader workers while the model computes.
* Resumable: rows are appended, a whole batch at a time and synced to disk, to per-process files in
  `OUTPUT.partial/`; a run stopped anywhere (a kill included) and started again with the same arguments predicts
  only the conversations not yet complete there.
* Under `accelerate launch` (or torchrun) the batches are shared out between the processes; the main process merges
  their rows, in input order, into OUTPUT: the file equals a single-process run's.

Each row: `split`, `conversation_index` (position in its split), `conversation_id`, `utterance_index`, `true_label`
(the dataset's emotion, when it has labels), then the pipeline's row (`magtkd_hf.pipeline_magtkd.emotion_rows`):
`speaker`, `text`, `label` (the predicted emotion), `score`, `probabilities` and `modalities`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .inference import check_regular_file, conversation_from_json, parse_json
from .pipeline_magtkd import (
    ROW_MEDIA_COLUMNS, emotion_rows, refuse_non_finite_media, row_utterances, utterance_modalities,
)
from .prediction_files import (
    ProcessGroup,
    check_output,
    completed_conversations,
    conversations_fingerprint,
    merge_rows,
    output_lock,
    part_file,
    partial_folder,
    remove_partial,
    start_or_resume,
    write_output,
)

_SPLIT_ALIASES = {"dev": "validation", "valid": "validation"}  # the MELD release's and the released scripts' names


@dataclass
class ConversationToPredict:
    """One conversation of the input: where it is (`split`, `index`), its id, the dataset row the processor takes
    and its true emotion names (None without labels)."""

    split: str
    index: int
    conversation_id: str
    row: dict
    labels: list[str] | None = None

    @property
    def key(self) -> tuple[str, int]:
        return self.split, self.index

    def __len__(self) -> int:
        return len(self.row["texts"])

    def utterances(self) -> list[dict]:
        """Per utterance: speaker, text and its media paths (what error messages and output rows name)."""
        return row_utterances(self.row)


# ------------------------------------------------------------------------------------------------------------ input


def read_prediction_input(
    source: str | Path, dataset: str | None = None, splits: Sequence[str] | None = None, on_missing: str = "raise"
) -> list[ConversationToPredict]:
    """The conversations of `source`: a JSON lines file (one conversation per line: a list of utterances, or
    `{"id": ..., "utterances": [...]}`, as `magtkd-hf predict`'s conversation files), a folder saved with
    `save_to_disk` (a DatasetDict, or one Dataset: split "data"), or a MELD/IEMOCAP release folder (`dataset`
    names which). `splits`: only these splits (default: all, in the order train, validation, test, others)."""
    path = Path(source)
    if path.exists() and not path.is_dir():
        check_regular_file(path)
    if path.is_file():
        found = {"data": _json_lines_conversations(path)}
    elif path.is_dir():
        found = _dataset_conversations(path, dataset, on_missing)
    else:
        raise FileNotFoundError(f"{path}: no such file or folder (a JSON lines file, a saved dataset or a release folder)")
    if splits:
        splits = [split if split in found else _SPLIT_ALIASES.get(split, split) for split in splits]
        unknown = [split for split in splits if split not in found]
        if unknown:
            raise ValueError(f"{path}: no split {unknown}; it has {sorted(found)}")
        found = {split: found[split] for split in splits}
    return [conversation for conversations in found.values() for conversation in conversations]


def _json_lines_conversations(path: Path) -> list[ConversationToPredict]:
    conversations = []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            data = parse_json(line, where)
            identifier = data.get("id", number) if isinstance(data, Mapping) else number
            utterances = conversation_from_json(data, where, path.parent)
            conversations.append(ConversationToPredict(
                "data", len(conversations), str(identifier), _utterances_to_row(utterances, str(identifier))
            ))
    if not conversations:
        raise ValueError(f"{path}: no conversations (one JSON conversation per line expected).")
    return conversations


def _utterances_to_row(utterances: Sequence[Mapping], identifier: str) -> dict:
    """Utterance mappings -> a dataset row (errors then name the conversation by its id, as for dataset rows)."""
    row = {"dialogue_id": identifier, "speakers": [u["speaker"] for u in utterances], "texts": [u["text"] for u in utterances]}
    for column, key in ROW_MEDIA_COLUMNS.items():
        if any(u.get(key) is not None for u in utterances):
            row[column] = [u.get(key) for u in utterances]
    return row


def _dataset_conversations(path: Path, dataset: str | None, on_missing: str) -> dict[str, list[ConversationToPredict]]:
    import datasets

    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        loaded = datasets.load_from_disk(str(path))
    elif dataset is None:
        raise ValueError(f"{path}: not a saved dataset (no dataset_dict.json); for a release folder name its dataset "
                         "(--dataset meld or iemocap).")
    else:
        from .training.data import load_conversations

        loaded = load_conversations(path, dataset, on_missing=on_missing)
    if isinstance(loaded, datasets.Dataset):
        loaded = {"data": loaded}
    order = sorted(loaded, key=lambda split: (("train", "validation", "test").index(split)
                                              if split in ("train", "validation", "test") else 3, split))
    return {split: _split_conversations(split, loaded[split]) for split in order}


def _split_conversations(split: str, dataset) -> list[ConversationToPredict]:
    label_names = _label_names(dataset)
    conversations = []
    for index, row in enumerate(dataset):
        labels = row.get("labels")
        names = None
        if labels is not None and label_names is not None:
            names = [label_names[int(label)] if int(label) >= 0 else None for label in labels]
        identifier = row.get("dialogue_id", index)
        # the labels are reported, not given to the model (which would compute a loss)
        inputs = {key: value for key, value in row.items() if key not in ("labels", "sentiments")}
        conversations.append(ConversationToPredict(split, index, str(identifier), inputs, names))
    return conversations


def _label_names(dataset) -> list[str] | None:
    feature = dataset.features.get("labels")
    names = getattr(getattr(feature, "feature", None), "names", None)
    return list(names) if names else None


def add_running_speakers(conversations: Sequence[ConversationToPredict]) -> None:
    """The processor's "released_iemocap" speaker mode numbers speakers by a list that runs through a whole split:
    give each row its `previous_speakers` (from the split's order) so that batches in any order, on any process,
    number them as the split does. Rows that carry the column keep theirs."""
    from .processors import released_iemocap_previous_speakers

    by_split: dict[str, list[ConversationToPredict]] = {}
    for conversation in conversations:
        by_split.setdefault(conversation.split, []).append(conversation)
    for members in by_split.values():
        states = released_iemocap_previous_speakers([c.row["speakers"] for c in members])
        for conversation, state in zip(members, states):
            conversation.row.setdefault("previous_speakers", state)


# --------------------------------------------------------------------------------------------------------- batching


def batches_by_size(conversations: Sequence[ConversationToPredict], max_utterances: int) -> list[list[int]]:
    """Positions in `conversations`, grouped: longest conversations first, each batch as many as fit in
    `max_utterances` utterances (a longer conversation alone). Similar lengths together waste little padding in
    the fusion; the first batch is the largest, so a batch that does not fit in memory fails at once."""
    if max_utterances < 1:
        raise ValueError(f"max_utterances must be at least 1, got {max_utterances}")
    order = sorted(range(len(conversations)), key=lambda position: (-len(conversations[position]), position))
    batches, current, size = [], [], 0
    for position in order:
        length = len(conversations[position])
        if current and size + length > max_utterances:
            batches.append(current)
            current, size = [], 0
        current.append(position)
        size += length
    if current:
        batches.append(current)
    return batches


class _Batches(torch.utils.data.Dataset):
    """Item i -> (the conversations of batch i, the processor's inputs), built in a DataLoader worker. A bad input
    is returned, not raised, so that the main process raises it as it was (naming conversation, utterance, file)
    rather than inside the DataLoader's worker report."""

    def __init__(self, conversations, batches, processor):
        self.conversations, self.batches, self.processor = conversations, batches, processor

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, item: int):
        members = [self.conversations[position] for position in self.batches[item]]
        try:
            return members, self.processor([member.row for member in members], return_tensors="pt")
        except (ValueError, OSError, RuntimeError) as error:
            return members, error


def _as_is(item):
    return item


# ------------------------------------------------------------------------------------------------------ prediction


@torch.inference_mode()
def predict_batch(model, members: Sequence[ConversationToPredict], inputs) -> list[dict]:
    """The output rows of one batch of conversations (their processor `inputs`), checked finite."""
    utterances = [member.utterances() for member in members]
    refuse_non_finite_media(inputs, utterances, lambda number, index: f"{_name(members[number])}, utterance {index}")
    logits = model(**inputs.to(model.device)).logits
    rows = []
    for number, member in enumerate(members):
        predicted = emotion_rows(utterances[number], logits[number, : len(member)], model.config.id2label,
                                 utterance_modalities(inputs, number), where=_name(member))
        rows += [_output_row(member, index, row) for index, row in enumerate(predicted)]
    return rows


def _name(member: ConversationToPredict) -> str:
    return f"{member.split} conversation {member.conversation_id!r}"


def _output_row(member: ConversationToPredict, utterance_index: int, predicted: dict) -> dict:
    """The pipeline's row after the conversation's place, with the dataset's emotion as `true_label` when it has one."""
    row = {"split": member.split, "conversation_index": member.index, "conversation_id": member.conversation_id,
           "utterance_index": utterance_index}
    if member.labels is not None:
        row["true_label"] = member.labels[utterance_index]
    return {**row, **predicted}


def predict_dataset(
    model,
    processor,
    conversations: Sequence[ConversationToPredict],
    output: str | Path,
    *,
    max_utterances: int = 64,
    num_workers: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    run_description: Mapping | None = None,
) -> dict:
    """Predict `conversations` into `output` (.jsonl or .parquet); see the module docstring. Returns a summary:
    conversations and utterances predicted by this run, resumed from, processes, output.

    `run_description` (model folder, settings) is stored beside the partial rows with the input's fingerprint
    (`conversations_fingerprint`): resuming with another description or a changed input is refused, naming the
    difference, rather than mixing rows of two runs (`overwrite` then starts afresh). `overwrite`: replace an existing
    OUTPUT (else refused). One run per OUTPUT at a time (`output_lock`)."""
    output = Path(output)
    check_output(output, overwrite)
    group = ProcessGroup.current()
    with output_lock(output, group.is_main):
        return _predict_dataset_locked(model, processor, conversations, output, group, max_utterances, num_workers,
                                       overwrite, progress, run_description)


def _predict_dataset_locked(model, processor, conversations, output, group, max_utterances, num_workers, overwrite,
                            progress, run_description) -> dict:
    partial = partial_folder(output)
    if group.is_main:
        held = [(c.split, c.index, c.conversation_id, c.row, c.labels) for c in conversations]
        description = {**(run_description or {}), "input_sha256": conversations_fingerprint(held),
                       "input_conversations": len(conversations)}
        start_or_resume(partial, description, overwrite)
    group.barrier()
    done = completed_conversations(partial, {c.key: len(c) for c in conversations})
    todo = [c for c in conversations if c.key not in done]
    if getattr(processor, "speaker_mode", None) == "released_iemocap":
        add_running_speakers(conversations)
    mine = batches_by_size(todo, max_utterances)[group.rank :: group.size]
    written = _predict_into(model, processor, todo, mine, part_file(partial, group.rank),
                            num_workers, progress and group.is_main)
    group.barrier()
    if group.is_main:
        merged = merge_rows(partial, [c.key for c in conversations])
        write_output(merged, output)
        remove_partial(partial)
    group.barrier()
    return {"output": str(output), "conversations": len(conversations), "resumed_with": len(done),
            "predicted_here": written, "processes": group.size, "main_process": group.is_main}


def _predict_into(model, processor, todo, batches, part: Path, num_workers: int, progress: bool) -> int:
    """Predict `batches` of `todo`, appending each batch's rows to `part` (synced); the utterances written."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    loader = DataLoader(_Batches(todo, batches, processor), batch_size=None, collate_fn=_as_is, shuffle=False,
                        num_workers=num_workers)
    total = sum(len(todo[position]) for batch in batches for position in batch)
    written = 0
    with open(part, "a", encoding="utf-8") as handle, tqdm(
        total=total, unit="utt", desc="predict", disable=not progress, file=sys.stderr
    ) as bar:
        for members, inputs in loader:
            if isinstance(inputs, Exception):
                raise inputs
            rows = predict_batch(model, members, inputs)
            handle.write("".join(json.dumps(row, allow_nan=False) + "\n" for row in rows))
            handle.flush()
            os.fsync(handle.fileno())
            written += len(rows)
            bar.update(len(rows))
    return written


__all__ = [
    "ConversationToPredict",
    "batches_by_size",
    "predict_dataset",
    "read_prediction_input",
]
