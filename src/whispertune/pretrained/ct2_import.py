"""Convert a CTranslate2 (faster-whisper) Whisper directory into a transformers checkpoint.

The directory holds `model.bin` (float16/float32 weights), `config.json` (suppressed tokens,
alignment heads, language ids) and `tokenizer.json`. The output loads with
`WhisperForConditionalGeneration.from_pretrained` and `pipeline("automatic-speech-recognition")`.
Name mapping and fused-projection layout: docs/ct2-format.md.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

from ..errors import UserError
from .ct2_processor import build_generation_config, build_processor
from .ct2_reader import read_ct2_model

DTYPES = {"float32": torch.float32, "float16": torch.float16}
GELU = 3  # CTranslate2's ActivationType for GELU
NORM = {"gamma": "weight", "beta": "bias"}


class _Weights:
    """The file's variables with bookkeeping, so that no tensor is silently left behind."""

    def __init__(self, src: Path, variables: dict[str, np.ndarray], dtype: torch.dtype):
        self.src, self.variables, self.dtype = src, variables, dtype
        self.used: set[str] = set()

    def get(self, name: str) -> np.ndarray:
        if name not in self.variables:
            raise UserError(f"{self.src}: model.bin has no variable {name!r}; not a complete Whisper model")
        self.used.add(name)
        return self.variables[name]

    def scalar(self, name: str) -> int:
        return int(self.get(name))

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.dtype)

    def unused_tensors(self) -> list[str]:
        return sorted(n for n, v in self.variables.items() if n not in self.used and v.ndim > 0)


def _count_layers(variables: dict[str, np.ndarray], stack: str) -> int:
    found = {int(m.group(1)) for n in variables if (m := re.match(rf"{stack}/layer_(\d+)/", n))}
    if found != set(range(len(found))) or not found:
        raise UserError(f"{stack} layers {sorted(found)} are not numbered 0..n-1: model.bin is incomplete")
    return len(found)


def infer_config(src: Path, weights: _Weights, tokenizer) -> WhisperConfig:
    """A WhisperConfig whose sizes come from the tensor shapes and the `*/num_heads` scalars."""
    v = weights.variables
    for flag, wanted in (("decoder/activation", GELU), ("decoder/pre_norm", 1), ("decoder/scale_embeddings", 0)):
        if flag in v and weights.scalar(flag) != wanted:
            raise UserError(f"{src}: {flag} = {int(v[flag])}, a Whisper model has {wanted}: not a Whisper model")
    vocab, d_model = v["decoder/embeddings/weight"].shape
    mel_bins = v["encoder/conv1/weight"].shape[1]
    return WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=mel_bins,
        d_model=d_model,
        encoder_layers=_count_layers(v, "encoder"),
        decoder_layers=_count_layers(v, "decoder"),
        encoder_attention_heads=weights.scalar("encoder/num_heads"),
        decoder_attention_heads=weights.scalar("decoder/num_heads"),
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        decoder_start_token_id=tokenizer.convert_tokens_to_ids("<|startoftranscript|>"),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        # These belong to the generation config; on the model config they would be a second source of truth.
        suppress_tokens=None,
        begin_suppress_tokens=None,
    )


def _split_fused(weights: _Weights, prefix: str, parts: list[str], bias_free: str, out: dict, target: str) -> None:
    """Split a fused projection `[n*d, d]` into rows per part; the `bias_free` part must have a zero bias."""
    weight, bias = weights.get(f"{prefix}/weight"), weights.get(f"{prefix}/bias")
    d = weight.shape[1]
    if weight.shape[0] != len(parts) * d:
        raise UserError(f"{weights.src}: {prefix}/weight has shape {list(weight.shape)}, expected [{len(parts) * d}, {d}]")
    for i, part in enumerate(parts):
        out[f"{target}.{part}.weight"] = weights.tensor(weight[i * d:(i + 1) * d])
        part_bias = bias[i * d:(i + 1) * d]
        if part == bias_free:
            # Whisper's k_proj has no bias; CTranslate2 stores zeros there. Anything else cannot be represented.
            if np.any(part_bias != 0):
                raise UserError(f"{weights.src}: {prefix}/bias is non-zero in the {part} slice: not a Whisper layout")
        else:
            out[f"{target}.{part}.bias"] = weights.tensor(part_bias)


def _linear(weights: _Weights, prefix: str, out: dict, target: str) -> None:
    out[f"{target}.weight"] = weights.tensor(weights.get(f"{prefix}/weight"))
    out[f"{target}.bias"] = weights.tensor(weights.get(f"{prefix}/bias"))


def _norm(weights: _Weights, prefix: str, out: dict, target: str) -> None:
    for ct2_name, hf_name in NORM.items():
        out[f"{target}.{hf_name}"] = weights.tensor(weights.get(f"{prefix}/{ct2_name}"))


def map_state_dict(weights: _Weights, config: WhisperConfig) -> dict[str, torch.Tensor]:
    """transformers parameter names -> tensors, following the mapping in docs/ct2-format.md."""
    out: dict[str, torch.Tensor] = {}
    for stack in ("encoder", "decoder"):
        hf = f"model.{stack}"
        out[f"{hf}.embed_positions.weight"] = weights.tensor(weights.get(f"{stack}/position_encodings/encodings"))
        _norm(weights, f"{stack}/layer_norm", out, f"{hf}.layer_norm")
        layers = config.encoder_layers if stack == "encoder" else config.decoder_layers
        for i in range(layers):
            src, dst = f"{stack}/layer_{i}", f"{hf}.layers.{i}"
            _split_fused(weights, f"{src}/self_attention/linear_0", ["q_proj", "k_proj", "v_proj"], "k_proj", out, f"{dst}.self_attn")
            _linear(weights, f"{src}/self_attention/linear_1", out, f"{dst}.self_attn.out_proj")
            _norm(weights, f"{src}/self_attention/layer_norm", out, f"{dst}.self_attn_layer_norm")
            if stack == "decoder":
                _linear(weights, f"{src}/attention/linear_0", out, f"{dst}.encoder_attn.q_proj")
                _split_fused(weights, f"{src}/attention/linear_1", ["k_proj", "v_proj"], "k_proj", out, f"{dst}.encoder_attn")
                _linear(weights, f"{src}/attention/linear_2", out, f"{dst}.encoder_attn.out_proj")
                _norm(weights, f"{src}/attention/layer_norm", out, f"{dst}.encoder_attn_layer_norm")
            _linear(weights, f"{src}/ffn/linear_0", out, f"{dst}.fc1")
            _linear(weights, f"{src}/ffn/linear_1", out, f"{dst}.fc2")
            _norm(weights, f"{src}/ffn/layer_norm", out, f"{dst}.final_layer_norm")
    for conv in ("conv1", "conv2"):
        _linear(weights, f"encoder/{conv}", out, f"model.encoder.{conv}")
    out["model.decoder.embed_tokens.weight"] = weights.tensor(weights.get("decoder/embeddings/weight"))
    out["proj_out.weight"] = out["model.decoder.embed_tokens.weight"]  # tied
    return out


def _check_projection_tied(src: Path, variables: dict[str, np.ndarray], aliases: dict[str, str]) -> None:
    """transformers' Whisper ties proj_out to the embeddings; a separate projection cannot be represented."""
    name = "decoder/projection/weight"
    if name in variables:
        if not np.array_equal(variables[name], variables["decoder/embeddings/weight"]):
            raise UserError(f"{src}: {name} differs from the embeddings; transformers' Whisper ties them")
    elif aliases.get(name, "decoder/embeddings/weight") != "decoder/embeddings/weight":
        raise UserError(f"{src}: {name} aliases {aliases[name]!r}, expected decoder/embeddings/weight")


def _build_model(config: WhisperConfig, state: dict[str, torch.Tensor], dtype: torch.dtype) -> WhisperForConditionalGeneration:
    # Build on the meta device (no random init of ~100M parameters), then take our tensors as they are.
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"conversion left tensors unset: {left[:5]}")
    return model.to(dtype).eval()


def import_ct2(src_dir: str | Path, out_dir: str | Path, dtype: str = "float32", *, overwrite: bool = False) -> Path:
    """Convert the CTranslate2 Whisper directory `src_dir` into a transformers checkpoint at `out_dir`.

    Writes model.safetensors, config.json, generation_config.json and the processor files into a
    temporary sibling directory, then renames it into place, so `out_dir` is never half-written.
    """
    src, out = Path(src_dir), Path(out_dir)
    if dtype not in DTYPES:
        raise UserError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: already exists and is not empty (choose another --out, or overwrite it)")
    for needed in ("model.bin", "config.json", "tokenizer.json"):
        if not (src / needed).is_file():
            raise UserError(f"{src}: no {needed}; a faster-whisper/CTranslate2 model directory has model.bin, config.json, tokenizer.json")

    spec_name, variables, aliases = read_ct2_model(src / "model.bin")
    if spec_name != "WhisperSpec":
        raise UserError(f"{src}: a CTranslate2 {spec_name} model, not Whisper (WhisperSpec)")
    weights = _Weights(src, variables, DTYPES[dtype])
    processor = build_processor(src, num_mel_bins=variables["encoder/conv1/weight"].shape[1])
    config = infer_config(src, weights, processor.tokenizer)
    _check_projection_tied(src, variables, aliases)
    state = map_state_dict(weights, config)
    weights.used.add("decoder/projection/weight")
    if unused := weights.unused_tensors():
        raise UserError(f"{src}: model.bin has tensors with no place in transformers' Whisper: {unused[:5]}")
    model = _build_model(config, state, DTYPES[dtype])
    model.generation_config = build_generation_config(src, processor.tokenizer, config)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        for written in tmp.iterdir():
            written.chmod(0o644)  # safetensors writes 0600 through a temp file; a checkpoint is meant to be shared
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
