"""MagtkdForEmotionRecognition: processor output -> encoders -> regroup -> fusion; save/load, remote code, dtype."""

import textwrap
import warnings

import pytest
import torch
from test_remote_code import BLOCK_MAGTKD_HF, run_offline_script
from test_fusion_model import tiny_config as tiny_fusion_config
from tiny_magtkd import HIDDEN, tiny_config, tiny_processor, write_conversation_rows
from transformers import AutoModel, AutoProcessor

from magtkd_hf import (
    MagtkdDataCollator,
    MagtkdForEmotionRecognition,
    MagtkdFusionModel,
    MagtkdTextModel,
)
from magtkd_hf.modeling_magtkd import regroup_utterances


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


def test_forward_equals_encoders_then_regroup_then_fusion(model, batch):
    with torch.no_grad():
        output = model(**batch)
        text = model.text_model(batch["input_ids"], batch["attention_mask"]).features
        audio = model.audio_model(batch["input_values"], batch["audio_attention_mask"]).features
        video = model.video_model(batch["pixel_values"]).features
        mask = batch["utterance_mask"]
        grouped = [regroup_utterances(features, mask) for features in (text, audio, video)]
        expected = model.fusion(*grouped, batch["speaker_ids"], mask, labels=batch["labels"])
    assert output.logits.shape == output.audio_logits.shape == (3, 3, 6)
    assert output.text_features.shape == output.video_features.shape == (6, HIDDEN)
    torch.testing.assert_close(output.logits, expected.logits)
    torch.testing.assert_close(output.video_logits, expected.video_logits)
    torch.testing.assert_close(output.loss, expected.loss)
    # Conversation b, utterance n of the grid is the processor's utterance (b, n).
    position = (batch["conversation_index"] == 2) & (batch["utterance_index"] == 1)
    torch.testing.assert_close(grouped[0][2, 1], text[position][0])
    assert (grouped[0][1, 1:] == 0).all()


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


def test_training_step_frozen_encoders_and_gradient_checkpointing(processor, batch):
    torch.manual_seed(1)
    model = MagtkdForEmotionRecognition(tiny_config(processor)).train()
    model.freeze_encoders(("audio", "video"))
    model.train()
    assert not model.audio_model.training and model.text_model.training and model.fusion.training
    output = model(**batch)
    output.loss.backward()
    assert all(p.grad is None for p in model.audio_model.parameters())
    assert all(p.grad is None for p in model.video_model.parameters())
    assert model.text_model.encoder.get_input_embeddings().weight.grad is not None
    assert model.fusion.text_head.weight.grad is not None
    model.zero_grad()
    model.unfreeze_encoders()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model.gradient_checkpointing_enable()
    assert model.text_model.encoder.encoder.layer[0].gradient_checkpointing
    model(**batch).loss.backward()
    assert model.video_model.encoder.embeddings.cls_token.grad is not None


def test_save_load_automodel_and_bfloat16(model, batch, processor, tmp_path):
    with torch.no_grad():
        expected = model(**batch).logits
    model.save_pretrained(tmp_path / "e2e")
    processor.save_pretrained(tmp_path / "e2e")
    assert (tmp_path / "e2e" / "model.safetensors").exists()
    loaded = AutoModel.from_pretrained(tmp_path / "e2e").eval()
    assert type(loaded) is MagtkdForEmotionRecognition
    assert loaded.config.text_config.vocab_size == len(AutoProcessor.from_pretrained(tmp_path / "e2e").tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, expected, atol=0, rtol=0)
    half = AutoModel.from_pretrained(tmp_path / "e2e", dtype=torch.bfloat16).eval()
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        logits = half(**batch).logits
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), expected, atol=0.1, rtol=0.1)
    # A fusion-only folder still loads as the fusion model.
    MagtkdFusionModel(tiny_fusion_config()).save_pretrained(tmp_path / "fusion")
    assert type(AutoModel.from_pretrained(tmp_path / "fusion")) is MagtkdFusionModel


def test_from_unimodal_models_keeps_their_weights(model, batch):
    text = MagtkdTextModel(model.config)
    combined = MagtkdForEmotionRecognition.from_unimodal_models(
        text, model.audio_model, model.video_model, fusion_model=model.fusion
    ).eval()
    torch.testing.assert_close(combined.text_model.projection.weight, text.projection.weight)
    assert combined.config.num_labels == 6 and combined.config.audio_feature_source == "audio_kd"
    with torch.no_grad():
        torch.testing.assert_close(combined.audio_model(batch["input_values"]).logits,
                                   model.audio_model(batch["input_values"]).logits)


LOAD_WITHOUT_PACKAGE = BLOCK_MAGTKD_HF + textwrap.dedent(
    """
    import torch
    from transformers import AutoModel

    folder, fusion_folder, inputs, output = sys.argv[1:5]
    try:
        import magtkd_hf
    except ImportError:
        pass
    else:
        raise SystemExit("magtkd_hf was importable")
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__name__ == "MagtkdForEmotionRecognition", type(model)
    assert "transformers_modules" in type(model).__module__, type(model).__module__
    fusion = AutoModel.from_pretrained(fusion_folder, trust_remote_code=True)
    assert type(fusion).__name__ == "MagtkdFusionModel", type(fusion)
    batch = torch.load(inputs, weights_only=True)
    with torch.no_grad():
        torch.save(model(**batch).logits, output)
    print("loaded", type(model).__name__)
    """
)


def test_end_to_end_folder_loads_with_remote_code(model, batch, tmp_path):
    model.save_pretrained(tmp_path / "model")
    MagtkdFusionModel(tiny_fusion_config()).save_pretrained(tmp_path / "fusion")
    torch.save(dict(batch), tmp_path / "inputs.pt")
    result = run_offline_script(
        LOAD_WITHOUT_PACKAGE,
        [tmp_path / "model", tmp_path / "fusion", tmp_path / "inputs.pt", tmp_path / "logits.pt"],
        tmp_path,
    )
    assert "loaded MagtkdForEmotionRecognition" in result.stdout
    with torch.no_grad():
        expected = model(**batch).logits
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt", weights_only=True), expected, atol=0, rtol=0)
