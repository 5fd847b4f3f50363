"""Loading a folder never runs code from it unless asked: predict, the pipeline and the model card refuse a folder that
needs remote code, load the package's own classes for magtkd folders, and refuse weights that do not fit."""

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file
from tiny_magtkd import save_tiny_end_to_end, tiny_fusion_config
from transformers import pipeline

from magtkd_hf import MagtkdForEmotionRecognition, MagtkdFusionModel
from magtkd_hf.apps.hub import build_model_card
from magtkd_hf.inference import load_emotion_model
from magtkd_hf.loading import ModelFolderError, load_model

MARKER_CODE = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\n"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return save_tiny_end_to_end(tmp_path_factory.mktemp("trust") / "model")


def _tampered_copy(saved, tmp_path, model_type=None):
    """A copy of the saved folder whose every module file writes a marker file when imported; with `model_type`, its
    config names another model type (so loading it would need the folder's own code)."""
    folder = tmp_path / "tampered"
    shutil.copytree(saved, folder)
    marker = tmp_path / "marker"
    for module in folder.glob("*.py"):
        module.write_text(MARKER_CODE.format(marker=str(marker)) + module.read_text())
    if model_type is not None:
        config = json.loads((folder / "config.json").read_text())
        config["model_type"] = model_type
        (folder / "config.json").write_text(json.dumps(config))
    return folder, marker


def test_a_foreign_model_type_is_refused_everywhere_and_no_code_runs(saved, tmp_path):
    folder, marker = _tampered_copy(saved, tmp_path, model_type="evil")
    with pytest.raises(ModelFolderError, match="trust-remote-code"):
        load_emotion_model(folder)
    with pytest.raises(ModelFolderError, match="trust-remote-code"):
        build_model_card(folder)
    with pytest.raises(ValueError, match="trust_remote_code"):
        pipeline("emotion-recognition-in-conversation", model=str(folder))
    assert not marker.exists()


def test_a_magtkd_folder_loads_with_the_package_classes_not_its_files(saved, tmp_path):
    folder, marker = _tampered_copy(saved, tmp_path)
    model, processor = load_emotion_model(folder)
    assert type(model) is MagtkdForEmotionRecognition and type(model).__module__.startswith("magtkd_hf.")
    build_model_card(folder)
    assert not marker.exists()


def test_opting_in_runs_the_folder_code_of_a_foreign_model_type(saved, tmp_path):
    folder, marker = _tampered_copy(saved, tmp_path, model_type="evil")
    try:
        load_model(folder, trust_remote_code=True)
    except Exception:  # the tampered folder need not load; its code must have run
        pass
    assert marker.exists()


def test_missing_and_mismatched_weights_are_refused_naming_the_file(saved, tmp_path):
    folder = tmp_path / "damaged"
    shutil.copytree(saved, folder)
    weights = load_file(folder / "model.safetensors")
    dropped = next(key for key in weights if key.startswith("fusion."))
    del weights[dropped]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelFolderError, match=r"model\.safetensors.*missing keys"):
        load_emotion_model(folder)


def test_a_missing_folder_names_it(tmp_path):
    with pytest.raises(ModelFolderError, match="no such model folder"):
        load_model(tmp_path / "nowhere")


def test_weights_of_another_model_are_refused(tmp_path):
    fusion = MagtkdFusionModel(tiny_fusion_config())
    fusion.save_pretrained(tmp_path / "fusion")
    config = json.loads((tmp_path / "fusion" / "config.json").read_text())
    config["hidden_size"] = 2 * config["hidden_size"]
    config["intermediate_size"] = 2 * config["intermediate_size"]
    (tmp_path / "fusion" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match="mismatched keys"):
        load_model(tmp_path / "fusion")


def test_nan_in_a_waveform_or_in_weights_is_an_error_naming_where(saved, tmp_path):
    import numpy as np
    import soundfile
    from media_fixtures import write_mp4

    from magtkd_hf.inference import predict_emotions

    video = write_mp4(tmp_path / "clip.mp4", num_frames=8, audio_seconds=0.5)
    wave = np.sin(np.linspace(0, 200, 8000)).astype(np.float32)
    wave[100] = np.nan
    soundfile.write(tmp_path / "bad.wav", wave, 16000, subtype="FLOAT")
    conversation = [
        {"speaker": "Ann", "text": "fine", "video": str(video)},
        {"speaker": "Bob", "text": "not fine", "video": str(video), "audio": str(tmp_path / "bad.wav")},
    ]
    model, processor = load_emotion_model(saved)
    with pytest.raises(ValueError, match=r"utterance 1 .*bad\.wav.*NaN"):
        predict_emotions(model, processor, conversation)

    folder = tmp_path / "nan-weights"
    shutil.copytree(saved, folder)
    weights = load_file(folder / "model.safetensors")
    name = next(key for key in weights if key.startswith("fusion.text_head"))
    weights[name][0] = float("nan")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelFolderError, match=f"tensor '{name}' holds NaN"):
        load_emotion_model(folder)


def test_truncated_or_missing_weights_name_the_file(saved, tmp_path):
    folder = tmp_path / "truncated"
    shutil.copytree(saved, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelFolderError, match=r"model\.safetensors: cannot read the weights"):
        load_emotion_model(folder)
    weights.unlink()
    with pytest.raises(ModelFolderError, match="cannot read the weights"):
        load_emotion_model(folder)


def test_a_folder_without_its_tokenizer_file_is_refused(saved, tmp_path):
    """Without tokenizer.json the tokenizer loads as a near-empty vocabulary that encodes every transcript to nothing:
    refused by the processor check against the model, in predict and in the pipeline."""
    folder = tmp_path / "no-tokenizer"
    shutil.copytree(saved, folder)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match="not the tokenizer the model was trained with"):
        load_emotion_model(folder)
    with pytest.raises(ValueError, match="not the tokenizer the model was trained with"):
        pipeline("emotion-recognition-in-conversation", model=str(folder), device="cpu")


def test_a_saved_tokenizer_without_speaker_or_mask_tokens_is_refused(saved, tmp_path):
    from transformers import AutoTokenizer

    from magtkd_hf import MagtkdProcessor

    folder = tmp_path / "plain-tokenizer"
    shutil.copytree(saved, folder)
    tokenizer_state = json.loads((folder / "tokenizer.json").read_text())
    tokenizer_state["added_tokens"] = [t for t in tokenizer_state["added_tokens"] if not t["content"].startswith("<s") or t["content"] == "<s>"]
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer_state))
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config.pop("extra_special_tokens", None)
    tokenizer_config.pop("additional_special_tokens", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    assert "<s1>" not in AutoTokenizer.from_pretrained(folder).get_vocab()
    with pytest.raises(ValueError, match=r"lacks the speaker tokens \['<s1>'"):
        MagtkdProcessor.from_pretrained(folder)
