"""Speed presets on a tiny random Whisper (CPU): each prepared model trains and starts from the plain model's loss.

The compiled variants take minutes on a 2-core CPU (inductor builds C++ kernels), so they are marked slow.
"""

from __future__ import annotations

import math
import typing
from pathlib import Path

import pytest
import torch

from tests.helpers import batch, prepared, tiny_lora_model, train_losses
from whispertune.config import Config, SpeedPresetName
from whispertune.errors import ConfigError
from whispertune.training import preset_surgery, presets


def test_resolve_preset_applies_only_on_cuda():
    cfg = Config()
    assert presets.resolve_preset(cfg, "cpu") is None  # CPU: the config as written, even for "auto"
    assert presets.resolve_preset(cfg, "cuda") is presets.PRESETS["lean"]
    cfg.train.speed_preset = "fast"
    assert presets.resolve_preset(cfg, "cuda:0").name == "fast"
    assert presets.resolve_preset(cfg, "cpu") is None
    frozen = Config()
    frozen.train.freeze_encoder = frozen.train.cache_encoder_outputs = True
    assert presets.resolve_preset(frozen, "cuda") is None  # auto leaves the cached-encoder path alone
    frozen.train.speed_preset = "lean"
    with pytest.raises(ConfigError, match="cache_encoder_outputs"):
        presets.resolve_preset(frozen, "cuda")
    frozen.train.speed_preset = "fast-frozen-encoder"
    assert presets.resolve_preset(frozen, "cuda").name == "fast-frozen-encoder"


def test_presets_are_the_names_the_config_accepts_and_the_table_is_read_only():
    assert list(presets.PRESETS) == list(typing.get_args(SpeedPresetName))
    assert all(name == preset.name for name, preset in presets.PRESETS.items())
    with pytest.raises(TypeError):  # a variant is a new object passed where it is used, not a table entry
        presets.PRESETS["mine"] = presets.PRESETS["lean"]


def test_apply_preset_says_each_field_it_changes(capsys):
    from whispertune.config import load_config

    cfg = load_config(None, ["train.per_device_batch_size=8", "train.precision=fp32"])
    presets.apply_preset(cfg, presets.get_preset("lean"))
    lines = capsys.readouterr().out.splitlines()
    assert "speed preset lean: train.per_device_batch_size 8 -> 24" in lines
    assert "speed preset lean: train.precision 'fp32' -> 'bf16'" in lines


def test_apply_preset_sets_fields_and_keeps_the_rest():
    cfg = Config()
    cfg.train.learning_rate = 5e-4
    lean = presets.apply_preset(cfg, presets.get_preset("lean"))
    assert (lean.quantization.mode, lean.train.precision, lean.train.prepare_kbit) == ("none", "bf16", False)
    assert lean.train.gradient_checkpointing and lean.train.per_device_batch_size == 24
    assert lean.train.learning_rate == 5e-4 and cfg.train.per_device_batch_size == 8  # copy, not changed in place
    recipe = presets.apply_preset(cfg, presets.get_preset("recipe"))
    assert (recipe.quantization.mode, recipe.train.precision, recipe.train.prepare_kbit) == ("int8", "fp16", True)
    assert presets.apply_preset(cfg, presets.get_preset("fast-frozen-encoder")).train.freeze_encoder
    cfg.train.speed_batch_size = 64  # a larger GPU: the user's batch instead of the preset's
    assert presets.apply_preset(cfg, presets.get_preset("fast-fp8")).train.per_device_batch_size == 64
    with pytest.raises(ConfigError, match="unknown speed preset 'turbo'"):
        presets.get_preset("turbo")


@pytest.mark.parametrize("name", ["plain", "lean", "fast"])
def test_preset_trains_and_matches_plain_first_loss(name):
    plain = train_losses(tiny_lora_model(), 1)[0]
    losses = train_losses(prepared(name, precision="fp32", compile_layers=False), 6)
    assert all(math.isfinite(x) for x in losses)
    assert losses[0] == pytest.approx(plain, rel=1e-5)  # fp32 on both sides: only summation order differs
    assert losses[-1] < losses[0] - 0.05


@pytest.mark.parametrize("policy,expected", [("all", 4), ("encoder", 2), ("alternate", 2), ("none", 0)])
def test_checkpointing_policies_choose_layers(policy, expected):
    model = prepared("lean-resident", checkpointing=policy, compile_layers=False)
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
        preset_surgery.prepare_model(tiny_lora_model(freeze_encoder=False), presets.get_preset("fast-frozen-encoder"))


@pytest.mark.slow
def test_compiled_lean_preset_matches_plain():
    """Regional compile + checkpointing outside the compiled layers (inductor on CPU: minutes)."""
    plain = train_losses(tiny_lora_model(), 1)[0]
    losses = train_losses(prepared("lean", precision="fp32"), 4)
    assert losses[0] == pytest.approx(plain, rel=1e-4)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name", ["fast", "lean", "fast-fp8"])
def test_preset_configs_are_the_reference_recipe_with_their_preset(name):
    """The speed configs change only how fast the reference recipe trains: same data, LoRA and learning rate.
    Their other values are what a CPU runs (no preset applies there); on CUDA apply_preset prints what it sets."""
    from whispertune.config import load_config

    root = Path(__file__).resolve().parents[2] / "configs"
    cfg = load_config(root / f"{name}-large-v2-marathi.yaml")
    reference = load_config(root / "reference-large-v2-marathi-int8.yaml")
    assert cfg.train.speed_preset == name
    assert (cfg.data, cfg.lora, cfg.train.learning_rate) == (reference.data, reference.lora, reference.train.learning_rate)


def test_compiled_layers_run_eager_in_eval_mode():
    """Generation (eval mode) changes shapes every token: it must not go through the compiled training graph."""
    layer = torch.nn.Linear(4, 4)
    calls = []

    def compiled(module, x):
        calls.append(x.shape)
        return type(module).forward(module, x)

    layer.forward = preset_surgery._layer_forward(layer, compiled, checkpointed=True, reentrant=False)
    x = torch.randn(2, 4)
    layer.train()
    layer(x)
    assert calls == [(2, 4)]
    layer.eval()
    with torch.no_grad():
        out = layer(x)
    assert calls == [(2, 4)] and torch.allclose(out, torch.nn.functional.linear(x, layer.weight, layer.bias))


def test_autocast_dropout_casts_to_the_autocast_dtype_with_the_same_mask():
    """Under autocast: the mask and scaling of nn.Dropout on the input cast to bf16; without autocast: nn.Dropout."""
    x = torch.randn(4, 7, 16)
    torch.manual_seed(3)
    expected = torch.nn.functional.dropout(x.to(torch.bfloat16), 0.25, training=True)
    torch.manual_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = preset_surgery.AutocastDropout(0.25)(x)
    assert got.dtype == torch.bfloat16 and torch.equal(got, expected)
    torch.manual_seed(3)
    plain = torch.nn.functional.dropout(x, 0.25, training=True)
    torch.manual_seed(3)
    assert torch.equal(preset_surgery.AutocastDropout(0.25)(x), plain)


def test_fast_fp8_runs_lora_dropout_in_the_autocast_dtype_and_trains():
    model = prepared("fast-fp8", dropout=0.1, compile_layers=False)
    dropouts = [m for n, m in model.named_modules() if n.split(".")[-2:-1] == ["lora_dropout"]]
    # 2 encoder layers x (q, v) + 2 decoder layers x (self q, v + cross q, v)
    assert len(dropouts) == 12 and all(type(m) is preset_surgery.AutocastDropout for m in dropouts)
    assert all(type(m) is torch.nn.Dropout for n, m in prepared("fast", dropout=0.1, compile_layers=False).named_modules()
               if n.split(".")[-2:-1] == ["lora_dropout"])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    feats, labels = batch()
    losses = []
    for _ in range(6):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_features=feats, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0] - 0.05


def test_fast_fp8_hands_the_decoder_the_encoder_output_in_the_autocast_dtype():
    """Under autocast the encoder's output is bf16 (fp32 with the cast off) and the loss barely moves; in fp32 it
    is the encoder's own output; gradients still reach the encoder's LoRA through the cast (training under autocast:
    test_fast_fp8_runs_lora_dropout_in_the_autocast_dtype_and_trains)."""
    feats, labels = batch()
    cast, kept = (prepared("fast-fp8", compile_layers=False, encoder_output_autocast=flag) for flag in (True, False))
    kept.load_state_dict(cast.state_dict())
    encoder_of = {id(m): preset_surgery._whisper_core(m).encoder for m in (cast, kept)}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs = {name: encoder_of[id(m)](feats).last_hidden_state for name, m in (("cast", cast), ("kept", kept))}
        losses = [m(input_features=feats, labels=labels).loss for m in (cast, kept)]
    assert outs["cast"].dtype == torch.bfloat16 and outs["kept"].dtype == torch.float32
    assert torch.equal(outs["cast"], outs["kept"].to(torch.bfloat16))
    assert abs(losses[0].item() - losses[1].item()) < 0.02 * abs(losses[1].item())
    losses[0].backward()
    encoder_grads = [p.grad for n, p in cast.named_parameters() if "encoder" in n and p.requires_grad]
    assert encoder_grads and all(g is not None for g in encoder_grads) and any(g.abs().sum() > 0 for g in encoder_grads)
    assert encoder_of[id(cast)](feats).last_hidden_state.dtype == torch.float32  # no autocast: unchanged
