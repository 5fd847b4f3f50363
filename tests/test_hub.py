import json

import pytest
from huggingface_hub import ModelCard

from magtkd_hf import (
    MagtkdAudioConfig,
    MagtkdConfig,
    MagtkdFusionConfig,
    MagtkdFusionModel,
    MagtkdTextConfig,
    MagtkdVideoConfig,
)
from magtkd_hf.apps import hub
from magtkd_hf.apps.tiny import TINY_HEADS, TINY_HIDDEN, tiny_audio_config, tiny_text_config, tiny_video_config

METRICS = {
    "validation": {"weighted_f1": 61.234, "accuracy": 63.0, "num_utterances": 1109,
                   "per_class_f1": {"anger": 40.0, "joy": 55.5}},
    "test": {"weighted_f1": 60.1, "accuracy": 62.0, "num_utterances": 2610, "per_class_f1": {"anger": 41.0}},
}


@pytest.fixture
def model_dir(tmp_path):
    folder = tmp_path / "model"
    MagtkdFusionModel(MagtkdFusionConfig.for_meld(hidden_size=32, num_attention_heads=4)).save_pretrained(folder)
    return folder


def test_card_reads_metrics_and_confusion_matrix_from_the_folder(model_dir):
    (model_dir / hub.METRICS_FILE).write_text(json.dumps(METRICS))
    (model_dir / hub.CONFUSION_MATRIX_FILE).write_bytes(b"\x89PNG")
    path = hub.save_model_card(model_dir, repo_id="someone/magtkd-meld", recipe={"learning_rate": 1e-4},
                               datasets=["meld"])
    card = ModelCard.load(path)
    assert card.data.license == "gpl-3.0" and card.data.datasets == ["declare-lab/MELD"]
    text = card.text
    assert "| validation | 61.23 | 63.00 | 1109 |" in text and "| test | 60.10 | 62.00 | 2610 |" in text
    assert "| anger | 40.00 | 41.00 |" in text and "![Confusion matrix" in text
    assert "| learning_rate | 0.0001 |" in text and "GPL-3.0" in text
    assert 'AutoModel.from_pretrained("someone/magtkd-meld", trust_remote_code=True)' in text
    assert "its model on the test split" in text and "selects on the validation split" in text


def test_card_metadata_holds_the_task_tags_datasets_and_eval_results(model_dir):
    (model_dir / hub.METRICS_FILE).write_text(json.dumps(METRICS))
    (model_dir / hub.CONFUSION_MATRIX_FILE).write_bytes(b"\x89PNG")
    card = ModelCard.load(hub.save_model_card(model_dir, repo_id="someone/magtkd-meld", datasets=["meld"]))
    data = card.data
    assert data.pipeline_tag == "text-classification" and data.library_name == "transformers"
    assert {"emotion-recognition-in-conversation", "erc", "multimodal", "magtkd", "meld"} <= set(data.tags)
    assert data.datasets == ["declare-lab/MELD"] and data.base_model is None  # a fusion model holds no encoder
    assert data.model_name == "magtkd-meld"
    results = {(r.dataset_split, r.metric_type): r for r in data.eval_results}
    assert {key: r.metric_value for key, r in results.items()} == {
        ("validation", "f1"): 61.234, ("validation", "accuracy"): 63.0,
        ("test", "f1"): 60.1, ("test", "accuracy"): 62.0,
    }
    assert results["test", "f1"].metric_args == {"average": "weighted"}
    assert all(r.task_type == "text-classification" and r.dataset_type == "declare-lab/MELD"
               and r.dataset_name == "MELD" for r in data.eval_results)
    assert card.text.lstrip().startswith("# magtkd-meld\n")
    caption = "Confusion matrix of the final evaluation (the test split when there is one)"
    assert f"![{caption}]({hub.CONFUSION_MATRIX_FILE})" in card.text


def test_card_install_line_is_one_that_works(model_dir):
    text = hub.build_model_card(model_dir).text
    assert "pip install magtkd-hf" not in text and "not on PyPI" in text
    assert '```bash\npip install "torch==2.13.0" -e .\n```' in text and "a clone of its repository" in text
    text = hub.build_model_card(model_dir, repository_url="https://example.org/someone/magtkd-hf").text
    assert 'pip install "torch==2.13.0" "magtkd-hf @ git+https://example.org/someone/magtkd-hf"' in text
    with pytest.raises(ValueError, match="repository_url"):
        hub.build_model_card(model_dir, repository_url="magtkd-hf")


def _named(encoder_config, name_or_path):
    encoder_config._name_or_path = name_or_path
    return encoder_config


def test_end_to_end_card_names_its_hub_encoders_and_never_calls_the_model_model(tmp_path):
    local_encoder = tmp_path / "my-video-encoder"
    local_encoder.mkdir()
    config = MagtkdConfig.for_iemocap(
        text_config=MagtkdTextConfig(encoder_config=_named(tiny_text_config(60), "FacebookAI/roberta-large"),
                                     feature_size=TINY_HIDDEN),
        audio_config=MagtkdAudioConfig(
            encoder_config=_named(tiny_audio_config(), "facebook/data2vec-audio-base-960h")),
        video_config=MagtkdVideoConfig(encoder_config=_named(tiny_video_config(), str(local_encoder))),
        hidden_size=TINY_HIDDEN, num_attention_heads=TINY_HEADS,
    )
    folder = tmp_path / "run" / "model"  # where `train all` saves it
    config.save_pretrained(folder)  # the card reads the config alone
    (folder / hub.METRICS_FILE).write_text(json.dumps({"validation": None, "test": METRICS["test"]}))
    card = ModelCard.load(hub.save_model_card(folder, datasets=["iemocap"]))
    data = card.data
    # the local folder's encoder is left out: it names no Hub model
    assert data.base_model == ["FacebookAI/roberta-large", "facebook/data2vec-audio-base-960h"]
    assert data.datasets is None and "iemocap" in data.tags  # IEMOCAP has no public Hub dataset
    assert data.model_name == "magtkd-iemocap" and card.text.lstrip().startswith("# magtkd-iemocap\n")
    assert [(r.dataset_type, r.dataset_split, r.metric_type) for r in data.eval_results] == [
        ("iemocap", "test", "f1"), ("iemocap", "test", "accuracy")]
    assert "![Confusion matrix" not in card.text  # no confusion_matrix.png in this folder
    assert "# model\n" not in card.text and "name: model\n" not in str(data)


def test_card_without_named_encoders_or_datasets_leaves_them_out(model_dir, tmp_path):
    data = hub.build_model_card(model_dir).data
    assert data.model_name == "magtkd-fusion" and data.base_model is None and data.eval_results is None
    assert data.datasets is None and data.pipeline_tag == "text-classification"
    assert hub.build_model_card(model_dir, model_name="my-erc").data.model_name == "my-erc"
    audio_folder = tmp_path / "audio-stage"
    MagtkdAudioConfig(encoder_config=tiny_audio_config()).save_pretrained(audio_folder)
    data = hub.build_model_card(audio_folder, datasets=["sample"]).data
    assert data.pipeline_tag == "audio-classification" and data.model_name == "audio-stage"
    assert data.base_model is None and data.datasets is None and "sample" not in data.tags


def test_card_without_metrics_says_so_and_unknown_dataset_is_refused(model_dir):
    text = hub.build_model_card(model_dir, datasets=["iemocap"]).text
    assert "No evaluation results were recorded" in text and "USC SAIL" in text
    with pytest.raises(ValueError, match="Unknown datasets"):
        hub.build_model_card(model_dir, datasets=["cmu-mosei"])


def test_push_to_hub_uploads_the_folder_with_its_card(model_dir, monkeypatch):
    calls = []

    class RecordingApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls.append(("create_repo", repo_id, private, exist_ok))

        def upload_folder(self, repo_id, folder_path, commit_message):
            calls.append(("upload_folder", repo_id, sorted(p.name for p in __import__("pathlib").Path(folder_path).iterdir())))
            return "https://huggingface.co/someone/m/commit/abc"

    monkeypatch.setattr(hub, "HfApi", RecordingApi)
    url = hub.push_to_hub(model_dir, "someone/m", private=True, token="hf_x", datasets=["meld"])
    assert url.endswith("/commit/abc")
    assert calls[0] == ("init", "hf_x") and calls[1] == ("create_repo", "someone/m", True, True)
    assert {"README.md", "config.json", "model.safetensors", "modeling_magtkd_fusion.py"} <= set(calls[2][2])
