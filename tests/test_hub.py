import argparse
import json
from pathlib import Path

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
from magtkd_hf.loading import ModelFolderError
from magtkd_hf.apps.tiny import TINY_HEADS, TINY_HIDDEN, tiny_audio_config, tiny_text_config, tiny_video_config

DATA = {"name": "meld", "source": "/data/MELD.Raw", "splits": {"validation": {"conversations": 114, "utterances": 1109}}}
METRICS = {
    "stage": "fusion", "recipe": "/somewhere/recipes/meld.json", "settings": {"learning_rate": 1e-4, "epochs": 30},
    "data": DATA,
    "validation": {"weighted_f1": 61.234, "accuracy": 63.0, "num_utterances": 1109,
                   "per_class_f1": {"anger": 40.0, "joy": 55.5}},
    "test": {"weighted_f1": 60.1, "accuracy": 62.0, "num_utterances": 2610, "per_class_f1": {"anger": 41.0}},
}


@pytest.fixture
def model_dir(tmp_path):
    folder = tmp_path / "model"
    MagtkdFusionModel(MagtkdFusionConfig.for_meld(hidden_size=32, num_attention_heads=4)).save_pretrained(folder)
    return folder


def _with_metrics(folder, metrics=METRICS, confusion_matrix=True):
    (folder / hub.METRICS_FILE).write_text(json.dumps(metrics))
    if confusion_matrix:
        (folder / hub.CONFUSION_MATRIX_FILE).write_bytes(b"\x89PNG")
    return folder


def test_card_reads_metrics_settings_and_confusion_matrix_from_the_folder(model_dir):
    path = hub.save_model_card(_with_metrics(model_dir), repo_id="someone/magtkd-meld")
    card = ModelCard.load(path)
    assert card.data.license == "gpl-3.0" and card.data.datasets == ["declare-lab/MELD"]
    text = card.text
    assert "| validation | 61.23 | 63.00 | 1109 |" in text and "| test | 60.10 | 62.00 | 2610 |" in text
    assert "| anger | 40.00 | 41.00 |" in text and "![Confusion matrix" in text
    assert "| recipe | meld |" in text and "| fusion learning_rate | 0.0001 |" in text and "GPL-3.0" in text
    assert 'AutoModel.from_pretrained("someone/magtkd-meld", trust_remote_code=True)' in text
    assert "its model on the test split" in text and "selects on the validation split" in text


def test_card_metadata_holds_the_modalities_the_recorded_dataset_and_eval_results(model_dir):
    card = ModelCard.load(hub.save_model_card(_with_metrics(model_dir), repo_id="someone/magtkd-meld"))
    data = card.data
    # No Hub task takes a conversation's features (or transcripts, audio and video together): no pipeline tag.
    assert data.pipeline_tag is None and "pipeline_tag" not in str(data) and data.library_name == "transformers"
    assert {"emotion-recognition-in-conversation", "erc", "multimodal", "magtkd", "meld", "text", "audio",
            "video"} <= set(data.tags)
    assert data.datasets == ["declare-lab/MELD"] and data.base_model is None  # a fusion model holds no encoder
    assert "base_model" not in str(data)
    assert data.model_name == "magtkd-meld"
    results = {(r.dataset_split, r.metric_type): r for r in data.eval_results}
    assert {key: r.metric_value for key, r in results.items()} == {
        ("validation", "f1"): 61.234, ("validation", "accuracy"): 63.0,
        ("test", "f1"): 60.1, ("test", "accuracy"): 62.0,
    }
    assert results["test", "f1"].metric_args == {"average": "weighted"}
    assert all(r.task_type == "emotion-recognition-in-conversation" and r.dataset_type == "declare-lab/MELD"
               and r.dataset_name == "MELD" for r in data.eval_results)
    assert card.text.lstrip().startswith("# magtkd-meld\n")
    caption = "Confusion matrix of the final evaluation (the test split when there is one)"
    assert f"![{caption}]({hub.CONFUSION_MATRIX_FILE})" in card.text


def test_a_model_measured_on_the_sample_never_claims_meld(model_dir):
    sample = {**DATA, "name": "sample", "source": "/site-packages/magtkd_hf/datasets_scripts/sample_meld"}
    data = hub.build_model_card(_with_metrics(model_dir, {**METRICS, "data": sample}), "someone/demo").data
    assert data.datasets is None and "meld" not in data.tags and "MELD" not in str(data)
    assert {r.dataset_name for r in data.eval_results} == {"magtkd-hf sample conversations"}


@pytest.mark.parametrize("data, why", [
    (None, "does not record the data the model was measured on"),
    ({**DATA, "name": None, "source": "/saved/dataset_dict"}, "records data of unknown origin (/saved/dataset_dict)"),
])
def test_metrics_without_a_data_record_give_no_datasets_and_no_model_index(model_dir, data, why):
    metrics = {key: value for key, value in METRICS.items() if key != "data"}
    card = hub.build_model_card(_with_metrics(model_dir, {**metrics, **({"data": data} if data else {})}))
    assert card.data.datasets is None and card.data.eval_results is None and "meld" not in card.data.tags
    assert "| test | 60.10 | 62.00 | 2610 |" in card.text and "The training data was not recorded." in card.text
    assert hub.plan_upload(model_dir, "someone/m").notes == [f"no datasets and no model-index in the card: its "
                                                             f"metrics.json {why}."]


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
    _with_metrics(folder, {"validation": None, "test": METRICS["test"], "data": {**DATA, "name": "iemocap"}}, False)
    card = ModelCard.load(hub.save_model_card(folder))
    data = card.data
    # the local folder's encoder is left out: it names no Hub model
    assert data.base_model == ["FacebookAI/roberta-large", "facebook/data2vec-audio-base-960h"]
    assert data.pipeline_tag is None and {"text", "audio", "video", "multimodal"} <= set(data.tags)
    assert data.datasets is None and "iemocap" in data.tags  # IEMOCAP has no public Hub dataset
    assert data.model_name == "magtkd-iemocap" and card.text.lstrip().startswith("# magtkd-iemocap\n")
    assert [(r.dataset_type, r.dataset_split, r.metric_type) for r in data.eval_results] == [
        ("iemocap", "test", "f1"), ("iemocap", "test", "accuracy")]
    assert "![Confusion matrix" not in card.text  # no confusion_matrix.png in this folder
    assert "# model\n" not in card.text and "name: model\n" not in str(data)


def test_card_without_metrics_names_no_data_and_stage_cards_their_hub_task(model_dir, tmp_path):
    card = hub.build_model_card(model_dir)
    data = card.data
    assert data.model_name == "magtkd-fusion" and data.base_model is None and data.eval_results is None
    assert data.datasets is None and data.pipeline_tag is None
    assert "No evaluation results were recorded" in card.text and "The training data was not recorded." in card.text
    assert hub.build_model_card(model_dir, model_name="my-erc").data.model_name == "my-erc"
    audio_folder = tmp_path / "audio-stage"
    MagtkdAudioConfig(encoder_config=tiny_audio_config()).save_pretrained(audio_folder)
    data = hub.build_model_card(audio_folder).data
    assert data.pipeline_tag == "audio-classification" and data.model_name == "audio-stage"
    assert "audio" in data.tags and "multimodal" not in data.tags and "video" not in data.tags
    assert data.base_model is None and data.datasets is None and "sample" not in data.tags


# ------------------------------------------------------------------------------------------------------- push


def _tree(folder):
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file()}


@pytest.fixture
def trained_folder(model_dir):
    """A stage folder as training leaves it: checkpoints (optimizer, random-state pickle), an old card, stray files."""
    _with_metrics(model_dir, {**METRICS, "data": {**DATA, "name": "sample"}})
    checkpoint = model_dir / "checkpoints" / "epoch_19"
    checkpoint.mkdir(parents=True)
    for name in ("optimizer.bin", "random_states_0.pkl", "model.safetensors", "manifest.json"):
        (checkpoint / name).write_bytes(b"state")
    (model_dir / "README.md").write_text("---\ndatasets:\n- sample\n---\n# the card written at training\n")
    (model_dir / "pytorch_model.bin").write_bytes(b"pickle")
    (model_dir / "features.pkl").write_bytes(b"pickle")
    return model_dir


def test_push_uploads_only_what_a_user_needs_from_a_staging_folder(trained_folder, monkeypatch):
    before = _tree(trained_folder)
    calls = []

    class RecordingApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls.append(("create_repo", repo_id, private, exist_ok))

        def upload_folder(self, repo_id, folder_path, commit_message):
            calls.append(("upload_folder", repo_id, _tree(Path(folder_path))))
            return "https://huggingface.co/someone/m/commit/abc"

    monkeypatch.setattr(hub, "HfApi", RecordingApi)
    url = hub.push_to_hub(trained_folder, "someone/m", private=True, token="hf_x")
    assert url.endswith("/commit/abc")
    assert calls[0] == ("init", "hf_x") and calls[1] == ("create_repo", "someone/m", True, True)
    uploaded = calls[2][2]
    assert set(uploaded) == {"README.md", "config.json", "model.safetensors", "metrics.json", "confusion_matrix.png",
                             "configuration_magtkd.py", "modeling_magtkd_fusion.py", "losses.py", "fusion_layout.py",
                             "dataset_table.py"}
    assert all(uploaded[name] == before[name] for name in uploaded if name != "README.md")
    card = ModelCard(uploaded["README.md"].decode())
    assert card.data.model_name == "m" and {r.dataset_type for r in card.data.eval_results} == {"magtkd-hf-sample"}
    assert _tree(trained_folder) == before  # the folder, its old README.md included, is unchanged


def test_push_dry_run_prints_the_files_and_the_card_and_sends_nothing(trained_folder, monkeypatch, capsys, tmp_path):
    def no_network(*args, **kwargs):
        raise AssertionError("the dry run contacted the Hub")

    monkeypatch.setattr(hub, "HfApi", no_network)
    before = _tree(trained_folder)
    parser = argparse.ArgumentParser()
    hub.add_push_command(parser.add_subparsers())
    args = parser.parse_args(["push", str(trained_folder), "someone/magtkd-demo", "--dry-run"])
    args.func(args)
    printed = capsys.readouterr().out
    listing, card_text = printed.split("\n---\n", 1)
    assert listing.splitlines()[0] == f"{trained_folder} -> someone/magtkd-demo: 10 files"
    assert "  model.safetensors  (" in listing and "  README.md  (the model card below)" in listing
    assert "Left out (not needed to use the model): checkpoints/, features.pkl, pytorch_model.bin" in listing
    (tmp_path / "card.md").write_text("---\n" + card_text)
    card = ModelCard.load(tmp_path / "card.md")
    assert card.data.model_name == "magtkd-demo" and card.data.datasets is None
    assert _tree(trained_folder) == before


def test_push_help_and_refusals(model_dir, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    hub.add_push_command(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["push", "--help"])
    help_text = capsys.readouterr().out
    assert "--dry-run" in help_text and "--private" in help_text and "no network" in help_text
    with pytest.raises(ValueError, match="repository id 'not a repo'"):
        hub.plan_upload(model_dir, "not a repo")
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(ModelFolderError, match="cannot read the weights"):
        hub.plan_upload(model_dir, "someone/m")
