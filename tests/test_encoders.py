"""Stage-1 models: text (prompt, feature at the mask token), audio (first frame), video (CLS); config checks."""

import pytest
import torch
from tiny_magtkd import HIDDEN, tiny_audio_config, tiny_config, tiny_processor, tiny_video_config, write_conversation_rows
from transformers import AutoModel

from magtkd_hf import MagtkdAudioModel, MagtkdConfig, MagtkdForEmotionRecognition, MagtkdTextModel, MagtkdVideoModel


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


@pytest.fixture(scope="module")
def batch(processor, tmp_path_factory):
    rows = write_conversation_rows(tmp_path_factory.mktemp("encoder_media"), lengths=(3, 2))
    return processor(rows)


def test_text_model_reads_the_mask_token_of_left_padded_prompts(processor, batch):
    torch.manual_seed(0)
    model = MagtkdTextModel(tiny_config(processor)).eval()
    assert model.encoder.get_input_embeddings().num_embeddings == len(processor.tokenizer)
    assert getattr(model.encoder, "pooler", None) is None
    assert bool((batch["input_ids"][:, -1] == processor.tokenizer.mask_token_id).all())
    with torch.no_grad():
        output = model(batch["input_ids"], batch["attention_mask"])
        hidden = model.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        expected = model.projection(hidden[:, -1])
        # One prompt alone (no padding) gives the same feature as in the padded batch.
        alone = model(batch["input_ids"][:1, -int(batch["attention_mask"][0].sum()):]).features
    assert output.features.shape == (5, HIDDEN) and output.logits.shape == (5, 7)
    torch.testing.assert_close(output.features, expected)
    torch.testing.assert_close(alone, output.features[:1], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="LEFT"):
        model(batch["input_ids"], batch["attention_mask"].flip(1))


def test_unimodal_losses_and_processor_labels(processor, batch):
    torch.manual_seed(0)
    config = tiny_config(processor)
    labels = batch["labels"][batch["utterance_mask"].bool()]
    text = MagtkdTextModel(config)
    output = text(batch["input_ids"], batch["attention_mask"], labels=batch["labels"],
                  utterance_mask=batch["utterance_mask"])
    torch.testing.assert_close(output.loss, torch.nn.functional.cross_entropy(output.logits, labels))
    output.loss.backward()
    assert text.encoder.get_input_embeddings().weight.grad is not None
    with pytest.raises(ValueError, match="utterance_mask"):
        text(batch["input_ids"], batch["attention_mask"], labels=batch["labels"])
    ignored = torch.full_like(labels, -100)
    assert text(batch["input_ids"], batch["attention_mask"], labels=ignored).loss.item() == 0.0


def test_audio_model_uses_the_first_frame_and_the_audio_mask(processor, batch):
    torch.manual_seed(0)
    model = MagtkdAudioModel(tiny_config(processor)).eval()
    values, mask = batch["input_values"], batch["audio_attention_mask"]
    assert not bool(mask.all())  # clips of different lengths: padding is there
    with torch.no_grad():
        output = model(values, attention_mask=mask, labels=torch.zeros(5, dtype=torch.long))
        same = model(values, audio_attention_mask=mask, attention_mask=batch["attention_mask"])
        expected = model.encoder(values, attention_mask=mask).last_hidden_state[:, 0]
        shortest = int(mask.sum(1).argmin())
        alone = model(values[shortest : shortest + 1, : int(mask[shortest].sum())]).features
        unmasked = model(values).features
    torch.testing.assert_close(output.features, expected)
    torch.testing.assert_close(same.features, output.features)
    # With the mask, a padded clip's feature is close to the clip's alone (the convolutions' last receptive fields
    # still see the padding), and closer than without it.
    masked_error = (alone - output.features[shortest]).abs().max()
    assert masked_error < 5e-3 and masked_error < (alone - unmasked[shortest]).abs().max() / 2
    torch.testing.assert_close(output.logits, model.classifier(expected))
    assert torch.isfinite(output.loss)
    with pytest.raises(ValueError, match="audio_attention_mask"):
        model(values, attention_mask=batch["attention_mask"])


def test_video_model_uses_the_cls_position(processor, batch):
    torch.manual_seed(0)
    model = MagtkdVideoModel(tiny_config(processor)).eval()
    assert batch["pixel_values"].shape == (5, 8, 3, 32, 32)
    with torch.no_grad():
        output = model(batch["pixel_values"])
        expected = model.encoder(batch["pixel_values"]).last_hidden_state[:, 0]
    torch.testing.assert_close(output.features, expected)
    assert output.logits.shape == (5, 7) and output.loss is None


def test_from_encoder_loads_pretrained_weights_and_resizes_the_vocabulary(processor, tmp_path):
    config = tiny_config(processor)
    plain_text = config.text_config.to_dict()
    plain_text["vocab_size"] = len(processor.tokenizer) - 9  # a checkpoint without the speaker tokens
    text_encoder = AutoModel.from_config(type(config.text_config)(**plain_text))
    text_encoder.save_pretrained(tmp_path / "text")
    AutoModel.from_config(tiny_video_config()).save_pretrained(tmp_path / "video")
    AutoModel.from_config(tiny_audio_config()).save_pretrained(tmp_path / "audio")

    text = MagtkdTextModel.from_encoder(tiny_config(processor), str(tmp_path / "text"))
    rows = text.encoder.get_input_embeddings().weight
    assert rows.shape[0] == len(processor.tokenizer) == text.config.text_config.vocab_size
    torch.testing.assert_close(rows[: rows.shape[0] - 9], text_encoder.get_input_embeddings().weight)
    torch.testing.assert_close(
        text.encoder.encoder.layer[1].output.dense.weight, text_encoder.encoder.layer[1].output.dense.weight
    )
    video = MagtkdVideoModel.from_encoder(tiny_config(processor), str(tmp_path / "video"))
    reference = AutoModel.from_pretrained(tmp_path / "video")
    torch.testing.assert_close(video.encoder.embeddings.cls_token, reference.embeddings.cls_token)
    audio = MagtkdAudioModel.from_encoder(tiny_config(processor), str(tmp_path / "audio"))
    assert audio.config.audio_config.hidden_size == HIDDEN

    e2e = MagtkdForEmotionRecognition.from_encoders(
        tiny_config(processor), str(tmp_path / "text"), str(tmp_path / "audio"), str(tmp_path / "video")
    )
    torch.testing.assert_close(e2e.video_model.encoder.embeddings.cls_token, reference.embeddings.cls_token)
    assert e2e.text_model.encoder.get_input_embeddings().num_embeddings == len(processor.tokenizer)

    text.save_pretrained(tmp_path / "stage1")
    reloaded = MagtkdTextModel.from_pretrained(tmp_path / "stage1")
    torch.testing.assert_close(reloaded.projection.weight, text.projection.weight)


def test_encoder_widths_must_match_the_fusion_width(processor):
    with pytest.raises(ValueError, match="audio_config.hidden_size.*must equal the fusion `hidden_size`"):
        MagtkdConfig(hidden_size=HIDDEN, num_attention_heads=4, video_config=tiny_video_config())
    with pytest.raises(ValueError, match="video_config.hidden_size"):
        tiny_config(processor, video_config=tiny_video_config(hidden_size=64))
    config = MagtkdConfig()
    assert config.text_config.vocab_size == 50274 and config.audio_config.hidden_size == config.hidden_size == 768
