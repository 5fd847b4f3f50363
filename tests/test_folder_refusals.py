"""No random weights anywhere: every loader of a saved folder refuses, in one line naming the folder, a folder of
another model class (naming the class found and the class expected) and a folder with a missing or an unexpected
weight; a config.json that is not a JSON object is refused naming the file."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_magtkd import tiny_config, tiny_fusion_config, tiny_processor

from magtkd_hf import MagtkdAudioModel, MagtkdForEmotionRecognition, MagtkdFusionModel, MagtkdTextModel
from magtkd_hf.apps.cli import main as cli
from magtkd_hf.inference import load_emotion_model
from magtkd_hf.loading import ModelFolderError, load_config, load_model
from magtkd_hf.training import StageInputs, TrainingConfig, evaluate_saved_fusion
from magtkd_hf.training.extract import trained_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A fusion folder and an end-to-end folder (with its processor), tiny, and damaged copies of each."""
    root = tmp_path_factory.mktemp("refusals")
    torch.manual_seed(0)
    MagtkdFusionModel(tiny_fusion_config()).save_pretrained(root / "fusion")
    processor = tiny_processor()
    MagtkdForEmotionRecognition(tiny_config(processor)).save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    for name in ("fusion", "model"):
        _damaged_copy(root / name, root / f"{name}-missing", lambda weights: weights.pop(sorted(weights)[-1]))
        _damaged_copy(root / name, root / f"{name}-unexpected",
                      lambda weights: weights.update({"extra.weight": torch.zeros(2)}))
    return root


def _damaged_copy(source, target, damage):
    shutil.copytree(source, target)
    weights = load_file(target / "model.safetensors")
    damage(weights)
    save_file(weights, target / "model.safetensors", metadata={"format": "pt"})


def _one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("damage, kind", [("missing", "missing keys"), ("unexpected", "unexpected keys")])
@pytest.mark.parametrize("name, expected", [("fusion", MagtkdFusionModel), ("model", MagtkdForEmotionRecognition)])
def test_load_model_refuses_a_missing_or_unexpected_weight(folders, name, expected, damage, kind):
    with pytest.raises(ModelFolderError) as error:
        load_model(folders / f"{name}-{damage}", expected=expected)
    assert f"{name}-{damage}/model.safetensors" in _one_line(error) and kind in str(error.value)


def test_load_model_refuses_another_model_class_naming_both(folders):
    with pytest.raises(ModelFolderError) as error:
        load_model(folders / "model", expected=MagtkdFusionModel)
    message = _one_line(error)
    assert str(folders / "model") in message
    assert "holds a MagtkdForEmotionRecognition, not a MagtkdFusionModel" in message
    with pytest.raises(ModelFolderError, match="holds a MagtkdFusionModel, not a MagtkdTextModel or MagtkdAudioModel"):
        load_model(folders / "fusion", expected=(MagtkdTextModel, MagtkdAudioModel))
    assert type(load_model(folders / "fusion", expected=MagtkdFusionModel)) is MagtkdFusionModel


@pytest.mark.parametrize("content, kind", [("[1, 2]", "list"), ('"fusion"', "str"), ("3", "int")])
def test_a_config_that_is_not_a_json_object_is_refused_naming_the_file(tmp_path, content, kind):
    (tmp_path / "config.json").write_text(content)
    for load in (load_config, load_model):
        with pytest.raises(ModelFolderError) as error:
            load(tmp_path)
        assert _one_line(error) == f"{tmp_path / 'config.json'}: a model config must be a JSON object, not a {kind}."


def test_evaluate_refuses_an_end_to_end_folder_and_damaged_fusion_folders(folders, tmp_path, capsys):
    """The issue's case: `evaluate RUN/model --features ...` gave a random fusion model's F1 0.0 and exit status 0."""
    assert cli(["evaluate", str(folders / "model"), "--features", str(tmp_path)]) == 1
    error = capsys.readouterr().err.splitlines()
    assert error[0] == (f"magtkd-hf evaluate: error: {folders / 'model'}: holds a MagtkdForEmotionRecognition, not a "
                        "MagtkdFusionModel as expected here; give a MagtkdFusionModel folder.")
    for damage in ("missing", "unexpected"):
        with pytest.raises(ModelFolderError, match=f"fusion-{damage}/model.safetensors"):
            evaluate_saved_fusion(folders / f"fusion-{damage}", tmp_path)


def test_stage_folders_read_by_later_stages_are_checked(folders, tmp_path):
    """extract-features, the distillation stages and `train all`'s end-to-end model read the earlier stages' folders
    (here `--text-model` and `--fusion-model`-like paths) through `trained_model`."""
    inputs = StageInputs(TrainingConfig(output_dir=str(tmp_path), recipe="meld", text_model=str(folders / "fusion")))
    with pytest.raises(ModelFolderError) as error:
        trained_model(inputs, "text", "extract-features")
    assert _one_line(error).endswith("holds a MagtkdFusionModel, not a MagtkdTextModel as expected here; give a "
                                     "MagtkdTextModel folder.")
    for damage in ("missing", "unexpected"):
        shutil.copytree(folders / f"fusion-{damage}", tmp_path / damage / "fusion")
        inputs = StageInputs(TrainingConfig(output_dir=str(tmp_path / damage), recipe="meld"))
        with pytest.raises(ModelFolderError, match=f"{damage}/fusion/model.safetensors"):
            trained_model(inputs, "fusion", "all")
    model, folder = trained_model(StageInputs(TrainingConfig(output_dir=str(folders), recipe="meld")), "fusion", "all")
    assert type(model) is MagtkdFusionModel and folder == folders / "fusion"


@pytest.mark.parametrize("damage", ["missing", "unexpected"])
def test_predict_and_stream_refuse_damaged_weights(folders, damage):
    with pytest.raises(ModelFolderError, match=f"model-{damage}/model.safetensors"):
        load_emotion_model(folders / f"model-{damage}")


def test_predict_and_stream_refuse_a_fusion_folder_naming_both_classes(folders, tmp_path):
    with pytest.raises(ValueError) as error:  # no processor: named before the model is read
        load_emotion_model(folders / "fusion")
    assert _one_line(error).startswith(f"{folders / 'fusion'}: no processor")
    shutil.copytree(folders / "fusion", tmp_path / "fusion")
    for processor_file in ("processor_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(folders / "model" / processor_file, tmp_path / "fusion")
    with pytest.raises(ModelFolderError) as error:
        load_emotion_model(tmp_path / "fusion")
    assert "fusion: holds a MagtkdFusionModel, not a MagtkdForEmotionRecognition as expected here" in _one_line(error)
