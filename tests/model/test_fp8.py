"""FP8 frozen weights (model/fp8.py) on CPU: torch._scaled_mm runs there too, with the same scaling as on a GPU."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tests.helpers import batch, prepared, tiny_lora_model, train_losses
from whispertune.config import Config
from whispertune.errors import HardwareError
from whispertune.model import fp8
from whispertune.training.presets import resolve_preset


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_quantize_rows_bounds_each_element_by_its_row_scale():
    torch.manual_seed(0)
    t = torch.randn(64, 256) * torch.logspace(-3, 3, 64).unsqueeze(1)  # rows six decades apart
    q, scale = fp8.quantize_rows(t)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (64, 1)
    back = q.float() * scale
    # e4m3 keeps 3 mantissa bits: half a step is 1/16 of the value (subnormals: absolute, per-row)
    assert ((back - t).abs() <= t.abs() / 16 + scale * 2**-9).all()
    assert q.float().abs().amax(dim=1).eq(fp8.E4M3_MAX).all()  # each row uses the full range


def forward_backward(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    y = layer(x)
    y.backward(grad)
    return y, x.grad


@pytest.mark.parametrize("shape,fp8_forward,fp8_backward", [
    ((256, 256), True, True),  # attention projections: both products in FP8
    ((256, 1024), True, False),  # fc1: forward FP8, input gradient (a 1024-wide operand) as before
    ((1024, 256), False, True),  # fc2: forward over a 1024-wide input as before, input gradient FP8
])
def test_fp8_linear_matches_the_layer_it_replaces(shape, fp8_forward, fp8_backward):
    torch.manual_seed(0)
    linear = nn.Linear(*shape).requires_grad_(False)
    layer = fp8.FP8Linear(linear)
    assert (layer.fp8_forward, layer.fp8_backward) == (fp8_forward, fp8_backward)
    x, grad = torch.randn(3, 40, shape[0]), torch.randn(3, 40, shape[1])
    y, dx = forward_backward(layer, x, grad)
    y_ref, dx_ref = forward_backward(linear, x, grad)
    assert y.shape == (3, 40, shape[1]) and y.dtype == torch.float32
    # FP8: measured ~0.035 (e4m3 rounding of both operands, averaged over the row); otherwise unchanged
    for err, is_fp8 in ((relative_error(y, y_ref), fp8_forward), (relative_error(dx, dx_ref), fp8_backward)):
        assert 0.01 < err < 0.05 if is_fp8 else err < 1e-6
    assert not any(name.startswith("w_") for name in layer.state_dict())  # never saved with an adapter


def test_fp8_linear_output_follows_autocast_dtype():
    layer = fp8.FP8Linear(nn.Linear(32, 16).requires_grad_(False))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(torch.randn(4, 32)).dtype == torch.bfloat16  # as nn.Linear would under autocast
    assert layer(torch.randn(4, 32)).dtype == torch.float32


def test_convert_skips_trainable_and_misaligned_layers():
    block = nn.Sequential(nn.Linear(32, 64), nn.Linear(64, 24), nn.Linear(64, 32))
    for module in block:
        module.requires_grad_(False)
    block[2].requires_grad_(True)
    assert fp8.convert_frozen_linears([block]) == 1
    assert [type(m).__name__ for m in block] == ["FP8Linear", "Linear", "Linear"]
    with pytest.raises(ValueError, match="frozen"):
        fp8.FP8Linear(nn.Linear(16, 16))


def test_fast_fp8_preset_converts_base_layers_and_trains_like_plain():
    model = prepared("fast-fp8", precision="fp32", compile_layers=False)
    names = [n for n, m in model.named_modules() if isinstance(m, fp8.FP8Linear)]
    # 2 encoder layers x 6 linears + 2 decoder layers x 10; q/v are the LoRA layers' base layers
    assert len(names) == 32 and any(n.endswith("q_proj.base_layer") for n in names)
    assert all(p.dtype != torch.float8_e4m3fn for p in model.parameters())
    plain = train_losses(tiny_lora_model(), 8)
    losses = train_losses(model, 8)
    assert all(math.isfinite(x) for x in losses)
    assert losses[0] == pytest.approx(plain[0], rel=1e-2)
    assert losses[-1] < losses[0] - 0.05
    assert abs(losses[-1] - plain[-1]) < 0.05 * plain[-1]


def test_lora_gets_gradients_through_fp8_layers_under_bf16_autocast():
    model = prepared("fast-fp8", compile_layers=False)
    feats, labels = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_features=feats, labels=labels).loss
    loss.backward()
    lora_b = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert len(lora_b) == 12 and all(g is not None and g.abs().sum() > 0 for g in lora_b)  # (A's gradient is 0 while B = 0)


def test_fp8_refuses_gpus_without_fp8_tensor_cores(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    with pytest.raises(HardwareError, match=r"compute capability >= 8.9.*8\.0"):
        fp8.check_fp8_device("cuda")
    fp8.check_fp8_device("cpu")
    cfg = Config()
    cfg.train.speed_preset = "fast-fp8"
    with pytest.raises(HardwareError, match="Ada or Hopper"):  # train() calls this before loading anything
        resolve_preset(cfg, "cuda")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_compiled_fp8_layer_keeps_its_custom_backward(dtype):
    """Traced by dynamo/AOTAutograd (the fast-fp8 preset compiles every layer), the input gradient is the same.

    torch 2.11 on CUDA once traced a zero gradient here (the Function returned its matmul result itself);
    the aot_eager backend runs the same traced graphs on this CPU.
    """
    torch.manual_seed(0)
    layer = fp8.FP8Linear(nn.Linear(64, 64).requires_grad_(False))
    x, grad = torch.randn(2, 48, 64, dtype=dtype), torch.randn(2, 48, 64, dtype=dtype)
    y_eager, dx_eager = forward_backward(layer, x, grad)
    torch._dynamo.reset()
    y_compiled, dx_compiled = forward_backward(torch.compile(layer, backend="aot_eager"), x, grad)
    assert dx_compiled.abs().sum() > 0
    torch.testing.assert_close(y_compiled, y_eager)
    torch.testing.assert_close(dx_compiled, dx_eager)
