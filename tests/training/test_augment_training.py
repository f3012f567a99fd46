"""A real training run with on-the-fly augmentation and SpecAugment (tiny random Whisper, espeak-ng clips, CPU)."""

from __future__ import annotations

import json

import pytest
from transformers import TrainerCallback

from tests.helpers import train_overrides
from whispertune.config import load_config
from whispertune.data.augment import AugmentedSpeech
from whispertune.interop.merge import merge
from whispertune.training.trainer import train


class EpochSeen(TrainerCallback):
    """The epoch the training dataset augments with, at every step."""

    def __init__(self):
        self.epochs: list[int] = []

    def on_step_end(self, args, state, control, train_dataloader=None, **kwargs):
        assert isinstance(train_dataloader.dataset, AugmentedSpeech)
        self.epochs.append(train_dataloader.dataset.epoch)


@pytest.mark.synth
def test_training_with_augmentation_completes_and_saves_a_clean_adapter(trainable_whisper_dir, speech_folder,
                                                                          tmp_path):
    flags = train_overrides(trainable_whisper_dir, speech_folder, tmp_path / "run", "none", 1) + [
        "train.max_steps=-1", "train.num_epochs=3", "train.save_strategy=no", "train.report_to=[]",
        "train.eval_strategy=epoch", "data.eval_split=train",
        "augment.enabled=true", "augment.noise_prob=1", "augment.snr_db=[15, 30]", "augment.speed_prob=0.5",
        "augment.reverb_prob=0.5", "augment.mask_time_prob=0.1"]
    seen = EpochSeen()
    result = train(load_config(None, flags), extra_callbacks=[seen])

    assert result.global_step == 6 and seen.epochs == [0, 0, 1, 1, 2, 2]
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert len(losses) == 6 and losses[-1] < losses[0], losses
    assert len([h for h in result.log_history if "eval_loss" in h]) == 3
    report = json.loads((result.run_dir / "data_report.json").read_text())
    assert report["augmentation"]["train"]["noise"]["snr_db"] == [15.0, 30.0]
    assert report["augmentation"]["train"]["spec_augment"]["mask_time_prob"] == 0.1
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    # SpecAugment was set on the in-memory model only: nothing saved asks for it at inference
    assert not (result.adapter_dir / "config.json").exists()
    for path in result.adapter_dir.glob("*.json"):
        assert '"apply_spec_augment": true' not in path.read_text(encoding="utf-8"), path
    merged = merge(result.adapter_dir, tmp_path / "merged")
    assert json.loads((merged / "config.json").read_text())["apply_spec_augment"] is False


class StopAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        control.should_training_stop = state.global_step == self.step
        return control


@pytest.mark.synth
def test_resumed_augmented_run_matches_an_uninterrupted_one(trainable_whisper_dir, speech_folder, tmp_path):
    """6 clips, batch 3, 6 steps: the resume at step 3 lands inside epoch 1, whose items must be augmented
    as that epoch's (the epoch is part of every item's seed) and SpecAugment's draws restored too."""

    def cfg(out):
        flags = train_overrides(trainable_whisper_dir, speech_folder, out, "none", 6) + [
            "train.save_strategy=steps", "train.save_steps=3", "train.report_to=[]", "train.eval_strategy=no",
            "augment.enabled=true", "augment.noise_prob=1", "augment.speed_prob=0.5", "augment.gain_prob=0.5",
            "augment.reverb_prob=0.5", "augment.mask_time_prob=0.1"]
        return load_config(None, flags)

    full = train(cfg(tmp_path / "full"))
    assert train(cfg(tmp_path / "split"), extra_callbacks=[StopAt(3)]).global_step == 3
    resumed = train(cfg(tmp_path / "split"), resume=True)
    losses = {h["step"]: h["loss"] for h in full.log_history if "loss" in h}
    again = {h["step"]: h["loss"] for h in resumed.log_history if "loss" in h}
    for step in (4, 5, 6):
        assert again[step] == pytest.approx(losses[step], rel=1e-5), step
