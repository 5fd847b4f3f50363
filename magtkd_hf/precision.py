"""The dtype `magtkd-hf predict`/`stream` run in by default ("native"): bfloat16 where the hardware computes it natively
(CUDA GPUs that support it; CPUs with AVX512-BF16 or AMX, where it measured 4x faster than float32 for the end-to-end
model), else float32. "auto" keeps transformers' meaning: the checkpoint's dtype."""

import re
from pathlib import Path

import torch

DTYPE_CHOICES = ("native", "auto", "float32", "bfloat16", "float16")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU reports AVX512-BF16 or AMX-BF16 (Linux `/proc/cpuinfo`); elsewhere False (float32 is the safe
    default where bf16 would be emulated and slower)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", cpuinfo) is not None


def default_inference_dtype(device: str | torch.device = "cpu") -> torch.dtype:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    return torch.float32


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device = "cpu") -> torch.dtype | None:
    """"native" -> `default_inference_dtype(device)`; "auto"/None -> None (keep the checkpoint's dtype); a name of
    `DTYPE_CHOICES` or a torch dtype as given."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "native":
        return default_inference_dtype(device)
    if dtype in (None, "auto"):
        return None
    if dtype not in DTYPE_CHOICES:
        raise ValueError(f"dtype must be one of {DTYPE_CHOICES} or a torch dtype, got {dtype!r}.")
    return getattr(torch, dtype)


__all__ = ["DTYPE_CHOICES", "cpu_has_native_bf16", "default_inference_dtype", "resolve_dtype"]
