import json

import pytest
from huggingface_hub import ModelCard

from magtkd_hf import MagtkdFusionConfig, MagtkdFusionModel
from magtkd_hf.apps import hub

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
