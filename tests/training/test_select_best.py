"""`train.select_best`: the final adapter is the checkpoint best by an eval metric (the Trainer's own
load_best_model_at_end over the atomic checkpoints), metrics.json says which, and what cannot choose is refused."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from tests.helpers import train_overrides
from whispertune.config import load_config
from whispertune.errors import ConfigError
from whispertune.training.checkpoints import checkpoint_step, complete_checkpoints
from whispertune.training.trainer import train


def _overrides(model_dir, data_dir, out, steps: int, *extra: str) -> list[str]:
    return train_overrides(model_dir, data_dir, out, "none", steps) + [
        "data.eval_split=train", "train.eval_strategy=steps", "train.eval_steps=2", "train.save_steps=2",
        "train.report_to=[]", *extra]


def _best_is_the_adapter(result, metric: str) -> dict:
    """metrics.json's best is the lowest eval `metric` logged; its checkpoint's adapter is adapter/."""
    scores = {h["step"]: h[f"eval_{metric}"] for h in result.log_history if f"eval_{metric}" in h}
    best_step = min(scores, key=scores.get)  # the first of equal scores, as the Trainer keeps it
    best = json.loads((result.run_dir / "metrics.json").read_text())["best"]
    assert {k: v for k, v in best.items() if k != "eval"} == {
        "metric": f"eval_{metric}", "step": best_step, "score": pytest.approx(scores[best_step]),
        "checkpoint": f"checkpoint-{best_step}"}
    assert best["eval"][f"eval_{metric}"] == pytest.approx(scores[best_step])
    chosen = result.run_dir / "checkpoints" / best["checkpoint"]
    weights = load_file(chosen / "adapter_model.safetensors")
    final = load_file(result.adapter_dir / "adapter_model.safetensors")
    assert weights.keys() == final.keys() and all((weights[k] == final[k]).all() for k in weights)
    state = json.loads((chosen / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] == str(chosen)  # the published path, not the staging one
    return best


@pytest.mark.synth
def test_best_checkpoint_by_wer_becomes_the_adapter(trainable_whisper_dir, speech_folder, tmp_path):
    cfg = load_config(None, _overrides(trainable_whisper_dir, speech_folder, tmp_path / "run", 4, "train.select_best=wer",
                                       "train.predict_with_generate=true", "generation.train_generation_max_length=8",
                                       "train.save_total_limit=1"))
    result = train(cfg)
    best = _best_is_the_adapter(result, "wer")
    # the tiny model's first evaluation is its best (it loops after more steps): not simply the last checkpoint,
    # and save_total_limit 1 kept it, the only checkpoint left at the end
    assert best["step"] == 2 and result.global_step == 4
    assert [checkpoint_step(c) for c in complete_checkpoints(result.run_dir / "checkpoints")] == [2]
    # the model card's WER/CER are the kept checkpoint's, at its step (step 4's were logged after it)
    logged = next(h for h in result.log_history if h.get("step") == 2 and "eval_wer" in h)
    assert best["eval"]["eval_cer"] == pytest.approx(logged["eval_cer"])
    card = (result.adapter_dir / "README.md").read_text(encoding="utf-8")
    assert (f"Measured on the evaluation split: WER {logged['eval_wer']:.2f}, CER {logged['eval_cer']:.2f} at step 2 "
            "(`checkpoint-2`), the checkpoint `train.select_best` kept") in card


@pytest.mark.synth
def test_best_checkpoint_by_eval_loss(trainable_whisper_dir, speech_folder, tmp_path):
    cfg = load_config(None, _overrides(trainable_whisper_dir, speech_folder, tmp_path / "run", 4, "train.select_best=loss"))
    _best_is_the_adapter(train(cfg), "loss")


@pytest.mark.parametrize("flags, message", [
    (["data.eval_split=null"], "train.select_best: loss chooses by an evaluation metric, and data.eval_split is empty"),
    (["train.eval_strategy=no"], "train.select_best: loss needs evaluations: set train.eval_strategy"),
    (["train.save_strategy=epoch"], r"train.save_strategy \(epoch\) must equal train.eval_strategy \(steps\)"),
    (["train.save_steps=3"], r"train.save_steps \(3\) must be a multiple of train.eval_steps \(2\)"),
    (["train.select_best=wer"], "train.select_best: wer is measured by decoding the eval split: set "
                                "train.predict_with_generate: true"),
    (["train.select_best=cer", "train.predict_with_generate=true", "train.freeze_encoder=true",
      "train.cache_encoder_outputs=true"], r"train.predict_with_generate does not run on cached encoder outputs"),
])
def test_combinations_that_cannot_choose_are_refused(flags, message):
    base = ["train.select_best=loss", "data.eval_split=test", "train.eval_strategy=steps", "train.eval_steps=2",
            "train.save_strategy=steps", "train.save_steps=4"]
    with pytest.raises(ConfigError, match=message):
        load_config(None, base + flags)
    load_config(None, base)  # the combination itself is accepted


def test_timestamp_probability_range():
    with pytest.raises(ConfigError, match=r"train.timestamp_probability: got 1.5, expected a number in \[0, 1\]"):
        load_config(None, ["train.timestamp_probability=1.5"])
    assert load_config(None, ["train.timestamp_probability=0.5"]).train.timestamp_probability == 0.5
