"""MagtkdForEmotionRecognition: processor output -> feature modules -> regroup -> fusion; training, save/load, dtype,
resizing, torch.export. (Loading without the package: tests/test_remote_code.py.)"""

import warnings

import pytest
import torch
from tiny_magtkd import HIDDEN, tiny_config, tiny_fusion_config, tiny_processor, tiny_stage_config
from tiny_magtkd import write_conversation_rows
from transformers import AutoModel, AutoProcessor

from magtkd_hf import (
    MagtkdAudioModel,
    MagtkdDataCollator,
    MagtkdForEmotionRecognition,
    MagtkdFusionModel,
    MagtkdTextModel,
    MagtkdVideoModel,
)
from magtkd_hf.modeling_magtkd import regroup_utterances


@pytest.fixture(scope="module", autouse=True)
def _threads(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    return write_conversation_rows(tmp_path_factory.mktemp("e2e_media"), lengths=(3, 1, 2))


@pytest.fixture(scope="module")
def batch(processor, rows):
    return MagtkdDataCollator(processor)(rows)


@pytest.fixture(scope="module")
def model(processor):
    torch.manual_seed(0)
    return MagtkdForEmotionRecognition(tiny_config(processor, preset="iemocap")).eval()


def without_labels(batch):
    return {key: value for key, value in batch.items() if key != "labels"}


def enable_gradient_checkpointing(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the deprecated name; activation_checkpointing_enable in v6
        model.gradient_checkpointing_enable()


def test_forward_equals_encoders_then_regroup_then_fusion(model, batch):
    with torch.no_grad():
        output = model(**batch)
        text = model.text_encoder(batch["input_ids"], batch["attention_mask"])
        audio = model.audio_encoder(batch["input_values"], batch["audio_attention_mask"])
        video = model.video_encoder(batch["pixel_values"])
        mask = batch["utterance_mask"]
        grouped = [regroup_utterances(features, mask) for features in (text, audio, video)]
        expected = model.fusion(*grouped, batch["speaker_ids"], mask, labels=batch["labels"])
    assert output.logits.shape == output.audio_logits.shape == (3, 3, 6)
    assert output.text_features.shape == output.video_features.shape == (6, HIDDEN)
    torch.testing.assert_close(output.logits, expected.logits)
    torch.testing.assert_close(output.video_logits, expected.video_logits)
    torch.testing.assert_close(output.loss, expected.loss)
    torch.testing.assert_close(output.text_features, text)
    # Conversation b, utterance n of the grid is the processor's utterance (b, n).
    position = (batch["conversation_index"] == 2) & (batch["utterance_index"] == 1)
    torch.testing.assert_close(grouped[0][2, 1], text[position][0])
    assert (grouped[0][1, 1:] == 0).all()
    # The feature modules are reachable by modality; the model has no stage classifiers.
    assert model.feature_module("audio") is model.audio_encoder
    assert [name for name, _ in model.named_children()] == ["text_encoder", "audio_encoder", "video_encoder", "fusion"]
    assert not any("classifier" in name for name in model.state_dict())
    with pytest.raises(ValueError, match="Unknown modality"):
        model.feature_module("speech")


def test_precomputed_features_replace_an_encoder_and_missing_inputs_are_named(model, batch):
    with torch.no_grad():
        full = model(**batch)
        inputs = {key: value for key, value in batch.items() if key != "pixel_values"}
        cached = model(**inputs, video_features=full.video_features)
    torch.testing.assert_close(cached.logits, full.logits)
    with pytest.raises(ValueError, match="No video input.*pixel_values"):
        model(**inputs)
    bad = dict(batch, utterance_index=batch["utterance_index"].flip(0))
    with pytest.raises(ValueError, match="disagree with `utterance_mask`"):
        model(**bad)
    with pytest.raises(ValueError, match="speaker_ids.*utterance_mask"):
        model(**{key: value for key, value in batch.items() if key != "speaker_ids"})


def test_forward_rejects_unknown_keywords(model, batch):
    with pytest.raises(TypeError, match="head_mask"):
        model(**batch, head_mask=None)


def test_training_step_frozen_encoders_and_gradient_checkpointing(processor, batch):
    torch.manual_seed(1)
    model = MagtkdForEmotionRecognition(tiny_config(processor)).train()
    model.freeze_encoders(("audio", "video"))
    model.train()
    assert not model.audio_encoder.training and model.text_encoder.training and model.fusion.training
    assert not any(module.training for module in model.video_encoder.modules())
    output = model(**batch)
    assert output.audio_features.grad_fn is None  # run without autograd
    output.loss.backward()
    assert all(p.grad is None for p in model.audio_encoder.parameters())
    assert all(p.grad is None for p in model.video_encoder.parameters())
    assert model.text_encoder.encoder.get_input_embeddings().weight.grad is not None
    assert model.fusion.text_head.weight.grad is not None
    model.zero_grad()
    model.unfreeze_encoders()
    assert model.audio_encoder.training
    enable_gradient_checkpointing(model)
    assert model.text_encoder.encoder.encoder.layer[0].gradient_checkpointing
    model(**batch).loss.backward()
    assert model.video_encoder.encoder.embeddings.cls_token.grad is not None


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "gradient_checkpointing"])
def test_every_trainable_parameter_gets_a_gradient_from_the_fusion_loss(processor, batch, checkpointing):
    """DistributedDataParallel(find_unused_parameters=False) needs every trainable parameter in the graph."""
    torch.manual_seed(2)
    model = MagtkdForEmotionRecognition(tiny_config(processor)).train()
    if checkpointing:
        enable_gradient_checkpointing(model)
    model(**batch).loss.backward()
    trainable = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    assert len(trainable) == len(list(model.parameters()))
    assert [name for name, parameter in model.named_parameters() if parameter.grad is None] == []


def test_save_load_automodel_and_bfloat16(model, batch, processor, tmp_path):
    with torch.no_grad():
        expected = model(**batch).logits
    model.save_pretrained(tmp_path / "e2e")
    processor.save_pretrained(tmp_path / "e2e")
    assert (tmp_path / "e2e" / "model.safetensors").exists()
    loaded, info = AutoModel.from_pretrained(tmp_path / "e2e", output_loading_info=True)
    assert type(loaded) is MagtkdForEmotionRecognition
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    vocab_size = len(AutoProcessor.from_pretrained(tmp_path / "e2e").tokenizer)
    assert loaded.config.text_config.encoder_config.vocab_size == vocab_size
    fusion = loaded.config.fusion_model_config
    assert type(fusion) is type(model.config.fusion_model_config) and fusion.label_names == model.config.label_names
    assert (fusion.hidden_size, fusion.video_feature_source, fusion.anchor_feature_loss) == (HIDDEN, "video", True)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**batch).logits, expected, atol=0, rtol=0)
    half = AutoModel.from_pretrained(tmp_path / "e2e", dtype=torch.bfloat16).eval()
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    # The processor's float32 pixels and waveforms go into the bfloat16 encoders as they are.
    assert batch["pixel_values"].dtype == batch["input_values"].dtype == torch.float32
    with torch.no_grad():
        logits = half(**batch).logits
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), expected, atol=0.1, rtol=0.1)
    # A fusion-only folder still loads as the fusion model.
    MagtkdFusionModel(tiny_fusion_config()).save_pretrained(tmp_path / "fusion")
    assert type(AutoModel.from_pretrained(tmp_path / "fusion")) is MagtkdFusionModel


def test_bfloat16_model_takes_float32_features(model, batch):
    with torch.no_grad():
        full = model(**batch)
        half = MagtkdForEmotionRecognition(model.config)
        half.load_state_dict(model.state_dict())
        half = half.to(torch.bfloat16).eval()
        features = {f"{m}_features": full[f"{m}_features"] for m in ("text", "audio", "video")}
        output = half(speaker_ids=batch["speaker_ids"], utterance_mask=batch["utterance_mask"], **features)
    assert output.logits.dtype == torch.bfloat16
    torch.testing.assert_close(output.logits.float(), full.logits, atol=0.1, rtol=0.1)


def test_from_unimodal_models_keeps_their_weights(model, batch, processor):
    torch.manual_seed(3)
    stages = {
        "text": MagtkdTextModel(model.config.text_config),
        "audio": MagtkdAudioModel(model.config.audio_config),
        "video": MagtkdVideoModel(model.config.video_config),
    }
    combined = MagtkdForEmotionRecognition.from_unimodal_models(
        stages["text"], stages["audio"], stages["video"], fusion_model=model.fusion
    ).eval()
    torch.testing.assert_close(combined.text_encoder.projection.weight, stages["text"].text_encoder.projection.weight)
    assert combined.config.num_labels == 6 and combined.config.fusion_model_config.audio_feature_source == "audio_kd"
    assert combined.config.fusion_model_config.video_feature_source == "video"
    for modality, stage in stages.items():
        expected = stage.feature_module.state_dict()
        for name, tensor in combined.feature_module(modality).state_dict().items():
            torch.testing.assert_close(tensor, expected[name], atol=0, rtol=0, msg=f"{modality}: {name}")
    for name, tensor in combined.fusion.state_dict().items():
        torch.testing.assert_close(tensor, model.fusion.state_dict()[name], atol=0, rtol=0, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(combined.audio_encoder(batch["input_values"]),
                                   stages["audio"].eval()(batch["input_values"]).features)
    # Without a fusion model: a fresh fusion of the text model's labels and width.
    fresh = MagtkdForEmotionRecognition.from_unimodal_models(stages["text"], stages["audio"], stages["video"])
    assert fresh.config.fusion_model_config.hidden_size == HIDDEN
    assert fresh.config.label_names == model.config.label_names
    # Stage models of other labels are refused.
    meld_audio = MagtkdAudioModel(tiny_stage_config(processor, "audio", preset="meld"))
    with pytest.raises(ValueError, match="audio model's labels"):
        MagtkdForEmotionRecognition.from_unimodal_models(stages["text"], meld_audio, stages["video"], model.fusion)


def test_resize_token_embeddings_updates_the_text_config_and_survives_saving(processor, tmp_path):
    torch.manual_seed(4)
    model = MagtkdForEmotionRecognition(tiny_config(processor))
    size = len(processor.tokenizer) + 7
    model.resize_token_embeddings(size)
    assert model.get_input_embeddings().num_embeddings == size
    assert model.text_encoder.encoder.get_input_embeddings().weight.shape[0] == size
    assert model.config.text_config.encoder_config.vocab_size == size
    model.save_pretrained(tmp_path)
    loaded, info = AutoModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    assert loaded.config.text_config.encoder_config.vocab_size == size
    torch.testing.assert_close(loaded.get_input_embeddings().weight, model.get_input_embeddings().weight)


# --- torch.export ----------------------------------------------------------------------------------------------------

OUTPUT_NAMES = ("logits", "audio_logits", "video_logits")


def assert_export_matches_eager(model, inputs):
    with torch.no_grad():
        exported = torch.export.export(model, args=(), kwargs=inputs)
        expected = model(**inputs)
        output = exported.module()(**inputs)
    for name in OUTPUT_NAMES:
        torch.testing.assert_close(output[name], expected[name], atol=1e-5, rtol=1e-5, msg=name)


def test_torch_export_with_precomputed_features(model, batch):
    with torch.no_grad():
        full = model(**batch)
    inputs = {f"{modality}_features": full[f"{modality}_features"] for modality in ("text", "audio", "video")}
    inputs.update(speaker_ids=batch["speaker_ids"], utterance_mask=batch["utterance_mask"])
    assert inputs["text_features"].shape == (6, HIDDEN) and not bool(batch["utterance_mask"].all())
    assert_export_matches_eager(model, inputs)


@pytest.fixture(scope="module")
def equal_audio_batch(processor, tmp_path_factory):
    """Clips of one length: no audio padding (see the next test for padded audio)."""
    rows = write_conversation_rows(tmp_path_factory.mktemp("e2e_export"), lengths=(2, 1), audio_seconds=0.4)
    return MagtkdDataCollator(processor)(rows)


def test_torch_export_of_the_processor_inputs(model, equal_audio_batch):
    inputs = without_labels(equal_audio_batch)
    assert bool(inputs["audio_attention_mask"].all()) and not bool(inputs["utterance_mask"].all())
    assert_export_matches_eager(model, inputs)


def test_torch_export_with_padded_audio_never_silently_differs_from_eager(model, batch):
    """Eager runs the clips of each length together, unpadded (features independent of batch-mates); an exported graph
    cannot branch on the lengths. It must then give the eager features or refuse padded audio; not compute other
    features (e.g. the encoder over the padding, without the mask). (Unpadded audio: the test above.)"""
    inputs = without_labels(batch)
    assert not bool(inputs["audio_attention_mask"].all())
    with torch.no_grad():
        expected = model(**inputs)
        exported = torch.export.export(model, args=(), kwargs=inputs).module()
        try:
            output = exported(**inputs)
        except (RuntimeError, ValueError):  # refused (an exported graph's runtime assertions lose their messages)
            return
    torch.testing.assert_close(output.audio_features, expected.audio_features, atol=1e-5, rtol=1e-5)
    for name in OUTPUT_NAMES:
        torch.testing.assert_close(output[name], expected[name], atol=1e-5, rtol=1e-5, msg=name)
