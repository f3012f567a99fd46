"""Resolve once, then flow down: `resolve_plan` decides, the stages of a training run only read its Plan."""

from __future__ import annotations

import collections
import dataclasses
import importlib
import sys

import pytest
import torch

from tests.helpers import train_overrides
from whispertune.config import load_config
from whispertune.training.encoder_cache import encoder_cache_dir
from whispertune.training.plan import resolve_plan

# module -> the functions that turn a setting into a decision
RESOLVERS = {
    "whispertune.languages": ("resolve_language",),
    "whispertune.pretrained.embedded": ("resolve_model_name",),
    "whispertune.model.device": ("resolve_device", "resolve_compute_dtype"),
    "whispertune.training.presets": ("resolve_preset", "get_preset"),
    "whispertune.training.plan": ("resolve_plan", "resolve_precision"),
    "whispertune.inference.options": ("resolve_batch_size",),
}


def record_resolver_calls(monkeypatch) -> list[tuple[str, tuple]]:
    """Each resolver call as (name, arguments), wherever the function was imported; the calls still run."""
    calls: list[tuple[str, tuple]] = []
    for module_name, names in RESOLVERS.items():
        module = importlib.import_module(module_name)
        for name in names:
            original = getattr(module, name)

            def counted(*args, _original=original, _name=name, **kwargs):
                calls.append((_name, tuple(map(str, args)) + tuple(f"{k}={v}" for k, v in sorted(kwargs.items()))))
                return _original(*args, **kwargs)

            for other in list(sys.modules.values()):
                if getattr(other, "__name__", "").startswith("whispertune") and getattr(other, name, None) is original:
                    monkeypatch.setattr(other, name, counted)
    return calls


@pytest.mark.synth
def test_a_training_run_resolves_each_setting_once(trainable_whisper_dir, speech_folder, tmp_path, monkeypatch):
    from whispertune.training.trainer import train

    overrides = train_overrides(trainable_whisper_dir, speech_folder, tmp_path / "run", "none", 2) + [
        "train.freeze_encoder=true", "train.cache_encoder_outputs=true",
        "lora.target_modules=decoder.layers.0.self_attn.q_proj"]
    cfg = load_config(None, overrides)
    cfg.data.eval_split = None
    calls = record_resolver_calls(monkeypatch)
    result = train(cfg)

    assert result.global_step == 2
    counts = collections.Counter(name for name, _ in calls)
    for name in ("resolve_plan", "resolve_device", "resolve_preset", "resolve_precision", "resolve_language",
                 "resolve_model_name", "resolve_batch_size"):
        assert counts[name] == 1, (name, calls)
    # the dtype rule is met twice, for two settings: train.precision and quantization.compute_dtype
    assert len(set(calls)) == len(calls), calls


def test_the_plan_holds_the_decisions_and_is_frozen(tiny_whisper_dir, tmp_path):
    cfg = load_config(None, [f"model.name_or_path={tiny_whisper_dir}", "model.language=Marathi",
                             f"train.output_dir={tmp_path}/run", f"data.cache_dir={tmp_path}/features"])
    plan = resolve_plan(cfg, device="cpu")
    assert (plan.device, plan.preset, plan.precision, plan.weight_dtype) == ("cpu", None, "fp32", torch.float32)
    assert (plan.language, plan.language_name, plan.model.language) == ("mr", "marathi", "mr")
    assert plan.model_path == str(tiny_whisper_dir) and plan.run_dir == tmp_path / "run"
    assert plan.encoder_cache_dir == encoder_cache_dir(cfg.data.cache_dir) == tmp_path / "features" / "encoder"
    assert (plan.eval_batch_size, plan.encode_batch_size) == (8, 1)  # CPU: batch 8 evaluates, batch 1 encodes
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.device = "cuda"
    cfg.train.learning_rate = 0.5  # the caller's config is not the plan's
    assert plan.config.train.learning_rate == plan.requested.train.learning_rate == 1e-3
    assert plan.config.model.language == "Marathi"  # recorded as written (config.yaml); stages read plan.language
