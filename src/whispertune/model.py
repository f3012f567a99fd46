"""Model stage: load a Whisper base (full precision, int8 or nf4), its processor, prepare it for
k-bit training, add LoRA adapters, and count parameters / estimate memory without loading weights.

Any `AutoModelForSpeechSeq2Seq` checkpoint works (Hub id or local directory); `embedded:` names are
resolved to their local directory first. `trust_remote_code` is never set.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import Config, LoraConfig, ModelConfig, QuantizationConfig
from .errors import ConfigError, HardwareError, UserError

# Public Whisper dimensions (openai/whisper model card + config.json of each checkpoint), used by
# `dry_run` when the Hub cannot be reached. Columns: d_model, layers (encoder = decoder), attention
# heads, ffn dim, vocab size, mel bins.
KNOWN_ARCHITECTURES: dict[str, tuple[int, int, int, int, int, int]] = {
    "whisper-tiny": (384, 4, 6, 1536, 51865, 80),
    "whisper-base": (512, 6, 8, 2048, 51865, 80),
    "whisper-small": (768, 12, 12, 3072, 51865, 80),
    "whisper-medium": (1024, 24, 16, 4096, 51865, 80),
    "whisper-large": (1280, 32, 20, 5120, 51865, 80),
    "whisper-large-v2": (1280, 32, 20, 5120, 51865, 80),
    "whisper-large-v3": (1280, 32, 20, 5120, 51866, 128),
    "whisper-tiny.en": (384, 4, 6, 1536, 51864, 80),
    "whisper-base.en": (512, 6, 8, 2048, 51864, 80),
    "whisper-small.en": (768, 12, 12, 3072, 51864, 80),
    "whisper-medium.en": (1024, 24, 16, 4096, 51864, 80),
}

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_name(name: str) -> str:
    """Map `embedded:...` names to their local directory (other names unchanged)."""
    from .embedded import resolve_model_name

    resolved = resolve_model_name(name)
    # a path-looking name that does not exist would otherwise reach the Hub as a malformed repo id
    if resolved.startswith(("/", "./", "../", "~")) and not Path(resolved).expanduser().exists():
        raise UserError(f"model {name!r}: no such directory; use a local model directory, "
                        "a Hub id (e.g. openai/whisper-small) or embedded:whisper-base / embedded:tiny.en")
    return resolved


def resolve_device(device: str | None = None) -> str:
    """`None` -> "cuda" when a GPU is visible, else "cpu"; an unavailable CUDA request is refused."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HardwareError(f"device {device!r} requested but no CUDA GPU is visible; use device cpu")
    return device


def resolve_compute_dtype(name: str, device: str) -> torch.dtype:
    """`auto`: bf16 on GPUs that support it, fp16 on other GPUs, fp32 on CPU."""
    if name != "auto":
        return _DTYPES[name]
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def check_quantization(mode: str, device: str) -> None:
    """Fail at once with HardwareError when `mode` cannot run on `device`.

    Probes the real bitsandbytes kernels on the device (a 64-value tensor), so a backend without
    int8 or 4-bit support is caught before minutes of weight loading.
    """
    if mode == "none":
        return
    if importlib.util.find_spec("bitsandbytes") is None:
        raise HardwareError(
            f"quantization.mode={mode} needs bitsandbytes, which is not installed; "
            "install bitsandbytes or use quantization.mode=none"
        )
    import bitsandbytes.functional as bnbf

    probe = torch.linspace(-1, 1, 64, device=device, dtype=torch.float16).reshape(1, 64)
    try:
        if mode == "int8":
            bnbf.int8_vectorwise_quant(probe)
        else:
            bnbf.quantize_4bit(probe, quant_type="nf4")
    except (NotImplementedError, RuntimeError) as exc:
        works = []
        for other in ("int8", "nf4"):
            try:
                if other != mode:
                    check_quantization(other, device)
                    works.append(other)
            except HardwareError:
                pass
        raise HardwareError(
            f"quantization.mode={mode} is not supported by bitsandbytes on {device} ({exc}); "
            f"modes that run here: {', '.join(works + ['none'])}"
        ) from None


def check_device_map(quant_cfg: QuantizationConfig) -> None:
    """Refuse a CUDA `quantization.device_map` on a machine without a visible GPU."""
    if quant_cfg.mode != "none" and quant_cfg.device_map.startswith("cuda") and not torch.cuda.is_available():
        raise HardwareError(
            f"quantization.device_map={quant_cfg.device_map} with quantization.mode={quant_cfg.mode} needs a CUDA GPU "
            "and none is visible; accepted on this machine: auto, cpu"
        )


def bnb_config(quant_cfg: QuantizationConfig, device: str):
    """The `BitsAndBytesConfig` for int8 / nf4 (None for mode none)."""
    from transformers import BitsAndBytesConfig

    if quant_cfg.mode == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=quant_cfg.llm_int8_threshold)
    if quant_cfg.mode == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=resolve_compute_dtype(quant_cfg.compute_dtype, device),
            bnb_4bit_use_double_quant=quant_cfg.double_quant,
        )
    return None


def _language_code(language: str | None) -> str | None:
    if language is None:
        return None
    from .languages import resolve_language

    resolved = resolve_language(language)
    return resolved[1] if resolved else None


def load_processor(model_path: str, language: str | None, task: str, *, revision: str | None = None,
                   token: str | None = None):
    """The model's processor with the tokenizer's prefix set to `language` (name or code) and `task`."""
    from transformers import AutoProcessor

    path = resolve_name(model_path)
    try:
        processor = AutoProcessor.from_pretrained(path, revision=revision, token=token, trust_remote_code=False)
    except OSError as exc:
        raise UserError(f"cannot load the processor of {model_path!r}: {exc}") from None
    code = _language_code(language)
    if code is not None:
        processor.tokenizer.set_prefix_tokens(language=code, task=task)
    else:
        processor.tokenizer.set_prefix_tokens(task=task)
    return processor


def load_base(model_cfg: ModelConfig, quant_cfg: QuantizationConfig, *, for_training: bool,
              device: str | None = None, dtype: torch.dtype | None = None):
    """Load the base model (by Hub id or local dir) in full precision, int8 or nf4.

    `dtype` (mode none): the dtype of the weights; default fp32 on CPU, else the compute dtype. Training
    passes its precision's dtype: with LoRA the base is frozen, so it needs no fp32 master copy (that copy
    cost 5.8 GiB on large-v2, plus a bf16 copy of every weight made by autocast on each forward).
    Training: `use_cache` off, no forced decoder ids / suppressed tokens; language and task stay on
    the generation config for evaluation by generation.
    """
    from transformers import AutoModelForSpeechSeq2Seq

    device = resolve_device(device)
    check_quantization(quant_cfg.mode, device)
    check_device_map(quant_cfg)
    compute = resolve_compute_dtype(quant_cfg.compute_dtype, device)
    kwargs: dict[str, Any] = {
        "revision": model_cfg.revision,
        "token": model_cfg.token,
        "attn_implementation": model_cfg.attn_implementation,
        "trust_remote_code": False,
        "use_safetensors": True,
    }
    if quant_cfg.mode == "none":
        kwargs["dtype"] = dtype or (torch.float32 if device == "cpu" else compute)
    else:
        kwargs["quantization_config"] = bnb_config(quant_cfg, device)
        # int8 layers take fp16 inputs; non-quantized weights in the compute dtype (fp32 on CPU)
        kwargs["dtype"] = compute if quant_cfg.mode == "nf4" or device == "cpu" else torch.float16
        kwargs["device_map"] = {"": "cpu"} if device == "cpu" else quant_cfg.device_map
    name = resolve_name(model_cfg.name_or_path)
    try:
        model = AutoModelForSpeechSeq2Seq.from_pretrained(name, **kwargs)
    except OSError as exc:
        raise UserError(f"cannot load model {model_cfg.name_or_path!r}: {exc}") from None
    except ImportError as exc:  # flash_attention_2 or bitsandbytes backend missing
        raise HardwareError(f"cannot load {model_cfg.name_or_path!r} with this setup: {exc}") from None
    if quant_cfg.mode == "none":
        model.to(device)
    gen = model.generation_config
    code = _language_code(model_cfg.language)
    if code is not None and getattr(gen, "lang_to_id", None):
        gen.language = code
    gen.task = model_cfg.task if getattr(gen, "task_to_id", None) else None
    if for_training:
        model.config.use_cache = False
        gen.forced_decoder_ids = None
        gen.suppress_tokens = []
        gen.begin_suppress_tokens = None
    return model


def is_quantized(model: nn.Module) -> bool:
    return bool(getattr(model, "is_loaded_in_8bit", False) or getattr(model, "is_loaded_in_4bit", False))


def _cast_to_fp16(module: nn.Module, args: tuple) -> tuple:
    return (args[0].to(torch.float16), *args[1:])


def _cast_back(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.to(module._whispertune_out_dtype)


def _remember_dtype(module: nn.Module, args: tuple) -> None:
    module._whispertune_out_dtype = args[0].dtype


def cast_inputs_at_int8_layers(model: nn.Module) -> int:
    """Feed int8 layers fp16 inputs and hand their outputs back in the caller's dtype.

    `prepare_model_for_kbit_training` keeps norms in fp32, so fp32 activations reach bitsandbytes'
    int8 matmul, which casts them to fp16 itself and logs a warning on every call. Casting here is the
    same arithmetic, stated explicitly; the rest of the network (norms, LoRA) stays in fp32.
    """
    import bitsandbytes as bnb

    count = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear8bitLt) and not getattr(module, "_whispertune_cast", False):
            module.register_forward_pre_hook(_remember_dtype)
            module.register_forward_pre_hook(_cast_to_fp16)
            module.register_forward_hook(_cast_back)
            module._whispertune_cast = True
            count += 1
    return count


def needs_reentrant_checkpointing(model: nn.Module) -> bool:
    """True for int8 (bitsandbytes) bases.

    bitsandbytes' int8 matmul keeps its fp16 input for backward as a plain attribute of its autograd
    context (`ctx.tensors`), not through `save_for_backward`, so non-reentrant checkpointing, which works
    by intercepting saved tensors, cannot free it: every int8 layer's input stays alive, and the reference
    config took 15.5 GiB instead of the recipe's 5.4 on large-v2. Reentrant checkpointing runs the forward
    without autograd, so nothing is kept (what peft's k-bit preparation uses by default).
    """
    return bool(getattr(model, "is_loaded_in_8bit", False))


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


def add_lora(model: nn.Module, lora_cfg: LoraConfig, *, freeze_encoder: bool = False, verbose: bool = True):
    """Wrap `model` with LoRA adapters on `lora_cfg.target_modules` (decoder only if `freeze_encoder`).

    `task_type` stays unset: peft's SEQ_2_SEQ_LM wrapper passes `input_ids`, which Whisper rejects.
    """
    from peft import LoraConfig as PeftLoraConfig
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
    peft_cfg = PeftLoraConfig(
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        target_modules=sorted(set(chosen)),
        bias=lora_cfg.bias,
    )
    peft_model = get_peft_model(model, peft_cfg)
    if verbose:
        print(trainable_line(peft_model))
    return peft_model


def trainable_line(peft_model) -> str:
    trainable, total = peft_model.get_nb_trainable_parameters()
    return f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}"


@dataclass
class DryRun:
    trainable: int
    total: int
    memory_estimate_gib: dict[str, float]
    config_source: str = ""  # the model path, or a note that the built-in table was used

    def summary(self) -> str:
        lines = [f"trainable params: {self.trainable:,} || all params: {self.total:,} || "
                 f"trainable%: {100 * self.trainable / self.total:.4f}", f"config: {self.config_source}"]
        lines += [f"GPU memory estimate ({k}): {v:.2f} GiB" for k, v in self.memory_estimate_gib.items()]
        return "\n".join(lines)


def model_config(cfg: ModelConfig):
    """(config, source): AutoConfig from the Hub or a local dir; the known-architectures table if unreachable."""
    from transformers import AutoConfig, WhisperConfig

    name = resolve_name(cfg.name_or_path)
    try:
        return AutoConfig.from_pretrained(name, revision=cfg.revision, token=cfg.token, trust_remote_code=False), name
    except (OSError, ValueError) as exc:
        key = name.rstrip("/").split("/")[-1]
        if key not in KNOWN_ARCHITECTURES:
            raise UserError(f"cannot read the config of {cfg.name_or_path!r} ({exc}); "
                            f"offline, only these are known: {', '.join(KNOWN_ARCHITECTURES)}") from None
        d, layers, heads, ffn, vocab, mels = KNOWN_ARCHITECTURES[key]
        config = WhisperConfig(
            d_model=d, encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=heads,
            decoder_attention_heads=heads, encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, vocab_size=vocab,
            num_mel_bins=mels, max_source_positions=1500, max_target_positions=448,
        )
        return config, f"built-in table for {key} (config.json unreachable: {type(exc).__name__})"


def memory_estimate(model: nn.Module, cfg: Config, trainable: int) -> dict[str, float]:
    """Rough GPU memory for training, in GiB. Formula:

    weights  = quantized linear params x (1 byte int8 | 0.5 byte + 4 bytes per 64-block nf4 | 2 bytes)
               + other params x 2 bytes (fp16/bf16 norms, embeddings, convs)
    lora     = trainable x 16 bytes (fp32 weight + grad + 2 AdamW moments)
    activations (16-bit) per layer and clip (Korthikanti et al. 2022): s*h*(34 + 5*a*s/h) bytes,
               encoder s=1500, decoder s=generation.train_generation_max_length; with gradient
               checkpointing only each layer's input (2*s*h bytes) plus one full layer are kept.
    """
    conf = model.config
    quant = cfg.quantization.mode
    skip = {id(m) for m in [model.get_output_embeddings()] if m is not None}
    linear = sum(m.weight.numel() for n, m in model.named_modules() if isinstance(m, nn.Linear) and id(m) not in skip)
    base_total = sum(p.numel() for p in model.parameters()) - trainable
    per_linear = {"int8": 1.0, "nf4": 0.5 + 4 / 64, "none": 2.0}[quant]
    weights = linear * per_linear + (base_total - linear) * 2 + (conf.d_model * 4 if quant == "int8" else 0)
    lora = trainable * 16

    def layer_act(s: int, h: int, a: int) -> float:
        return s * h * (34 + 5 * a * s / h)

    s_enc, s_dec, h = conf.max_source_positions, cfg.generation.train_generation_max_length, conf.d_model
    enc_full = layer_act(s_enc, h, conf.encoder_attention_heads)
    dec_full = layer_act(s_dec, h, conf.decoder_attention_heads)
    if cfg.train.gradient_checkpointing:
        act = 2 * h * (s_enc * conf.encoder_layers + s_dec * conf.decoder_layers) + max(enc_full, dec_full)
    else:
        act = enc_full * conf.encoder_layers + dec_full * conf.decoder_layers
    act *= cfg.train.per_device_batch_size
    gib = 1024 ** 3
    parts = {"weights": weights / gib, "lora+optimizer": lora / gib, "activations": act / gib}
    parts["total"] = sum(parts.values())
    return parts


def dry_run(cfg: Config) -> DryRun:
    """Build the model from its config with empty (meta) weights, apply LoRA, count and estimate."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForSpeechSeq2Seq

    config, source = model_config(cfg.model)
    with init_empty_weights():
        model = AutoModelForSpeechSeq2Seq.from_config(config, trust_remote_code=False)
    # under init_empty_weights proj_out comes out untied (and tie_weights inside the context does
    # nothing): tie it to the token embedding as loading a checkpoint would, or it counts twice
    model.tie_weights()
    with init_empty_weights():
        peft_model = add_lora(model, cfg.lora, freeze_encoder=cfg.train.freeze_encoder, verbose=False)
    trainable, total = peft_model.get_nb_trainable_parameters()
    memory = memory_estimate(peft_model.base_model.model, cfg, trainable)
    return DryRun(trainable=trainable, total=total, memory_estimate_gib=memory, config_source=source)
