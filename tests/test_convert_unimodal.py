"""`convert-released` with the released stage-1/2 state dicts: an end-to-end folder giving the released outputs."""

import json

import pytest
import torch
from media_fixtures import make_tiny_roberta_tokenizer
from released_reference import make_released_state_dict, released_reference_logits
from tiny_magtkd import tiny_audio_config, tiny_text_config, tiny_video_config, write_conversation_rows
from torch import nn
from transformers import AutoModel, AutoProcessor, Data2VecAudioModel, RobertaModel, TimesformerModel

from magtkd_hf import MagtkdFusionModel, MagtkdProcessor
from magtkd_hf.cli import main as cli
from magtkd_hf.modeling_magtkd import regroup_utterances

HIDDEN, HEADS = 32, 8  # released fusion: 8 heads
# The tiny tokenizer plus the 9 speaker tokens, as the released text model was resized (roberta-large: 50,274 rows).
TEXT_VOCAB = len(make_tiny_roberta_tokenizer()) + 9


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
def rows(tmp_path_factory):
    # Equal clip lengths: the released audio model pads without an attention mask, so compare on unpadded audio.
    return write_conversation_rows(tmp_path_factory.mktemp("convert_media"), lengths=(3, 2), audio_seconds=0.4)


@pytest.mark.parametrize(
    "dataset, num_labels, num_speakers, sources",
    [("meld", 7, 304, ("audio_kd", "video_kd")), ("iemocap", 6, 2, ("audio_kd", "video"))],
)
def test_converted_model_gives_the_released_outputs(
    tmp_path, capsys, encoder_folders, rows, dataset, num_labels, num_speakers, sources
):
    fusion_state = make_released_state_dict(HIDDEN, HEADS, num_labels, num_speakers, seed=3)
    torch.save(fusion_state, tmp_path / "multimodal_fusion_best.bin")
    released = {}
    for seed, source in enumerate(("text", "audio", "video", "audio_kd", "video_kd")):
        released[source] = ReleasedUnimodal(source.split("_")[0], num_labels, seed=seed)
        torch.save(released[source].state_dict(), tmp_path / f"{source}.bin")
    arguments = ["convert-released", "--fusion", str(tmp_path / "multimodal_fusion_best.bin"), "--dataset", dataset,
                 "--output", str(tmp_path / "converted"), "--text-encoder", str(encoder_folders / "text"),
                 "--audio-encoder", str(encoder_folders / "audio"), "--video-encoder", str(encoder_folders / "video")]
    for source in released:
        arguments += [f"--{source.replace('_', '-')}", str(tmp_path / f"{source}.bin")]
    if dataset == "meld":
        speaker_map = {"Ross": 0, "Rachel": 17, "Joey": 303}
        (tmp_path / "speaker2id.json").write_text(json.dumps(speaker_map))
        arguments += ["--speaker-map", str(tmp_path / "speaker2id.json")]
    else:
        rows = [dict(row, speakers=[["F", "M"][i % 2] for i in range(len(row["texts"]))]) for row in rows]
    assert cli(arguments) == 0
    printed = capsys.readouterr().out
    assert f"audio encoder <- --{sources[0].replace('_', '-')}" in printed and "text_model.pooler.dense.weight" in printed

    model = AutoModel.from_pretrained(tmp_path / "converted").eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "converted")
    assert processor.tokenization_mode == "released"
    assert processor.speaker_mode == ("global_map" if dataset == "meld" else "released_iemocap")
    assert model.config.text_config.vocab_size == TEXT_VOCAB == len(processor.tokenizer)
    batch = processor(rows)
    assert bool(batch["audio_attention_mask"].all())
    if dataset == "meld":
        assert set(batch["speaker_ids"][batch["utterance_mask"].bool()].tolist()) <= {0, 17, 303}

    with torch.no_grad():
        features = {}
        for modality, source in zip(("text", "audio", "video"), ("text", *sources)):
            expected_features, expected_logits = released[source](batch)
            output = model.unimodal_model(modality)(**{k: v for k, v in batch.items() if k != "labels"})
            torch.testing.assert_close(output.features, expected_features, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(output.logits, expected_logits, atol=1e-5, rtol=1e-5)
            features[modality] = regroup_utterances(expected_features, batch["utterance_mask"])
        logits = model(**batch).logits
    mask = batch["utterance_mask"]
    expected = released_reference_logits(
        fusion_state, features["text"], features["audio"], features["video"], batch["speaker_ids"], mask, HEADS
    )
    torch.testing.assert_close(logits[mask.bool()], expected[mask.bool()], atol=1e-5, rtol=1e-5)


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
        cli(common + ["--text", str(tmp_path / "text.bin"), "--audio", str(tmp_path / "audio.bin")])
    with pytest.raises(ValueError, match=r"text.bin \(audio_kd\).*released audio layout.*text_model\."):
        cli(common + ["--text", str(tmp_path / "text.bin"), "--audio-kd", str(tmp_path / "text.bin"),
                      "--video", str(tmp_path / "audio.bin")])
