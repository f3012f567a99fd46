"""bitsandbytes (int8 / nf4 bases): probe that its kernels run on a device, build the quantization
config, and cast around the int8 layers (fp16 inputs, reentrant checkpointing)."""

from __future__ import annotations

import importlib.util

import torch
from torch import nn

from ..config import QuantizationConfig
from ..errors import HardwareError


def check_quantization(mode: str, device: str) -> None:
    """Fail at once with HardwareError when `mode` cannot run on `device`.

    Probes the real bitsandbytes kernels on the device (a 64-value tensor), so a backend without
    int8 or 4-bit support is caught before minutes of weight loading.
    """
    if mode == "none":
        return
    if importlib.util.find_spec("bitsandbytes") is None:
        raise HardwareError(
            f"quantization.mode={mode} needs bitsandbytes, which is not installed; "
            "install bitsandbytes or use quantization.mode=none"
        )
    import bitsandbytes.functional as bnbf

    probe = torch.linspace(-1, 1, 64, device=device, dtype=torch.float16).reshape(1, 64)
    try:
        if mode == "int8":
            bnbf.int8_vectorwise_quant(probe)
        else:
            bnbf.quantize_4bit(probe, quant_type="nf4")
    except (NotImplementedError, RuntimeError) as exc:
        works = []
        for other in ("int8", "nf4"):
            try:
                if other != mode:
                    check_quantization(other, device)
                    works.append(other)
            except HardwareError:
                pass
        raise HardwareError(
            f"quantization.mode={mode} is not supported by bitsandbytes on {device} ({exc}); "
            f"modes that run here: {', '.join(works + ['none'])}"
        ) from None


def check_device_map(quant_cfg: QuantizationConfig) -> None:
    """Refuse a CUDA `quantization.device_map` on a machine without a visible GPU."""
    if quant_cfg.mode != "none" and quant_cfg.device_map.startswith("cuda") and not torch.cuda.is_available():
        raise HardwareError(
            f"quantization.device_map={quant_cfg.device_map} with quantization.mode={quant_cfg.mode} needs a CUDA GPU "
            "and none is visible; accepted on this machine: auto, cpu"
        )


def bnb_config(quant_cfg: QuantizationConfig, compute_dtype: torch.dtype):
    """The `BitsAndBytesConfig` for int8 / nf4 (None for mode none); `compute_dtype`: nf4's matmul dtype."""
    from transformers import BitsAndBytesConfig

    if quant_cfg.mode == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=quant_cfg.llm_int8_threshold)
    if quant_cfg.mode == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_use_double_quant=quant_cfg.double_quant,
        )
    return None


def is_quantized(model: nn.Module) -> bool:
    return bool(getattr(model, "is_loaded_in_8bit", False) or getattr(model, "is_loaded_in_4bit", False))


def _cast_to_fp16(module: nn.Module, args: tuple) -> tuple:
    return (args[0].to(torch.float16), *args[1:])


def _cast_back(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.to(module._whispertune_out_dtype)


def _remember_dtype(module: nn.Module, args: tuple) -> None:
    module._whispertune_out_dtype = args[0].dtype


def cast_inputs_at_int8_layers(model: nn.Module) -> int:
    """Feed int8 layers fp16 inputs and hand their outputs back in the caller's dtype.

    `prepare_model_for_kbit_training` keeps norms in fp32, so fp32 activations reach bitsandbytes'
    int8 matmul, which casts them to fp16 itself and logs a warning on every call. Casting here is the
    same arithmetic, stated explicitly; the rest of the network (norms, LoRA) stays in fp32.
    """
    import bitsandbytes as bnb

    count = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear8bitLt) and not getattr(module, "_whispertune_cast", False):
            module.register_forward_pre_hook(_remember_dtype)
            module.register_forward_pre_hook(_cast_to_fp16)
            module.register_forward_hook(_cast_back)
            module._whispertune_cast = True
            count += 1
    return count


def needs_reentrant_checkpointing(model: nn.Module) -> bool:
    """True for int8 (bitsandbytes) bases.

    bitsandbytes' int8 matmul keeps its fp16 input for backward as a plain attribute of its autograd
    context (`ctx.tensors`), not through `save_for_backward`, so non-reentrant checkpointing, which works
    by intercepting saved tensors, cannot free it: every int8 layer's input stays alive, and the reference
    config took 15.5 GiB instead of the recipe's 5.4 on large-v2. Reentrant checkpointing runs the forward
    without autograd, so nothing is kept (what peft's k-bit preparation uses by default).
    """
    return bool(getattr(model, "is_loaded_in_8bit", False))
