"""Adapter variants in training: the combinations refused before loading, and AdaLoRA's rank budget.

AdaLoRA (peft's AdaLoraModel) prunes ranks by importance scores built from each step's gradients:
`update_and_allocate(step)` must run after the optimizer step and before the gradients are zeroed, which
is the Trainer's `on_optimizer_step` event. Its scores and the rank pattern live outside the adapter's
weights, so a checkpoint carries them in `adalora_state.safetensors`, and the checkpoint's adapter is
written at full rank (masked ranks as zeros) so that resume loads into the same shapes the optimizer
state has; the final `adapter/` is written pruned, as peft does.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

from ..config_lora import adalora_schedule
from ..errors import ConfigError, UserError
from .guards import nonfinite_flag

STATE_FILE = "adalora_state.safetensors"
# peft 0.21's DoRA dequantizes the base weight at every forward and, on a CPU only, moves the int8 weight
# "back" with .to(), which makes a bitsandbytes Int8Params without its scales (SCB): the next forward then
# fails in bitsandbytes ("'NoneType' object has no attribute 'unsqueeze'"). GPU int8 skips that line.
DORA_INT8_CPU = "DoRA on an int8 base fails on a CPU from its second forward on (peft moves the int8 weight and " \
    "bitsandbytes loses its scales)"
_SCORES = ("ipt", "exp_avg_ipt", "exp_avg_unc")  # peft's RankAllocator dictionaries


def variant_fields(lora, max_steps: int) -> dict:
    """What an adapter's whispertune.json records of its variant (`lora`: the config's LoraConfig)."""
    if lora.variant != "adalora":
        return {"variant": lora.variant}
    return {"variant": "adalora", "adalora": adalora_schedule(lora, max_steps)}


def check_variant(plan) -> None:
    """Refuse, in one line, a variant the run's setup cannot train (`plan`: the run's `training.plan.Plan`)."""
    variant, preset = plan.config.lora.variant, plan.preset
    if variant == "dora" and preset is not None and preset.fp8_weights:
        raise ConfigError(f"lora.variant dora: train.speed_preset={preset.name} stores the frozen base weights in "
                          "float8, and DoRA reads them at every step for its weight norm; use speed preset fast or lean")
    if variant == "dora" and plan.config.quantization.mode == "int8" and plan.device == "cpu":
        raise ConfigError(f"lora.variant dora: {DORA_INT8_CPU}; use quantization.mode nf4 or none on a CPU")


class AdaLoraBudget(TrainerCallback):
    """Runs peft's AdaLoRA rank allocation after each optimizer step; saves and restores its state."""

    def __init__(self, peft_model, resume_from: str | None = None):
        self.peft_model = peft_model
        self.tuner = peft_model.base_model  # peft's AdaLoraModel
        self.resume_from = resume_from

    @property
    def _config(self):
        return self.tuner.peft_config[self.tuner.trainable_adapter_name]

    def on_train_begin(self, args, state, control, **kwargs):
        if self.resume_from:  # the Trainer has loaded the checkpoint's adapter by now
            self.restore(Path(self.resume_from))
        return control

    def on_optimizer_step(self, args, state, control, **kwargs):
        step = state.global_step + 1  # the step just taken, counted from 1 as the Trainer does after it
        config = self._config
        # Scores are taken from this step's gradients only before the final phase. A step the non-finite
        # guard skipped has none (or NaN under fp16): scoring it would poison the averages, so it is left out.
        if step < config.total_step - config.tfinal and not self._gradients_usable():
            return control
        self.tuner.update_and_allocate(step)
        return control

    def _gradients_usable(self) -> bool:
        params = [p for p in self.peft_model.parameters() if p.requires_grad]
        if any(p.grad is None for p in params):
            return False
        flag = nonfinite_flag(self.peft_model)
        return flag is None or not bool(flag.item())

    @contextlib.contextmanager
    def full_rank_save(self):
        """While a checkpoint's adapter is written: no rank pattern, so peft writes every rank (masked ones are
        zeros) and resume loads into the shapes the optimizer state has."""
        config = self._config
        pattern, config.rank_pattern = config.rank_pattern, None
        try:
            yield
        finally:
            config.rank_pattern = pattern

    def write_into(self, checkpoint: Path) -> None:
        allocator = self.tuner.rankallocator
        tensors = {f"{kind}/{name}": value.detach().contiguous().cpu()
                   for kind in _SCORES for name, value in getattr(allocator, kind).items()}
        pattern = {name: [bool(x) for x in (mask.view(-1).tolist() if torch.is_tensor(mask) else mask)]
                   for name, mask in (self._config.rank_pattern or {}).items()}
        save_file(tensors, str(checkpoint / STATE_FILE), metadata={"rank_pattern": json.dumps(pattern)})

    def restore(self, checkpoint: Path) -> None:
        path = checkpoint / STATE_FILE
        if not path.is_file():
            raise UserError(f"--resume {checkpoint.name}: no {STATE_FILE} (AdaLoRA's importance scores); this "
                            "checkpoint was not written by an AdaLoRA run of whispertune: start a new run")
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
        allocator = self.tuner.rankallocator
        params = dict(self.tuner.model.named_parameters())  # the names peft's allocator keys its scores by
        allocator.reset_ipt()
        for key, value in load_file(str(path)).items():
            kind, name = key.split("/", 1)
            getattr(allocator, kind)[name] = value.to(params[name].device)
        pattern = json.loads(metadata.get("rank_pattern", "{}"))
        self._config.rank_pattern = pattern or None
