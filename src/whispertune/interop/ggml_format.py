"""The legacy GGML file whisper.cpp loads (`ggml-*.bin`), written from a transformers Whisper checkpoint.

Layout (little-endian int32 unless noted), as whisper.cpp's loader reads it:
  magic 0x67676d6c; hparams n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer,
  n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels, ftype (+1000 x quantization version 2
  for quantized files); mel filters: n_mels, n_fft, then n_mels x n_fft float32; the byte-level BPE
  vocabulary below the first special token: count, then (length, bytes) each (whisper.cpp adds the
  special tokens itself); then each tensor: n_dims, name length, type, dims innermost first, name, data.

Tensor names are OpenAI's original ones (`encoder.blocks.0.attn.query.weight`). Types follow what
whisper.cpp allocates: 1-d tensors, conv biases (stored as [n, 1]) and positional embeddings float32;
conv kernels float16; the other matrices float16 or quantized (q8_0, q5_0: blocks of 32 along rows, by
the `gguf` package's quantizers, which write ggml's block layout).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

MAGIC = 0x67676D6C
QUANT_VERSION_FACTOR, QUANT_VERSION = 1000, 2
# name -> (file ftype, tensor type of the matrices); ggml's enums
FORMATS = {"f16": (1, 1), "q8_0": (7, 8), "q5_0": (8, 6)}
F32, F16 = 0, 1
_KEEP_F32 = {"encoder.conv1.bias", "encoder.conv2.bias", "encoder.positional_embedding", "decoder.positional_embedding"}
_PART = {"self_attn.q_proj": "attn.query", "self_attn.k_proj": "attn.key", "self_attn.v_proj": "attn.value",
         "self_attn.out_proj": "attn.out", "self_attn_layer_norm": "attn_ln", "encoder_attn.q_proj": "cross_attn.query",
         "encoder_attn.k_proj": "cross_attn.key", "encoder_attn.v_proj": "cross_attn.value",
         "encoder_attn.out_proj": "cross_attn.out", "encoder_attn_layer_norm": "cross_attn_ln", "fc1": "mlp.0",
         "fc2": "mlp.2", "final_layer_norm": "mlp_ln"}
_TOP = {"encoder.layer_norm": "encoder.ln_post", "decoder.layer_norm": "decoder.ln",
        "encoder.embed_positions": "encoder.positional_embedding", "decoder.embed_positions": "decoder.positional_embedding",
        "decoder.embed_tokens": "decoder.token_embedding"}


def openai_name(hf_name: str) -> str | None:
    """`model.encoder.layers.3.fc1.weight` -> `encoder.blocks.3.mlp.0.weight`; None for `proj_out` (tied)."""
    if hf_name.startswith("proj_out."):
        return None
    name = hf_name.removeprefix("model.")
    block = re.fullmatch(r"(encoder|decoder)\.layers\.(\d+)\.(.+)\.(weight|bias)", name)
    if block:
        side, index, part, kind = block.groups()
        return f"{side}.blocks.{index}.{_PART[part]}.{kind}"
    stem, kind = name.rsplit(".", 1)
    if stem in _TOP:
        return f"{_TOP[stem]}" if stem.endswith("embed_positions") else f"{_TOP[stem]}.{kind}"
    return name  # encoder.conv1.weight, ...


def _tensor(name: str, values: np.ndarray, matrix_type: int) -> tuple[int, bytes]:
    if values.ndim == 1 and name in _KEEP_F32:  # conv biases: whisper.cpp holds them as [n, 1]
        values = values.reshape(-1, 1)
    if values.ndim < 2 or name in _KEEP_F32:
        return F32, values.astype("<f4").tobytes()
    if values.ndim == 3 or matrix_type == F16:  # conv kernels stay float16 in every variant
        return F16, values.astype("<f2").tobytes()
    from gguf import GGMLQuantizationType, quants  # ggml's own block quantizers (q8_0, q5_0), from llama.cpp

    return matrix_type, quants.quantize(values.astype(np.float32), GGMLQuantizationType(matrix_type)).tobytes()


def write_ggml(out: BinaryIO, config: dict, state: Iterator[tuple[str, np.ndarray]], mel_filters: np.ndarray,
               tokens: list[bytes], fmt: str) -> None:
    """Write the whole file: `config` (transformers' config.json), `state` (HF names, float arrays),
    `mel_filters` [n_mels, n_fft], `tokens` the byte strings of ids 0.. below the first special token."""
    file_ftype, matrix_type = FORMATS[fmt]
    ftype = file_ftype if fmt == "f16" else file_ftype + QUANT_VERSION * QUANT_VERSION_FACTOR
    hparams = (config["vocab_size"], config["max_source_positions"], config["d_model"],
               config["encoder_attention_heads"], config["encoder_layers"], config["max_target_positions"],
               config["d_model"], config["decoder_attention_heads"], config["decoder_layers"], config["num_mel_bins"],
               ftype)
    out.write(struct.pack("<12i", MAGIC, *hparams))
    out.write(struct.pack("<2i", *mel_filters.shape) + mel_filters.astype("<f4").tobytes())
    out.write(struct.pack("<i", len(tokens)))
    for token in tokens:
        out.write(struct.pack("<i", len(token)) + token)
    for hf_name, values in state:
        name = openai_name(hf_name)
        if name is None:
            continue
        kind, data = _tensor(name, values, matrix_type)
        shape = values.reshape(-1, 1).shape if name in ("encoder.conv1.bias", "encoder.conv2.bias") else values.shape
        encoded = name.encode()
        out.write(struct.pack(f"<3i{len(shape)}i", len(shape), len(encoded), kind, *reversed(shape)))
        out.write(encoded + data)
