"""The lora section's variant keys: defaults, the AdaLoRA schedule, and one-line errors naming the key."""

from __future__ import annotations

import pytest

from whispertune.config import load_config
from whispertune.config_lora import adalora_schedule
from whispertune.errors import ConfigError


def test_variant_defaults_to_lora_and_adalora_fills_its_schedule_from_r_and_steps():
    assert load_config(None, []).lora.variant == "lora"
    cfg = load_config(None, ["lora.variant=adalora", "lora.r=16", "train.max_steps=100"])
    assert adalora_schedule(cfg.lora, 100) == {"init_r": 16, "target_r": 8, "tinit": 10, "tfinal": 20, "deltaT": 1,
                                               "orth_reg_weight": 0.5, "total_step": 100}
    cfg = load_config(None, ["lora.variant=adalora", "train.max_steps=50", "lora.adalora_target_r=4",
                             "lora.adalora_tinit=5", "lora.adalora_tfinal=0", "lora.adalora_delta_t=10",
                             "lora.adalora_orth_reg_weight=0"])
    assert adalora_schedule(cfg.lora, 50) == {"init_r": 32, "target_r": 4, "tinit": 5, "tfinal": 0, "deltaT": 10,
                                              "orth_reg_weight": 0.0, "total_step": 50}


@pytest.mark.parametrize("overrides,message", [
    (["lora.variant=lokr"], "lora.variant: got 'lokr', expected one of 'lora', 'dora', 'rslora', 'adalora'"),
    (["lora.variant=adalora"], "lora.variant adalora needs train.max_steps > 0"),
    (["lora.adalora_target_r=4"], "lora.adalora_target_r applies to lora.variant adalora only"),
    (["lora.variant=dora", "lora.adalora_tinit=3"], "lora.adalora_tinit applies to lora.variant adalora only"),
    (["lora.variant=adalora", "train.max_steps=10", "lora.r=4", "lora.adalora_target_r=5"],
     r"lora.adalora_target_r: got 5, expected an integer in \[1, lora.r=4\]"),
    (["lora.variant=adalora", "train.max_steps=10", "lora.adalora_tinit=4", "lora.adalora_tfinal=6"],
     r"lora.adalora_tinit \(4\) \+ lora.adalora_tfinal \(6\) must be less than train.max_steps \(10\)"),
    (["lora.variant=adalora", "train.max_steps=10", "lora.adalora_tfinal=-1"], "lora.adalora_tfinal: got -1"),
    (["lora.variant=adalora", "train.max_steps=10", "lora.adalora_delta_t=0"], "lora.adalora_delta_t: got 0"),
    (["lora.variant=adalora", "train.max_steps=10", "lora.adalora_orth_reg_weight=-0.1"],
     "lora.adalora_orth_reg_weight: got -0.1"),
    (["lora.variant=adalora", "train.max_steps=10", "lora.bias=all"], "peft's AdaLoRA trains no biases"),
    (["lora.r=0"], "lora.r: got 0"),
])
def test_bad_variant_settings_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)
