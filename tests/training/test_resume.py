"""Resume: N steps in one go equal N/2 steps, an interruption, and a resumed second half."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.helpers import StopAt, train_overrides
from whispertune.config import load_config
from whispertune.errors import UserError
from whispertune.training.checkpoints import (
    STAGING,
    check_lora_matches,
    complete_checkpoints,
    finished_at,
    resolve_resume,
)
from whispertune.training.trainer import train

STEPS = 6  # 6 clips, batch 3: the second half starts a new epoch, so the data order must be restored


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


def _fake_checkpoint(root, step):
    from safetensors.torch import save_file

    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"lora_A": torch.zeros(2, 2)}, str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}))
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": 10}))
    torch.save({"state": {0: {"exp_avg": torch.ones(1000)}}}, path / "optimizer.pt")
    torch.save({}, path / "scheduler.pt")
    return path


def test_resume_falls_back_past_a_checkpoint_that_does_not_load(tmp_path, capsys):
    older, newest = _fake_checkpoint(tmp_path, 2), _fake_checkpoint(tmp_path, 4)
    data = (newest / "optimizer.pt").read_bytes()
    (newest / "optimizer.pt").write_bytes(data[: len(data) // 2])  # truncated, as by a full disk
    assert resolve_resume(tmp_path, True) == str(older)
    assert "skipping checkpoint-4, it does not load" in capsys.readouterr().out
    with pytest.raises(UserError, match="checkpoint-4: the checkpoint does not load"):
        resolve_resume(tmp_path, str(newest))
    (older / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(UserError, match="no checkpoint in .* loads"):
        resolve_resume(tmp_path, True)


def test_resume_refuses_another_lora_shape_in_one_line(tmp_path):
    path = _fake_checkpoint(tmp_path, 2)
    check_lora_matches(str(path), 4, 8, ["q_proj"])
    with pytest.raises(UserError, match=r"^--resume checkpoint-2: trained with LoRA r=4, alpha=8, modules q_proj; "
                                        r"this config has r=32, alpha=64, modules q_proj,v_proj"):
        check_lora_matches(str(path), 32, 64, ["q_proj", "v_proj"])
    assert finished_at(str(path), -1, 3.0) is None  # step 2 of 10
