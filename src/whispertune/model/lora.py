"""LoRA: prepare a (quantized) base for adapter training and wrap it with peft's adapters (LoRA or one of
its variants: DoRA, rsLoRA, AdaLoRA; see config_lora)."""

from __future__ import annotations

import types

from torch import nn

from ..config import LoraConfig
from ..config_lora import adalora_schedule
from ..errors import ConfigError
from .bnb import cast_inputs_at_int8_layers, is_quantized, needs_reentrant_checkpointing


def prepare_for_training(model: nn.Module, *, gradient_checkpointing: bool = True, prepare_kbit: bool = True) -> nn.Module:
    """Freeze the base; on quantized bases run peft's k-bit preparation (norms fp32, inputs require
    grad) with a dtype-correct int8 input path; gradient checkpointing if asked (reentrant on int8
    bases, see `needs_reentrant_checkpointing`, non-reentrant otherwise)."""
    from peft import prepare_model_for_kbit_training

    if is_quantized(model) and prepare_kbit:
        # checkpointing is enabled below, through today's (non-deprecated) transformers name
        prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        for param in model.parameters():
            param.requires_grad = False
    if gradient_checkpointing:
        reentrant = needs_reentrant_checkpointing(model)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": reentrant})
        # reentrant checkpointing needs a grad-carrying input into the first layer; cheap otherwise
        model.enable_input_require_grads()
    if is_quantized(model):
        cast_inputs_at_int8_layers(model)
    model.config.use_cache = False
    return model


def linear_module_names(model: nn.Module) -> list[str]:
    """Full names of every linear layer (plain or bitsandbytes-quantized)."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def add_lora(model: nn.Module, lora_cfg: LoraConfig, *, freeze_encoder: bool = False, verbose: bool = True,
             total_steps: int | None = None):
    """Wrap `model` with `lora_cfg.variant` adapters on `lora_cfg.target_modules` (decoder only if `freeze_encoder`).

    `total_steps`: the optimizer steps of the run, which AdaLoRA's rank schedule is laid out over (needed
    for that variant only). `task_type` stays unset: peft's SEQ_2_SEQ_LM wrapper passes `input_ids`, which
    Whisper rejects.
    """
    from peft import get_peft_model

    linear = linear_module_names(model)
    chosen = []
    for target in lora_cfg.target_modules:
        # a module name ("q_proj"), a dotted suffix ("encoder_attn.q_proj") or a full name
        hits = [n for n in linear if n == target or n.endswith("." + target)]
        if not hits:
            short = sorted({n.split(".")[-1] for n in linear})
            raise ConfigError(
                f"lora.target_modules: {target!r} matches no linear module of this model; "
                f"its linear modules are: {', '.join(short)}"
            )
        chosen += [n for n in hits if not freeze_encoder or ".decoder." in f".{n}."]
    if not chosen:
        raise ConfigError(f"lora.target_modules {lora_cfg.target_modules} match no decoder module (train.freeze_encoder)")
    peft_model = get_peft_model(model, peft_config(lora_cfg, sorted(set(chosen)), total_steps))
    if lora_cfg.variant == "adalora":
        _add_orthogonality_loss(peft_model)
    if verbose:
        print(trainable_line(peft_model))
    return peft_model


def peft_config(lora_cfg: LoraConfig, targets: list[str], total_steps: int | None):
    """peft's config for `lora_cfg.variant` on the full module names `targets`."""
    from peft import AdaLoraConfig
    from peft import LoraConfig as PeftLoraConfig

    common = dict(lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout, target_modules=targets, bias=lora_cfg.bias)
    if lora_cfg.variant == "adalora":
        if total_steps is None or total_steps <= 0:
            raise ConfigError("lora.variant adalora needs train.max_steps > 0 (its rank schedule's length)")
        return AdaLoraConfig(**common, **adalora_schedule(lora_cfg, total_steps))
    return PeftLoraConfig(r=lora_cfg.r, use_dora=lora_cfg.variant == "dora", use_rslora=lora_cfg.variant == "rslora",
                          **common)


def _add_orthogonality_loss(peft_model) -> None:
    """In training, route the forward through peft's AdaLoraModel.forward, which adds AdaLoRA's orthogonality
    penalty on A and B to Whisper's loss. A PeftModel without task_type calls the wrapped Whisper directly and
    skips it. Evaluation keeps Whisper's own loss (peft would add the penalty to any loss), so eval_loss
    compares across variants."""
    peft_model.forward = types.MethodType(_forward_with_penalty, peft_model)


def _forward_with_penalty(self, *args, **kwargs):
    if self.training:
        return self.base_model(*args, **kwargs)  # AdaLoraModel -> Whisper's forward, then + the penalty
    return type(self).forward(self, *args, **kwargs)


def trainable_line(peft_model) -> str:
    trainable, total = peft_model.get_nb_trainable_parameters()
    return f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}"
