"""Speed presets on a tiny random Whisper (CPU): each prepared model trains and starts from the plain model's loss.

The compiled variants take minutes on a 2-core CPU (inductor builds C++ kernels), so they are marked slow.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import WhisperConfig, WhisperForConditionalGeneration

from whispertune import speed
from whispertune.config import Config, SpeedPresetName
from whispertune.errors import ConfigError

DECODER_ONLY = r".*decoder\.layers\.\d+\.(self_attn|encoder_attn)\.(q_proj|v_proj)"


def tiny_lora_model(freeze_encoder: bool = False) -> torch.nn.Module:
    config = WhisperConfig(vocab_size=120, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
                           max_source_positions=1500, max_target_positions=64, decoder_start_token_id=1,
                           pad_token_id=0, bos_token_id=0, eos_token_id=0, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    targets = DECODER_ONLY if freeze_encoder else ["q_proj", "v_proj"]
    torch.manual_seed(1)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets))


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    return torch.randn(2, 80, 3000, generator=gen), torch.randint(2, 120, (2, 6), generator=gen)


def train_losses(model: torch.nn.Module, steps: int) -> list[float]:
    feats, labels = batch()
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    losses = []
    for _ in range(steps):
        loss = model(input_features=feats, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def prepared(name: str, **changes) -> torch.nn.Module:
    """Preset `name` (fp32 on CPU, optionally changed) applied to a fresh tiny LoRA model."""
    preset = dataclasses.replace(speed.PRESETS[name], **changes)
    model = tiny_lora_model(preset.freeze_encoder)
    speed.PRESETS["_test"] = preset
    try:
        return speed.prepare_model(model, "_test")
    finally:
        del speed.PRESETS["_test"]


def test_resolve_preset_applies_only_on_cuda():
    cfg = Config()
    assert speed.resolve_preset(cfg, "cpu") is None  # CPU: the config as written, even for "auto"
    assert speed.resolve_preset(cfg, "cuda") == "lean"
    cfg.train.speed_preset = "fast"
    assert speed.resolve_preset(cfg, "cuda:0") == "fast"
    assert speed.resolve_preset(cfg, "cpu") is None
    frozen = Config()
    frozen.train.freeze_encoder = frozen.train.cache_encoder_outputs = True
    assert speed.resolve_preset(frozen, "cuda") is None  # auto leaves the cached-encoder path alone
    frozen.train.speed_preset = "lean"
    with pytest.raises(ConfigError, match="cache_encoder_outputs"):
        speed.resolve_preset(frozen, "cuda")
    frozen.train.speed_preset = "fast-frozen-encoder"
    assert speed.resolve_preset(frozen, "cuda") == "fast-frozen-encoder"


def test_presets_are_the_names_the_config_accepts():
    assert list(speed.PRESETS) == list(typing.get_args(SpeedPresetName))


def test_apply_preset_sets_fields_and_keeps_the_rest():
    cfg = Config()
    cfg.train.learning_rate = 5e-4
    lean = speed.apply_preset(cfg, "lean")
    assert (lean.quantization.mode, lean.train.precision, lean.train.prepare_kbit) == ("none", "bf16", False)
    assert lean.train.gradient_checkpointing and lean.train.per_device_batch_size == 12
    assert lean.train.learning_rate == 5e-4 and cfg.train.per_device_batch_size == 8  # copy, not changed in place
    recipe = speed.apply_preset(cfg, "recipe")
    assert (recipe.quantization.mode, recipe.train.precision, recipe.train.prepare_kbit) == ("int8", "fp16", True)
    assert speed.apply_preset(cfg, "fast-frozen-encoder").train.freeze_encoder
    cfg.train.speed_batch_size = 64  # a larger GPU: the user's batch instead of the preset's
    assert speed.apply_preset(cfg, "fast-fp8").train.per_device_batch_size == 64
    with pytest.raises(ConfigError, match="unknown speed preset 'turbo'"):
        speed.apply_preset(cfg, "turbo")


@pytest.mark.parametrize("name", ["plain", "lean", "fast"])
def test_preset_trains_and_matches_plain_first_loss(name):
    plain = train_losses(tiny_lora_model(), 1)[0]
    losses = train_losses(prepared(name, precision="fp32", compile_layers=False), 6)
    assert all(math.isfinite(x) for x in losses)
    assert losses[0] == pytest.approx(plain, rel=1e-5)  # fp32 on both sides: only summation order differs
    assert losses[-1] < losses[0] - 0.05


@pytest.mark.parametrize("policy,expected", [("all", 4), ("encoder", 2), ("alternate", 2), ("none", 0)])
def test_checkpointing_policies_choose_layers(policy, expected):
    model = prepared("lean", checkpointing=policy, compile_layers=False)
    core = model.base_model.model.model
    flags = [layer.gradient_checkpointing for layer in [*core.encoder.layers, *core.decoder.layers]]
    assert sum(flags) == expected
    if policy == "encoder":
        assert all(layer.gradient_checkpointing for layer in core.encoder.layers)


def test_frozen_encoder_keeps_encoder_fixed_and_trains_decoder():
    model = prepared("fast-frozen-encoder", precision="fp32", compile_layers=False)
    encoder = model.base_model.model.model.encoder
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    losses = train_losses(model, 6)
    assert losses[-1] < losses[0] - 0.05
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    with pytest.raises(ConfigError, match="decoder only"):
        speed.prepare_model(tiny_lora_model(freeze_encoder=False), "fast-frozen-encoder")


@pytest.mark.slow
def test_compiled_lean_preset_matches_plain():
    """Regional compile + checkpointing outside the compiled layers (inductor on CPU: minutes)."""
    plain = train_losses(tiny_lora_model(), 1)[0]
    losses = train_losses(prepared("lean", precision="fp32"), 4)
    assert losses[0] == pytest.approx(plain, rel=1e-4)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name", ["fast", "lean", "fast-fp8"])
def test_preset_configs_are_written_as_their_preset_sets_them(name):
    from whispertune.config import load_config

    root = Path(__file__).resolve().parents[1] / "configs"
    cfg = load_config(root / f"{name}-large-v2-marathi.yaml")
    reference = load_config(root / "reference-large-v2-marathi-int8.yaml")
    assert cfg.train.speed_preset == name
    assert speed.apply_preset(cfg, name).to_dict() == cfg.to_dict()  # the file already says what CUDA runs
    assert (cfg.data, cfg.lora, cfg.train.learning_rate) == (reference.data, reference.lora, reference.train.learning_rate)


def test_compiled_layers_run_eager_in_eval_mode():
    """Generation (eval mode) changes shapes every token: it must not go through the compiled training graph."""
    layer = torch.nn.Linear(4, 4)
    calls = []

    def compiled(module, x):
        calls.append(x.shape)
        return type(module).forward(module, x)

    layer.forward = speed._layer_forward(layer, compiled, checkpointed=True, reentrant=False)
    x = torch.randn(2, 4)
    layer.train()
    layer(x)
    assert calls == [(2, 4)]
    layer.eval()
    with torch.no_grad():
        out = layer(x)
    assert calls == [(2, 4)] and torch.allclose(out, torch.nn.functional.linear(x, layer.weight, layer.bias))
