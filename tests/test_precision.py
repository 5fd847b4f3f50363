"""The inference dtype: bfloat16 by default where the hardware computes it natively, float32 elsewhere; `--dtype`."""

import pytest
import torch

from magtkd_hf.precision import cpu_has_native_bf16, default_inference_dtype, resolve_dtype


def test_native_bf16_is_read_from_the_cpu_flags():
    assert cpu_has_native_bf16("flags : fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni")
    assert cpu_has_native_bf16("flags : fpu amx_bf16 amx_tile")
    assert not cpu_has_native_bf16("flags : fpu sse2 avx2 avx512f avx512_vnni")


def test_native_follows_the_hardware_auto_keeps_the_checkpoint_and_names_are_checked(monkeypatch):
    monkeypatch.setattr("magtkd_hf.precision.cpu_has_native_bf16", lambda: True)
    assert default_inference_dtype("cpu") is torch.bfloat16 and resolve_dtype("native", "cpu") is torch.bfloat16
    monkeypatch.setattr("magtkd_hf.precision.cpu_has_native_bf16", lambda: False)
    assert resolve_dtype("native", "cpu") is torch.float32
    assert resolve_dtype("auto", "cpu") is None and resolve_dtype(None) is None  # transformers' "auto": as saved
    assert resolve_dtype("float32") is torch.float32 and resolve_dtype(torch.float16) is torch.float16
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_dtype("fp8")


@pytest.mark.parametrize("native", [True, False])
def test_mixed_precision_auto_is_bf16_only_on_native_hardware(monkeypatch, native):
    import magtkd_hf.precision as precision
    from magtkd_hf.training.loop import resolve_mixed_precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda cpuinfo=None: native)
    assert resolve_mixed_precision("auto", cpu=True) == ("bf16" if native else "no")
    assert resolve_mixed_precision("no", cpu=True) == "no" and resolve_mixed_precision("bf16") == "bf16"


def test_the_recipes_extract_features_and_train_the_fusion_in_auto_precision():
    from magtkd_hf.training.recipe import load_recipe

    for name in ("meld", "iemocap"):
        recipe = load_recipe(name)
        assert [recipe.stage_settings(stage).mixed_precision for stage in ("extract-features", "fusion", "text")] == [
            "auto", "auto", "no"
        ]
