"""The Trainer whispertune trains with: checkpoints written atomically (adapter only), NaN/inf steps skipped.

This is the one module that overrides private methods of transformers' Trainer: `_save_checkpoint(model,
trial)` (the hook a save goes through) and `_get_output_dir(trial)` (where `_save_checkpoint` writes),
redirected to a staging directory that is renamed once complete. transformers has no public hook for
where a checkpoint is written; tests/training/test_atomic_trainer.py fails at once if an upgrade renames
either method or `_save_checkpoint` stops asking `_get_output_dir`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import torch
from transformers import Seq2SeqTrainer
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..model.parts import input_dtype
from .checkpoints import STAGING, full_weight_files, newest_checkpoint, rotate_checkpoints
from .distributed import barrier, is_main
from .guards import DEFAULT_MAX_NONFINITE_STEPS, NonFiniteGuard


class AtomicCheckpointTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer whose checkpoints appear by an atomic rename and hold the adapter only, and
    whose steps with a NaN/inf loss or gradient update nothing (see `training.guards`)."""

    _staging_root: str | None = None

    def __init__(self, *args, max_nonfinite_steps: int = DEFAULT_MAX_NONFINITE_STEPS, adalora=None, **kwargs):
        super().__init__(*args, **kwargs)
        # variants.AdaLoraBudget of an AdaLoRA run: its state goes into each checkpoint before the rename
        self.adalora = adalora
        # Whisper's forward takes **kwargs, so the Trainer believes it averages its loss over
        # `num_items_in_batch` and stops dividing by the accumulation steps, and under DDP multiplies the
        # loss by the world size; but Whisper's loss is a plain mean that ignores it. Told the truth, the
        # Trainer divides by the accumulation steps and DDP averages the ranks' means.
        self.model_accepts_loss_kwargs = False
        fp16 = getattr(self.accelerator, "scaler", None) is not None
        self.nonfinite_guard = NonFiniteGuard(max_nonfinite_steps, fp16_scaler=fp16, last_checkpoint=newest_checkpoint)
        self.add_callback(self.nonfinite_guard)
        self._last_finite_loss: torch.Tensor | None = None

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.nonfinite_guard.after_backward(loss, model)
        # The logged loss of a skipped micro-batch is the last finite one, computed on the device: the
        # trainer's own NaN filter (logging_nan_inf_filter, switched off) read the loss on every micro-batch.
        if self._last_finite_loss is None:
            self._last_finite_loss = torch.zeros_like(loss)
        loss = torch.where(torch.isfinite(loss), loss, self._last_finite_loss)
        self._last_finite_loss = loss
        return loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        # Batches carry float32 features; the frozen base may be bf16/fp16, and generation runs outside autocast.
        if "input_features" in inputs:
            inputs = {**inputs, "input_features": inputs["input_features"].to(input_dtype(model))}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys, **gen_kwargs)

    def evaluation_loop(self, *args, **kwargs):
        # Seq2SeqTrainer.evaluate gathers the ranks' predictions with accelerate's `gather`, which keeps the rows
        # the sampler repeats to give every rank a full last batch (6 clips on 2 ranks of batch 8 were scored as
        # 16): WER, CER and loss, and so train.select_best's choice, would not be one process's. gather_for_metrics
        # drops them (and is what the Trainer itself gathers with).
        self.gather_function = self.accelerator.gather_for_metrics
        return super().evaluation_loop(*args, **kwargs)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if self.nonfinite_guard.skipped_steps:  # also lands in train_log.jsonl and metrics
            logs = {**logs, "nonfinite_skipped": len(self.nonfinite_guard.skipped_steps)}
        super().log(logs, *args, **kwargs)

    def _get_output_dir(self, trial) -> str:
        # While a checkpoint is being written, the parent class writes into the staging directory.
        return self._staging_root or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        # Under data parallelism every rank writes into the staging directory (its own RNG state; rank 0
        # the adapter, optimizer and trainer state), and rank 0 alone renames the complete checkpoint.
        root = Path(self.args.output_dir)
        staging = root / STAGING
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if is_main():
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        barrier()
        self._staging_root = str(staging)
        try:
            with self.adalora.full_rank_save() if self.adalora is not None else contextlib.nullcontext():
                super()._save_checkpoint(model, trial)
            if self.adalora is not None and is_main():
                self.adalora.write_into(staging / name)
        finally:
            self._staging_root = None
        self._point_best_at_published(staging / name, root)
        barrier()
        if is_main():
            self._publish(staging / name, root / name)
        barrier()  # no rank goes on (and may save again) before the checkpoint is in place

    def _point_best_at_published(self, staged: Path, root: Path) -> None:
        """With `load_best_model_at_end`, the Trainer records the best checkpoint under the directory it wrote
        to (the staging one, gone after the rename): point it at the published `checkpoint-N`, in the state and
        in the staged trainer_state.json that a resume reads."""
        step = self.state.best_global_step
        if not step:
            return
        best = root / f"{PREFIX_CHECKPOINT_DIR}-{step}"
        if step == self.state.global_step or best.is_dir():
            self.state.best_model_checkpoint = str(best)
            if self.args.should_save:
                self.state.save_to_json(str(staged / TRAINER_STATE_NAME))

    def _publish(self, written: Path, target: Path) -> None:
        """fsync the staged checkpoint, rename it into place, rotate old ones."""
        stray = full_weight_files(written)
        if stray:  # a PeftModel saves only its adapter; anything else is a bug, not a checkpoint
            raise RuntimeError(f"checkpoint {target.name} would contain full-model weights: {[p.name for p in stray]}")
        for path in written.rglob("*"):
            if path.is_file():
                with open(path, "rb") as fh:
                    os.fsync(fh.fileno())
        if target.exists():  # same step saved again (e.g. after resume): replace the old copy
            shutil.rmtree(target)
        os.replace(written, target)
        shutil.rmtree(written.parent, ignore_errors=True)
        best = self.state.best_model_checkpoint
        rotate_checkpoints(target.parent, self.args.save_total_limit, keep_also=Path(best) if best else None)
