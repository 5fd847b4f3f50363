"""Stage-1 models: text (prompt, feature at the mask token), audio (first frame), video (CLS); config checks."""

import pytest
import torch
from tiny_magtkd import (
    HEADS,
    HIDDEN,
    tiny_audio_config,
    tiny_fusion_config,
    tiny_processor,
    tiny_stage_config,
    tiny_text_config,
    tiny_video_config,
    write_conversation_rows,
)
from transformers import AutoModel

from magtkd_hf import (
    MagtkdAudioModel,
    MagtkdConfig,
    MagtkdForEmotionRecognition,
    MagtkdFusionConfig,
    MagtkdTextConfig,
    MagtkdTextModel,
    MagtkdVideoModel,
)


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


@pytest.fixture(scope="module")
def batch(processor, tmp_path_factory):
    rows = write_conversation_rows(tmp_path_factory.mktemp("encoder_media"), lengths=(3, 2))
    return processor(rows)


def test_text_model_reads_the_mask_token_of_left_padded_prompts(processor, batch):
    torch.manual_seed(0)
    model = MagtkdTextModel(tiny_stage_config(processor, "text")).eval()
    encoder = model.text_encoder.encoder
    assert encoder.get_input_embeddings().num_embeddings == len(processor.tokenizer)
    assert getattr(encoder, "pooler", None) is None
    assert model.config.feature_size == HIDDEN and model.text_encoder.projection.out_features == HIDDEN
    assert bool((batch["input_ids"][:, -1] == processor.tokenizer.mask_token_id).all())
    with torch.no_grad():
        output = model(batch["input_ids"], batch["attention_mask"])
        hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        expected = model.text_encoder.projection(hidden[:, -1])
        # One prompt alone (no padding) gives the same feature as in the padded batch.
        alone = model(batch["input_ids"][:1, -int(batch["attention_mask"][0].sum()):]).features
    assert output.features.shape == (5, HIDDEN) and output.logits.shape == (5, 7) and output.loss is None
    torch.testing.assert_close(output.features, expected)
    torch.testing.assert_close(output.logits, model.classifier(expected))
    torch.testing.assert_close(alone, output.features[:1], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="LEFT"):
        model(batch["input_ids"], batch["attention_mask"].flip(1))


def test_text_model_loss_and_processor_labels(processor, batch):
    torch.manual_seed(0)
    text = MagtkdTextModel(tiny_stage_config(processor, "text"))
    # The processor's labels are per conversation (B, N); a stage model takes the utterances' (U,).
    labels = batch["labels"][batch["utterance_mask"].bool()]
    output = text(batch["input_ids"], batch["attention_mask"], labels=labels)
    torch.testing.assert_close(output.loss, torch.nn.functional.cross_entropy(output.logits, labels))
    output.loss.backward()
    assert text.text_encoder.encoder.get_input_embeddings().weight.grad is not None
    with pytest.raises(ValueError, match=r"expected \(5,\)"):
        text(batch["input_ids"], batch["attention_mask"], labels=batch["labels"])
    ignored = torch.full_like(labels, -100)
    assert text(batch["input_ids"], batch["attention_mask"], labels=ignored).loss.item() == 0.0


def test_audio_model_uses_the_first_frame_and_the_audio_mask(processor, batch):
    torch.manual_seed(0)
    model = MagtkdAudioModel(tiny_stage_config(processor, "audio")).eval()
    values, mask = batch["input_values"], batch["audio_attention_mask"]
    assert not bool(mask.all())  # clips of different lengths: padding is there
    encoder = model.audio_encoder.encoder
    with torch.no_grad():
        output = model(values, attention_mask=mask, labels=torch.zeros(5, dtype=torch.long))
        # Each clip's feature is the first frame of the encoder run on that clip alone, unpadded: independent of its
        # batch-mates (data2vec's positional convolution would carry padding into it even under a mask).
        lengths = mask.sum(1).tolist()
        expected = torch.cat([encoder(values[i : i + 1, :n]).last_hidden_state[:, 0] for i, n in enumerate(lengths)])
        shortest = int(mask.sum(1).argmin())
        unmasked = model(values).features
        with_others = model(values[[shortest, 0]], attention_mask=mask[[shortest, 0]]).features
    torch.testing.assert_close(output.features, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.audio_encoder(values, mask), output.features)
    torch.testing.assert_close(with_others[0], output.features[shortest], atol=1e-5, rtol=1e-5)
    # Without the mask the padding enters the shortest clip's feature.
    assert (unmasked[shortest] - expected[shortest]).abs().max() > 1e-3
    torch.testing.assert_close(output.logits, model.classifier(output.features))
    assert torch.isfinite(output.loss) and model.config.feature_size == HIDDEN
    # The text prompts' mask is not the audio mask.
    with pytest.raises(ValueError, match="audio_attention_mask"):
        model(values, attention_mask=batch["attention_mask"])


def test_video_model_uses_the_cls_position(processor, batch):
    torch.manual_seed(0)
    model = MagtkdVideoModel(tiny_stage_config(processor, "video")).eval()
    assert batch["pixel_values"].shape == (5, 8, 3, 32, 32)
    with torch.no_grad():
        output = model(batch["pixel_values"])
        expected = model.video_encoder.encoder(batch["pixel_values"]).last_hidden_state[:, 0]
    torch.testing.assert_close(output.features, expected)
    torch.testing.assert_close(output.logits, model.classifier(expected))
    assert output.logits.shape == (5, 7) and output.loss is None


def test_from_encoder_loads_pretrained_weights_and_resizes_the_vocabulary(processor, tmp_path):
    text_config = tiny_stage_config(processor, "text")
    plain_text = tiny_text_config(len(processor.tokenizer) - 9)  # a checkpoint without the speaker tokens
    text_encoder = AutoModel.from_config(plain_text)
    text_encoder.save_pretrained(tmp_path / "text")
    AutoModel.from_config(tiny_video_config()).save_pretrained(tmp_path / "video")
    AutoModel.from_config(tiny_audio_config()).save_pretrained(tmp_path / "audio")

    text = MagtkdTextModel.from_encoder(text_config, str(tmp_path / "text"))
    rows = text.text_encoder.encoder.get_input_embeddings().weight
    assert rows.shape[0] == len(processor.tokenizer) == text.config.encoder_config.vocab_size
    assert text_config.encoder_config.vocab_size == len(processor.tokenizer)  # the given config is not changed
    assert getattr(text.text_encoder.encoder, "pooler", None) is None
    torch.testing.assert_close(rows[: rows.shape[0] - 9], text_encoder.get_input_embeddings().weight)
    torch.testing.assert_close(
        text.text_encoder.encoder.encoder.layer[1].output.dense.weight,
        text_encoder.encoder.layer[1].output.dense.weight,
    )
    video = MagtkdVideoModel.from_encoder(tiny_stage_config(processor, "video"), str(tmp_path / "video"))
    reference = AutoModel.from_pretrained(tmp_path / "video")
    torch.testing.assert_close(video.video_encoder.encoder.embeddings.cls_token, reference.embeddings.cls_token)
    audio = MagtkdAudioModel.from_encoder(tiny_stage_config(processor, "audio"), str(tmp_path / "audio"))
    assert audio.config.feature_size == audio.config.encoder_config.hidden_size == HIDDEN

    e2e = MagtkdForEmotionRecognition.from_encoders(
        _tiny_end_to_end_config(processor), str(tmp_path / "text"), str(tmp_path / "audio"), str(tmp_path / "video")
    )
    torch.testing.assert_close(e2e.video_encoder.encoder.embeddings.cls_token, reference.embeddings.cls_token)
    assert e2e.text_encoder.encoder.get_input_embeddings().num_embeddings == len(processor.tokenizer)
    assert e2e.config.text_config.encoder_config.vocab_size == len(processor.tokenizer)
    assert not any(name.startswith("classifier") or ".classifier." in name for name in e2e.state_dict())

    text.save_pretrained(tmp_path / "stage1")
    reloaded = MagtkdTextModel.from_pretrained(tmp_path / "stage1")
    torch.testing.assert_close(reloaded.text_encoder.projection.weight, text.text_encoder.projection.weight)
    torch.testing.assert_close(reloaded.classifier.weight, text.classifier.weight)


def test_a_given_encoder_must_match_the_config(processor):
    config = tiny_stage_config(processor, "video")
    wrong = AutoModel.from_config(tiny_video_config(num_hidden_layers=1))
    with pytest.raises(ValueError, match="differs from `config.encoder_config`"):
        MagtkdVideoModel(config, encoder=wrong)
    right = AutoModel.from_config(config.encoder_config)
    assert MagtkdVideoModel(config, encoder=right).video_encoder.encoder is right


def _tiny_end_to_end_config(processor):
    stages = {f"{modality}_config": tiny_stage_config(processor, modality) for modality in ("text", "audio", "video")}
    return MagtkdConfig(**stages, fusion_model_config=tiny_fusion_config())


def test_encoder_widths_must_match_the_fusion_width(processor):
    fusion = MagtkdFusionConfig(hidden_size=HIDDEN, num_attention_heads=HEADS)
    with pytest.raises(ValueError, match="`text_config` gives features of width 768, but the fusion is 32 wide"):
        MagtkdConfig(fusion_model_config=fusion)
    with pytest.raises(ValueError, match="`audio_config` gives features of width 768"):
        MagtkdConfig(text_config=MagtkdTextConfig(feature_size=HIDDEN), video_config=tiny_video_config(),
                     fusion_model_config=fusion)
    stages = {f"{modality}_config": tiny_stage_config(processor, modality) for modality in ("text", "audio")}
    with pytest.raises(ValueError, match="`video_config` gives features of width 64"):
        MagtkdConfig(**stages, video_config=tiny_video_config(hidden_size=64), fusion_model_config=fusion)
    config = MagtkdConfig()
    assert config.text_config.encoder_config.vocab_size == 50274
    assert config.audio_config.feature_size == config.fusion_model_config.hidden_size == 768
    assert config.text_config.feature_size == config.video_config.feature_size == 768

