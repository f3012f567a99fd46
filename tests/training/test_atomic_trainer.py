"""The private Trainer hooks atomic_trainer.py overrides: a transformers upgrade that renames them, changes
their arguments or stops writing through `_get_output_dir` must fail here, not silently write checkpoints
in place (the crash-safety tests then show what the override does)."""

from __future__ import annotations

import inspect

from transformers import Seq2SeqTrainer, Trainer

from whispertune.training.atomic_trainer import AtomicCheckpointTrainer


def test_the_overridden_private_hooks_exist_with_their_arguments():
    assert list(inspect.signature(Trainer._save_checkpoint).parameters) == ["self", "model", "trial"]
    assert list(inspect.signature(Trainer._get_output_dir).parameters) == ["self", "trial"]
    for name in ("_save_checkpoint", "_get_output_dir"):
        assert getattr(Seq2SeqTrainer, name) is getattr(Trainer, name), f"Seq2SeqTrainer now has its own {name}"
        assert name in AtomicCheckpointTrainer.__dict__


def test_a_checkpoint_is_written_where_get_output_dir_says():
    source = inspect.getsource(Trainer._save_checkpoint)
    assert "self._get_output_dir(" in source  # the staging directory reaches the save through this call
    assert "PREFIX_CHECKPOINT_DIR" in source  # and the checkpoint is named checkpoint-<step> inside it
