"""The device and dtypes of a run: CUDA when a GPU is visible, bf16 (else fp16) compute there, fp32 on CPU."""

from __future__ import annotations

import torch

from ..errors import HardwareError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_device(device: str | None = None) -> str:
    """`None` -> "cuda" when a GPU is visible, else "cpu"; an unavailable CUDA request is refused."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HardwareError(f"device {device!r} requested but no CUDA GPU is visible; use device cpu")
    return device


def resolve_compute_dtype(name: str, device: str) -> torch.dtype:
    """`auto`: bf16 on GPUs that support it, fp16 on other GPUs, fp32 on CPU."""
    if name != "auto":
        return _DTYPES[name]
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32
