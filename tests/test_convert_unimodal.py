"""The released stage-1/2 state dicts: into stage models (their features and logits) and, with the fusion, into an
end-to-end model giving the released outputs (`load_released_end_to_end`, and the `convert-released` command)."""

import json

import pytest
import torch
from media_fixtures import make_tiny_roberta_tokenizer
from released_reference import make_released_state_dict, released_reference_logits
from tiny_magtkd import tiny_audio_config, tiny_text_config, tiny_video_config, write_conversation_rows
from torch import nn
from transformers import AutoConfig, AutoModel, AutoProcessor, Data2VecAudioModel, RobertaModel, TimesformerModel

from magtkd_hf import (
    MagtkdAudioConfig,
    MagtkdAudioModel,
    MagtkdForEmotionRecognition,
    MagtkdFusionModel,
    MagtkdProcessor,
    MagtkdTextConfig,
    MagtkdTextModel,
    MagtkdVideoConfig,
    MagtkdVideoModel,
    dataset_facts,
)
from magtkd_hf.apps.cli import main as cli
from magtkd_hf.modeling_magtkd import regroup_utterances
from magtkd_hf.released import convert_released_unimodal_state_dict, load_released_end_to_end

HIDDEN, HEADS = 32, 8  # released fusion: 8 heads
# The tiny tokenizer plus the 9 speaker tokens, as the released text model was resized (roberta-large: 50,274 rows).
TEXT_VOCAB = len(make_tiny_roberta_tokenizer()) + 9
SOURCES = ("text", "audio", "video", "audio_kd", "video_kd")
DATASETS = {"meld": (7, 304, ("audio_kd", "video_kd")), "iemocap": (6, 2, ("audio_kd", "video"))}


class ReleasedUnimodal(nn.Module):
    """The released models' computation: text = RobertaModel (pooler included) + W + classifier at the last position;
    audio / video = encoder + W at the first position, the audio encoder called without an attention mask."""

    def __init__(self, modality, num_labels, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.modality = modality
        if modality == "text":
            self.text_model = RobertaModel(tiny_text_config(TEXT_VOCAB))
            self.W = nn.Linear(self.text_model.config.hidden_size, HIDDEN)
            self.classifier = nn.Linear(HIDDEN, num_labels)
        else:
            encoder = Data2VecAudioModel(tiny_audio_config()) if modality == "audio" else TimesformerModel(
                tiny_video_config())
            self.model = encoder
            self.W = nn.Linear(HIDDEN, num_labels)
        with torch.no_grad():  # move every weight off its initial value (LayerNorms included)
            for parameter in self.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.02)
        self.eval()

    def forward(self, batch):
        if self.modality == "text":
            hidden = self.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            features = self.W(hidden.last_hidden_state[:, -1, :])
            return features, self.classifier(features)
        inputs = batch["input_values"] if self.modality == "audio" else batch["pixel_values"]
        features = self.model(inputs).last_hidden_state[:, 0, :]
        return features, self.W(features)


@pytest.fixture(scope="module", autouse=True)
def _threads(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def encoder_folders(tmp_path_factory):
    folder = tmp_path_factory.mktemp("encoders")
    tiny_text_config(TEXT_VOCAB).save_pretrained(folder / "text")
    make_tiny_roberta_tokenizer().save_pretrained(folder / "text")
    tiny_audio_config().save_pretrained(folder / "audio")
    MagtkdProcessor.default_feature_extractor().save_pretrained(folder / "audio")
    tiny_video_config().save_pretrained(folder / "video")
    return folder


@pytest.fixture(scope="module")
def media_rows(tmp_path_factory):
    # Equal clip lengths: the released audio model pads without an attention mask, so compare on unpadded audio.
    return write_conversation_rows(tmp_path_factory.mktemp("convert_media"), lengths=(3, 2), audio_seconds=0.4)


@pytest.fixture(scope="module", params=list(DATASETS))
def released(request, tmp_path_factory):
    """One dataset's released checkpoints on disk: {"dataset", "folder", "fusion_state", "models", "sources"}."""
    dataset = request.param
    num_labels, num_speakers, sources = DATASETS[dataset]
    folder = tmp_path_factory.mktemp(f"released_{dataset}")
    fusion_state = make_released_state_dict(HIDDEN, HEADS, num_labels, num_speakers, seed=3)
    torch.save(fusion_state, folder / "multimodal_fusion_best.bin")
    models = {}
    for seed, source in enumerate(SOURCES):
        models[source] = ReleasedUnimodal(source.split("_")[0], num_labels, seed=seed)
        torch.save(models[source].state_dict(), folder / f"{source}.bin")
    if dataset == "meld":
        (folder / "speaker2id.json").write_text(json.dumps({"Ross": 0, "Rachel": 17, "Joey": 303}))
    return {"dataset": dataset, "folder": folder, "fusion_state": fusion_state, "models": models, "sources": sources}


def released_processor(released, encoder_folders):
    """The processor the released models take (as `convert-released` builds it)."""
    speaker_settings = (
        {"speaker_mode": "global_map", "speaker_map": str(released["folder"] / "speaker2id.json")}
        if released["dataset"] == "meld" else {"speaker_mode": "released_iemocap"}
    )
    return MagtkdProcessor.from_encoders(
        str(encoder_folders / "text"), str(encoder_folders / "audio"), video_size=32, tokenization_mode="released",
        num_frames=8, frame_selection="released", audio_mode="released", **speaker_settings,
    )


def dataset_rows(released, media_rows):
    if released["dataset"] == "meld":
        return media_rows
    return [dict(row, speakers=[["F", "M"][i % 2] for i in range(len(row["texts"]))]) for row in media_rows]


def _label_maps(dataset):
    id2label = dict(enumerate(dataset_facts(dataset)["labels"]))
    return id2label, {label: index for index, label in id2label.items()}


FEATURE_INPUTS = {
    "text": lambda batch: {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]},
    "audio": lambda batch: {"input_values": batch["input_values"], "attention_mask": batch["audio_attention_mask"]},
    "video": lambda batch: {"pixel_values": batch["pixel_values"]},
}


def assert_gives_the_released_outputs(model, released, batch):
    """The end-to-end model's features are the released stage models' (of the dataset's fusion sources) and its
    logits the released fusion's on them."""
    assert bool(batch["audio_attention_mask"].all())
    with torch.no_grad():
        features = {}
        for modality, source in zip(("text", "audio", "video"), ("text", *released["sources"])):
            expected_features, _ = released["models"][source](batch)
            output = model.feature_module(modality)(**FEATURE_INPUTS[modality](batch))
            torch.testing.assert_close(output, expected_features, atol=1e-5, rtol=1e-5, msg=modality)
            features[modality] = regroup_utterances(expected_features, batch["utterance_mask"])
        logits = model(**batch).logits
    mask = batch["utterance_mask"]
    expected = released_reference_logits(
        released["fusion_state"], features["text"], features["audio"], features["video"], batch["speaker_ids"], mask,
        HEADS,
    )
    torch.testing.assert_close(logits[mask.bool()], expected[mask.bool()], atol=1e-5, rtol=1e-5)


def test_released_stage_checkpoints_convert_into_stage_models(released, encoder_folders, media_rows):
    labels = dict(zip(("id2label", "label2id"), _label_maps(released["dataset"])))
    batch = released_processor(released, encoder_folders)(dataset_rows(released, media_rows))
    stage_models = {
        "text": MagtkdTextModel(MagtkdTextConfig(encoder_config=tiny_text_config(TEXT_VOCAB), feature_size=HIDDEN,
                                                 **labels)),
        "audio": MagtkdAudioModel(MagtkdAudioConfig(encoder_config=tiny_audio_config(), **labels)),
        "video": MagtkdVideoModel(MagtkdVideoConfig(encoder_config=tiny_video_config(), **labels)),
    }
    for source in SOURCES:
        modality = source.split("_")[0]
        model = stage_models[modality]
        converted, unused = convert_released_unimodal_state_dict(released["models"][source].state_dict(), model)
        model.load_state_dict(converted, strict=True)
        if modality == "text":
            assert "text_model.pooler.dense.weight" in unused and "classifier.weight" not in unused
        else:
            assert unused == []  # the released `W` is the stage's classifier
        expected_features, expected_logits = released["models"][source](batch)
        with torch.no_grad():
            output = model.eval()(**FEATURE_INPUTS[modality](batch))
        torch.testing.assert_close(output.features, expected_features, atol=1e-5, rtol=1e-5, msg=source)
        torch.testing.assert_close(output.logits, expected_logits, atol=1e-5, rtol=1e-5, msg=source)


def test_load_released_end_to_end_gives_the_released_outputs(released, encoder_folders, media_rows, tmp_path):
    folder = released["folder"]
    configs = [AutoConfig.from_pretrained(encoder_folders / name) for name in ("text", "audio", "video")]
    unimodal = {source: folder / f"{source}.bin" for source in SOURCES}
    model, unused = load_released_end_to_end(folder / "multimodal_fusion_best.bin", unimodal, released["dataset"],
                                             *configs)
    assert type(model) is MagtkdForEmotionRecognition and not model.training
    assert model.config.text_config.encoder_config.vocab_size == TEXT_VOCAB
    assert model.config.audio_config.encoder_config.mask_time_length == 3
    fusion = model.config.fusion_model_config
    assert (fusion.audio_feature_source, fusion.video_feature_source) == released["sources"]
    assert fusion.speaker_padding_index == 2
    assert model.config.label_names == list(dataset_facts(released["dataset"])["labels"])
    # Unused: the fusion's dead weights, RoBERTa's pooler and the stage classifiers (the fusion's heads predict).
    assert set(unused) == {"fusion", "text", *released["sources"]}
    assert "fc.weight" in unused["fusion"]
    assert {"text_model.pooler.dense.weight", "classifier.weight"} <= set(unused["text"])
    assert unused[released["sources"][0]] == ["W.bias", "W.weight"]
    batch = released_processor(released, encoder_folders)(dataset_rows(released, media_rows))
    if released["dataset"] == "meld":
        assert set(batch["speaker_ids"][batch["utterance_mask"].bool()].tolist()) <= {0, 17, 303}
    assert_gives_the_released_outputs(model, released, batch)
    # ... and so does its saved folder.
    model.save_pretrained(tmp_path / "converted")
    loaded = AutoModel.from_pretrained(tmp_path / "converted").eval()
    assert_gives_the_released_outputs(loaded, released, batch)


def test_load_released_end_to_end_names_the_missing_or_wrong_file(released, encoder_folders):
    folder = released["folder"]
    configs = [AutoConfig.from_pretrained(encoder_folders / name) for name in ("text", "audio", "video")]
    fusion = folder / "multimodal_fusion_best.bin"
    dataset = released["dataset"]
    with pytest.raises(ValueError, match="--audio-kd"):
        load_released_end_to_end(fusion, {"text": folder / "text.bin", "audio": folder / "audio.bin",
                                          "video": folder / "video.bin", "video_kd": folder / "video_kd.bin"},
                                 dataset, *configs)
    wrong = {"text": folder / "text.bin", "audio_kd": folder / "text.bin", "video": folder / "video.bin",
             "video_kd": folder / "video_kd.bin"}
    with pytest.raises(ValueError, match=r"text.bin \(audio_kd\).*released audio layout.*text_model\."):
        load_released_end_to_end(fusion, wrong, dataset, *configs)
    # An encoder config that is not the checkpoint's: the keys or shapes are named.
    every_file = {source: folder / f"{source}.bin" for source in SOURCES}
    with pytest.raises(ValueError, match=r"not in this encoder: \['model\.encoder\.layer\.1\."):
        load_released_end_to_end(fusion, every_file, dataset, configs[0], configs[1],
                                 tiny_video_config(num_hidden_layers=1))
    with pytest.raises(ValueError, match=r"intermediate.dense.weight' has shape \(64, 32\), expected \(48, 32\).*"
                                         r"check the video encoder's config"):
        load_released_end_to_end(fusion, every_file, dataset, configs[0], configs[1],
                                 tiny_video_config(intermediate_size=48))


# --- the `convert-released` command ----------------------------------------------------------------------------------


def test_converted_model_gives_the_released_outputs(released, capsys, encoder_folders, media_rows, tmp_path):
    folder, dataset, sources = released["folder"], released["dataset"], released["sources"]
    arguments = ["convert-released", "--fusion", str(folder / "multimodal_fusion_best.bin"), "--dataset", dataset,
                 "--output", str(tmp_path / "converted"), "--text-encoder", str(encoder_folders / "text"),
                 "--audio-encoder", str(encoder_folders / "audio"), "--video-encoder", str(encoder_folders / "video")]
    for source in SOURCES:
        arguments += [f"--{source.replace('_', '-')}", str(folder / f"{source}.bin")]
    if dataset == "meld":
        arguments += ["--speaker-map", str(folder / "speaker2id.json")]
    assert cli(arguments) == 0
    printed = capsys.readouterr().out
    assert f"audio encoder <- --{sources[0].replace('_', '-')}" in printed
    assert "text_model.pooler.dense.weight" in printed

    model = AutoModel.from_pretrained(tmp_path / "converted").eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "converted")
    assert type(model) is MagtkdForEmotionRecognition
    assert processor.tokenization_mode == "released" and processor.audio_mode == "released"
    assert processor.frame_selection == "released"
    assert processor.speaker_mode == ("global_map" if dataset == "meld" else "released_iemocap")
    assert model.config.text_config.encoder_config.vocab_size == TEXT_VOCAB == len(processor.tokenizer)
    batch = processor(dataset_rows(released, media_rows))
    if dataset == "meld":
        assert set(batch["speaker_ids"][batch["utterance_mask"].bool()].tolist()) <= {0, 17, 303}
    assert_gives_the_released_outputs(model, released, batch)


def test_fusion_alone_still_gives_a_fusion_folder_and_errors_name_the_missing_file(tmp_path, encoder_folders):
    torch.save(make_released_state_dict(HIDDEN, HEADS, 6, 2, seed=1), tmp_path / "fusion.bin")
    assert cli(["convert-released", "--fusion", str(tmp_path / "fusion.bin"), "--dataset", "iemocap",
                "--output", str(tmp_path / "fusion-only")]) == 0
    assert type(AutoModel.from_pretrained(tmp_path / "fusion-only")) is MagtkdFusionModel
    torch.save(ReleasedUnimodal("text", 6, seed=0).state_dict(), tmp_path / "text.bin")
    torch.save(ReleasedUnimodal("audio", 6, seed=1).state_dict(), tmp_path / "audio.bin")
    common = ["convert-released", "--fusion", str(tmp_path / "fusion.bin"), "--dataset", "iemocap", "--output",
              str(tmp_path / "e2e"), "--text-encoder", str(encoder_folders / "text"), "--audio-encoder",
              str(encoder_folders / "audio"), "--video-encoder", str(encoder_folders / "video")]
    with pytest.raises(ValueError, match="--audio-kd"):
        cli(["--debug", *common, "--text", str(tmp_path / "text.bin"), "--audio", str(tmp_path / "audio.bin")])
    with pytest.raises(ValueError, match=r"text.bin \(audio_kd\).*released audio layout.*text_model\."):
        cli(["--debug"] + common + ["--text", str(tmp_path / "text.bin"), "--audio-kd", str(tmp_path / "text.bin"),
                      "--video", str(tmp_path / "audio.bin")])
