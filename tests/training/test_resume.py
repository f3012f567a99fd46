"""Resume: N steps in one go equal N/2 steps, an interruption, and a resumed second half."""

from __future__ import annotations

import json
import shutil

import pytest
from transformers import TrainerCallback

from tests.helpers import train_overrides
from whispertune.config import load_config
from whispertune.errors import UserError
from whispertune.training.checkpoints import STAGING, complete_checkpoints, resolve_resume
from whispertune.training.trainer import train

STEPS = 6  # 6 clips, batch 3: the second half starts a new epoch, so the data order must be restored


class StopAt(TrainerCallback):
    """Simulates a killed run: stop right after step `step` (its checkpoint is saved first)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
        return control


def _cfg(model_dir, data_dir, out):
    cfg = load_config(None, train_overrides(model_dir, data_dir, out, "none", STEPS) + ["lora.dropout=0.1"])
    cfg.data.eval_split = None
    return cfg


@pytest.mark.synth
def test_resume_matches_uninterrupted_run(trainable_whisper_dir, speech_folder, tmp_path):
    full = train(_cfg(trainable_whisper_dir, speech_folder, tmp_path / "full"))
    cfg = _cfg(trainable_whisper_dir, speech_folder, tmp_path / "split")
    first = train(cfg, extra_callbacks=[StopAt(STEPS // 2)])
    assert first.global_step == STEPS // 2
    # a checkpoint interrupted mid-write is left in the staging dir and must never be used
    half = tmp_path / "split" / "checkpoints" / f"checkpoint-{STEPS // 2}"
    shutil.copytree(half, tmp_path / "split" / "checkpoints" / STAGING / f"checkpoint-{STEPS}")
    assert complete_checkpoints(half.parent) == [half]

    second = train(cfg, resume=True)
    assert second.global_step == STEPS
    losses = {h["step"]: h["loss"] for h in full.log_history if "loss" in h}
    resumed = {h["step"]: h["loss"] for h in second.log_history if "loss" in h}
    assert sorted(resumed) == list(range(1, STEPS + 1))  # first half comes from the checkpoint's state
    for step in range(STEPS // 2 + 1, STEPS + 1):
        assert resumed[step] == pytest.approx(losses[step], rel=1e-5), step
    assert second.final_train_loss == pytest.approx(full.final_train_loss, rel=1e-5)
    # the log file holds every step exactly once
    logged = [json.loads(x)["step"] for x in (tmp_path / "split" / "train_log.jsonl").read_text().splitlines()
              if "loss" in json.loads(x)]
    assert logged == list(range(1, STEPS + 1))


def test_resume_errors(tmp_path):
    with pytest.raises(UserError, match="no complete checkpoint"):
        resolve_resume(tmp_path, True)
    broken = tmp_path / "checkpoint-4"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError, match="incomplete checkpoint .*adapter_model.safetensors"):
        resolve_resume(tmp_path, str(broken))
    assert resolve_resume(tmp_path, None) is None
