"""The model-level changes of a speed preset (`presets.py`), made on a model that carries its LoRA
adapters: which layers are checkpointed, the frozen encoder run without autograd, float8 frozen
weights, LoRA dropout and the encoder's output in the autocast dtype, regional torch.compile (each encoder/decoder layer compiled on
its own) and checkpointed encoder inputs kept in host memory (`offload.py`)."""

from __future__ import annotations

import functools

import torch

from ..errors import ConfigError
from ..model.fp8 import convert_frozen_linears
from .offload import EncoderOffload, run_from_host_copy
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


class AutocastDropout(torch.nn.Dropout):
    """LoRA's dropout on the input cast to the autocast dtype (bf16), when autocast is on.

    peft hands each LoRA branch the layer input cast to the adapter weights' dtype (fp32), and under autocast
    the LayerNorm before it already gives fp32: the dropout (an ATen kernel in compiled layers, see
    COMPILE_OPTIONS) then reads and writes fp32 tensors of (batch, 1500, d_model) for every encoder LoRA
    layer and every decoder cross-attention one, before autocast casts the result to bf16 for the A matrix.
    Casting first gives the A matrix the same bf16 values up to one rounding (x*1/(1-p) rounded once from bf16
    instead of from fp32) at half the traffic; the masks are drawn the same way. Without autocast
    (evaluation, CPU fp32) it is nn.Dropout.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(_in_autocast_dtype(x))


def _in_autocast_dtype(x: torch.Tensor) -> torch.Tensor:
    """`x` cast to the autocast dtype when autocast is on for its device, else `x` itself."""
    if torch.is_autocast_enabled(x.device.type):
        return x.to(torch.get_autocast_dtype(x.device.type))
    return x


def _dropout_in_autocast_dtype(layers: list[torch.nn.Module]) -> int:
    """Every LoRA dropout (peft's `lora_dropout` ModuleDict entries, nn.Dropout) in `layers` as an AutocastDropout;
    returns how many were replaced (p = 0 is an nn.Identity in peft and stays)."""
    replaced = 0
    for layer in layers:
        for module in layer.modules():
            for name, dropout in getattr(module, "lora_dropout", {}).items():
                if type(dropout) is torch.nn.Dropout:
                    module.lora_dropout[name] = AutocastDropout(dropout.p)
                    replaced += 1
    return replaced


def encoder_output_in_autocast_dtype(core: torch.nn.Module) -> None:
    """The encoder's final LayerNorm gives its output in the autocast dtype (bf16) when autocast is on.

    Under autocast that LayerNorm gives fp32, and each decoder layer's cross-attention k/v projections (and
    their LoRA branches) cast it again: 64+ reads of a (batch, 1500, d_model) fp32 tensor, and in backward as
    many bf16 gradients cast to fp32 and summed by autograd between the compiled layers. One cast here gives
    the projections the same bf16 values; what changes is that autograd sums the decoder's gradients for the
    encoder output in bf16. Without autocast (evaluation, CPU fp32) the output is unchanged.
    """
    core.encoder.layer_norm.register_forward_hook(lambda module, args, output: _in_autocast_dtype(output))


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
    if preset.lora_dropout_autocast:
        _dropout_in_autocast_dtype(list(core.encoder.layers) + list(core.decoder.layers))
    if preset.encoder_output_autocast:
        encoder_output_in_autocast_dtype(core)
    offload = None
    if preset.offload_encoder_inputs:
        if preset.checkpointing not in ("all", "encoder") or preset.reentrant:
            raise ConfigError(f"preset {preset.name!r}: offload_encoder_inputs needs non-reentrant checkpointing of the encoder")
        offload = EncoderOffload(core.encoder.layers[0])
    if preset.compile_layers or offload is not None:
        _install_layer_forwards(core, preset, offload)
    return model


def _install_layer_forwards(core: torch.nn.Module, preset: SpeedPreset, offload: EncoderOffload | None) -> None:
    """Each layer's forward replaced: compiled (if the preset compiles), checkpointed by torch.utils.checkpoint
    (if the layer has it on), its input kept in host memory (encoder layers, with `offload`).

    Inductor in torch 2.11 fails ("Node add_454 was invalid, but is output") on a checkpoint traced
    inside the compiled region, so the compiled function is the layer's plain forward and
    torch.utils.checkpoint wraps it. One compiled function per layer class: the layer is an argument,
    so dynamo reuses one graph for the 32 identical layers.
    """
    compiled: dict[tuple[type, bool], object] = {}
    encoder_layers = set(core.encoder.layers)
    for layer in list(core.encoder.layers) + list(core.decoder.layers):
        checkpointed = bool(getattr(layer, "gradient_checkpointing", False))
        key = (type(layer), checkpointed)
        if key not in compiled:
            compiled[key] = _compiled_forward(type(layer), checkpointed, preset.compile_mode) if preset.compile_layers \
                else type(layer).forward
        layer.gradient_checkpointing = False
        layer_offload = offload if checkpointed and layer in encoder_layers else None
        layer.forward = _layer_forward(layer, compiled[key], checkpointed, preset.reentrant, layer_offload)


# Inductor options for every compiled layer. fallback_random: LoRA's dropout draws its mask with ATen's
# dropout kernel instead of inductor's generated one, which computes a whole Philox round per element (on an
# H200 the encoder's LayerNorm + two LoRA dropouts took 1.4 ms per layer at batch 32, ~12 % of a `fast`
# step with their backward; benchmarks/NOTES.md). The masks stay Bernoulli(p), drawn from torch's generator.
COMPILE_OPTIONS = {"fallback_random": True}


def _compiled_forward(layer_class: type, checkpointed: bool, mode: str):
    # torch.compile takes a mode or options, not both: the mode's own options come first
    options = {**torch._inductor.list_mode_options(mode), **COMPILE_OPTIONS}
    if checkpointed and mode == "default":
        # Inductor pads the strides of some buffers (comprehensive_padding: (12, 1500, 1) got stride 1504),
        # and on an H200 with torch 2.11 the backward of a checkpointed layer then met the recomputed,
        # unpadded tensor: "expected size 12==12, stride 1500==1504". Unpadded layouts both ways.
        options["comprehensive_padding"] = False
    return torch.compile(layer_class.forward, options=options)


def _layer_forward(layer: torch.nn.Module, fn, checkpointed: bool, reentrant: bool,
                   offload: EncoderOffload | None = None):
    eager = type(layer).forward

    def forward(*args, **kwargs):
        if not layer.training:
            # Evaluation by generation runs one decoder step per token with a growing KV cache: every
            # step a new shape for the compiled graph. Eager is what generation is tuned for.
            return eager(layer, *args, **kwargs)
        if checkpointed and torch.is_grad_enabled():
            if offload is not None:
                hidden, *rest = args
                copy = offload.keep(layer, hidden)
                marker = hidden.new_empty(0)
                out = torch.utils.checkpoint.checkpoint(run_from_host_copy, fn, layer, copy, marker, *rest,
                                                        use_reentrant=False, **kwargs)
                copy.forward_done()
                return out
            return torch.utils.checkpoint.checkpoint(fn, layer, *args, use_reentrant=reentrant, **kwargs)
        return fn(layer, *args, **kwargs)

    return forward
