"""`magtkd-hf train all` on a tiny generated MELD-layout release with tiny encoders: every stage, then predictions."""

import csv
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoProcessor, Data2VecAudioModel, RobertaModel, TimesformerModel

import magtkd_hf
from magtkd_hf import load_meld
from magtkd_hf.apps.cli import main as cli
from magtkd_hf.datasets_scripts.synthetic import write_meld_tree
from magtkd_hf.features import FusionFeatureCollator
from magtkd_hf.training import STAGES, StageInputs, TrainingConfig
from magtkd_hf.training.data import UtteranceItems
from magtkd_hf.training.stages import distillation_job

from media_fixtures import write_mp4
from tiny_magtkd import tiny_audio_config, tiny_processor, tiny_text_config, tiny_video_config

SHARED_MELD = Path(__file__).resolve().parent / "data" / "meld"  # shipped in the repository
CSV_NAMES = {"train": "train_sent_emo.csv", "validation": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
# Real MELD rows of a few short dialogues per split (20 / 11 / 11 utterances), every clip a tiny generated MP4.
DIALOGUES = {"train": {"1", "3", "5"}, "validation": {"0", "2", "3"}, "test": {"0", "1"}}
STAGE_FOLDERS = ("text", "audio", "video", "distill-audio", "distill-video", "fusion")



pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory):
    """A MELD-layout release folder, a tiny processor and tiny encoders saved as folders (no download)."""
    root = tmp_path_factory.mktemp("tiny_meld")
    processor = tiny_processor()
    processor.save_pretrained(str(root / "processor"))
    RobertaModel(tiny_text_config(len(processor.tokenizer)), add_pooling_layer=False).save_pretrained(
        str(root / "text-encoder")
    )
    Data2VecAudioModel(tiny_audio_config()).save_pretrained(str(root / "audio-encoder"))
    TimesformerModel(tiny_video_config()).save_pretrained(str(root / "video-encoder"))
    rows = {}
    for split, name in CSV_NAMES.items():
        with open(SHARED_MELD / name, encoding="utf-8", newline="") as handle:
            rows[split] = [row for row in csv.DictReader(handle) if row["Dialogue_ID"] in DIALOGUES[split]]
    clip = write_mp4(root / "clip.mp4", num_frames=8, width=40, height=32, audio_seconds=0.4)
    write_meld_tree(root / "MELD.Raw", rows, clip)
    return root


def _inputs(root):
    return [
        "--data", str(root / "MELD.Raw"), "--processor", str(root / "processor"),
        "--text-encoder", str(root / "text-encoder"), "--audio-encoder", str(root / "audio-encoder"),
        "--video-encoder", str(root / "video-encoder"),
    ]


FAST = ["--epochs", "1", "--num-workers", "0", "--num-attention-heads", "4", "--dropout", "0.1",
        "--eval-batch-size", "8", "--cpu"]


@pytest.fixture(scope="module")
def trained(tiny_release, tmp_path_factory):
    output = tmp_path_factory.mktemp("run") / "run"
    # float32 features (the recipe's "auto" is bf16 on CPUs with AVX512-BF16), so that the float32 end-to-end model
    # reproduces them to 1e-4 below
    float32_features = ["--set", "extract-features.mixed_precision=no"]
    assert cli(["train", "all", "--output-dir", str(output), *_inputs(tiny_release), *FAST, *float32_features]) == 0
    return output


def test_train_all_writes_every_stage(trained):
    for folder in STAGE_FOLDERS:
        metrics = json.loads((trained / folder / "metrics.json").read_text())
        assert metrics["stage"] == folder and metrics["selected_epoch"] == 1
        assert metrics["test"]["num_utterances"] == 11 and metrics["validation"]["num_utterances"] == 11
        assert (trained / folder / "confusion_matrix.png").is_file()
        assert (trained / folder / "checkpoints" / "epoch_1" / "trainer_state.json").is_file()
    distill = json.loads((trained / "distill-audio" / "metrics.json").read_text())
    assert distill["loss"] == {"cross_entropy": 1.0, "logit_relation": 0.1, "feature_relation": 1.0}  # MELD
    assert distill["initialised_from"] == str(trained / "audio") and distill["teacher"] == str(trained / "text")
    assert json.loads((trained / "features" / "metrics.json").read_text())["mixed_precision"] == "no"
    video = json.loads((trained / "distill-video" / "metrics.json").read_text())
    assert video["initialised_from"].endswith("video-encoder")  # released MELD: the pretrained video encoder


def test_train_all_writes_the_model_card_with_the_fusion_metrics(trained):
    fusion = json.loads((trained / "fusion" / "metrics.json").read_text())
    card = (trained / "model" / "README.md").read_text()
    assert f"| test | {fusion['test']['weighted_f1']:.2f} | {fusion['test']['accuracy']:.2f} | 11 |" in card
    assert "![Confusion matrix" in card and (trained / "model" / "confusion_matrix.png").is_file()
    assert "**MELD**" in card and "| recipe | meld |" in card and "| fusion learning_rate |" in card

    features = datasets.load_from_disk(str(trained / "features"))
    assert {split: len(features[split]) for split in features} == {"train": 3, "validation": 3, "test": 2}
    row = features["test"].with_format("numpy")[1]
    assert row["text"].shape == row["video_kd"].shape == (8, 32) and len(row["labels"]) == 8
    assert features["test"].features["labels"].feature.names == list(magtkd_hf.MELD_LABELS)
    assert json.loads((trained / "features" / "metrics.json").read_text())["utterances"]["train"] == 20


def test_every_stage_records_the_data_it_was_trained_and_measured_on(trained, tiny_release):
    """The model card's datasets and model-index come from this record alone (`magtkd_hf.apps.hub`)."""
    sizes = {"train": {"conversations": 3, "utterances": 20}, "validation": {"conversations": 3, "utterances": 11},
             "test": {"conversations": 2, "utterances": 11}}
    expected = {"name": "meld", "source": str((tiny_release / "MELD.Raw").resolve()), "splits": sizes}
    for folder in (*STAGE_FOLDERS, "features", "model"):
        assert json.loads((trained / folder / "metrics.json").read_text())["data"] == expected, folder


def test_final_model_loads_with_auto_classes_and_predicts(trained, tiny_release):
    model = AutoModel.from_pretrained(str(trained / "model")).eval()
    processor = AutoProcessor.from_pretrained(str(trained / "model"))
    assert type(model).__name__ == "MagtkdForEmotionRecognition"
    test = load_meld(tiny_release / "MELD.Raw", check_media=False)["test"]
    batch = processor([test[0], test[1]])
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 8, 7)
    predictions = logits.argmax(-1)[batch["utterance_mask"].bool()]
    assert predictions.shape == (11,) and bool(((predictions >= 0) & (predictions < 7)).all())

    # The end-to-end model = the stage-3 features through the trained fusion.
    fusion = AutoModel.from_pretrained(str(trained / "fusion")).eval()
    rows = datasets.load_from_disk(str(trained / "features"))["test"].with_format("numpy")
    inputs = FusionFeatureCollator("audio_kd", "video_kd")([rows[0], rows[1]])
    with torch.no_grad():
        expected = fusion(**{key: value for key, value in inputs.items() if key != "labels"}).logits
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


def test_distillation_loss_falls_over_a_few_steps(trained, tiny_release):
    inputs = StageInputs(TrainingConfig(
        output_dir=str(trained), recipe="meld", data=str(tiny_release / "MELD.Raw"),
        processor=str(tiny_release / "processor"), cpu=True,
    ))
    job = distillation_job(STAGES["distill-audio"], inputs, inputs.settings("distill-audio"))
    assert isinstance(job.train_dataset, UtteranceItems)
    batch = job.collator([job.train_dataset[index] for index in range(8)])
    assert set(batch) == {"labels", "student_inputs", "teacher_inputs"}
    assert set(batch["student_inputs"]) == {"input_values", "attention_mask"}
    assert set(job.eval_collator([job.train_dataset[0]])) == {"input_values", "attention_mask", "labels"}
    model = job.model.train()
    assert not model.teacher.training
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(6):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] and np.isfinite(losses).all()
    assert all(not parameter.requires_grad and parameter.grad is None for parameter in model.teacher.parameters())


def test_all_with_resume_skips_finished_stages(trained, tiny_release, capsys):
    before = (trained / "fusion" / "metrics.json").read_text()
    assert cli(["train", "all", "--output-dir", str(trained), *_inputs(tiny_release), *FAST, "--resume"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("already done") == 7
    assert (trained / "fusion" / "metrics.json").read_text() == before


def test_a_stage_without_its_inputs_names_the_missing_folder(tmp_path, tiny_release):
    with pytest.raises(FileNotFoundError, match=r"'distill-audio' needs the output of stage 'audio' in .*audio"):
        cli(["--debug", "train", "distill-audio", "--output-dir", str(tmp_path), *_inputs(tiny_release), *FAST])


def test_training_rows_carry_the_released_iemocap_running_speakers():
    from magtkd_hf.training.data import slice_row
    from magtkd_hf.training.inputs import with_running_speakers

    processor = tiny_processor(speaker_mode="released_iemocap")
    rows = [{"dialogue_id": str(d), "speakers": speakers, "texts": ["a b c"] * len(speakers)}
            for d, speakers in enumerate([["A", "B", "C"], ["C", "D", "B"], ["E", "A"]])]
    split = with_running_speakers(datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}))["train"]
    assert len(split[2]["previous_speakers"]) == 2  # as long as its conversation: `slice_row` must not cut it
    chained = processor(rows, modalities=("text",))["speaker_ids"]
    for number in (2, 1, 0):  # out of order, each history alone (as the text stage's shuffled batches see them)
        row = split[number]
        for utterance in range(len(row["texts"])):
            history = slice_row(row, 0, utterance + 1)
            ids = processor([history], modalities=("text",))["speaker_ids"][0, : utterance + 1]
            assert ids.tolist() == chained[number, : utterance + 1].tolist()
