"""`from_pretrained(folder, dtype=...)` for every saved folder kind: every parameter, `model.dtype` and the forward pass
agree, and the logits stay close to the float32 ones. The encoder configs record `dtype: float32`, as those of
encoders loaded from the Hub do (the case where the encoders used to stay in float32)."""

import pytest
import torch
from test_end_to_end import _threads, processor  # noqa: F401 (module fixtures: one torch thread, tiny processor)
from tiny_magtkd import tiny_config, tiny_fusion_config, tiny_stage_config, write_conversation_rows
from transformers import AutoModel

from magtkd_hf import (
    MagtkdAudioModel,
    MagtkdDataCollator,
    MagtkdForEmotionRecognition,
    MagtkdFusionModel,
    MagtkdTextModel,
    MagtkdVideoModel,
)

# Tolerances on the logits against float32, for the tiny random models (logits of order 1).
TOLERANCES = {torch.bfloat16: 0.1, torch.float16: 0.02}


@pytest.fixture(scope="module")
def batch(processor, tmp_path_factory):  # noqa: F811
    rows = write_conversation_rows(tmp_path_factory.mktemp("dtype_media"), lengths=(2, 1))
    return MagtkdDataCollator(processor)(rows)


def _recorded_float32(stage_config):
    stage_config.encoder_config.dtype = torch.float32
    return stage_config


def _models_and_inputs(processor, batch):  # noqa: F811
    """(model, forward inputs) of every saved folder kind."""
    stage = {m: _recorded_float32(tiny_stage_config(processor, m)) for m in ("text", "audio", "video")}
    config = tiny_config(processor)
    for modality in stage:
        _recorded_float32(getattr(config, f"{modality}_config"))
    utterances = batch["input_ids"].shape[0]
    fusion_inputs = {
        f"{m}_features": torch.randn(*batch["utterance_mask"].shape, 32) for m in ("text", "audio", "video")
    }
    return {
        "fusion": (MagtkdFusionModel(tiny_fusion_config()), {
            **fusion_inputs, "speaker_ids": batch["speaker_ids"], "attention_mask": batch["utterance_mask"]}),
        "model": (MagtkdForEmotionRecognition(config), {k: v for k, v in batch.items() if k != "labels"}),
        "text": (MagtkdTextModel(stage["text"]),
                 {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}),
        "audio": (MagtkdAudioModel(stage["audio"]),
                  {"input_values": batch["input_values"], "attention_mask": batch["audio_attention_mask"]}),
        "video": (MagtkdVideoModel(stage["video"]), {"pixel_values": batch["pixel_values"][:utterances]}),
    }


@pytest.fixture(scope="module")
def saved(processor, batch, tmp_path_factory):  # noqa: F811
    """Each kind saved in float32 and in bfloat16, with its inputs and float32 logits."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("dtype_folders")
    result = {}
    for kind, (model, inputs) in _models_and_inputs(processor, batch).items():
        with torch.no_grad():
            expected = model.eval()(**inputs).logits
        model.save_pretrained(root / kind)
        model.to(torch.bfloat16).save_pretrained(root / f"{kind}-bf16")
        result[kind] = (root / kind, root / f"{kind}-bf16", inputs, expected)
    return result


def _check(model, dtype, inputs, expected):
    assert {parameter.dtype for parameter in model.parameters()} == {dtype}
    assert model.dtype == dtype
    with torch.no_grad():
        logits = model.eval()(**inputs).logits  # the processor's float32 inputs, as they are
    assert logits.dtype == dtype
    tolerance = TOLERANCES.get(dtype, 0.0)
    torch.testing.assert_close(logits.float(), expected, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("kind", ["fusion", "model", "text", "audio", "video"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_from_pretrained_in_a_half_dtype(saved, kind, dtype):
    folder, _, inputs, expected = saved[kind]
    _check(AutoModel.from_pretrained(folder, dtype=dtype), dtype, inputs, expected)


@pytest.mark.parametrize("kind", ["fusion", "model", "text", "audio", "video"])
def test_auto_dtype_is_the_one_the_folder_records(saved, kind):
    folder, half_folder, inputs, expected = saved[kind]
    _check(AutoModel.from_pretrained(folder, dtype="auto"), torch.float32, inputs, expected)
    _check(AutoModel.from_pretrained(half_folder, dtype="auto"), torch.bfloat16, inputs, expected)


@pytest.mark.parametrize("options", [{"low_cpu_mem_usage": True}, {"device_map": "cpu"}, {"device_map": "auto"}])
def test_low_cpu_mem_usage_and_device_map_on_cpu(saved, options):
    folder, _, inputs, expected = saved["model"]
    model = AutoModel.from_pretrained(folder, dtype=torch.bfloat16, **options)
    assert {parameter.device.type for parameter in model.parameters()} == {"cpu"}
    _check(model, torch.bfloat16, inputs, expected)
