"""Fine-tuning the tiny end-to-end model with transformers.Trainer and the package's data collator; evaluating and
predicting with the ERC metric."""

import datasets
import numpy as np
import pytest
import torch
from tiny_magtkd import tiny_config, tiny_processor, write_conversation_rows
from transformers import AutoModel, Trainer, TrainingArguments

from magtkd_hf import MagtkdDataCollator, MagtkdForEmotionRecognition
from magtkd_hf.metrics import erc_compute_metrics, erc_scores

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_trainer_fine_tunes_the_end_to_end_model(tmp_path):
    (tmp_path / "media").mkdir()
    rows = write_conversation_rows(tmp_path / "media", lengths=(3, 2, 2, 3), audio_seconds=0.3)
    dataset = datasets.Dataset.from_list(rows)
    processor = tiny_processor()
    collator = MagtkdDataCollator(processor)
    torch.manual_seed(0)
    model = MagtkdForEmotionRecognition(tiny_config(processor, dropout=0.0))
    fixed_batch = collator(rows)
    model.eval()
    with torch.no_grad():
        loss_before = model(**fixed_batch).loss.item()

    arguments = TrainingArguments(
        output_dir=str(tmp_path / "run"), per_device_train_batch_size=2, max_steps=8, learning_rate=3e-3,
        remove_unused_columns=False, use_cpu=True, report_to="none", logging_steps=1, save_strategy="no",
        dataloader_num_workers=0, seed=0,
    )
    trainer = Trainer(model=model, args=arguments, train_dataset=dataset, data_collator=collator,
                      processing_class=processor)
    result = trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 8 and all(torch.isfinite(torch.tensor(losses)))
    assert torch.isfinite(torch.tensor(result.training_loss))
    model.eval()
    with torch.no_grad():
        loss_after = model(**fixed_batch).loss.item()
    assert loss_after < loss_before

    trainer.save_model(str(tmp_path / "saved"))
    reloaded = AutoModel.from_pretrained(tmp_path / "saved").eval()
    assert type(reloaded) is MagtkdForEmotionRecognition
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**fixed_batch).logits, model(**fixed_batch).logits)
    assert (tmp_path / "saved" / "processor_config.json").exists()


def test_trainer_evaluates_with_the_erc_metric_and_predicts_one_row_per_utterance(tmp_path):
    """Batches of 2 conversations of 3, 2, 2, 3 and 1 utterances: Trainer pads the last batch's logits and labels
    with -100 to 3 utterances; `predict` gives the logits alone (not the anchor heads and features), aligned with the
    labels, and `evaluate` reports the ERC metric of exactly those."""
    (tmp_path / "media").mkdir()
    lengths = (3, 2, 2, 3, 1)
    rows = write_conversation_rows(tmp_path / "media", lengths=lengths, audio_seconds=0.3)
    dataset = datasets.Dataset.from_list(rows)
    processor = tiny_processor()
    collator = MagtkdDataCollator(processor)
    torch.manual_seed(0)
    model = MagtkdForEmotionRecognition(tiny_config(processor, dropout=0.0)).eval()
    names = model.config.label_names
    arguments = TrainingArguments(
        output_dir=str(tmp_path / "run"), per_device_eval_batch_size=2, remove_unused_columns=False, use_cpu=True,
        report_to="none", dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=arguments, eval_dataset=dataset, data_collator=collator,
                      processing_class=processor, compute_metrics=erc_compute_metrics(names))

    predicted = trainer.predict(dataset)
    assert isinstance(predicted.predictions, np.ndarray)
    assert predicted.predictions.shape == (len(lengths), max(lengths), len(names))
    expected_labels = np.full((len(lengths), max(lengths)), -100)
    for row, conversation in enumerate(rows):
        expected_labels[row, : len(conversation["labels"])] = conversation["labels"]
    np.testing.assert_array_equal(predicted.label_ids, expected_labels)
    with torch.no_grad():  # row i, utterance j is conversation i's utterance j
        for row, conversation in enumerate(rows):
            alone = model(**collator([conversation])).logits[0].numpy()
            np.testing.assert_allclose(predicted.predictions[row, : lengths[row]], alone, atol=1e-5)

    metrics = trainer.evaluate()
    by_hand = erc_scores(predicted.predictions.argmax(-1), predicted.label_ids, names)
    assert by_hand["num_utterances"] == sum(lengths) == metrics["eval_num_utterances"]
    assert metrics["eval_weighted_f1"] == pytest.approx(by_hand["weighted_f1"], abs=1e-9)
    assert metrics["eval_accuracy"] == pytest.approx(by_hand["accuracy"], abs=1e-9)
    for name in names:
        assert metrics[f"eval_f1_{name}"] == pytest.approx(by_hand["per_class_f1"][name], abs=1e-9)
    assert predicted.metrics["test_weighted_f1"] == pytest.approx(metrics["eval_weighted_f1"], abs=1e-9)
    assert np.isfinite(metrics["eval_loss"])


def test_trainer_fine_tunes_the_fusion_on_a_torch_formatted_features_dataset(tmp_path):
    """The README's fusion recipe: Trainer, `FusionFeatureCollator` and `erc_compute_metrics` on a features dataset
    in torch format; the metric module gives the same weighted F1 as Trainer's report."""
    from test_collators import feature_dataset
    from tiny_magtkd import tiny_fusion_config

    from magtkd_hf import MagtkdFusionModel, load_erc_metric
    from magtkd_hf.features import FusionFeatureCollator

    features = feature_dataset(lengths=(3, 2, 4, 1)).with_format("torch")
    torch.manual_seed(0)
    model = MagtkdFusionModel(tiny_fusion_config(dropout=0.0))
    names = model.config.label_names
    arguments = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=2, per_device_eval_batch_size=2, max_steps=4,
        learning_rate=3e-3, remove_unused_columns=False, use_cpu=True, report_to="none", save_strategy="no",
        dataloader_num_workers=0, seed=0,
    )
    trainer = Trainer(model=model, args=arguments, train_dataset=features,
                      data_collator=FusionFeatureCollator.from_config(model.config),
                      compute_metrics=erc_compute_metrics(names))
    trainer.train()
    predicted = trainer.predict(features)
    assert predicted.predictions.shape == (4, 4, len(names))
    scores = load_erc_metric().compute(predictions=predicted.predictions.argmax(-1).ravel(),
                                       references=predicted.label_ids.ravel(), label_names=names)
    assert scores["num_utterances"] == 10 == predicted.metrics["test_num_utterances"]
    assert scores["weighted_f1"] == pytest.approx(predicted.metrics["test_weighted_f1"], abs=1e-9)
