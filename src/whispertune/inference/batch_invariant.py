"""Batch-invariant decoding on CUDA: a clip's transcript does not depend on which clips share its batch.

With bf16 weights on an H200 (benchmarks/batch_invariance_probe.py), the encoder and the decoder's d_model-wide
projections give bitwise the same result for a clip alone and inside a batch of 64, but two products do not:
- the vocabulary projection (`proj_out`, 51,865 outputs): cuBLAS runs another kernel for 1 row than for 64;
- SDPA attention of one new token over the KV cache, which the GPU splits by batch size.
Those last-bit differences flip the greedy choice wherever the top two tokens are within bf16's resolution
(~0.06 at logits of 8-16): batched evaluation gave other transcripts than one clip at a time for 3-6 % of
real clips (benchmarks/results/product_throughput.jsonl, kind eval-identity). So, here:
- the vocabulary projection runs on blocks of exactly `ROWS` rows (the last one zero-padded): every call has
  one shape, so one kernel, whose rows do not depend on one another;
- decoder attention runs as explicit matmul + fp32 softmax (transformers' eager attention); the encoder keeps
  SDPA, which is already invariant (it sees whole 1500-frame windows).
The CPU kernels are invariant already; nothing is changed there.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.models.whisper.modeling_whisper import eager_attention_forward

from ..model.parts import base_model

ROWS = 64  # rows per vocabulary-projection call: one decoding step of a 64-clip batch is one call
ATTENTION = "whispertune_batch_invariant"


def _attention(module: torch.nn.Module, query, key, value, attention_mask, **kwargs):
    """Decoder attention (self and cross) eagerly, encoder attention through SDPA."""
    if getattr(module, "is_decoder", False):
        return eager_attention_forward(module, query, key, value, attention_mask, **kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(ATTENTION, _attention)
# the decoder's causal mask as eager attention takes it (a 4-D additive mask; the encoder has none)
AttentionMaskInterface.register(ATTENTION, eager_mask)


def blocked_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)` computed `ROWS` rows at a time, so each row's result is the same in any batch."""
    rows = x.reshape(-1, x.shape[-1])
    n = rows.shape[0]
    padded = F.pad(rows, (0, 0, 0, -n % ROWS))
    out = torch.cat([F.linear(block, weight, bias) for block in padded.split(ROWS)])
    return out[:n].reshape(*x.shape[:-1], weight.shape[0])


def make_batch_invariant(model: torch.nn.Module) -> torch.nn.Module:
    """Switch `model` (in place; returned) to batch-invariant decoding on CUDA; on other devices leave it as is."""
    whisper = base_model(model)  # the WhisperForConditionalGeneration, under a peft wrapper or not
    if next(whisper.parameters()).device.type == "cuda":
        install(whisper)
    return model


def install(whisper: torch.nn.Module) -> None:
    """The switch itself, on any device (tests run it on a CPU, where it changes no number)."""
    whisper.set_attn_implementation(ATTENTION)
    for linear in blocked_projections(whisper):
        # bound to the module (not a closure over it): a deep copy of the model then uses the copy's own weights
        linear.forward = types.MethodType(_blocked_forward, linear)


def blocked_projections(whisper: torch.nn.Module) -> list[torch.nn.Linear]:
    """The decoder's plain bf16/fp32 projections whose row count follows the batch, and the vocabulary projection.

    On the H200 a decoder fc2 (5120 -> 1280) ran another kernel for the 4-token prompt of one clip (4 rows) than
    of 64 clips (256 rows): every such product is blocked. Left alone: the cross-attention keys/values, which read
    each clip's 1500 encoder frames (row counts of 1500 x clips, invariant like the encoder's own products), and
    quantized layers (bitsandbytes' Linear8bitLt / Linear4bit subclass nn.Linear but hold no float weight).
    """
    def reads_encoder(name: str) -> bool:
        return "encoder_attn.k_proj" in name or "encoder_attn.v_proj" in name

    chosen = [m for name, m in whisper.model.decoder.named_modules()
              if type(m) is torch.nn.Linear and not reads_encoder(name)]
    return chosen + ([whisper.proj_out] if type(whisper.proj_out) is torch.nn.Linear else [])


def _blocked_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return blocked_linear(x, self.weight, self.bias)
