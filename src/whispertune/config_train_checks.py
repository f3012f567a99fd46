"""Checks of what training keeps and measures (`train.select_best`, `train.timestamp_probability`,
`train.predict_with_generate`, `data.pack_utterances`), called by `config.validate`: combinations that cannot
run, or under which the best checkpoint cannot be chosen, are refused up front."""

from __future__ import annotations

import math
from typing import Any

from .errors import ConfigError


def check_kept_training(train: Any, data: Any) -> None:
    """`train` / `data`: the config's TrainingConfig and DataConfig (not imported: config.py imports this module)."""
    p = train.timestamp_probability
    if not (math.isfinite(p) and 0.0 <= p <= 1.0):
        raise ConfigError(f"train.timestamp_probability: got {p}, expected a number in [0, 1] (e.g. 0.5: half the "
                          "rows that carry segment times are trained with timestamp tokens)")
    if train.predict_with_generate and train.cache_encoder_outputs:
        # Whisper's generate reads the shape of a BaseModelOutput; the cache's collator passes a plain tuple
        # (AttributeError: 'tuple' object has no attribute 'shape' at the first evaluation)
        raise ConfigError("train.predict_with_generate does not run on cached encoder outputs "
                          "(train.cache_encoder_outputs): drop one of them (eval loss is still measured)")
    if train.select_best != "no":
        _check_select_best(train, data)


MAX_PACK = 32  # a 30 s window holds no more short clips than this, nor a 448-token label more transcripts


def check_packing(cfg: Any) -> None:
    """`data.pack_utterances` (data/packing.py) and what it cannot be combined with (`cfg`: a Config)."""
    n = cfg.data.pack_utterances
    if not 1 <= n <= MAX_PACK:
        raise ConfigError(f"data.pack_utterances: got {n}, expected an integer in [1, {MAX_PACK}] "
                          "(1: one clip per window, no packing)")
    if n == 1:
        return
    if cfg.data.streaming:
        raise ConfigError("data.pack_utterances > 1 packs the whole training split up front; a streamed split "
                          "(data.streaming: true) cannot be packed: drop one of them")
    if cfg.train.timestamp_probability > 0:
        raise ConfigError("data.pack_utterances > 1 cannot be combined with train.timestamp_probability > 0 "
                          "(packed windows carry no segment times); drop one of them")
    if cfg.augment.audio_on:
        raise ConfigError("data.pack_utterances > 1 cannot be combined with augment's audio transforms (the "
                          "windows are packed once, before training); drop one of them")


def _check_select_best(train: Any, data: Any) -> None:
    key = f"train.select_best: {train.select_best}"
    if not data.eval_split:
        raise ConfigError(f"{key} chooses by an evaluation metric, and data.eval_split is empty: name an eval split "
                          "(e.g. --data.eval_split dev) or set train.select_best: no")
    if train.eval_strategy == "no":
        raise ConfigError(f"{key} needs evaluations: set train.eval_strategy to steps or epoch")
    if train.save_strategy != train.eval_strategy:
        raise ConfigError(f"{key}: only evaluated steps can be chosen, so train.save_strategy "
                          f"({train.save_strategy}) must equal train.eval_strategy ({train.eval_strategy})")
    eval_steps = train.eval_steps or train.logging_steps  # the Trainer's own default for eval_steps
    if train.eval_strategy == "steps" and train.save_steps % eval_steps:
        raise ConfigError(f"{key}: train.save_steps ({train.save_steps}) must be a multiple of train.eval_steps "
                          f"({eval_steps}), so that every saved checkpoint has been evaluated")
    if train.select_best in ("wer", "cer") and not train.predict_with_generate:
        raise ConfigError(f"{key} is measured by decoding the eval split: set train.predict_with_generate: true "
                          "(or train.select_best: loss)")
