"""Load a Whisper base, optionally with a LoRA adapter on top, ready for generation (eval mode).

The base is a Hub id, a local directory or an `embedded:` name. With an adapter and no `model`, the
base is read from the adapter's `whispertune.json` (written by `whispertune train`) or, failing that,
from `base_model_name_or_path` in its `adapter_config.json` (what peft writes). Language and task
default to the adapter's `whispertune.json`. The processor comes from the adapter directory when it
carries processor files (training saves them there), else from the base.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ModelConfig, QuantizationConfig
from ..errors import ConfigError, UserError, reading
from ..model.parts import base_model, input_dtype
from .options import TASKS, LoadOptions

ADAPTER_META = "whispertune.json"
_PROCESSOR_FILES = ("preprocessor_config.json", "tokenizer.json", "tokenizer_config.json")
_BASE_KEYS = ("base_model", "base_model_name_or_path", "model")  # whispertune.json keys, first found wins


@dataclass
class Loaded:
    """A model in eval mode, its processor, and what was loaded (`info`: base, adapter, language, ...)."""

    model: Any
    processor: Any
    info: dict[str, Any] = field(default_factory=dict)


def _read_json_file(adapter: str, filename: str) -> dict[str, Any] | None:
    """`filename` from a local adapter directory or a Hub adapter repo; None when it does not exist."""
    local = Path(adapter)
    if local.is_dir():
        path = local / filename
        if not path.is_file():
            return None
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            path = Path(hf_hub_download(adapter, filename))
        except EntryNotFoundError:
            return None
        except Exception as exc:  # offline, unknown repo, gated: one clear line
            raise UserError(f"adapter {adapter!r}: not a local directory and not readable from the Hub ({exc})") from None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def adapter_metadata(adapter: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(adapter_config.json, whispertune.json or {}) of an adapter directory or Hub repo."""
    config = _read_json_file(adapter, "adapter_config.json")
    if config is None:
        raise UserError(f"{adapter}: no adapter_config.json; is this a LoRA adapter directory?")
    return config, _read_json_file(adapter, ADAPTER_META) or {}


def base_of_adapter(config: dict[str, Any], meta: dict[str, Any], adapter: str) -> str:
    """The adapter's base model: whispertune.json first (keeps `embedded:` names portable), then peft's."""
    for key in _BASE_KEYS:
        if meta.get(key):
            return str(meta[key])
    if config.get("base_model_name_or_path"):
        return str(config["base_model_name_or_path"])
    raise UserError(f"{adapter}: its config names no base model; pass --model")


def generate_kwargs(loaded: Loaded) -> dict[str, Any]:
    """`language=`/`task=` for `model.generate` (never forced decoder ids).

    English-only checkpoints have no language or task tokens: passing either would fail there.
    """
    gen = loaded.model.generation_config
    kwargs: dict[str, Any] = {}
    if getattr(gen, "lang_to_id", None) and loaded.info.get("language"):
        kwargs["language"] = loaded.info["language"]
    if getattr(gen, "task_to_id", None):
        kwargs["task"] = loaded.info.get("task") or "transcribe"
    return kwargs


def _has_processor(path: str) -> bool:
    return Path(path).is_dir() and any((Path(path) / f).is_file() for f in _PROCESSOR_FILES)


def load_for_inference(model: str | None = None, adapter: str | None = None,
                       options: LoadOptions = LoadOptions()) -> Loaded:
    """Load `model` (+ `adapter`) for inference as `options` say (see inference/options.py)."""
    # lazy: `whispertune --help` imports this module (commands/export -> interop), and these pull in transformers
    from ..languages import language_code
    from ..model.bnb import cast_inputs_at_int8_layers
    from ..model.device import resolve_device
    from ..model.loading import load_base, load_processor, resolve_name

    quantization = options.quantization
    meta: dict[str, Any] = {}
    merged = False
    if adapter is not None:
        local = Path(adapter)
        if (local / "adapter_config.json").is_file() and not (local / "adapter_model.safetensors").is_file():
            raise UserError(f"{adapter}: no adapter_model.safetensors (only safetensors adapters are loaded)")
        adapter_config, meta = adapter_metadata(adapter)
        if model is None:
            model = base_of_adapter(adapter_config, meta, adapter)
    if model is None:
        raise UserError("no model given: pass a model (Hub id, directory or embedded:whisper-base) or an adapter")
    language = options.language if options.language is not None else meta.get("language")
    task = options.task or meta.get("task") or "transcribe"
    if task not in TASKS:
        raise UserError(f"{adapter}: {ADAPTER_META} names task {task!r}; expected 'transcribe' or 'translate'")
    # resolved once here; the loaders below take the results
    code = language_code(language)
    device = resolve_device(options.device)
    if adapter is not None and adapter_config.get("use_dora") and quantization == "int8" and device == "cpu":
        # the failure training/variants.py refuses too (peft's DoRA re-wraps the int8 weight on a CPU)
        raise UserError(f"{adapter}: a DoRA adapter does not run on an int8 base on a CPU (bitsandbytes loses "
                        "the int8 scales); load it with quantization none or nf4")
    path = resolve_name(model)
    model_cfg = ModelConfig(name_or_path=path, language=code, task=task)
    base = load_base(model_cfg, QuantizationConfig(mode=quantization), for_training=False, device=device)
    if quantization == "int8":
        # fp32 activations would reach the int8 matmuls, which cast them to fp16 and warn on every call
        cast_inputs_at_int8_layers(base)
    processor_path = adapter if adapter is not None and _has_processor(adapter) else path
    processor = load_processor(processor_path, code, task)
    net = base
    if adapter is not None:
        from peft import PeftModel

        try:
            with reading(f"adapter {adapter}"):  # a truncated adapter_model.safetensors names the adapter
                net = PeftModel.from_pretrained(base, adapter, is_trainable=False)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load adapter {adapter!r} on {model!r}: {exc}") from None
        merged = quantization == "none" and next(base.parameters()).device.type == "cuda"
        if merged:
            # On a GPU decoding is launch-bound: one matmul per adapted projection instead of three (base,
            # A, B). Kept unmerged on CPU (fp32 results stay exactly those of training's forward) and on
            # quantized bases, whose weights cannot absorb the adapter.
            net = net.merge_and_unload()
    net.eval()
    if options.batch_invariant:
        from .batch_invariant import make_batch_invariant

        make_batch_invariant(net)  # CUDA only; a no-op elsewhere
    info = {
        "model": model,
        "adapter": adapter,
        "language": code,
        "task": task,
        "quantization": quantization,
        "device": str(next(net.parameters()).device),
        "adapter_merged": adapter is not None and merged,
        "batch_invariant": options.batch_invariant and device.startswith("cuda"),
    }
    return Loaded(model=net, processor=processor, info=info)


def check_decoding(loaded: Loaded, max_new_tokens: int, num_beams: int = 1) -> None:
    """Refuse decoding settings the loaded model cannot run, before any audio is read (ConfigError).

    Whisper's decoder has `max_target_positions` (448) places, and its prompt (start, language, task,
    no-timestamps: those the model has) takes some of them.
    """
    gen = loaded.model.generation_config
    prompt = 1 + bool(getattr(gen, "lang_to_id", None)) + bool(getattr(gen, "task_to_id", None)) + (
        getattr(gen, "no_timestamps_token_id", None) is not None)
    limit = int(base_model(loaded.model).config.max_target_positions) - prompt
    if not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= limit:
        raise ConfigError(f"max_new_tokens: got {max_new_tokens!r}, expected an integer in [1, {limit}] for this "
                          f"model ({limit + prompt} decoder positions, {prompt} of them taken by its prompt)")
    if not isinstance(num_beams, int) or num_beams < 1:
        raise ConfigError(f"num_beams: got {num_beams!r}, expected a positive integer (1: greedy)")


@dataclass
class Generated:
    """Decoded texts plus the full token sequences (prefix included) and the language token of each."""

    texts: list[str]
    sequences: list[list[int]]
    languages: list[str | None]
    new_tokens: int = 0  # tokens generated for the batch (up to and including each end token)
    # with options return_segments=True: transformers' segments of each clip ({"start", "end", "tokens"}, in
    # seconds from the clip's start), split at the timestamp tokens the model emitted
    segments: list[list[dict[str, Any]]] | None = None


def generate_batch(
    loaded: Loaded,
    inputs: np.ndarray | torch.Tensor,
    *,
    encoded: bool = False,
    max_new_tokens: int = 255,
    num_beams: int = 1,
    autocast: bool = True,
    options: dict[str, Any] | None = None,
    limits: Sequence[int] | None = None,
) -> Generated:
    """Greedy (or beam) generation for a batch of (B, mel, 3000) log-Mel features, no gradients.

    `limits`: each clip's own cap on new tokens (at most `max_new_tokens`): the batch decodes to the largest and
    each clip's tokens are cut at its own, which is what decoding it alone with that cap returns (a greedy token
    does not depend on the ones after it), so a clip's output does not depend on the clips beside it. Not with
    `return_segments` (transformers' segments would outlive the cut).

    `encoded`: `inputs` are encoder outputs (B, frames, d_model) instead, e.g. those cached for frozen-encoder
    training (training/encoder_cache.py): the encoder is not run again. `options` go to `model.generate` as
    well: `do_sample`/`temperature` (sampling; the repetition guard's fallback), `prompt_ids` (previous-text
    conditioning, never part of the output), `return_timestamps=True` (the sequences then hold the timestamp
    tokens and a prompt without `<|notimestamps|>`), with `return_segments=True` also the segments.

    Quantized bases on CUDA run under `torch.autocast` in their compute dtype (fp16 inputs reach the
    int8 matmuls as bitsandbytes expects); elsewhere the model's own dtype is used.
    """
    from transformers.modeling_outputs import BaseModelOutput  # lazy: `whispertune --help` imports this module

    from ..model.bnb import is_quantized

    model = loaded.model
    device = torch.device(loaded.info.get("device", "cpu"))
    feats = torch.as_tensor(inputs).to(device=device, dtype=input_dtype(model))
    model_inputs = {"encoder_outputs": BaseModelOutput(last_hidden_state=feats)} if encoded else {"input_features": feats}
    use_autocast = autocast and device.type == "cuda" and is_quantized(base_model(model))
    dtype = torch.bfloat16 if use_autocast and torch.cuda.is_bf16_supported() else torch.float16
    gen = model.generation_config
    kwargs = {**generate_kwargs(loaded), **(options or {})}
    lang_ids = dict(getattr(gen, "lang_to_id", None) or {})
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=use_autocast):
        if lang_ids and "language" not in kwargs:
            # detected here rather than inside generate, so that the language of each clip is known
            detected = model.detect_language(**model_inputs).tolist()
            id_to_lang = {v: k[2:-2] for k, v in lang_ids.items()}
            kwargs["language"] = [id_to_lang[int(i)] for i in detected]
        # No return_dict_in_generate: with it, transformers 5 copies every layer's KV cache of every clip
        # to the CPU and back (15 GiB a batch of 64 on large-v2); that made evaluation 13x slower.
        new = model.generate(**model_inputs, max_new_tokens=max_new_tokens, num_beams=num_beams, **kwargs)
    segments = None
    if isinstance(new, dict):  # return_segments: {"sequences", "segments"}
        segments = [[{"start": float(s["start"]), "end": float(s["end"]), "tokens": s["tokens"].tolist()}
                     for s in clip] for clip in new["segments"]]
        new = new["sequences"]
    new_tokens = new.tolist()
    if limits is not None and segments is None:
        new_tokens = [row[:limit] for row, limit in zip(new_tokens, limits)]
    languages = kwargs.get("language")
    if not isinstance(languages, list):
        languages = [languages if lang_ids else None] * len(new_tokens)
    generated = [_strip_padding(row, gen.pad_token_id) for row in new_tokens]
    timestamps = bool(kwargs.get("return_timestamps"))
    sequences = [decoder_prompt(gen, lang, kwargs.get("task"), timestamps=timestamps) + row
                 for lang, row in zip(languages, generated)]
    tokenizer = loaded.processor.tokenizer
    texts = [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    return Generated(texts=texts, sequences=sequences, languages=[lang or None for lang in languages],
                     new_tokens=sum(len(row) for row in generated), segments=segments)


def decoder_prompt(gen: Any, language: str | None, task: str | None, *, timestamps: bool = False) -> list[int]:
    """The tokens Whisper's generate starts from: start, language, task, no-timestamps (those the model has;
    no-timestamps not when decoding `timestamps`)."""
    prompt = [int(gen.decoder_start_token_id)]
    if language and getattr(gen, "lang_to_id", None):
        prompt.append(int(gen.lang_to_id[f"<|{language}|>"]))
    if task and getattr(gen, "task_to_id", None):
        prompt.append(int(gen.task_to_id[task]))
    if getattr(gen, "no_timestamps_token_id", None) is not None and not timestamps:
        prompt.append(int(gen.no_timestamps_token_id))
    return prompt


def _strip_padding(row: list[int], pad_id: int | None) -> list[int]:
    """Drop the padding after a clip's end token (batched outputs are padded to the longest)."""
    end = len(row)
    while end > 1 and pad_id is not None and row[end - 1] == pad_id and row[end - 2] == pad_id:
        end -= 1
    return row[:end]
