"""Where things are inside a plain, quantized or peft-wrapped Whisper: the model under the adapters,
its encoder, and the dtype activations (and so the inputs) flow in."""

from __future__ import annotations

from typing import Any

import torch

# Float dtypes activations run in. Quantized weights are int8/uint8, float8 frozen weights (model/fp8.py) are
# float8: neither is what the inputs may be cast to, so only these count.
ACTIVATION_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def base_model(model: Any) -> Any:
    """The transformers model inside a peft wrapper (the model itself when it has no adapters)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def encoder(model: Any) -> torch.nn.Module:
    """The Whisper encoder of a plain, quantized or peft-wrapped model."""
    return base_model(model).get_encoder()


def input_dtype(model: Any) -> torch.dtype:
    """The dtype encoder inputs (features, or cached encoder outputs fed to the decoder) are cast to: that of
    the encoder's first parameter in an activation dtype; float32 when it has none."""
    for p in encoder(model).parameters():
        if p.dtype in ACTIVATION_DTYPES:
            return p.dtype
    return torch.float32
