"""The training loop on the fusion stage: outputs, resume, two processes, released features, errors, recipes."""

import hashlib
import json
import os
import pickle
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoModel

import magtkd_hf
from magtkd_hf.apps.cli import main as cli
from magtkd_hf.apps.fusion_demo import synthetic_feature_splits
from magtkd_hf.apps.cli import build_parser
from magtkd_hf.apps.cli_train import training_config_from_args
from magtkd_hf.training import (
    EpochSampler,
    ModelSettings,
    TrainingConfig,
    evaluate_saved_fusion,
    load_recipe,
    run_stage,
)
from magtkd_hf.training.checkpointing import MANIFEST, TRAINER_STATE, CheckpointError, find_resumable_checkpoint
from magtkd_hf.training.data import FeatureRows, load_feature_splits
from magtkd_hf.training.reporting import confusion_matrix, write_json

HIDDEN = 64
FAST = ["--num-attention-heads", "4", "--dropout", "0.1", "--learning-rate", "1e-3", "--batch-size", "8",
        "--eval-batch-size", "8", "--num-workers", "0"]



pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def features_dir(tmp_path_factory):
    """Synthetic stage-3 features whose labels depend on them; odd split sizes (uneven last batches)."""
    splits = synthetic_feature_splits(hidden_size=HIDDEN, seed=3)
    sizes = {"train": 121, "validation": 27, "test": 29}
    folder = tmp_path_factory.mktemp("features") / "features"
    datasets.DatasetDict({split: splits[split].select(range(size)) for split, size in sizes.items()}).save_to_disk(
        str(folder)
    )
    return folder


def _config(output_dir, features_dir, **settings):
    overrides = {"*": {"learning_rate": 1e-3, "batch_size": 8, "eval_batch_size": 8, "num_workers": 0, **settings}}
    return TrainingConfig(
        output_dir=str(output_dir), recipe="meld", features=str(features_dir), overrides=overrides,
        model=ModelSettings(num_attention_heads=4, dropout=0.1), cpu=True,
    )


def _comparable(metrics):
    """metrics.json without wall-clock times."""
    history = [{key: value for key, value in entry.items() if not key.endswith("seconds")} for entry in metrics["history"]]
    return {**{key: value for key, value in metrics.items() if key != "history"}, "history": history}


def test_fusion_command_writes_model_metrics_and_confusion_matrix(tmp_path, features_dir, capsys):
    assert cli(["train", "fusion", "--output-dir", str(tmp_path), "--features", str(features_dir), "--epochs", "2",
                "--cpu", "--track-test", *FAST]) == 0
    assert "fusion: selected epoch" in capsys.readouterr().out
    folder = tmp_path / "fusion"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["selection"].startswith("best dev") and metrics["selected_epoch"] in (1, 2)
    assert metrics["settings"]["seed"] == 2024 and metrics["settings"]["learning_rate"] == 1e-3
    # The recipe's fusion warm-up is 1/30 of the run's steps (the released one epoch of 30), also for a 2-epoch run.
    assert metrics["schedule"] == {"warmup_steps": 1, "total_steps": 32, "optimizer_steps": 32}
    assert [entry["epoch"] for entry in metrics["history"]] == [1, 2]
    assert "test_selected_on_test" in metrics and "leaks" in metrics["test_selected_on_test"]["note"]
    test = metrics["test"]
    assert set(test["per_class_f1"]) == set(magtkd_hf.MELD_LABELS)
    assert test["num_utterances"] == sum(np.asarray(test["confusion_matrix"]).sum(axis=1))
    assert (folder / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(path.name for path in (folder / "checkpoints").iterdir()) == ["epoch_1", "epoch_2"]
    model = AutoModel.from_pretrained(str(folder))
    assert type(model).__name__ == "MagtkdFusionModel" and model.config.hidden_size == HIDDEN


def test_fusion_learns_on_features_that_carry_the_labels(tmp_path, features_dir):
    metrics = run_stage("fusion", _config(tmp_path, features_dir, epochs=4, warmup_ratio=0.125))
    first, best = metrics["history"][0]["validation"]["weighted_f1"], metrics["validation"]["weighted_f1"]
    assert best > 25.0 and best >= first  # 7 classes: chance is about 14
    assert metrics["history"][-1]["train_loss"] < metrics["history"][0]["train_loss"]


def test_resume_ends_with_the_same_metrics_as_an_uninterrupted_run(tmp_path, features_dir):
    uninterrupted = run_stage("fusion", _config(tmp_path / "a", features_dir, epochs=3))

    interrupted = _config(tmp_path / "b", features_dir, epochs=3)
    stopped = run_stage("fusion", replace(interrupted, stop_after_epochs=1))
    assert stopped == {"stopped_after_epoch": 1}
    assert find_resumable_checkpoint(tmp_path / "b" / "fusion" / "checkpoints")[0].name == "epoch_1"
    assert not (tmp_path / "b" / "fusion" / "metrics.json").exists()
    resumed = run_stage("fusion", replace(interrupted, resume="latest"))

    assert _comparable(resumed) == _comparable(uninterrupted)
    weights = [AutoModel.from_pretrained(str(tmp_path / run / "fusion")).state_dict() for run in ("a", "b")]
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, rtol=0, atol=0)


def test_resuming_from_a_checkpoint_of_another_stage_is_refused(tmp_path, features_dir):
    config = _config(tmp_path, features_dir, epochs=2)
    assert run_stage("fusion", replace(config, stop_after_epochs=1)) == {"stopped_after_epoch": 1}
    checkpoint = tmp_path / "fusion" / "checkpoints" / "epoch_1"
    state = json.loads((checkpoint / TRAINER_STATE).read_text())
    assert (state["stage"], state["model_class"]) == ("fusion", "MagtkdFusionModel")
    # The same checkpoint as the text stage would have recorded it (its manifest updated to match).
    write_json(checkpoint / TRAINER_STATE, {**state, "stage": "text", "model_class": "MagtkdTextModel"})
    manifest = json.loads((checkpoint / MANIFEST).read_text())
    manifest["files"][TRAINER_STATE] = {"size": (checkpoint / TRAINER_STATE).stat().st_size,
                                        "sha256": hashlib.sha256((checkpoint / TRAINER_STATE).read_bytes()).hexdigest()}
    write_json(checkpoint / MANIFEST, manifest)
    with pytest.raises(CheckpointError, match=r"saved by stage 'text' \(MagtkdTextModel\), not by this stage "
                                              r"'fusion' \(MagtkdFusionModel\)"):
        run_stage("fusion", replace(config, resume=str(checkpoint)))


def test_two_processes_gather_the_same_metrics_as_one(tmp_path, features_dir):
    """`torch.distributed.run` with 2 CPU processes (gloo): the metrics gathered over both equal a single-process
    evaluation of the saved model. Without a GPU the processes form one gloo group even without `--cpu` (before,
    each ran its own training into the same folder)."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "magtkd_hf", "train", "fusion", "--output-dir", str(tmp_path), "--features", str(features_dir),
        "--epochs", "2", "--warmup-ratio", "0.5", *([] if not torch.cuda.is_available() else ["--cpu"]), *FAST,
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    finished = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    metrics = json.loads((tmp_path / "fusion" / "metrics.json").read_text())
    assert metrics["num_processes"] == 2
    # 16 batches of 8 shared by 2 processes: 8 optimiser steps an epoch; the prepared scheduler, stepped once per
    # process at each of them, follows the same curve as one process would: peak after the warm-up, 0 at the end.
    assert metrics["schedule"] == {"warmup_steps": 8, "total_steps": 16, "optimizer_steps": 16}
    assert [entry["learning_rate"] for entry in metrics["history"]] == [pytest.approx(1e-3), 0.0]

    single = evaluate_saved_fusion(tmp_path / "fusion", features_dir, batch_size=5)
    for split in ("validation", "test"):
        assert single[split]["num_utterances"] == sum(
            len(labels) for labels in datasets.load_from_disk(str(features_dir))[split]["labels"]
        )
    assert single["test"]["weighted_f1"] == pytest.approx(metrics["test"]["weighted_f1"], abs=1e-9)
    assert single["test"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-9)
    assert single["test"]["num_utterances"] == metrics["test"]["num_utterances"]
    assert single["test"]["confusion_matrix"] == metrics["test"]["confusion_matrix"]
    assert single["validation"]["weighted_f1"] == pytest.approx(metrics["validation"]["weighted_f1"], abs=1e-9)


def _released_pickle(path, seed, conversations=12, hidden=HIDDEN):
    rng = np.random.default_rng(seed)
    data = {key: {} for key in ("text", "audio", "video", "audio_kd", "video_kd", "speakers", "labels", "dia2utt")}
    for dialogue in range(conversations):
        length = int(rng.integers(1, 6))
        for key in ("text", "audio", "video", "audio_kd", "video_kd"):
            data[key][dialogue] = [rng.standard_normal(hidden).astype(np.float32) for _ in range(length)]
        data["speakers"][dialogue] = [int(s) for s in rng.choice([40, 3, 17, 250], length)]
        data["labels"][dialogue] = [int(label) for label in rng.integers(0, 7, length)]
        data["dia2utt"][dialogue] = list(range(length))
    data["vids"] = list(range(conversations))
    with open(path, "wb") as handle:
        pickle.dump(data, handle)
    return path


@pytest.mark.parametrize("speaker_indexing", ["conversation", "released"])
def test_import_released_features_then_train_fusion(tmp_path, speaker_indexing):
    files = [str(_released_pickle(tmp_path / f"{split}_features.pkl", seed)) for seed, split in
             enumerate(("train", "dev", "test"))]
    assert cli(["import-released-features", *files, "--output", str(tmp_path / "features"), "--dataset", "meld",
                "--speaker-indexing", speaker_indexing]) == 0
    assert cli(["train", "fusion", "--output-dir", str(tmp_path / "run"), "--features", str(tmp_path / "features"),
                "--epochs", "1", "--cpu", *FAST]) == 0
    model = AutoModel.from_pretrained(str(tmp_path / "run" / "fusion"))
    # The released MELD ids are global (up to 303 here 250): the speaker table grows to hold them.
    assert model.config.num_speakers == (251 if speaker_indexing == "released" else 9)
    assert json.loads((tmp_path / "run" / "fusion" / "metrics.json").read_text())["test"]["num_utterances"] > 0


def test_errors_name_the_folder_and_the_conversation(tmp_path, features_dir):
    with pytest.raises(FileNotFoundError, match="nowhere.*extract-features|nowhere"):
        run_stage("fusion", _config(tmp_path, tmp_path / "nowhere", epochs=1))
    splits = load_feature_splits(features_dir)
    rows = splits["train"].select(range(3)).to_dict()
    rows["labels"][1] = [0] * (len(rows["labels"][1]) - 1) + [12]
    plain = datasets.Dataset.from_dict(rows)  # labels as plain ints: 12 is outside MELD's 7 classes
    with pytest.raises(ValueError, match=r"conversation 'train1', utterance\(s\) \[\d+\].*\[12\]"):
        FeatureRows(plain, ("text", "audio_kd", "video_kd"), 7, "features (train)")


def test_sampler_order_depends_only_on_seed_and_epoch():
    lengths = [int(n) for n in np.random.default_rng(0).integers(1, 20, 50)]
    first, second = EpochSampler(50, 7, lengths, 4), EpochSampler(50, 7, lengths, 4)
    first.set_epoch(3), second.set_epoch(3)
    assert list(first) == list(second) and sorted(first) == list(range(50))
    second.set_epoch(4)
    assert list(first) != list(second)
    plain = EpochSampler(10, 1)
    assert sorted(plain) == list(range(10))


def test_confusion_matrix_counts_labelled_utterances_only():
    assert confusion_matrix([0, 1, 1, -100, 2], [0, 2, 1, 0, 2], 3) == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]


def test_recipes_hold_the_released_settings():
    meld, iemocap = load_recipe("meld"), load_recipe("iemocap")
    assert meld.seed == iemocap.seed == 2024
    fusion = meld.stage_settings("fusion")
    assert (fusion.learning_rate, fusion.weight_decay, fusion.batch_size, fusion.epochs) == (1e-4, 1e-6, 16, 30)
    assert fusion.max_grad_norm == 10.0 and fusion.schedule == "optimizer_steps"
    text = meld.stage_settings("text")
    assert (text.learning_rate, text.weight_decay, text.batch_size, text.epochs) == (1e-5, 0.01, 4, 10)
    assert iemocap.stage_settings("audio").learning_rate == 5e-6 and meld.stage_settings("audio").learning_rate == 1e-5
    for recipe, weights in ((meld, (0.1, 1.0)), (iemocap, (1.0, 0.0))):
        for stage in ("distill-audio", "distill-video"):
            settings = recipe.stage_settings(stage)
            assert (settings.logit_weight, settings.feature_weight) == weights
    assert meld.stage_settings("distill-audio").student_init == "stage"
    assert meld.stage_settings("distill-video").student_init == "encoder"
    assert meld.stage_settings("fusion", {"epochs": 2, "learning_rate": None}).epochs == 2
    with pytest.raises(ValueError, match="unknown setting 'epoch'"):
        meld.stage_settings("fusion", {"epoch": 2})
    assert Path(magtkd_hf.__file__).parent.joinpath("training", "recipes", "meld.json").is_file()
    assert (meld.model.num_attention_heads, meld.model.dropout) == (8, 0.5)
    assert meld.encoder_config_overrides == {"audio": {"mask_time_length": 3}}


def test_recipe_files_hold_hyper_parameters_only(tmp_path):
    """Labels, fusion loss weights, feature sources and speaker numbering come from the dataset table, not the
    recipe; a recipe naming an unknown setting or dataset is refused with the file and the key."""
    for name in ("meld", "iemocap"):
        text = Path(magtkd_hf.__file__).parent.joinpath("training", "recipes", f"{name}.json").read_text()
        for fact in magtkd_hf.DATASETS[name]:
            assert f'"{fact}"' not in text
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"dataset": "meld", "stages": {"fusion": {"epoch": 3}}}))
    with pytest.raises(ValueError, match=r"bad.json 'stages.fusion': unknown setting 'epoch'"):
        load_recipe(bad)
    bad.write_text(json.dumps({"dataset": "meld", "stages": {"fusion": {"batch_size": 0}}}))
    with pytest.raises(ValueError, match=r"bad.json 'stages.fusion': batch_size must be at least 1, got 0"):
        load_recipe(bad)
    with pytest.raises(ValueError, match=r"overrides\['text'\]: warmup_ratio must be between 0 and 1"):
        TrainingConfig(output_dir=str(tmp_path), overrides={"text": {"warmup_ratio": 2}})
    bad.write_text(json.dumps({"dataset": "friends", "stages": {}}))
    with pytest.raises(ValueError, match="Unknown dataset 'friends'"):
        load_recipe(bad)


def test_the_train_command_is_built_from_the_settings_dataclasses():
    """Every field of the settings dataclasses is an option of `train`; options given apply to every stage, `--set`
    to one stage (winning over the options), options not given leave the recipe's values."""
    from dataclasses import fields

    from magtkd_hf.training import RunSettings, StageSettings

    arguments = build_parser().parse_args([
        "train", "fusion", "--output-dir", "runs/x", "--epochs", "3", "--no-fused-optimizer", "--track-test",
        "--audio-features", "audio", "--set", "fusion.epochs=5", "--set", "learning_rate=2e-4", "--resume",
    ])
    config = training_config_from_args(arguments)
    assert config.overrides == {"*": {"learning_rate": 2e-4, "epochs": 3, "fused_optimizer": False,
                                      "track_test": True}, "fusion": {"epochs": 5}}
    assert config.model == ModelSettings(audio_feature_source="audio") and config.resume == "latest"
    recipe = load_recipe(config.recipe)
    fusion = recipe.stage_settings("fusion", config.stage_overrides("fusion"))
    text = recipe.stage_settings("text", config.stage_overrides("text"))
    assert (fusion.epochs, text.epochs, fusion.batch_size, text.batch_size) == (5, 3, 16, 4)
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for cls in (RunSettings, ModelSettings, StageSettings):
        for item in fields(cls):
            assert f"--{item.name.replace('_', '-')}" in help_text


def test_train_help_lists_every_stage(capsys):
    with pytest.raises(SystemExit):
        cli(["train", "--help"])
    printed = capsys.readouterr().out
    for stage in ("text", "audio", "video", "distill-audio", "distill-video", "extract-features", "fusion", "all"):
        assert stage in printed


def test_gradient_accumulation_and_bf16_autocast(tmp_path, features_dir):
    metrics = run_stage("fusion", _config(tmp_path, features_dir, epochs=1, gradient_accumulation_steps=3,
                                          mixed_precision="bf16"))
    batches = -(-121 // 8)  # 16 batches of 8 conversations
    assert metrics["schedule"]["optimizer_steps"] == -(-batches // 3) == metrics["schedule"]["total_steps"]
    assert metrics["settings"]["mixed_precision"] == "bf16" and np.isfinite(metrics["history"][0]["train_loss"])


def test_set_routes_fusion_model_settings_to_the_model():
    args = build_parser().parse_args(
        ["train", "fusion", "--output_dir", "out", "--set", "fusion.causal=true", "--set", "anchor_residual=true",
         "--set", "fusion.epochs=3"]
    )
    config = training_config_from_args(args)
    assert config.model.causal is True and config.model.anchor_residual is True
    assert config.overrides["fusion"] == {"epochs": 3}


def test_the_accelerator_state_reset_the_loop_relies_on():
    """The loop's `reset_accelerator_state` calls Accelerate's private `AcceleratorState._reset_state` (checked on
    accelerate 1.16.0), so that stages of other mixed precisions run in one process (`train all`). This fails when
    Accelerate no longer needs it (a second Accelerator may change the precision) or no longer has it."""
    from accelerate import Accelerator, PartialState

    from magtkd_hf.training.loop import reset_accelerator_state

    reset_accelerator_state()
    assert Accelerator(cpu=True, mixed_precision="no").mixed_precision == "no"
    with pytest.raises(ValueError, match="already been initialized"):
        Accelerator(cpu=True, mixed_precision="bf16")
    reset_accelerator_state()
    assert Accelerator(cpu=True, mixed_precision="bf16").mixed_precision == "bf16"
    assert PartialState().initialized  # the distributed set-up is kept
    reset_accelerator_state()
