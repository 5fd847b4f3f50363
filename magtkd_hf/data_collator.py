"""`MagtkdDataCollator`: a batch of conversations (dataset rows or utterance lists) -> the processor's tensors."""

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from transformers import BatchFeature

from .configuration_magtkd import MODALITIES

# Trainer's default `remove_unused_columns=True` keeps only the columns named by the model's `forward`.
KEEP_COLUMNS_HINT = "pass TrainingArguments(remove_unused_columns=False): Trainer drops the columns that the model's " \
                    "forward does not name"
# What the processor returns: rows holding these (and no `texts`) come from `dataset.map(processor)`.
PROCESSED_COLUMNS = ("input_ids", "input_values", "pixel_values", "utterance_mask")


def conversation_name(row: Mapping, index: int) -> str:
    return f"conversation {row.get('dialogue_id', f'#{index}')!r}"


def class_indices(values, where: str) -> list:
    """A row's labels (a list, or a 1-D numpy array or tensor of integers, as `with_format` gives) -> a list; an
    array or tensor of another shape or of non-integer values is refused, naming `where` (the conversation)."""
    if isinstance(values, torch.Tensor):
        values = values.numpy(force=True)
    if not isinstance(values, np.ndarray):
        return list(values)
    if values.ndim != 1 or (values.size and not np.issubdtype(values.dtype, np.integer)):
        raise ValueError(f"{where}: 'labels' must hold one integer class index per utterance, got {values.dtype} "
                         f"values of shape {values.shape}")
    return values.tolist()


def check_columns(row, needed: str, collator: str) -> None:
    """Refuse a row without the column `needed`: dropped by Trainer, or the output of `dataset.map(processor)`."""
    if not isinstance(row, Mapping) or needed in row:
        return
    if any(column in row for column in PROCESSED_COLUMNS):
        raise ValueError(
            f"{collator} takes the dataset's own rows ('{needed}', 'speakers', ...), not the processor's output: do not "
            "map the processor over the dataset (the rows would store every decoded frame and waveform); the "
            "collator runs it per batch, in the DataLoader's workers")
    raise ValueError(f"{collator} got rows without the column '{needed}' (columns: {sorted(row)}); {KEEP_COLUMNS_HINT}")


def _python_row(row: Mapping, index: int) -> dict:
    """A row in numpy or torch format (`dataset.with_format`) -> python values: 1-D arrays/tensors (texts, speakers,
    labels, times) become lists, 0-d ones and numpy scalars numbers; larger arrays (in-memory audio) are kept."""
    plain = {key: _python_value(value) for key, value in row.items()}
    if row.get("labels") is not None:
        plain["labels"] = class_indices(row["labels"], conversation_name(row, index))
    return plain


def _python_value(value):
    if isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim <= 1:
        return value.tolist()
    return _python_scalar(value)


def _python_scalar(value):
    is_scalar = isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.ndim == 0)
    return value.item() if is_scalar else value


def _python_conversation(conversation):
    """A conversation given as utterance mappings: 0-d tensors and numpy scalars (label, start, end) -> numbers;
    arrays (in-memory audio) are kept."""
    if not isinstance(conversation, Sequence) or isinstance(conversation, str):
        return conversation
    return [{key: _python_scalar(value) for key, value in utterance.items()} if isinstance(utterance, Mapping)
            else utterance for utterance in conversation]


class MagtkdDataCollator:
    """
    Collates conversations for `transformers.Trainer` or a `DataLoader`: the processor reads the media and builds the
    prompts, so with `DataLoader(num_workers>=1)` (Trainer: `dataloader_num_workers`) media decoding runs in the
    workers, beside the model.

    Args:
        processor ([`MagtkdProcessor`]): turns conversations into tensors.
        modalities (`tuple[str]`, defaults to `("text", "audio", "video")`): the modalities to compute; the others are
            left out of the batch (their media are not read).
        **processor_kwargs: passed on every call (e.g. `use_time_window`).

    Call: a list of dataset rows (`load_meld`/`load_iemocap` rows: `texts`, `speakers`, `video_paths`, `labels`, ...,
    in python, numpy or torch format) or of conversations (lists of utterance mappings) -> a `BatchFeature` with the
    processor's keys, `labels` (B, N) included when the rows carry labels. Use
    `TrainingArguments(remove_unused_columns=False)`: the processor needs the rows' columns. Give it the dataset's own
    rows, not `dataset.map(processor)`'s: mapping the processor would store every decoded frame in the dataset.
    """

    def __init__(self, processor, modalities: Sequence[str] = MODALITIES, **processor_kwargs):
        unknown = set(modalities) - set(MODALITIES)
        if unknown or not modalities:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {tuple(modalities)}")
        self.processor = processor
        self.modalities = tuple(modalities)
        self.processor_kwargs = processor_kwargs

    def __call__(self, features: Sequence) -> BatchFeature:
        conversations = list(features)
        if not conversations:
            raise ValueError("MagtkdDataCollator got an empty batch")
        check_columns(conversations[0], "texts", type(self).__name__)
        if isinstance(conversations[0], Mapping):
            conversations = [_python_row(row, index) for index, row in enumerate(conversations)]
        else:
            conversations = [_python_conversation(conversation) for conversation in conversations]
        return self.processor(conversations, modalities=self.modalities, **self.processor_kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(processor={type(self.processor).__name__}, modalities={self.modalities})"


__all__ = ["MagtkdDataCollator"]
