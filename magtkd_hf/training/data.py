"""Data of the stages: conversations (stages 1-3) cut into utterance items and collated into each stage model's
keyword arguments, stage-3 feature rows (stage 4), and the epoch-seeded sampling order that makes resuming exact."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import datasets
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from transformers.trainer_pt_utils import LengthGroupedSampler

from ..datasets_scripts import load_iemocap, load_meld
from ..losses import IGNORE_INDEX

# The processor's output names -> each stage model's keyword arguments (the audio model's `attention_mask` is the
# processor's audio mask, not the text one).
MODEL_INPUTS = {
    "text": {"input_ids": "input_ids", "attention_mask": "attention_mask"},
    "audio": {"input_values": "input_values", "attention_mask": "audio_attention_mask"},
    "video": {"pixel_values": "pixel_values"},
}
SPLITS = ("train", "validation", "test")
# List columns of a conversation row that are not one entry per utterance (never cut by `slice_row`).
PER_CONVERSATION_LISTS = ("previous_speakers",)


def load_conversations(data, dataset: str, on_missing: str = "raise", check_media: bool = True) -> datasets.DatasetDict:
    """A `DatasetDict` of conversations (one row per conversation, the `load_meld`/`load_iemocap` schema): a folder
    saved with `save_to_disk`, or a MELD / IEMOCAP release folder (built with `load_meld`/`load_iemocap`; its clips
    are checked unless `check_media=False`)."""
    path = Path(data)
    if (path / "dataset_dict.json").is_file():
        return datasets.load_from_disk(str(path))
    if not path.is_dir():
        raise FileNotFoundError(f"--data {path}: no such folder (a {dataset} release folder or a saved DatasetDict)")
    loader = {"meld": load_meld, "iemocap": load_iemocap}[dataset]  # one per dataset of DATASETS
    return loader(path, on_missing=on_missing, check_media=check_media)


def class_weights(labels: Sequence[int], num_labels: int, weighting: str) -> list[float] | None:
    """Cross-entropy class weights from a train split's labels (-100 ignored): "inverse" n / (C * count_c) (scikit-learn's
    "balanced"), "inverse_sqrt" its square root, "none" None. A class absent from the split counts once."""
    if weighting == "none":
        return None
    labels = np.asarray([label for label in labels if label != IGNORE_INDEX], dtype=np.int64)
    counts = np.maximum(np.bincount(labels, minlength=num_labels), 1)
    weights = len(labels) / (num_labels * counts)
    return [float(w) for w in (np.sqrt(weights) if weighting == "inverse_sqrt" else weights)]


def slice_row(row: Mapping, start: int, stop: int) -> dict:
    """The utterances `start:stop` of a conversation row: every per-utterance list is cut, the rest is kept (the
    dialogue id still names the conversation in errors)."""
    count = len(row["texts"])
    return {
        key: (value[start:stop] if key not in PER_CONVERSATION_LISTS and isinstance(value, (list, tuple))
              and len(value) == count else value)
        for key, value in row.items()
    }


def shares_video_files(rows: Sequence[Mapping]) -> bool:
    """Whether utterances share one video file (IEMOCAP's dialogue videos): then each utterance's window is cut."""
    return any("video_paths" in row and len(set(row["video_paths"])) < len(row["video_paths"]) for row in rows)


class UtteranceItems(Dataset):
    """The utterances of a split of conversations, one item each, in conversation order: `(conversation, utterance)`
    -> the conversation up to and including the utterance (the text prompt needs the history), the utterance alone
    (for its audio and video) and its label."""

    def __init__(self, rows: Sequence[Mapping], split: str = ""):
        self.rows = list(rows)
        self.split = split
        self.index = [(c, u) for c, row in enumerate(self.rows) for u in range(len(row["texts"]))]
        for c, row in enumerate(self.rows):
            labels = row.get("labels")
            if labels is None or len(labels) != len(row["texts"]):
                raise ValueError(
                    f"{split}: conversation {row.get('dialogue_id', c)!r} has "
                    f"{'no' if labels is None else len(labels)} labels for {len(row['texts'])} utterances"
                )

    def __len__(self) -> int:
        return len(self.index)

    def labels(self) -> list[int]:
        return [int(self.rows[c]["labels"][u]) for c, u in self.index]

    def __getitem__(self, item: int) -> dict:
        c, u = self.index[item]
        row = self.rows[c]
        return {"history": slice_row(row, 0, u + 1), "utterance": slice_row(row, u, u + 1), "label": row["labels"][u]}


class UtteranceCollator:
    """Utterance items -> one stage model's keyword arguments and `labels` (b,): for text, the last prompt of each
    history (left padded, the mask token last); for audio and video, the utterance's own media."""

    def __init__(self, processor, modality: str, use_time_window: bool = False):
        if modality not in MODEL_INPUTS:
            raise ValueError(f"unknown modality {modality!r}; modalities: {tuple(MODEL_INPUTS)}")
        self.processor, self.modality, self.use_time_window = processor, modality, use_time_window

    def __call__(self, items: Sequence[Mapping]) -> dict:
        labels = torch.tensor([int(item["label"]) for item in items], dtype=torch.long)
        return {**self.model_inputs(items), "labels": labels}

    def model_inputs(self, items: Sequence[Mapping]) -> dict:
        if self.modality == "text":
            histories = [item["history"] for item in items]
            output = self.processor(histories, modalities=("text",), use_time_window=False)
            # The processor prompts every utterance of a history; the item's utterance is the history's last.
            return model_inputs("text", output, torch.tensor(np.cumsum([len(row["texts"]) for row in histories]) - 1))
        rows = [item["utterance"] for item in items]
        return model_inputs(self.modality, self.processor(rows, modalities=(self.modality,),
                                                          use_time_window=self.use_time_window))


class DistillationCollator:
    """Utterance items -> `MagtkdDistillationModel` inputs: the student's and the teacher's keyword arguments and
    `labels` (b,)."""

    def __init__(self, student: UtteranceCollator, teacher: UtteranceCollator):
        self.student, self.teacher = student, teacher

    def __call__(self, items: Sequence[Mapping]) -> dict:
        return {"student_inputs": self.student.model_inputs(items), "teacher_inputs": self.teacher.model_inputs(items),
                "labels": torch.tensor([int(item["label"]) for item in items], dtype=torch.long)}


def model_inputs(modality: str, processor_output: Mapping[str, torch.Tensor], rows=slice(None)) -> dict:
    """The keyword arguments of `modality`'s stage model from a processor output, for utterances `rows`. Prompts are
    left padded to the longest of the processor's call: the columns padded in every row are dropped (same output)."""
    inputs = {argument: processor_output[name][rows] for argument, name in MODEL_INPUTS[modality].items()}
    if modality == "text":
        first = int(inputs["attention_mask"].any(dim=0).nonzero()[0])
        inputs = {argument: value[:, first:] for argument, value in inputs.items()}
    return inputs


class ConversationCollator:
    """(position, conversation row) items (stage 3) -> their positions and the processor's output."""

    def __init__(self, processor, use_time_window: bool | str = "auto", modalities: Sequence[str] = tuple(MODEL_INPUTS)):
        self.processor, self.use_time_window, self.modalities = processor, use_time_window, tuple(modalities)

    def __call__(self, items):
        positions = [position for position, _ in items]
        rows = [row for _, row in items]
        output = self.processor(rows, modalities=self.modalities, use_time_window=self.use_time_window)
        return {"positions": positions, "inputs": output}


# ----------------------------------------------------------------------------------------------- stage-3 features


def load_feature_splits(path: str | Path) -> datasets.DatasetDict:
    """A stage-3 features `DatasetDict` (from `extract-features` or `import-released-features`), checked: the
    train and validation splits, the columns of `magtkd_hf.features.feature_dataset_features`, one width."""
    path = Path(path)
    if not (path / "dataset_dict.json").is_file():
        raise FileNotFoundError(
            f"{path}: not a features folder (no dataset_dict.json); make one with `magtkd-hf train extract-features` "
            "or `magtkd-hf import-released-features`"
        )
    splits = datasets.load_from_disk(str(path))
    missing = [split for split in ("train", "validation") if split not in splits]
    if missing:
        raise ValueError(f"{path}: splits {missing} are missing (found {sorted(splits)})")
    needed = ("dialogue_id", "text", "speaker_ids", "labels")  # audio and video columns are absent in a text-only run
    for split, dataset in splits.items():
        absent = [column for column in needed if column not in dataset.column_names]
        if absent:
            raise ValueError(f"{path}, split {split}: columns {absent} are missing")
    widths = {split: int(dataset.features["text"].shape[-1]) for split, dataset in splits.items()}
    if len(set(widths.values())) != 1:
        raise ValueError(f"{path}: the splits' feature widths differ: {widths}")
    return splits


class FeatureRows(Dataset):
    """A split of stage-3 features held in memory (float32 arrays), the columns the fusion reads, checked."""

    def __init__(self, dataset: datasets.Dataset, columns: Sequence[str], num_labels: int, source: str = ""):
        # A column the features do not hold (a run without that modality) is left out: the collator marks it absent.
        columns = [column for column in dict.fromkeys(columns) if column in dataset.column_names]
        table = dataset.with_format("numpy", columns=[*columns, "speaker_ids", "labels", "dialogue_id"])
        self.rows = [_checked_feature_row(row, columns, num_labels,
                                          f"{source}: conversation {str(row['dialogue_id'])!r}") for row in table]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: int) -> dict:
        return self.rows[item]

    def lengths(self) -> list[int]:
        return [len(row["speaker_ids"]) for row in self.rows]


def fusion_feature_rows(splits: datasets.DatasetDict, config, source="", names=SPLITS) -> dict:
    """{split: FeatureRows} of the splits `names` found in `splits`, with the columns the fusion `config` reads."""
    columns = ("text", config.audio_feature_source, config.video_feature_source)
    return {split: FeatureRows(splits[split], columns, config.num_labels, f"{source} ({split})")
            for split in names if split in splits}


def _checked_feature_row(row: Mapping, columns: Sequence[str], num_labels: int, where: str) -> dict:
    speakers, labels = np.asarray(row["speaker_ids"], dtype=np.int64), np.asarray(row["labels"], dtype=np.int64)
    length = len(speakers)
    if length == 0:
        raise ValueError(f"{where} has no utterance")
    if len(labels) != length:
        raise ValueError(f"{where} has {len(labels)} labels for {length} utterances")
    bad = np.nonzero(~((labels == IGNORE_INDEX) | ((labels >= 0) & (labels < num_labels))))[0].tolist()
    if bad:
        raise ValueError(f"{where}, utterance(s) {bad}: labels {labels[bad].tolist()} are outside 0..{num_labels - 1}")
    if speakers.min() < 0:
        raise ValueError(f"{where} has negative speaker ids {speakers.tolist()}")
    item = {"speaker_ids": speakers, "labels": labels}
    for column in columns:
        item[column] = np.asarray(row[column], dtype=np.float32)
        if item[column].ndim != 2 or len(item[column]) != length:
            raise ValueError(f"{where}: column {column!r} has shape {item[column].shape}, expected ({length}, width)")
    return item


class EpochSampler(Sampler):
    """A shuffling sampler whose order depends only on (seed, epoch): resuming at epoch k replays epoch k's order.
    With `lengths`, transformers' `LengthGroupedSampler` order (batches of similar lengths, a bit of randomness)."""

    def __init__(self, num_items: int, seed: int, lengths: Sequence[int] | None = None, batch_size: int = 1):
        self.num_items, self.seed, self.epoch = num_items, seed, 0
        self.grouped = None if lengths is None else LengthGroupedSampler(batch_size, lengths=list(lengths))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.grouped is not None:
            self.grouped.generator = generator
            return iter(self.grouped)
        return iter(torch.randperm(self.num_items, generator=generator).tolist())
