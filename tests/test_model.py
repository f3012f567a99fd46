"""Model stage: loading (none/int8/nf4), k-bit preparation dtypes, LoRA placement and gradients, dry run."""

from __future__ import annotations

import logging

import pytest
import torch

from whispertune import model as M
from whispertune.config import Config
from whispertune.errors import ConfigError, HardwareError


def _cfg(model_dir, mode: str = "none") -> Config:
    cfg = Config()
    cfg.model.name_or_path = str(model_dir)
    cfg.model.language = "Marathi"
    cfg.quantization.mode = mode
    return cfg


def _batch(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(2, 80, 3000, generator=gen), torch.randint(100, 1000, (2, 6), generator=gen)


@pytest.mark.parametrize("mode, layer", [("none", "Linear"), ("int8", "Linear8bitLt"), ("nf4", "Linear4bit")])
def test_load_base_modes_and_training_generation_config(tiny_whisper_dir, mode, layer):
    cfg = _cfg(tiny_whisper_dir, mode)
    model = M.load_base(cfg.model, cfg.quantization, for_training=True)
    assert type(model.model.encoder.layers[0].self_attn.q_proj).__name__ == layer
    assert M.is_quantized(model) == (mode != "none")
    assert model.config.use_cache is False
    gen = model.generation_config
    assert gen.forced_decoder_ids is None and not gen.suppress_tokens
    assert (gen.language, gen.task) == ("mr", "transcribe")


def test_load_processor_sets_language_prefix(tiny_whisper_dir):
    processor = M.load_processor(str(tiny_whisper_dir), "Marathi", "transcribe")
    prefix = processor.tokenizer.convert_ids_to_tokens(processor.tokenizer.prefix_tokens)
    assert prefix == ["<|startoftranscript|>", "<|mr|>", "<|transcribe|>", "<|notimestamps|>"]


def test_unavailable_device_is_a_hardware_error(tiny_whisper_dir):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    cfg = _cfg(tiny_whisper_dir, "int8")
    with pytest.raises(HardwareError, match="no CUDA GPU"):
        M.load_base(cfg.model, cfg.quantization, for_training=True, device="cuda")


def _int8_cast_warnings(caplog) -> int:
    return sum("MatMul8bitLt: inputs will be cast" in r.getMessage() for r in caplog.records)


def test_int8_training_step_has_no_dtype_cast_warning(tiny_whisper_dir, caplog):
    from peft import prepare_model_for_kbit_training

    cfg = _cfg(tiny_whisper_dir, "int8")
    feats, labels = _batch()
    caplog.set_level(logging.WARNING)
    # Control: peft's preparation alone sends fp32 activations into the int8 matmul and warns.
    plain = M.load_base(cfg.model, cfg.quantization, for_training=True)
    prepare_model_for_kbit_training(plain, use_gradient_checkpointing=False)
    M.add_lora(plain, cfg.lora, verbose=False)(input_features=feats, labels=labels).loss.backward()
    assert _int8_cast_warnings(caplog) > 0
    caplog.clear()

    model = M.load_base(cfg.model, cfg.quantization, for_training=True)
    M.prepare_for_training(model, gradient_checkpointing=True)
    norm = model.model.encoder.layer_norm.weight
    assert norm.dtype == torch.float32  # k-bit preparation keeps norms in fp32
    peft_model = M.add_lora(model, cfg.lora, verbose=False)
    peft_model.train()
    loss = peft_model(input_features=feats, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert _int8_cast_warnings(caplog) == 0


@pytest.mark.parametrize("mode", ["int8", "nf4"])
def test_every_lora_tensor_gets_gradient(tiny_whisper_dir, mode):
    cfg = _cfg(tiny_whisper_dir, mode)
    model = M.load_base(cfg.model, cfg.quantization, for_training=True)
    M.prepare_for_training(model, gradient_checkpointing=True)
    peft_model = M.add_lora(model, cfg.lora, verbose=False)
    peft_model.train()
    lora = {n: p for n, p in peft_model.named_parameters() if "lora_" in n}
    assert all(p.requires_grad for p in lora.values())
    assert any(".encoder." in n for n in lora) and any(".decoder." in n for n in lora)
    opt = torch.optim.AdamW(lora.values(), lr=1e-2)
    feats, labels = _batch()
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
    cfg = _cfg(tiny_whisper_dir)
    model = M.load_base(cfg.model, cfg.quantization, for_training=True)
    peft_model = M.add_lora(model, cfg.lora, freeze_encoder=True)
    names = [n for n, _ in peft_model.named_parameters() if "lora_" in n]
    assert names and all(".decoder." in n for n in names)
    # 2 layers x (self q,v + cross q,v) x (A + B)
    assert len(names) == 2 * 4 * 2
    assert "trainable params:" in capsys.readouterr().out


def test_unknown_lora_target_lists_linear_modules(tiny_whisper_dir):
    cfg = _cfg(tiny_whisper_dir)
    cfg.lora.target_modules = ["q_proj", "query"]
    model = M.load_base(cfg.model, cfg.quantization, for_training=True)
    with pytest.raises(ConfigError, match="'query' matches no linear module") as err:
        M.add_lora(model, cfg.lora)
    for name in ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"):
        assert name in str(err.value)


def test_dry_run_reference_recipe_offline():
    """whisper-large-v2 with r=32 on q/v: the recipe's printed counts, from the config table (no Hub)."""
    cfg = Config()
    cfg.model.name_or_path = "openai/whisper-large-v2"
    cfg.quantization.mode = "int8"
    result = M.dry_run(cfg)
    assert (result.trainable, result.total) == (15_728_640, 1_559_033_600)
    assert "built-in table" in result.config_source
    mem = result.memory_estimate_gib
    # int8 weights: ~1.5 GB of 1-byte linear weights + 16-bit embeddings, far below the fp16 size (2.9 GiB)
    assert 1.0 < mem["weights"] < 2.0
    assert mem["lora+optimizer"] == pytest.approx(15_728_640 * 16 / 1024**3)
    assert mem["total"] == pytest.approx(mem["weights"] + mem["lora+optimizer"] + mem["activations"])
    nf4 = Config()
    nf4.model.name_or_path, nf4.quantization.mode = "openai/whisper-large-v2", "nf4"
    assert M.dry_run(nf4).memory_estimate_gib["weights"] < mem["weights"]


def test_dry_run_local_config_matches_loaded_model(tiny_whisper_dir):
    cfg = _cfg(tiny_whisper_dir)
    result = M.dry_run(cfg)
    model = M.load_base(cfg.model, cfg.quantization, for_training=True)
    loaded = M.add_lora(model, cfg.lora, verbose=False).get_nb_trainable_parameters()
    assert (result.trainable, result.total) == loaded
    assert result.config_source == str(tiny_whisper_dir)


@pytest.mark.parametrize("mode, reentrant", [("none", False), ("int8", True), ("nf4", False)])
def test_int8_bases_get_reentrant_checkpointing(tiny_whisper_dir, mode, reentrant):
    """bitsandbytes' int8 matmul keeps its input outside autograd's saved tensors: non-reentrant checkpointing
    cannot free it (the reference config then took 15.5 GiB on large-v2 instead of 5.4)."""
    cfg = _cfg(tiny_whisper_dir, mode)
    model = M.load_base(cfg.model, cfg.quantization, for_training=True)
    assert M.needs_reentrant_checkpointing(model) is reentrant
    M.prepare_for_training(model, gradient_checkpointing=True)
    layer = model.model.encoder.layers[0]
    assert layer.gradient_checkpointing and layer._gradient_checkpointing_func.keywords["use_reentrant"] is reentrant
    lora = M.add_lora(model, cfg.lora, verbose=False)
    lora.train()
    feats, labels = _batch()
    loss = lora(input_features=feats, labels=labels).loss
    loss.backward()
    grads = [p.grad for p in lora.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    enc_a = lora.base_model.model.model.encoder.layers[0].self_attn.q_proj.lora_B["default"].weight
    assert enc_a.grad.abs().sum() > 0  # gradients reach the first encoder layer through the checkpoints


def test_training_base_is_loaded_in_the_training_dtype(tiny_whisper_dir):
    cfg = _cfg(tiny_whisper_dir)
    model = M.load_base(cfg.model, cfg.quantization, for_training=True, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}  # no fp32 master copy of frozen weights
    lora = M.add_lora(model, cfg.lora, verbose=False)
    assert {p.dtype for p in lora.parameters() if p.requires_grad} == {torch.float32}  # peft keeps adapters fp32
