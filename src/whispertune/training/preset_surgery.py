"""The model-level changes of a speed preset (`presets.py`), made on a model that carries its LoRA
adapters: which layers are checkpointed, the frozen encoder run without autograd, float8 frozen
weights, and regional torch.compile (each encoder/decoder layer compiled on its own)."""

from __future__ import annotations

import functools

import torch

from ..errors import ConfigError
from ..model.fp8 import convert_frozen_linears
from .presets import SpeedPreset


def _whisper_core(model: torch.nn.Module) -> torch.nn.Module:
    """The WhisperModel inside a (peft-wrapped) WhisperForConditionalGeneration."""
    for module in model.modules():
        if hasattr(module, "encoder") and hasattr(module, "decoder"):
            return module
    raise ConfigError("prepare_model: not a Whisper encoder-decoder model")


def _set_checkpointing(core: torch.nn.Module, policy: str, reentrant: bool) -> None:
    enc, dec = list(core.encoder.layers), list(core.decoder.layers)
    chosen = {
        "none": [],
        "all": enc + dec,
        "encoder": enc,  # the encoder holds ~97 % of the activations (1500 frames vs ~40 tokens)
        "alternate": enc[::2] + dec[::2],
    }[policy]
    ckpt = functools.partial(torch.utils.checkpoint.checkpoint, use_reentrant=reentrant)
    for layer in enc + dec:
        layer.gradient_checkpointing = layer in chosen
        layer._gradient_checkpointing_func = ckpt


def _freeze_encoder(core: torch.nn.Module) -> None:
    """Run the encoder without autograd: nothing in it trains, so no activations are kept for backward."""
    encoder = core.encoder
    for p in encoder.parameters():
        p.requires_grad_(False)
    forward = encoder.forward

    @functools.wraps(forward)
    def no_grad_forward(*args, **kwargs):
        with torch.no_grad():
            return forward(*args, **kwargs)

    encoder.forward = no_grad_forward


def prepare_model(model: torch.nn.Module, preset: SpeedPreset) -> torch.nn.Module:
    """Model-level changes of `preset`, on a model that already carries its LoRA adapters.

    The model is changed in place and returned. `recipe` is left to peft's k-bit preparation.
    """
    core = _whisper_core(model)
    if preset.freeze_encoder:
        if any(p.requires_grad for p in core.encoder.parameters()):
            raise ConfigError(f"preset {preset.name!r} needs LoRA on the decoder only (train.freeze_encoder: true)")
        _freeze_encoder(core)
    if preset.checkpointing != "none":
        # Checkpointing needs a grad-carrying input into the first layer only with the reentrant flavour.
        _set_checkpointing(core, preset.checkpointing, preset.reentrant)
        model.config.use_cache = False
    if preset.fp8_weights:
        convert_frozen_linears(list(core.encoder.layers) + list(core.decoder.layers))
    if preset.compile_layers:
        _compile_layers(list(core.encoder.layers) + list(core.decoder.layers), preset.reentrant, preset.compile_mode)
    return model


def _compile_layers(layers: list[torch.nn.Module], reentrant: bool, mode: str) -> None:
    """Compile each layer's forward; checkpointing (if the layer has it on) moves outside the compiled code.

    Inductor in torch 2.11 fails ("Node add_454 was invalid, but is output") on a checkpoint traced
    inside the compiled region, so the compiled function is the layer's plain forward and
    torch.utils.checkpoint wraps it. One compiled function per layer class: the layer is an argument,
    so dynamo reuses one graph for the 32 identical layers.
    """
    compiled: dict[tuple[type, bool], object] = {}
    for layer in layers:
        checkpointed = bool(getattr(layer, "gradient_checkpointing", False))
        key = (type(layer), checkpointed)
        if key not in compiled:
            if checkpointed and mode == "default":
                # Inductor pads the strides of some buffers (comprehensive_padding: (12, 1500, 1) got stride 1504),
                # and on an H200 with torch 2.11 the backward of a checkpointed layer then met the recomputed,
                # unpadded tensor: "expected size 12==12, stride 1500==1504". Unpadded layouts both ways.
                compiled[key] = torch.compile(type(layer).forward, options={"comprehensive_padding": False})
            else:
                compiled[key] = torch.compile(type(layer).forward, mode=mode)
        layer.gradient_checkpointing = False
        layer.forward = _layer_forward(layer, compiled[key], checkpointed, reentrant)


def _layer_forward(layer: torch.nn.Module, fn, checkpointed: bool, reentrant: bool):
    eager = type(layer).forward

    def forward(*args, **kwargs):
        if not layer.training:
            # Evaluation by generation runs one decoder step per token with a growing KV cache: every
            # step a new shape for the compiled graph. Eager is what generation is tuned for.
            return eager(layer, *args, **kwargs)
        if checkpointed and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(fn, layer, *args, use_reentrant=reentrant, **kwargs)
        return fn(layer, *args, **kwargs)

    return forward
