"""Batch-invariant decoding on CUDA: a clip's transcript does not depend on which clips share its batch.

cuBLAS picks its kernel by the shape of a product, and two kernels can round differently; the greedy choice then
flips wherever the top two tokens are within bf16's resolution (~0.06 at logits of 8-16). Measured on an H200
(benchmarks/batch_invariance_probe.py, eval_identity.py): batched evaluation gave other transcripts than one clip at
a time for 3-6 % of real clips; the vocabulary projection (51,865 outputs) and SDPA over the KV cache differed
between 1 and 64 clips, a large-v2 decoder fc2 between 4 and 256 rows, and whisper-base clips decoded in a batch of
60 differed from alone at their first token. So here every product whose shape follows the batch gets one shape:
- the encoder runs on groups of exactly `CLIPS` clips (the last one zero-padded), and the decoder's
  cross-attention keys/values, which read those encoder frames, on `CLIPS` clips' frames a call;
- every other decoder projection and the vocabulary projection run on blocks of exactly `ROWS` rows;
- decoder attention runs as `DECODER_ATTENTION` says (eager matmul + softmax, or SDPA's memory-efficient kernel).
Rows of one product do not depend on one another, so a clip's numbers are the same in any batch. The price: a
single clip pays for `CLIPS` clips' encoder. The CPU kernels are invariant already; nothing is changed there.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.whisper.modeling_whisper import eager_attention_forward

from ..model.parts import base_model

# rows per decoder-projection call: one decoding step of a 256-clip batch (the default on a large GPU) is one call.
# 64 cost 7 % of evaluation speed against transformers' own kernels on an H200 (four launches per product per
# step at batch 256; decoding is launch-bound); a clip alone pays for 256 rows, which a GPU computes as fast as 1.
ROWS = 256
CLIPS = 8  # clips per encoder call (12,000 frames: large enough for full-speed products)
ATTENTION = "whispertune_batch_invariant"


# "efficient": decoder attention through SDPA's memory-efficient kernel (CUTLASS), which gives each (clip, head)
# its own thread blocks and walks the keys in one fixed order; "eager": transformers' matmul + softmax, whose batched
# matmuls cuBLAS runs with other kernels for other numbers of clips x heads. Measured on an H200 (run f3d400c3,
# benchmarks/batch_invariance_probe.py, KV lengths 1-448 and 1500): eager gave other numbers for one clip than in a
# batch of 64 or 256 at 9-35 of 150 lengths, the memory-efficient kernel at none; with it the real whisper-base's
# Marathi transcripts at batch 256 equal batch 1 for 64 of 64 clips (eager: 57, run 4c0e2cb9), at 3-7 % less
# evaluation speed than eager (runs 90abb093, 7fa979c1).
DECODER_ATTENTION = "efficient"


def _attention(module: torch.nn.Module, query, key, value, attention_mask, **kwargs):
    """Decoder attention (self and cross) by `DECODER_ATTENTION`, encoder attention through SDPA."""
    if not getattr(module, "is_decoder", False):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if DECODER_ATTENTION == "efficient" and query.is_cuda:
        with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
            return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    return eager_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(ATTENTION, _attention)
# the decoder's causal mask as eager attention takes it (a 4-D additive mask; the encoder has none)
AttentionMaskInterface.register(ATTENTION, eager_mask)


def blocked_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                   block: int = ROWS) -> torch.Tensor:
    """`F.linear(x, weight, bias)` computed `block` rows at a time, so each row's result is the same in any batch."""
    rows = x.reshape(-1, x.shape[-1])
    n = rows.shape[0]
    padded = F.pad(rows, (0, 0, 0, -n % block)) if n % block else rows  # whole blocks: no copy
    parts = [F.linear(part, weight, bias) for part in padded.split(block)]
    out = parts[0] if len(parts) == 1 else torch.cat(parts)
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
    # methods bound to their modules (not closures over them): a deep copy of the model uses the copy's weights
    for linear in blocked_projections(whisper):
        linear.forward = types.MethodType(_blocked_forward, linear)
    for linear in cross_attention_inputs(whisper):
        linear.forward = types.MethodType(_blocked_frames_forward, linear)
    encoder = whisper.model.encoder
    encoder.forward = types.MethodType(_grouped_encoder_forward, encoder)


def _decoder_linears(whisper: torch.nn.Module, reading_encoder: bool) -> list[torch.nn.Linear]:
    """The decoder's plain `nn.Linear`s that project the encoder frames (cross-attention keys and values) or not."""
    def reads_encoder(name: str) -> bool:
        return "encoder_attn.k_proj" in name or "encoder_attn.v_proj" in name

    return [m for name, m in whisper.model.decoder.named_modules()
            if type(m) is torch.nn.Linear and reads_encoder(name) == reading_encoder]


def blocked_projections(whisper: torch.nn.Module) -> list[torch.nn.Linear]:
    """The decoder's plain bf16/fp32 projections whose row count follows the batch, and the vocabulary projection.

    On the H200 a decoder fc2 (5120 -> 1280) ran another kernel for the 4-token prompt of one clip (4 rows) than
    of 64 clips (256 rows): every such product is blocked. Left alone: quantized layers (bitsandbytes'
    Linear8bitLt / Linear4bit subclass nn.Linear but hold no float weight) and the cross-attention keys/values
    (`cross_attention_inputs`).
    """
    chosen = _decoder_linears(whisper, reading_encoder=False)
    return chosen + ([whisper.proj_out] if type(whisper.proj_out) is torch.nn.Linear else [])


def cross_attention_inputs(whisper: torch.nn.Module) -> list[torch.nn.Linear]:
    """The decoder's plain projections of the encoder frames (cross-attention keys and values): 1500 rows a clip."""
    return _decoder_linears(whisper, reading_encoder=True)


def _blocked_frames_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    # x: (clips, frames, d_model); one call per `CLIPS` clips' frames, as the encoder produced them
    return blocked_linear(x, self.weight, self.bias, block=CLIPS * x.shape[-2])


def _grouped_encoder_forward(self: torch.nn.Module, input_features: torch.Tensor, *args, **kwargs):
    """The encoder on groups of exactly `CLIPS` clips, the last one zero-padded; the last hidden state only (a
    request for attentions or hidden states runs the whole batch at once, as transformers does)."""
    forward = type(self).forward
    if kwargs.get("output_attentions") or kwargs.get("output_hidden_states"):
        return forward(self, input_features, *args, **kwargs)
    n = input_features.shape[0]
    padded = F.pad(input_features, (0, 0, 0, 0, 0, -n % CLIPS))
    hidden = torch.cat([forward(self, group, *args, **kwargs)[0] for group in padded.split(CLIPS)])
    return BaseModelOutput(last_hidden_state=hidden[:n])


def _blocked_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return blocked_linear(x, self.weight, self.bias)
