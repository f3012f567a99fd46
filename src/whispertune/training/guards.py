"""Non-finite loss guard: a step whose loss or gradients are NaN/inf does not update the weights, and
training stops with a clear error when that happens for `max_nonfinite` optimizer steps in a row.

One host sync per optimizer step: each micro-batch only ORs "this loss was not finite" into a flag on
the device; just before the optimizer step the flag is combined with the gradients' finiteness (one
fused norm over every trainable tensor) and read once. The first version read one flag per trainable
tensor per micro-batch (384 syncs a step on large-v2), which kept the CPU from queueing ahead of the GPU.

Skipping: in fp32/bf16 the gradients of the trainable parameters are set to None, which torch's
optimizers treat as "no gradient": no update, no moment update, no weight decay. Under fp16 the
gradients are poisoned with NaN on the device right after the backward, so the GradScaler's own inf check
skips the step. With gradient accumulation one bad micro-batch spoils its whole accumulation window.

fp16: a loss-scale overflow (inf gradients with a finite loss) is the GradScaler's business, normal in the
first steps of a run: it skips that step and lowers the scale. Such steps are not counted as non-finite;
only a non-finite loss is.

Stopping happens in `on_step_end`, before the trainer's save of that step, so no checkpoint is
written after the run has gone bad; checkpoints written after a skipped step hold the unchanged
(finite) weights of the last good step.

Data parallel (training.distributed): the flag is OR-ed over the ranks in the same all-reduce that reads
it, so every rank skips the same steps and the copies of the model never diverge.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from transformers import TrainerCallback

from ..errors import UserError
from .distributed import is_distributed, max_over_ranks

DEFAULT_MAX_NONFINITE_STEPS = 3


class NonFiniteLossError(UserError):
    """Training stopped because the loss stayed non-finite; the last good checkpoint is kept."""


def nonfinite_flag(model: nn.Module) -> torch.Tensor | None:
    """A 0-d bool tensor on the gradients' device: True when a trainable gradient holds NaN/inf (no sync)."""
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    if not grads:
        return None
    # The norm of the per-tensor norms is non-finite exactly when some element is.
    norms = torch._foreach_norm(grads)
    return ~torch.isfinite(torch.stack([n.to(norms[0].device, torch.float32) for n in norms]).sum())


def discard_gradients(model: nn.Module) -> None:
    """Make the coming optimizer step a no-op for every trainable parameter."""
    for param in model.parameters():
        if param.requires_grad:
            param.grad = None


class NonFiniteGuard(TrainerCallback):
    """Counts non-finite steps. The trainer calls `after_backward` after each micro-batch's backward;
    `check(model)` runs just before each optimizer step (`on_pre_optimizer_step`; the one host sync).

    `last_checkpoint(root)`: the newest complete checkpoint under the trainer's output directory, named in
    the stop message; the trainer that installs the guard passes it (it knows its checkpoint layout)."""

    def __init__(self, max_nonfinite_steps: int = DEFAULT_MAX_NONFINITE_STEPS, *, fp16_scaler: bool = False,
                 last_checkpoint: Callable[[Path], Path | None] = lambda root: None):
        if max_nonfinite_steps < 1:
            raise UserError(f"train.max_nonfinite_steps: got {max_nonfinite_steps}, expected a positive integer")
        self.max_nonfinite_steps = max_nonfinite_steps
        self.fp16_scaler = fp16_scaler  # inf gradients are the GradScaler's (overflow), not ours
        self.last_checkpoint = last_checkpoint
        self.skipped_steps: list[int] = []  # 1-based optimizer steps that were skipped
        self.consecutive = 0
        self._loss_bad: torch.Tensor | None = None  # device flag: a loss of this window was non-finite
        self._window_bad = False
        self.host_syncs = 0  # reads of a device flag (one per optimizer step); tests check it

    def after_backward(self, loss: torch.Tensor, model: nn.Module) -> None:
        """Note whether this micro-batch's loss was finite, without reading the flag (no sync)."""
        bad = ~torch.isfinite(loss.detach()).all()
        self._loss_bad = bad if self._loss_bad is None else self._loss_bad | bad
        if self.fp16_scaler:
            # Poison the gradients on the device (adding 0.0 is exact) so that the GradScaler's own inf
            # check skips the step, whether it unscales before or after `check`.
            grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
            if grads:
                poison = torch.where(bad, float("nan"), 0.0).to(grads[0].device, grads[0].dtype)
                torch._foreach_add_(grads, poison)

    def check(self, model: nn.Module) -> bool:
        """True when this optimizer step must not update anything (gradients then discarded, except
        under fp16, where the poisoned gradients make the GradScaler skip it)."""
        flag = self._loss_bad
        if not self.fp16_scaler:
            grads_bad = nonfinite_flag(model)
            if grads_bad is not None:
                flag = grads_bad if flag is None else flag | grads_bad.to(flag.device)
        self._loss_bad = None
        if is_distributed():  # one flag for all ranks: a step skipped on one is skipped on every one
            flag = max_over_ranks(flag if flag is not None else torch.tensor(False))
        bad = False
        if flag is not None:
            self.host_syncs += 1
            bad = bool(flag.item())
        if bad and not self.fp16_scaler:
            discard_gradients(model)
        self._window_bad = bad
        return bad

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self.check(model)
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if not self._window_bad:
            self.consecutive = 0
            return control
        self._window_bad = False
        self.skipped_steps.append(state.global_step)
        self.consecutive += 1
        print(f"whispertune: step {state.global_step}: non-finite loss or gradients, update skipped "
              f"({self.consecutive} in a row, {len(self.skipped_steps)} in all)")
        if self.consecutive >= self.max_nonfinite_steps:
            raise NonFiniteLossError(self.stop_message(Path(args.output_dir), state.global_step))
        return control

    def stop_message(self, checkpoint_root: Path, step: int) -> str:
        found = self.last_checkpoint(checkpoint_root)
        last = f"last good checkpoint: {found} (resume with --resume)" if found else "no checkpoint was written"
        first = step - self.consecutive + 1
        return (f"training stopped at step {step}: the loss or gradients were NaN/inf for {self.consecutive} "
                f"steps in a row (steps {first}-{step}; limit train.max_nonfinite_steps={self.max_nonfinite_steps}); "
                f"no weights were updated by them; {last}. Lower train.learning_rate, use train.precision=fp32, "
                "or check the data (data_report.json)")
