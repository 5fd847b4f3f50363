"""The collators take dataset rows in python, numpy or torch format, and refuse what Trainer or `dataset.map` left of
them in one line that says what to do."""

import datasets
import numpy as np
import pytest
import torch
from tiny_magtkd import HIDDEN, tiny_fusion_config, tiny_processor, write_conversation_rows
from transformers import Trainer, TrainingArguments

from magtkd_hf import MagtkdDataCollator, MagtkdFusionModel
from magtkd_hf.features import FusionFeatureCollator, feature_dataset_features

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    return write_conversation_rows(folder, lengths=(3, 2), audio_seconds=0.3)


@pytest.fixture(scope="module")
def collator():
    return MagtkdDataCollator(tiny_processor(), modalities=("text",))


def feature_rows(lengths=(3, 2)):
    generator = np.random.default_rng(0)
    return [{
        "dialogue_id": str(index), "utterance_ids": [str(u) for u in range(length)],
        **{source: generator.standard_normal((length, HIDDEN)).astype(np.float32)
           for source in ("text", "audio_kd", "video_kd")},
        "speaker_ids": [u % 2 for u in range(length)], "labels": [(index + u) % 7 for u in range(length)],
    } for index, length in enumerate(lengths)]


def feature_dataset(lengths=(3, 2)):
    features = feature_dataset_features(HIDDEN, sources=("text", "audio_kd", "video_kd"))
    return datasets.Dataset.from_list(feature_rows(lengths), features=features)


@pytest.mark.parametrize("form", ["numpy", "torch"])
def test_the_data_collator_takes_rows_in_numpy_and_torch_format(rows, collator, form):
    expected = collator(rows)
    formatted = datasets.Dataset.from_list(rows).with_format(form)
    batch = collator([formatted[0], formatted[1]])
    assert batch.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(batch[key], expected[key])
    assert batch["labels"][0].tolist() == rows[0]["labels"]


def test_the_data_collator_takes_utterances_with_tensor_and_numpy_scalars(collator):
    conversation = [{"speaker": "A", "text": "hello there", "label": torch.tensor(4)},
                    {"speaker": "B", "text": "I am fine", "label": np.int64(2)}]
    assert collator([conversation])["labels"].tolist() == [[4, 2]]


@pytest.mark.parametrize("labels, message", [
    (torch.tensor([4.0, 2.5, 1.0]), "got float32 values of shape (3,)"),
    (np.eye(7, dtype=np.int64)[[4, 2, 1]], "got int64 values of shape (3, 7)"),
])
def test_the_data_collator_refuses_labels_that_are_not_class_indices(rows, collator, labels, message):
    row = {**rows[0], "labels": labels}
    with pytest.raises(ValueError, match=r"conversation '0': 'labels' must hold one integer class index per "
                                         rf"utterance, {message.replace('(', '[(]').replace(')', '[)]')}"):
        collator([row])


def test_the_data_collator_names_remove_unused_columns_when_trainer_dropped_the_columns(rows, collator, tmp_path):
    from tiny_magtkd import tiny_config

    from magtkd_hf import MagtkdForEmotionRecognition

    model = MagtkdForEmotionRecognition(tiny_config(collator.processor))
    arguments = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=1,
                                  use_cpu=True, report_to="none", save_strategy="no")  # remove_unused_columns left on
    trainer = Trainer(model=model, args=arguments, train_dataset=datasets.Dataset.from_list(rows),
                      data_collator=collator)
    with pytest.raises(ValueError, match=r"MagtkdDataCollator got rows without the column 'texts' \(columns: "
                                         r"\['labels'\]\); pass TrainingArguments\(remove_unused_columns=False\)"):
        trainer.train()


def test_the_data_collator_refuses_rows_mapped_through_the_processor(rows, collator):
    processed = datasets.Dataset.from_list(rows[:1]).map(
        lambda row: collator.processor(row, modalities=("text",)), remove_columns=list(rows[0]))
    with pytest.raises(ValueError, match=r"takes the dataset's own rows \('texts', 'speakers', ...\), not the "
                                         r"processor's output: do not map the processor over the dataset"):
        collator([processed[0]])


@pytest.mark.parametrize("form", ["numpy", "torch"])
def test_the_fusion_collator_takes_rows_in_numpy_and_torch_format(form):
    collator = FusionFeatureCollator()
    expected = collator(feature_rows())
    formatted = feature_dataset().with_format(form)
    batch = collator([formatted[0], formatted[1]])
    assert batch.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(batch[key], expected[key])


def test_the_fusion_collator_refuses_non_integer_labels():
    rows = feature_rows()
    rows[1]["labels"] = [0.0, 2.5]
    with pytest.raises(ValueError, match=r"conversation '1': 'labels' must hold one integer class index per "
                                         r"utterance, got float64 values of shape \(2,\)"):
        FusionFeatureCollator()(rows)


def test_the_fusion_collator_names_remove_unused_columns_when_trainer_dropped_the_columns(tmp_path):
    model = MagtkdFusionModel(tiny_fusion_config())
    arguments = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=1,
                                  use_cpu=True, report_to="none", save_strategy="no")
    trainer = Trainer(model=model, args=arguments, train_dataset=feature_dataset(),
                      data_collator=FusionFeatureCollator.from_config(model.config))
    with pytest.raises(ValueError, match=r"FusionFeatureCollator got rows without the column 'text' \(columns: "
                                         r"\['labels', 'speaker_ids'\]\); pass TrainingArguments\("
                                         r"remove_unused_columns=False\)"):
        trainer.train()


def test_the_data_collator_keeps_in_memory_audio_as_an_array():
    seen = []
    collator = MagtkdDataCollator(lambda conversations, **settings: seen.extend(conversations))
    waveform = np.zeros(1600, dtype=np.float32)
    collator([[{"speaker": "A", "text": "hello there", "audio": waveform, "label": torch.tensor(1)}]])
    assert seen[0][0]["audio"] is waveform and seen[0][0]["label"] == 1
