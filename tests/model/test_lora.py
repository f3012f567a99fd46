"""Model stage, adapters: k-bit preparation dtypes and checkpointing flavour, LoRA placement and gradients."""

from __future__ import annotations

import logging

import pytest
import torch

from tests.helpers import features_and_labels, stage_config
from whispertune.errors import ConfigError
from whispertune.model.bnb import needs_reentrant_checkpointing
from whispertune.model.loading import load_base
from whispertune.model.lora import add_lora, prepare_for_training


def _int8_cast_warnings(caplog) -> int:
    return sum("MatMul8bitLt: inputs will be cast" in r.getMessage() for r in caplog.records)


def test_int8_training_step_has_no_dtype_cast_warning(tiny_whisper_dir, caplog):
    from peft import prepare_model_for_kbit_training

    cfg = stage_config(tiny_whisper_dir, "int8")
    feats, labels = features_and_labels()
    caplog.set_level(logging.WARNING)
    # Control: peft's preparation alone sends fp32 activations into the int8 matmul and warns.
    plain = load_base(cfg.model, cfg.quantization, for_training=True)
    prepare_model_for_kbit_training(plain, use_gradient_checkpointing=False)
    add_lora(plain, cfg.lora, verbose=False)(input_features=feats, labels=labels).loss.backward()
    assert _int8_cast_warnings(caplog) > 0
    caplog.clear()

    model = load_base(cfg.model, cfg.quantization, for_training=True)
    prepare_for_training(model, gradient_checkpointing=True)
    norm = model.model.encoder.layer_norm.weight
    assert norm.dtype == torch.float32  # k-bit preparation keeps norms in fp32
    peft_model = add_lora(model, cfg.lora, verbose=False)
    peft_model.train()
    loss = peft_model(input_features=feats, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert _int8_cast_warnings(caplog) == 0


@pytest.mark.parametrize("mode", ["int8", "nf4"])
def test_every_lora_tensor_gets_gradient(tiny_whisper_dir, mode):
    cfg = stage_config(tiny_whisper_dir, mode)
    model = load_base(cfg.model, cfg.quantization, for_training=True)
    prepare_for_training(model, gradient_checkpointing=True)
    peft_model = add_lora(model, cfg.lora, verbose=False)
    peft_model.train()
    lora = {n: p for n, p in peft_model.named_parameters() if "lora_" in n}
    assert all(p.requires_grad for p in lora.values())
    assert any(".encoder." in n for n in lora) and any(".decoder." in n for n in lora)
    opt = torch.optim.AdamW(lora.values(), lr=1e-2)
    feats, labels = features_and_labels()
    # lora_B starts at zero, so at step 0 lora_A's gradient (which flows through B) is exactly zero.
    # One optimizer step makes B non-zero; the second backward must then reach every A and B.
    peft_model(input_features=feats, labels=labels).loss.backward()
    opt.step()
    opt.zero_grad()
    peft_model(input_features=feats, labels=labels).loss.backward()
    dead = [n for n, p in lora.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []
    assert sum(".lora_A." in n for n in lora) == sum(".lora_B." in n for n in lora) == len(lora) // 2


def test_freeze_encoder_puts_lora_on_decoder_only(tiny_whisper_dir, capsys):
    cfg = stage_config(tiny_whisper_dir)
    model = load_base(cfg.model, cfg.quantization, for_training=True)
    peft_model = add_lora(model, cfg.lora, freeze_encoder=True)
    names = [n for n, _ in peft_model.named_parameters() if "lora_" in n]
    assert names and all(".decoder." in n for n in names)
    # 2 layers x (self q,v + cross q,v) x (A + B)
    assert len(names) == 2 * 4 * 2
    assert "trainable params:" in capsys.readouterr().out


def test_unknown_lora_target_lists_linear_modules(tiny_whisper_dir):
    cfg = stage_config(tiny_whisper_dir)
    cfg.lora.target_modules = ["q_proj", "query"]
    model = load_base(cfg.model, cfg.quantization, for_training=True)
    with pytest.raises(ConfigError, match="'query' matches no linear module") as err:
        add_lora(model, cfg.lora)
    for name in ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"):
        assert name in str(err.value)


@pytest.mark.parametrize("mode, reentrant", [("none", False), ("int8", True), ("nf4", False)])
def test_int8_bases_get_reentrant_checkpointing(tiny_whisper_dir, mode, reentrant):
    """bitsandbytes' int8 matmul keeps its input outside autograd's saved tensors: non-reentrant checkpointing
    cannot free it (the reference config then took 15.5 GiB on large-v2 instead of 5.4)."""
    cfg = stage_config(tiny_whisper_dir, mode)
    model = load_base(cfg.model, cfg.quantization, for_training=True)
    assert needs_reentrant_checkpointing(model) is reentrant
    prepare_for_training(model, gradient_checkpointing=True)
    layer = model.model.encoder.layers[0]
    assert layer.gradient_checkpointing and layer._gradient_checkpointing_func.keywords["use_reentrant"] is reentrant
    lora = add_lora(model, cfg.lora, verbose=False)
    lora.train()
    feats, labels = features_and_labels()
    loss = lora(input_features=feats, labels=labels).loss
    loss.backward()
    grads = [p.grad for p in lora.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    enc_a = lora.base_model.model.model.encoder.layers[0].self_attn.q_proj.lora_B["default"].weight
    assert enc_a.grad.abs().sum() > 0  # gradients reach the first encoder layer through the checkpoints
