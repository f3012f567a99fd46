"""The `lora` config section: the adapter (rank, scale, targets) and its variant, with their checks.

Variants are peft's own: `lora` (plain), `dora` (weight-decomposed: a trained magnitude per output channel
on top of LoRA's direction update), `rslora` (LoRA scaled by alpha/sqrt(r) instead of alpha/r) and
`adalora` (an SVD-shaped update whose rank budget is pruned from `r` down to `adalora_target_r` per
module on average over a schedule of known length, so it needs `train.max_steps`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import ConfigError

AdapterVariant = Literal["lora", "dora", "rslora", "adalora"]
ADALORA_KEYS = ("adalora_target_r", "adalora_tinit", "adalora_tfinal", "adalora_delta_t", "adalora_orth_reg_weight")


@dataclass
class LoraConfig:
    r: int = 32  # adalora: the initial rank of every module
    alpha: int = 64
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    bias: Literal["none", "all", "lora_only"] = "none"
    variant: AdapterVariant = "lora"
    # adalora only; None takes the default named
    adalora_target_r: int | None = None  # average rank left after pruning; None: r // 2
    adalora_tinit: int | None = None  # steps before pruning starts; None: 10 % of train.max_steps
    adalora_tfinal: int | None = None  # steps at the end with the final ranks fixed; None: 20 % of train.max_steps
    adalora_delta_t: int | None = None  # steps between two rank reallocations; None: 1
    adalora_orth_reg_weight: float | None = None  # weight of the orthogonality penalty on A and B; None: 0.5


def adalora_schedule(lora: LoraConfig, total_steps: int) -> dict[str, Any]:
    """peft.AdaLoraConfig's schedule fields for `lora` over `total_steps` optimizer steps, defaults filled in."""
    return {
        "init_r": lora.r,
        "target_r": lora.adalora_target_r if lora.adalora_target_r is not None else max(1, lora.r // 2),
        "tinit": lora.adalora_tinit if lora.adalora_tinit is not None else total_steps // 10,
        "tfinal": lora.adalora_tfinal if lora.adalora_tfinal is not None else total_steps // 5,
        "deltaT": lora.adalora_delta_t if lora.adalora_delta_t is not None else 1,
        "orth_reg_weight": lora.adalora_orth_reg_weight if lora.adalora_orth_reg_weight is not None else 0.5,
        "total_step": total_steps,
    }


def check_lora(lora: LoraConfig, max_steps: int) -> None:
    """ConfigError naming the key for a LoRA setting out of range or a variant setting that cannot run."""
    if lora.r <= 0:
        raise ConfigError(f"lora.r: got {lora.r}, expected a positive integer (e.g. 8, 16, 32)")
    if lora.alpha <= 0:
        raise ConfigError(f"lora.alpha: got {lora.alpha}, expected a positive integer")
    if not 0.0 <= lora.dropout < 1.0:
        raise ConfigError(f"lora.dropout: got {lora.dropout}, expected a number in [0, 1)")
    if not lora.target_modules:
        raise ConfigError("lora.target_modules: expected at least one module name, e.g. q_proj,v_proj")
    if lora.variant != "adalora":
        stray = [key for key in ADALORA_KEYS if getattr(lora, key) is not None]
        if stray:
            raise ConfigError(f"lora.{stray[0]} applies to lora.variant adalora only (this config has "
                              f"{lora.variant}); set lora.variant: adalora or drop lora.{stray[0]}")
        return
    if lora.bias != "none":
        raise ConfigError("lora.bias: peft's AdaLoRA trains no biases; use lora.bias none with lora.variant adalora")
    if max_steps <= 0:
        raise ConfigError("lora.variant adalora needs train.max_steps > 0: its rank budget is pruned on a schedule "
                          "laid out over a known number of steps (e.g. --train.max_steps 2000)")
    plan = adalora_schedule(lora, max_steps)
    if not 1 <= plan["target_r"] <= lora.r:
        raise ConfigError(f"lora.adalora_target_r: got {plan['target_r']}, expected an integer in [1, lora.r={lora.r}]")
    for key in ("adalora_tinit", "adalora_tfinal"):
        if getattr(lora, key) is not None and getattr(lora, key) < 0:
            raise ConfigError(f"lora.{key}: got {getattr(lora, key)}, expected a non-negative number of steps")
    if plan["tinit"] + plan["tfinal"] >= max_steps:
        raise ConfigError(f"lora.adalora_tinit ({plan['tinit']}) + lora.adalora_tfinal ({plan['tfinal']}) must be "
                          f"less than train.max_steps ({max_steps}), leaving steps in which ranks are pruned")
    if plan["deltaT"] < 1:
        raise ConfigError(f"lora.adalora_delta_t: got {plan['deltaT']}, expected a positive number of steps")
    weight = plan["orth_reg_weight"]
    if not (math.isfinite(weight) and weight >= 0):
        raise ConfigError(f"lora.adalora_orth_reg_weight: got {weight}, expected a number >= 0")
