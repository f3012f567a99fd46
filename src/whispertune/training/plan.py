"""Resolve once, then flow down: `resolve_plan(cfg)` makes every decision a training run takes from its
config (device, speed preset, precision, language, model path, run and cache directories, batch sizes),
and the stages (data preparation, model loading, the Trainer's arguments, the encoder cache, the adapter's
metadata, the demo's evaluation) read them from the frozen `Plan` instead of deciding again.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from ..config import Config, ModelConfig
from ..errors import HardwareError
from ..inference.options import resolve_batch_size
from ..languages import resolve_language
from ..model.device import resolve_compute_dtype, resolve_device
from ..model.loading import resolve_name
from .encoder_cache import encoder_cache_dir
from .presets import SpeedPreset, apply_preset, resolve_preset


@dataclass(frozen=True)
class Plan:
    """What one training run decided. Build it with `resolve_plan`; nothing in it is decided again later."""

    requested: Config  # the config as given: the run's identity (run_dir.RunIdentity) is computed from it
    config: Config  # what the run uses: `requested` with the preset's fields applied (recorded as config.yaml)
    device: str  # "cuda" or "cpu"
    preset: SpeedPreset | None  # None: the config as written (always on a CPU, see presets.resolve_preset)
    precision: Literal["bf16", "fp16", "fp32"]  # the Trainer's mixed precision
    weight_dtype: torch.dtype  # the unquantized base's frozen weights: the precision's dtype (no fp32 copy)
    language: str | None  # Whisper code ("mr"); None for English-only models
    language_name: str | None  # Whisper's name for it ("marathi")
    model: ModelConfig  # config.model with name_or_path resolved (embedded: -> local directory), language -> code
    run_dir: Path  # train.output_dir, user-expanded
    encoder_cache_dir: Path  # cached encoder outputs (train.cache_encoder_outputs; the demo's test split)
    eval_batch_size: int  # evaluation during training and the demo's scoring (eval.batch_size, 0 = by device)
    encode_batch_size: int  # encoding clips for the cache: 1 on a CPU (fastest there), else eval_batch_size

    @property
    def model_path(self) -> str:
        return self.model.name_or_path


def resolve_precision(precision: str, device: str) -> str:
    """`auto`: bf16 where CUDA supports it, else fp16 (loss scaling) on CUDA, fp32 on CPU."""
    cuda = device.startswith("cuda")
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    if precision == "auto":
        return "bf16" if bf16_ok else "fp16" if cuda else "fp32"
    if precision == "fp16" and not cuda:
        raise HardwareError("train.precision=fp16 needs a CUDA GPU (loss-scaled fp16 autocast); on CPU use fp32 or bf16")
    if precision == "bf16" and cuda and not bf16_ok:
        raise HardwareError("train.precision=bf16: this GPU has no bf16 support; use fp16 or fp32")
    return precision


def resolve_plan(cfg: Config, *, device: str | None = None) -> Plan:
    """The run's decisions for `cfg` (not changed). `device`: one the caller already resolved (the demo
    chooses its quantization by it); None picks it here. Prints each config field a speed preset changes."""
    device = device if device is not None else resolve_device()
    preset = resolve_preset(cfg, device)
    config = apply_preset(cfg, preset) if preset is not None else copy.deepcopy(cfg)
    if preset is not None:
        print(f"speed preset {preset.name}: {preset}")
    precision = resolve_precision(config.train.precision, device)
    resolved = resolve_language(config.model.language)
    name, code = resolved if resolved else (None, None)
    eval_batch = resolve_batch_size(config.eval.batch_size, device)
    return Plan(
        requested=copy.deepcopy(cfg), config=config, device=device, preset=preset, precision=precision,
        weight_dtype=resolve_compute_dtype(precision, device), language=code, language_name=name,
        model=dataclasses.replace(config.model, name_or_path=resolve_name(config.model.name_or_path), language=code),
        run_dir=Path(config.train.output_dir).expanduser(), encoder_cache_dir=encoder_cache_dir(config.data.cache_dir),
        eval_batch_size=eval_batch, encode_batch_size=1 if device == "cpu" else eval_batch,
    )
