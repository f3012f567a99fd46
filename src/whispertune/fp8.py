"""FP8 (e4m3) storage and matmuls for the frozen base weights of a LoRA model.

With LoRA the base weights never change, so each frozen `nn.Linear` of the encoder and decoder layers
can be stored once in float8 and run through the GPU's FP8 tensor cores (`torch._scaled_mm`; Ada and
Hopper GPUs, twice the bf16 matmul rate). The LoRA matrices, norms, attention and the loss stay bf16.

Scaling (per row, so one large value costs precision only in its own row):
- forward `y = x W^T + b`: x quantized per row (token) on the fly, W per output channel;
- backward `dx = dy W`: dy quantized per row on the fly, W per input channel (a second fp8 copy laid
  out for that product). No weight gradient: the weights are frozen. The two copies take as many
  bytes as the bf16 weight they replace.

Dimensions must be multiples of 16 (a tensor-core requirement); other layers stay as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import HardwareError

E4M3 = torch.float8_e4m3fn
E4M3_MAX = torch.finfo(E4M3).max  # 448


def quantize_rows(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) -> (float8 e4m3 tensor, float32 scale of shape (rows, 1)) with t ~= q * scale."""
    scale = t.abs().amax(dim=-1, keepdim=True).float().clamp_min(1e-12) / E4M3_MAX
    return (t.float() / scale).to(E4M3), scale


class _FP8Matmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_out, w_out_scale, w_in, w_in_scale, out_dtype):
        ctx.save_for_backward(w_in, w_in_scale)
        ctx.x_dtype = x.dtype
        xq, x_scale = quantize_rows(x.reshape(-1, x.shape[-1]))
        # _scaled_mm wants the second operand column-major: w_out is (out, in) row-major, so .t() is.
        y = torch._scaled_mm(xq, w_out.t(), scale_a=x_scale, scale_b=w_out_scale, out_dtype=torch.bfloat16)
        return y.reshape(*x.shape[:-1], y.shape[-1]).to(out_dtype)

    @staticmethod
    def backward(ctx, grad):
        w_in, w_in_scale = ctx.saved_tensors
        gq, g_scale = quantize_rows(grad.reshape(-1, grad.shape[-1]))
        dx = torch._scaled_mm(gq, w_in.t(), scale_a=g_scale, scale_b=w_in_scale, out_dtype=torch.bfloat16)
        return dx.reshape(*grad.shape[:-1], dx.shape[-1]).to(ctx.x_dtype), None, None, None, None, None


class FP8Linear(nn.Module):
    """A frozen linear layer whose weight lives in float8 (two per-channel-scaled copies) and bias in bf16."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        if linear.weight.requires_grad:
            raise ValueError("FP8Linear replaces frozen layers only (its weight gets no gradient)")
        weight = linear.weight.detach()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w_out, out_scale = quantize_rows(weight)  # (out, in), scale per output channel
        w_in, in_scale = quantize_rows(weight.t().contiguous())  # (in, out), scale per input channel
        # buffers, not parameters: nothing to train, and non-persistent so adapter checkpoints stay small
        self.register_buffer("w_out", w_out, persistent=False)
        self.register_buffer("w_out_scale", out_scale.t().contiguous(), persistent=False)  # (1, out)
        self.register_buffer("w_in", w_in, persistent=False)
        self.register_buffer("w_in_scale", in_scale.t().contiguous(), persistent=False)  # (1, in)
        bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # like nn.Linear under autocast: the output takes the autocast dtype (LayerNorm hands over fp32)
        device_type = x.device.type
        out_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype
        y = _FP8Matmul.apply(x, self.w_out, self.w_out_scale, self.w_in, self.w_in_scale, out_dtype)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, float8_e4m3"


def check_fp8_device(device: torch.device | str) -> None:
    """HardwareError unless `device` can run FP8 matmuls (CPU: yes, slowly; CUDA: compute capability >= 8.9)."""
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) < (8, 9):
            raise HardwareError(f"FP8 weights need an Ada or Hopper GPU (compute capability >= 8.9); this "
                                f"one is {major}.{minor}. Use speed preset fast or lean instead")


def convert_frozen_linears(layers: list[nn.Module]) -> int:
    """Swap every frozen `nn.Linear` inside `layers` (LoRA base layers included) for an FP8Linear.

    Trainable linears (the LoRA A/B matrices) and layers with a dimension not divisible by 16 are left
    alone. Returns how many layers were converted.
    """
    converted = 0
    for layer in layers:
        for parent in list(layer.modules()):
            for name, child in list(parent.named_children()):
                if (type(child) is nn.Linear and not child.weight.requires_grad
                        and child.in_features % 16 == 0 and child.out_features % 16 == 0):
                    check_fp8_device(child.weight.device)
                    setattr(parent, name, FP8Linear(child))
                    converted += 1
    return converted
