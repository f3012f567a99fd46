"""Encoder checkpoint inputs kept in host memory (training/offload.py): same gradients, less GPU memory."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import batch, prepared, tiny_lora_model
from whispertune.training.offload import EncoderOffload


def _lora_grads(model: torch.nn.Module, feats: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    model.train()
    torch.manual_seed(5)  # LoRA dropout draws from this; the checkpoint replays it in the recompute
    model(input_features=feats, labels=labels).loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def test_offloaded_inputs_give_the_gradients_of_resident_checkpoints():
    feats, labels = batch()
    common = dict(precision="fp32", compile_layers=False, dropout=0.1)
    resident = _lora_grads(prepared("lean-resident", **common), feats, labels)
    offloaded = _lora_grads(prepared("lean", **common), feats, labels)
    plain = _lora_grads(tiny_lora_model(dropout=0.1), feats, labels)
    assert resident.keys() == offloaded.keys() and any("encoder" in k for k in offloaded)
    for name in resident:
        # same ops on the same values (the recompute reads the copy): bitwise equal
        assert torch.equal(resident[name], offloaded[name]), name
        # and the checkpointed backward is the plain one (dropout masks replayed, fp32)
        assert torch.allclose(plain[name], offloaded[name], atol=1e-6, rtol=1e-4), name


def test_host_copy_hands_back_the_input_and_prefetches_the_layer_before():
    first, second = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    offload = EncoderOffload(first)
    x0, x1 = torch.randn(3, 4), torch.randn(3, 4, requires_grad=True)
    c0, c1 = offload.keep(first, x0), offload.keep(second, x1)
    assert c1.previous is c0 and c1.get() is x1  # during the forward: the live tensor itself
    c0.forward_done(), c1.forward_done()
    back = c1.get()  # the recompute: a copy, with the original's requires_grad
    assert back is not x1 and torch.equal(back, x1.detach()) and back.requires_grad
    assert c0._back is not None  # layer 0's input is already on its way back
    assert torch.equal(c0.get(), x0) and not c0.get().requires_grad
    assert offload.keep(first, x0).previous is None  # the first layer starts a new forward


@pytest.mark.gpu
def test_offload_on_cuda_frees_gpu_memory_and_keeps_gradients():
    feats, labels = (t.cuda().repeat(8, *([1] * (t.dim() - 1))) for t in batch())
    layers = 8
    layer_input_bytes = feats.shape[0] * 1500 * 32 * 4  # (batch, frames, d_model) fp32
    peaks, grads = {}, {}
    for name in ("lean-resident", "lean"):
        model = prepared(name, precision="fp32", compile_layers=False, dropout=0.1, encoder_layers=layers).cuda()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        grads[name] = _lora_grads(model, feats, labels)
        torch.cuda.synchronize()
        peaks[name] = torch.cuda.max_memory_allocated() - base
        del model
    for key in grads["lean"]:  # attention's backward accumulates with atomics on CUDA: close, not bitwise
        assert torch.allclose(grads["lean"][key], grads["lean-resident"][key], rtol=1e-4, atol=1e-6), key
    # resident: every layer's input on the GPU; offloaded: the layer being recomputed and the one prefetched
    assert peaks["lean"] < peaks["lean-resident"] - (layers - 3) * layer_input_bytes, peaks
