"""The device and dtypes of a run: CUDA when a GPU is visible, bf16 (else fp16) compute there, fp32 on CPU."""

from __future__ import annotations

import os

import torch

from ..errors import ConfigError, HardwareError

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


def rank_device_map(device_map: str) -> str | dict[str, int]:
    """Where a quantized base is placed: `device_map` as configured, except under a data-parallel launcher
    (torchrun / accelerate launch set LOCAL_RANK), where each process holds a whole copy on its own GPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device_map
    if device_map != "auto":
        raise ConfigError(f"quantization.device_map={device_map}: under torchrun each process holds its own copy "
                          "of the model on its own GPU; leave quantization.device_map at auto")
    return {"": int(os.environ.get("LOCAL_RANK", "0"))}
