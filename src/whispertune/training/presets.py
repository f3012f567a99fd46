"""Speed presets: named sets of precision / quantization / checkpointing / attention / compile choices.

A preset is a `SpeedPreset` object, passed explicitly: `resolve_preset(cfg, device)` picks one (or None),
`apply_preset(cfg, preset)` sets the config fields it decides and prints each change (the trainer then
loads the model as usual), and `preset_surgery.prepare_model(model, preset)` makes the model-level
changes that have no config field (which layers are checkpointed, regional torch.compile, frozen
encoder). A variant is `dataclasses.replace(get_preset("lean"), batch_size=16)`; the table of named
presets is read-only. Measured effects are in `benchmarks/NOTES.md`; the presets below won there.

Presets:
- `recipe`: the reference recipe (int8 weights, peft k-bit preparation: fp32 norms, reentrant
  checkpointing of every layer, fp16 autocast + GradScaler).
- `plain`: bf16 weights and compute, SDPA, no checkpointing: the plain bf16 LoRA baseline.
- `fast`: `plain` + every encoder/decoder layer compiled on its own (regional compile: one compile
  for 32 identical layers), larger batch.
- `lean`: bf16 weights, non-reentrant checkpointing of every layer, regional compile, the encoder
  layers' checkpointed inputs kept in pinned host memory (`offload.py`): fits the recipe's memory
  (<= 5.45 GiB on large-v2) with a larger batch than `lean-resident`.
- `lean-resident`: `lean` with every checkpoint on the GPU, batch 12 (4.3-4.7x the recipe's speed).
- `fast-fp8`: `fast` with the frozen base weights of every encoder/decoder layer in float8 and their
  matmuls on FP8 tensor cores (`model/fp8.py`; Ada/Hopper GPUs). LoRA, norms and attention stay bf16;
  LoRA's dropout runs on bf16 inputs, and the decoder gets the encoder's output in bf16.
- `fast-frozen-encoder`: `fast` with LoRA on the decoder only and the encoder run without autograd.
  It CHANGES the trainable set (no encoder adapters): a separate choice, not a drop-in for `recipe`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from ..config import Config, QuantizationMode
from ..errors import ConfigError
from ..model.fp8 import check_fp8_device


@dataclass(frozen=True)
class SpeedPreset:
    name: str  # what `train.speed_preset` names it (and records once applied)
    quantization: QuantizationMode
    precision: Literal["bf16", "fp16", "fp32"]
    prepare_kbit: bool  # peft's prepare_model_for_kbit_training (fp32 norms, input-grad hook)
    checkpointing: Literal["none", "all", "encoder", "alternate"]  # which layers recompute in backward
    reentrant: bool  # torch.utils.checkpoint flavour (peft's preparation defaults to reentrant)
    compile_layers: bool  # torch.compile each encoder/decoder layer
    freeze_encoder: bool  # LoRA on the decoder only; encoder forward without autograd
    batch_size: int
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    compile_mode: str = "default"  # torch.compile mode for the layers
    fp8_weights: bool = False  # frozen layer weights stored and multiplied in float8 (model/fp8.py)
    offload_encoder_inputs: bool = False  # checkpointed encoder layers' inputs wait in host memory (offload.py)
    # LoRA's dropout on the autocast dtype (bf16) instead of peft's fp32 copy of the layer input
    # (preset_surgery.AutocastDropout): half the memory traffic, the same masks
    lora_dropout_autocast: bool = False
    # the encoder's output handed to the decoder in the autocast dtype (preset_surgery.encoder_output_in_autocast_dtype):
    # one cast instead of one per cross-attention projection, its gradient summed in bf16
    encoder_output_autocast: bool = False


# read-only: a changed preset is a new object (dataclasses.replace), passed where it is used
PRESETS: MappingProxyType[str, SpeedPreset] = MappingProxyType({p.name: p for p in (
    SpeedPreset("recipe", "int8", "fp16", True, "all", True, False, False, 8),
    SpeedPreset("plain", "none", "bf16", False, "none", False, False, False, 8),
    # batch 32: 67 GiB on large-v2, fits an 80 GB H100 (batch 48 gains ~4 % more but needs 98 GiB)
    SpeedPreset("fast", "none", "bf16", False, "none", False, True, False, 32),
    # encoder layer inputs in host memory: batch 24 is 5.36 GiB on large-v2 (<= the recipe's 5.45), 5.8x its speed
    SpeedPreset("lean", "none", "bf16", False, "all", False, True, False, 24, offload_encoder_inputs=True),
    # batch 12: 5.34 GiB on large-v2 with every checkpoint kept on the GPU (no host memory or PCIe traffic)
    SpeedPreset("lean-resident", "none", "bf16", False, "all", False, True, False, 12),
    # batch 32: 68 GiB (80 GB GPU); at batch 64 (134 GiB, speed_batch_size) 1.616x the best plain bf16 config
    # through `whispertune train` (run 6752d38b, docs/speed.md)
    SpeedPreset("fast-fp8", "none", "bf16", False, "none", False, True, False, 32, fp8_weights=True,
                lora_dropout_autocast=True, encoder_output_autocast=True),
    SpeedPreset("fast-frozen-encoder", "none", "bf16", False, "none", False, True, True, 32),
)})


def get_preset(name: str) -> SpeedPreset:
    if name not in PRESETS:
        raise ConfigError(f"unknown speed preset {name!r}; accepted: {', '.join(PRESETS)}")
    return PRESETS[name]


def apply_preset(cfg: Config, preset: SpeedPreset) -> Config:
    """A copy of `cfg` with the fields `preset` decides set, each change printed; everything else is kept.

    The batch is the preset's unless `train.speed_batch_size` names another (the presets' batches fit an
    80 GB GPU; a larger GPU can take more, see docs/speed.md).
    """
    out = copy.deepcopy(cfg)
    out.quantization.mode = preset.quantization
    if preset.quantization == "nf4":
        out.quantization.compute_dtype = "bf16"
    out.train.precision = preset.precision
    out.train.prepare_kbit = preset.prepare_kbit
    out.train.gradient_checkpointing = preset.checkpointing != "none"
    out.train.freeze_encoder = preset.freeze_encoder
    out.train.per_device_batch_size = cfg.train.speed_batch_size or preset.batch_size
    out.model.attn_implementation = preset.attn_implementation
    out.train.speed_preset = preset.name
    for section, field, before, after in _changed(cfg, out):  # nothing a preset overrides goes unsaid
        print(f"speed preset {preset.name}: {section}.{field} {before!r} -> {after!r}")
    return out


def _changed(before: Config, after: Config) -> list[tuple[str, str, object, object]]:
    old, new = before.to_dict(), after.to_dict()
    return [(section, key, old[section][key], value) for section, fields in new.items() if isinstance(fields, dict)
            for key, value in fields.items() if old[section].get(key) != value]


def resolve_preset(cfg: Config, device: str) -> SpeedPreset | None:
    """The preset `train()` applies for `cfg.train.speed_preset` on `device`, or None (config as written).

    Presets are GPU measurements: on a CPU nothing is applied. `auto` on CUDA is `lean` (the recipe's
    memory at 4.3-4.7x its speed), except with `train.freeze_encoder`, whose cached-encoder path has its own
    trainable set; an explicit preset that trains the encoder cannot run with cached encoder outputs.
    """
    name = cfg.train.speed_preset
    if not device.startswith("cuda"):
        return None
    if name == "auto":
        return None if cfg.train.freeze_encoder else PRESETS["lean"]
    preset = get_preset(name)
    if cfg.train.cache_encoder_outputs and not preset.freeze_encoder:
        raise ConfigError(f"train.speed_preset={name} trains the encoder, but train.cache_encoder_outputs is on; "
                          "use speed_preset auto or fast-frozen-encoder")
    if preset.fp8_weights:  # fail before any loading on a GPU without FP8 tensor cores
        check_fp8_device(device)
    return preset
