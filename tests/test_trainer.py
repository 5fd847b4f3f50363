"""Fine-tuning the tiny end-to-end model with transformers.Trainer and the package's data collator."""

import datasets
import torch
from tiny_magtkd import tiny_config, tiny_processor, write_conversation_rows
from transformers import AutoModel, Trainer, TrainingArguments

from magtkd_hf import MagtkdDataCollator, MagtkdForEmotionRecognition


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
