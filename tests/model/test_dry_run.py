"""Model stage, dry run: parameter counts and the memory estimate without loading weights."""

from __future__ import annotations

import pytest

from tests.helpers import stage_config
from whispertune.config import Config
from whispertune.model.dry_run import dry_run
from whispertune.model.loading import load_base
from whispertune.model.lora import add_lora


def test_dry_run_reference_recipe_offline():
    """whisper-large-v2 with r=32 on q/v: the recipe's printed counts, from the config table (no Hub)."""
    cfg = Config()
    cfg.model.name_or_path = "openai/whisper-large-v2"
    cfg.quantization.mode = "int8"
    result = dry_run(cfg)
    assert (result.trainable, result.total) == (15_728_640, 1_559_033_600)
    assert "built-in table" in result.config_source
    mem = result.memory_estimate_gib
    # int8 weights: ~1.5 GB of 1-byte linear weights + 16-bit embeddings, far below the fp16 size (2.9 GiB)
    assert 1.0 < mem["weights"] < 2.0
    assert mem["lora+optimizer"] == pytest.approx(15_728_640 * 16 / 1024**3)
    assert mem["total"] == pytest.approx(mem["weights"] + mem["lora+optimizer"] + mem["activations"])
    nf4 = Config()
    nf4.model.name_or_path, nf4.quantization.mode = "openai/whisper-large-v2", "nf4"
    assert dry_run(nf4).memory_estimate_gib["weights"] < mem["weights"]


def test_dry_run_local_config_matches_loaded_model(tiny_whisper_dir):
    cfg = stage_config(tiny_whisper_dir)
    result = dry_run(cfg)
    model = load_base(cfg.model, cfg.quantization, for_training=True)
    loaded = add_lora(model, cfg.lora, verbose=False).get_nb_trainable_parameters()
    assert (result.trainable, result.total) == loaded
    assert result.config_source == str(tiny_whisper_dir)


@pytest.mark.parametrize("variant,extra", [("lora", 0), ("rslora", 0), ("dora", 64), ("adalora", 32)])
def test_dry_run_counts_each_variant_s_own_parameters(variant, extra, tiny_whisper_dir):
    """12 adapted projections (q/v of 2 encoder self-attentions, 2 decoder self- and 2 cross-attentions), d_model 64,
    r 32: LoRA's A and B are 32 x (64 + 64) each; DoRA adds a magnitude per output channel (64), AdaLoRA an E of r."""
    cfg = Config()
    cfg.model.name_or_path, cfg.model.language = str(tiny_whisper_dir), "en"
    cfg.lora.variant, cfg.train.max_steps = variant, 100
    assert dry_run(cfg).trainable == 12 * (32 * 128 + extra)
