"""Load a Whisper base (full precision, int8 or nf4) and its processor.

Any `AutoModelForSpeechSeq2Seq` checkpoint works (Hub id or local directory). The loaders take what the
caller resolved once (training's plan, `load_for_inference`): a model path from `resolve_name` (`embedded:`
names mapped to their local directory) and a Whisper language code. `trust_remote_code` is never set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig, QuantizationConfig
from ..errors import HardwareError, UserError, reading
from ..pretrained.embedded import resolve_model_name
from .bnb import bnb_config, check_device_map, check_quantization
from .device import rank_device_map, resolve_compute_dtype, resolve_device
from .local_dirs import check_model_dir, check_processor_dir


def resolve_name(name: str) -> str:
    """Map `embedded:...` names to their local directory (other names unchanged)."""
    resolved = resolve_model_name(name)
    # a path-looking name that does not exist would otherwise reach the Hub as a malformed repo id
    if resolved.startswith(("/", "./", "../", "~")) and not Path(resolved).expanduser().exists():
        raise UserError(f"model {name!r}: no such directory; use a local model directory, "
                        "a Hub id (e.g. openai/whisper-small) or embedded:whisper-base / embedded:tiny.en")
    return resolved


def load_processor(path: str, language: str | None, task: str, *, revision: str | None = None,
                   token: str | None = None):
    """The processor of the model at `path` (resolved: `resolve_name`) with the tokenizer's prefix set to
    `language` (a Whisper code, or None) and `task`."""
    from transformers import AutoProcessor

    check_processor_dir(Path(path))
    with reading(f"the processor of {path}"):
        processor = AutoProcessor.from_pretrained(path, revision=revision, token=token, trust_remote_code=False)
    if language is not None:
        processor.tokenizer.set_prefix_tokens(language=language, task=task)
    else:
        processor.tokenizer.set_prefix_tokens(task=task)
    return processor


def load_base(model_cfg: ModelConfig, quant_cfg: QuantizationConfig, *, for_training: bool,
              device: str | None = None, dtype: torch.dtype | None = None):
    """Load the base model in full precision, int8 or nf4.

    `model_cfg` as resolved by the caller: `name_or_path` a local directory or Hub id (`resolve_name`),
    `language` a Whisper code or None. `device`: None picks one (`resolve_device`).

    `dtype` (mode none): the dtype of the weights; default fp32 on CPU, else the compute dtype. Training
    passes its precision's dtype: with LoRA the base is frozen, so it needs no fp32 master copy (that copy
    cost 5.8 GiB on large-v2, plus a bf16 copy of every weight made by autocast on each forward).
    Training: `use_cache` off, no forced decoder ids / suppressed tokens; language and task stay on
    the generation config for evaluation by generation.
    """
    from transformers import AutoModelForSpeechSeq2Seq

    device = device if device is not None else resolve_device()
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
        kwargs["quantization_config"] = bnb_config(quant_cfg, compute)
        # int8 layers take fp16 inputs; non-quantized weights in the compute dtype (fp32 on CPU)
        kwargs["dtype"] = compute if quant_cfg.mode == "nf4" or device == "cpu" else torch.float16
        kwargs["device_map"] = {"": "cpu"} if device == "cpu" else rank_device_map(quant_cfg.device_map)
    check_model_dir(Path(model_cfg.name_or_path))
    try:
        with reading(f"model {model_cfg.name_or_path}"):
            model = AutoModelForSpeechSeq2Seq.from_pretrained(model_cfg.name_or_path, **kwargs)
    except ImportError as exc:  # flash_attention_2 or bitsandbytes backend missing
        raise HardwareError(f"cannot load {model_cfg.name_or_path!r} with this setup: {exc}") from None
    if quant_cfg.mode == "none":
        model.to(device)
    gen = model.generation_config
    if model_cfg.language is not None and getattr(gen, "lang_to_id", None):
        gen.language = model_cfg.language
    gen.task = model_cfg.task if getattr(gen, "task_to_id", None) else None
    if for_training:
        model.config.use_cache = False
        gen.forced_decoder_ids = None
        gen.suppress_tokens = []
        gen.begin_suppress_tokens = None
    return model
