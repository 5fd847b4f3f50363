"""Stage-3 utterance features as `datasets` objects (one row per conversation) and their batching for the fusion."""

from collections.abc import Mapping, Sequence

import datasets
import numpy as np
import torch

from .configuration_magtkd import FEATURE_SOURCES
from .data_collator import check_columns, class_indices, conversation_name
from .losses import IGNORE_INDEX


def feature_dataset_features(
    hidden_size: int, label_names: Sequence[str] | None = None, sources: Sequence[str] = FEATURE_SOURCES
) -> datasets.Features:
    """The typed schema of a stage-3 features dataset: per conversation, an (n, hidden_size) array per source (all of
    `FEATURE_SOURCES`, or those of a run without some modalities: `text` is always there)."""
    label = datasets.ClassLabel(names=list(label_names)) if label_names else datasets.Value("int64")
    columns = {
        "dialogue_id": datasets.Value("string"),
        "utterance_ids": datasets.List(datasets.Value("string")),
        **{source: datasets.Array2D(shape=(None, hidden_size), dtype="float32") for source in sources},
        "speaker_ids": datasets.List(datasets.Value("int64")),
        "labels": datasets.List(label),
    }
    return datasets.Features(columns)


def conversation_lengths(dataset: datasets.Dataset) -> list[int]:
    """Utterances per conversation, read from the small `speaker_ids` column."""
    return [len(speakers) for speakers in dataset["speaker_ids"]]


class FusionFeatureCollator:
    """
    Rows of a features dataset (in python, numpy or torch format) -> `MagtkdFusionModel` inputs, padded to the longest
    conversation of the batch:

    - `text_features`, `audio_features`, `video_features`: (B, N, H) float32, from the `text` column and the columns
      named by `audio_source`/`video_source` (the config's `audio_feature_source`/`video_feature_source`);
    - `speaker_ids`, `attention_mask`: (B, N) long; `labels`: (B, N) long with -100 at padding;
    - `audio_mask`/`video_mask`: (B, N) zeros when the rows have no audio/video column (features of a run without
      that modality): the fusion then takes its missing-modality embedding; absent when the column is there.
    """

    def __init__(self, audio_source: str = "audio_kd", video_source: str = "video_kd"):
        self.sources = {"text_features": "text", "audio_features": audio_source, "video_features": video_source}

    @classmethod
    def from_config(cls, config) -> "FusionFeatureCollator":
        """The collator of the columns a `MagtkdFusionConfig` reads (`audio_feature_source`, `video_feature_source`)."""
        return cls(config.audio_feature_source, config.video_feature_source)

    def __call__(self, rows: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        check_columns(rows[0], "text", type(self).__name__)
        lengths = [len(row["speaker_ids"]) for row in rows]
        batch_size, max_length = len(rows), max(lengths)
        width = np.asarray(rows[0]["text"]).shape[-1]
        batch = {}
        for input_name, column in self.sources.items():
            padded = np.zeros((batch_size, max_length, width), dtype=np.float32)
            if column not in rows[0]:
                batch[input_name.replace("_features", "_mask")] = torch.zeros(batch_size, max_length, dtype=torch.long)
            else:
                for index, row in enumerate(rows):
                    padded[index, : lengths[index]] = np.asarray(row[column], dtype=np.float32)
            batch[input_name] = torch.from_numpy(padded)
        batch["speaker_ids"] = self._pad_integers([row["speaker_ids"] for row in rows], max_length, 0)
        batch["attention_mask"] = self._pad_integers([[1] * length for length in lengths], max_length, 0)
        labels = [class_indices(np.asarray(row["labels"]), conversation_name(row, index)) for index, row in enumerate(rows)]
        batch["labels"] = self._pad_integers(labels, max_length, IGNORE_INDEX)
        return batch

    @staticmethod
    def _pad_integers(sequences, max_length, fill):
        padded = torch.full((len(sequences), max_length), fill, dtype=torch.long)
        for index, values in enumerate(sequences):
            padded[index, : len(values)] = torch.tensor(np.asarray(values), dtype=torch.long)
        return padded
