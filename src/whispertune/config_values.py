"""How config values are read and checked against their declared types: YAML values and `--section.key value`
flag text, each turned into the field's type or refused with a ConfigError naming the key and what is accepted;
and the numeric fields' ranges (`check_ranges`, called by `config.validate`).
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any, Literal

import yaml

from .errors import ConfigError


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return {type(None): "null", bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def coerce_value(key: str, value: Any, tp: Any) -> Any:
    """Return `value` checked (and minimally converted) to type `tp`, or raise ConfigError."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{key}: got {value!r}, expected {_type_name(tp)}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise bad
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce_value(key, value, arg)
            except ConfigError:
                pass
        raise bad
    if origin is list:
        if isinstance(value, str):  # "--lora.target_modules q_proj,v_proj", "--augment.snr_db 5,15"
            item = typing.get_args(tp)[0]
            value = [read_flag_value(v.strip(), item) for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise bad
        return [coerce_value(f"{key}[{i}]", v, typing.get_args(tp)[0]) for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    raise ConfigError(f"{key}: unsupported type {tp}")


def _is_text(tp: Any) -> bool:
    """True for str and Literal-of-strings fields (optionally Optional): their flag values stay raw text."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) in (typing.Union, types.UnionType) else [tp]
    return all(a is str or (typing.get_origin(a) is Literal and all(isinstance(v, str) for v in typing.get_args(a))) for a in args)


def parse_override(text: str) -> tuple[str, str, str]:
    """'train.learning_rate=1e-4' -> ('train', 'learning_rate', '1e-4'); the value is typed by `read_flag_value`."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    dotted, raw = text.split("=", 1)
    if "." not in dotted:
        raise ConfigError(f"override {text!r}: expected section.key=value, e.g. train.learning_rate=1e-4")
    section, key = dotted.lstrip("-").split(".", 1)
    return section, key, raw


def read_flag_value(raw: str, tp: Any) -> Any:
    """A flag's text as the field's type. Text fields keep the raw string (YAML would turn `no` into false)."""
    optional = typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)
    if optional and raw.strip().lower() in ("null", "~"):
        return None
    if _is_text(tp):
        return raw
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return raw
    if isinstance(value, str):  # YAML reads "1e-4" as a string
        try:
            return float(value) if any(c in value.lower() for c in ".e") else int(value)
        except ValueError:
            pass
    return value


# (section, key, lowest, highest allowed; None: unbounded). Fields checked elsewhere in `config.validate`, with their
# own explanations, are not repeated here. eval.batch_size 0 means auto.
RANGES: list[tuple[str, str, float | None, float | None]] = [
    ("quantization", "llm_int8_threshold", 0.0, None),
    ("data", "max_train_samples", 1, None),
    ("data", "max_eval_samples", 1, None),
    ("train", "gradient_accumulation_steps", 1, 4096),
    ("train", "warmup_steps", 0, None),
    ("train", "eval_steps", 1, None),
    ("train", "save_steps", 1, None),
    ("train", "save_total_limit", 1, None),
    ("train", "logging_steps", 1, None),
    ("train", "seed", 0, 2**32 - 1),
    ("eval", "batch_size", 0, 4096),
    ("generation", "max_new_tokens", 1, 448),  # Whisper's decoder has 448 positions
    ("generation", "train_generation_max_length", 1, 448),
    ("generation", "num_beams", 1, 64),
]


def check_ranges(cfg: Any) -> None:
    """Every numeric field in its range; NaN and infinity refused wherever a number is expected. `cfg` is the
    Config (not imported: config.py imports this module)."""
    for section, key, lo, hi in RANGES:
        value = getattr(getattr(cfg, section), key)
        if value is None:
            continue
        if not math.isfinite(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
            kind = "an integer" if isinstance(value, int) else "a number"
            span = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
            raise ConfigError(f"{section}.{key}: got {value}, expected {kind} {span}")
    for section, key in (("train", "learning_rate"), ("train", "num_epochs")):
        value = getattr(getattr(cfg, section), key)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{section}.{key}: got {value}, expected a positive number")
    if cfg.train.max_steps == 0 or cfg.train.max_steps < -1:
        raise ConfigError(f"train.max_steps: got {cfg.train.max_steps}, expected -1 (train.num_epochs decides) "
                          "or a positive integer")
