"""Frozen-encoder training: run Whisper's encoder once per clip and reuse its output.

With LoRA on the decoder only, the encoder's output for a clip never changes, yet a normal training
loop recomputes it every epoch, and on a CPU the encoder (always a 30 s window) costs about twice a
decoder training step. Here each clip is encoded once, kept in float16 (1500 x d_model per clip) in
memory and in a safetensors file, and training and evaluation feed `encoder_outputs` instead of
`input_features`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers.modeling_outputs import BaseModelOutput

STORE_DTYPE = torch.float16


def _encoder(model):
    """The Whisper encoder of a plain, quantized or peft-wrapped model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_encoder()


def _compute_dtype(module) -> torch.dtype:
    """The dtype activations flow in: the first float parameter's (quantized weights are not floats)."""
    for p in module.parameters():
        if p.dtype in (torch.float32, torch.float16, torch.bfloat16):
            return p.dtype
    return torch.float32


@torch.inference_mode()
def encode_features(model, features, *, batch_size: int = 8, progress: bool = True, desc: str = "encoding") -> torch.Tensor:
    """Encoder outputs (N, 1500, d_model) in float16 for a sequence of (80, 3000) feature arrays."""
    encoder = _encoder(model)
    device = next(encoder.parameters()).device
    dtype = _compute_dtype(encoder)
    was_training = encoder.training
    encoder.eval()  # no dropout in the cached outputs
    chunks = []
    with tqdm(total=len(features), desc=desc, unit="clip", disable=not progress) as bar:
        for start in range(0, len(features), batch_size):
            batch = torch.as_tensor(features[start : start + batch_size], dtype=dtype, device=device)
            hidden = encoder(input_features=batch).last_hidden_state
            chunks.append(hidden.to("cpu", STORE_DTYPE))
            bar.update(len(batch))
    encoder.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0)


def cache_key(model_dir: str, quantization: str, ids: list[str], extra: str = "") -> str:
    """Stable key for one model (path + file times), quantization and list of clips."""
    stamp = []
    for name in ("model.safetensors", "config.json"):
        path = Path(model_dir) / name
        if path.exists():
            stamp.append(f"{name}:{path.stat().st_size}:{path.stat().st_mtime_ns}")
    text = json.dumps([str(model_dir), stamp, quantization, ids, extra])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cached_encode(model, dataset, *, cache_dir: str | Path | None, key: str, batch_size: int = 8,
                  progress: bool = True, desc: str = "encoding") -> torch.Tensor:
    """Encoder outputs for a prepared dataset (`input_features` column), loaded from cache when present."""
    path = Path(cache_dir) / f"encoder-{key}.safetensors" if cache_dir else None
    if path is not None and path.is_file():
        return load_file(path)["hidden"]
    hidden = encode_features(model, dataset.with_format("numpy")["input_features"], batch_size=batch_size,
                             progress=progress, desc=desc)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({"hidden": hidden.contiguous()}, str(tmp))
        tmp.replace(path)  # atomic: a killed run never leaves a half-written cache
    return hidden


@dataclass
class CachedEncoderDataset(torch.utils.data.Dataset):
    """Rows of (labels, encoder_hidden_states) for the collator, in the model's compute dtype."""

    labels: list[list[int]]
    hidden: torch.Tensor
    dtype: torch.dtype = torch.float32

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"labels": self.labels[index], "encoder_hidden_states": self.hidden[index].to(self.dtype)}


def cached_dataset(model, dataset, *, model_dir: str, quantization: str, cache_dir: str | Path | None,
                   batch_size: int = 8, progress: bool = True, desc: str = "encoding") -> CachedEncoderDataset:
    """A prepared dataset (`input_features`, `labels`, `id`) as (labels, cached encoder output) rows."""
    key = cache_key(model_dir, quantization, list(dataset["id"]))
    hidden = cached_encode(model, dataset, cache_dir=cache_dir, key=key, batch_size=batch_size,
                           progress=progress, desc=desc)
    return CachedEncoderDataset(list(dataset["labels"]), hidden, _compute_dtype(_encoder(model)))


@torch.inference_mode()
def generate_from_cache(model, processor, hidden: torch.Tensor, *, language: str | None, task: str,
                        batch_size: int = 16, max_new_tokens: int = 128, progress: bool = True,
                        desc: str = "decoding") -> list[str]:
    """Greedy transcripts for cached encoder outputs (language and task passed to generate)."""
    device = next(model.parameters()).device
    dtype = _compute_dtype(_encoder(model))
    texts: list[str] = []
    with tqdm(total=len(hidden), desc=desc, unit="clip", disable=not progress) as bar:
        for start in range(0, len(hidden), batch_size):
            states = hidden[start : start + batch_size].to(device, dtype)
            out = model.generate(
                encoder_outputs=BaseModelOutput(last_hidden_state=states),
                language=language,
                task=task,
                max_new_tokens=max_new_tokens,
                num_beams=1,
                do_sample=False,
            )
            texts.extend(t.strip() for t in processor.tokenizer.batch_decode(out, skip_special_tokens=True))
            bar.update(len(states))
    return texts
