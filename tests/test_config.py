"""Config: YAML + overrides, type checking, and the reference recipe's every value."""

from pathlib import Path

import pytest

from whispertune.config import Config, load_config, parse_override
from whispertune.errors import ConfigError

REFERENCE = Path(__file__).resolve().parents[1] / "configs" / "reference-large-v2-marathi-int8.yaml"


def test_reference_config_holds_every_recipe_value():
    cfg = load_config(REFERENCE)
    # Setup
    assert cfg.model.name_or_path == "openai/whisper-large-v2"
    assert cfg.model.language == "Marathi"
    assert cfg.model.task == "transcribe"
    # Data: Common Voice 11 mr, train+validation / test, audio + sentence only, token passable
    assert cfg.data.source == "hub"
    assert cfg.data.path == "mozilla-foundation/common_voice_11_0"
    assert cfg.data.config_name == "mr"
    assert cfg.data.train_split == "train+validation"
    assert cfg.data.eval_split == "test"
    assert (cfg.data.audio_column, cfg.data.text_column) == ("audio", "sentence")
    assert cfg.data.num_proc > 1
    # Model: 8-bit base, device_map auto, k-bit preparation with gradient checkpointing
    assert cfg.quantization.mode == "int8"
    assert cfg.quantization.device_map == "auto"
    assert cfg.train.prepare_kbit is True
    assert cfg.train.gradient_checkpointing is True
    # LoRA
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.bias) == (32, 64, 0.05, "none")
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    # Training arguments
    t = cfg.train
    assert (t.per_device_batch_size, t.gradient_accumulation_steps) == (8, 1)
    assert t.learning_rate == pytest.approx(1e-3)
    assert (t.warmup_steps, t.num_epochs, t.eval_strategy) == (50, 3.0, "epoch")
    assert t.precision == "fp16"
    assert t.speed_preset == "recipe"  # the recipe as written, not the CUDA default `lean`
    assert t.logging_steps == 25
    assert t.remove_unused_columns is False
    assert t.label_names == ["labels"]
    assert cfg.eval.batch_size == 8
    assert cfg.generation.train_generation_max_length == 128
    # Evaluation: at most 255 new tokens
    assert cfg.generation.max_new_tokens == 255


def test_speed_preset_is_validated():
    assert load_config(None).train.speed_preset == "auto"
    assert load_config(None, ["train.speed_preset=lean"]).train.speed_preset == "lean"
    with pytest.raises(ConfigError, match="train.speed_preset: got 'turbo', expected one of 'auto', 'recipe'"):
        load_config(None, ["train.speed_preset=turbo"])


def test_defaults_match_the_recipe_lora():
    cfg = Config()
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.target_modules) == (32, 64, ["q_proj", "v_proj"])


def test_overrides_are_typed():
    cfg = load_config(REFERENCE, ["train.learning_rate=1e-4", "lora.target_modules=q_proj,k_proj,v_proj",
                                  "train.gradient_checkpointing=false", "data.max_train_samples=10"])
    assert cfg.train.learning_rate == pytest.approx(1e-4)
    assert cfg.lora.target_modules == ["q_proj", "k_proj", "v_proj"]
    assert cfg.train.gradient_checkpointing is False
    assert cfg.data.max_train_samples == 10


def test_override_values_follow_the_field_type():
    assert parse_override("train.num_epochs=2") == ("train", "num_epochs", "2")
    cfg = load_config(None, ["model.language=null", "train.eval_strategy=no", "train.num_epochs=2",
                             "quantization.mode=none", "data.config_name=123"])
    assert cfg.model.language is None
    assert cfg.train.eval_strategy == "no"  # YAML 1.1 would read `no` as false
    assert cfg.train.num_epochs == 2.0
    assert cfg.quantization.mode == "none"
    assert cfg.data.config_name == "123"


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.learning_rat=1e-4", "accepted: output_dir"),  # unknown key lists accepted keys
        ("trian.learning_rate=1e-4", "accepted: model, quantization"),  # unknown section
        ("train.per_device_batch_size=eight", "expected an integer"),
        ("quantization.mode=int4", "one of 'none', 'int8', 'nf4'"),
        ("train.gradient_checkpointing=maybe", "expected true/false"),
        ("lora.r=0", "positive integer"),
    ],
)
def test_bad_overrides_name_the_key_and_accepted_values(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert fragment in str(err.value)
    assert override.split("=")[0].split(".")[0] in str(err.value)


def test_bad_yaml_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lora:\n  rank: 8\n")
    with pytest.raises(ConfigError, match=r"unknown key lora.rank; accepted: r, alpha"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_round_trip(tmp_path):
    cfg = load_config(REFERENCE)
    path = tmp_path / "resolved.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg
