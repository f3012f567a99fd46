"""FP8 (e4m3) storage and matmuls for the frozen base weights of a LoRA model.

With LoRA the base weights never change, so the frozen `nn.Linear`s of the encoder and decoder layers
can be stored in float8 and run on the GPU's FP8 tensor cores (`torch._scaled_mm`; Ada and Hopper
GPUs, 1.5-1.8x the bf16 matmul rate on large-v2's shapes). LoRA, norms, attention and the loss stay bf16.

Scaling is per row, so one large value costs precision only in its own row:
- forward `y = x W^T`: x quantized per row (token) on the fly, W per output channel;
- backward `dx = dy W`: dy quantized per row on the fly, W per input channel (a second copy laid out
  for that product). There is no weight gradient: the weights are frozen.

Which products run in FP8: the quantized operand must first be reduced over its row (the row's
maximum), which costs a second pass over it. Over a narrow row (d_model) that pass fuses into the
LayerNorm or residual kernel that produces the operand almost for free; over a wide row (fc1's output,
4 x d_model) the GELU (or its backward) feeding it is recomputed, and on an H200 that cost more than
the FP8 matmul saved (benchmarks/NOTES.md). So a product is FP8 only when its quantized operand is the
narrow side: fc1 forward and fc2 backward in FP8, fc2 forward and fc1 backward in bf16, square
projections (attention) both ways.

Dimensions must be multiples of 16 (a tensor-core requirement); other layers stay as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import HardwareError

E4M3 = torch.float8_e4m3fn
E4M3_MAX = torch.finfo(E4M3).max  # 448


def quantize_rows(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) -> (float8 e4m3 tensor, float32 scale of shape (rows, 1)) with t ~= q * scale."""
    scale = t.abs().amax(dim=-1, keepdim=True).float().clamp_min(1e-12) / E4M3_MAX
    return (t.float() / scale).to(E4M3), scale


def _matmul(a: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor | None) -> torch.Tensor:
    """a @ w^T: on FP8 tensor cores when `w` is float8 (`w_scale`: its per-row scale as (1, rows)), else as is."""
    if w_scale is None:
        return a.to(w.dtype) @ w.t()
    q, a_scale = quantize_rows(a)
    # _scaled_mm wants the second operand column-major: w is row-major, so w.t() is.
    return torch._scaled_mm(q, w.t(), scale_a=a_scale, scale_b=w_scale, out_dtype=torch.bfloat16)


class _FP8Matmul(torch.autograd.Function):
    """(rows, in) -> (rows, out) with `w_fwd` (out, in) forward and `w_bwd` (in, out) for the input gradient.

    The output is always a copy: under torch 2.11's compile, a Function that returned the `_scaled_mm`
    result itself (or a view of it) got a zero gradient in the traced backward; a copy (which inductor
    fuses with the following bias add) keeps the custom backward connected.
    """

    @staticmethod
    def forward(ctx, x, w_fwd, w_fwd_scale, w_bwd, w_bwd_scale, out_dtype):
        ctx.save_for_backward(w_bwd, w_bwd_scale)
        ctx.x_dtype = x.dtype
        return _matmul(x, w_fwd, w_fwd_scale).to(out_dtype, copy=True)

    @staticmethod
    def backward(ctx, grad):
        w_bwd, w_bwd_scale = ctx.saved_tensors
        return _matmul(grad.contiguous(), w_bwd, w_bwd_scale).to(ctx.x_dtype), None, None, None, None, None


def fp8_directions(in_features: int, out_features: int) -> tuple[bool, bool]:
    """(forward, input gradient): which of a layer's two products run in FP8, the narrow-side rule above."""
    return in_features <= out_features, out_features <= in_features


class FP8Linear(nn.Module):
    """A frozen linear layer with float8 weights for its FP8 products (see the module docstring); bias as it was."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        if linear.weight.requires_grad:
            raise ValueError("FP8Linear replaces frozen layers only (its weight gets no gradient)")
        weight = linear.weight.detach()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.fp8_forward, self.fp8_backward = fp8_directions(self.in_features, self.out_features)
        if self.fp8_forward:
            w_fwd, fwd_scale = quantize_rows(weight)  # (out, in), scale per output channel
            fwd_scale = fwd_scale.t().contiguous()
        else:
            w_fwd, fwd_scale = weight, None
        if self.fp8_backward:
            w_bwd, bwd_scale = quantize_rows(weight.t().contiguous())  # (in, out), scale per input channel
            bwd_scale = bwd_scale.t().contiguous()
        else:
            w_bwd, bwd_scale = weight.t(), None
        # buffers, not parameters: nothing to train, and non-persistent so adapter checkpoints stay small
        self.register_buffer("w_fwd", w_fwd, persistent=False)
        self.register_buffer("w_fwd_scale", fwd_scale, persistent=False)
        self.register_buffer("w_bwd", w_bwd, persistent=False)
        self.register_buffer("w_bwd_scale", bwd_scale, persistent=False)
        bias = None if linear.bias is None else linear.bias.detach()
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # like nn.Linear under autocast: the output takes the autocast dtype (LayerNorm hands over fp32)
        device_type = x.device.type
        out_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype
        rows = x.reshape(-1, self.in_features)
        y = _FP8Matmul.apply(rows, self.w_fwd, self.w_fwd_scale, self.w_bwd, self.w_bwd_scale, out_dtype)
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self) -> str:
        kinds = {True: "float8_e4m3", False: "unchanged"}
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"forward={kinds[self.fp8_forward]}, input_grad={kinds[self.fp8_backward]}")


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
    chosen = [(parent, name, child) for layer in layers for parent in layer.modules()
              for name, child in parent.named_children()
              if type(child) is nn.Linear and not child.weight.requires_grad
              and child.in_features % 16 == 0 and child.out_features % 16 == 0]
    for device in {child.weight.device for _, _, child in chosen}:
        check_fp8_device(device)
    for parent, name, child in chosen:
        setattr(parent, name, FP8Linear(child))
    return len(chosen)
