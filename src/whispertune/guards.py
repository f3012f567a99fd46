"""Non-finite loss guard: a step whose loss or gradients are NaN/inf does not update the weights, and
training stops with a clear error when that happens for `max_nonfinite` optimizer steps in a row.

Skipping: in fp32/bf16 the guard sets the gradients of the trainable parameters to None, which
torch's optimizers treat as "no gradient": no update, no moment update, no weight decay. Under fp16
the GradScaler already skips steps whose gradients hold inf/NaN (and lowers its scale); the guard
fills the gradients with NaN so that the scaler's own check is certain to fire. With gradient
accumulation one bad micro-batch spoils its whole accumulation window.

Stopping happens in `on_step_end`, before the trainer's save of that step, so no checkpoint is
written after the run has gone bad; checkpoints written after a skipped step hold the unchanged
(finite) weights of the last good step.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import TrainerCallback

from .errors import UserError

DEFAULT_MAX_NONFINITE_STEPS = 3


class NonFiniteLossError(UserError):
    """Training stopped because the loss stayed non-finite; the last good checkpoint is kept."""


def is_finite(loss: torch.Tensor, model: nn.Module) -> bool:
    """True when the loss and every gradient of a trainable parameter are finite."""
    if not bool(torch.isfinite(loss).all()):
        return False
    return all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.requires_grad and p.grad is not None)


def discard_gradients(model: nn.Module, *, fp16_scaler: bool) -> None:
    """Make the coming optimizer step a no-op for every trainable parameter."""
    for param in model.parameters():
        if not param.requires_grad or param.grad is None:
            continue
        if fp16_scaler:  # the scaler's inf check then skips optimizer.step and lowers the scale
            param.grad.fill_(float("nan"))
        else:
            param.grad = None


class NonFiniteGuard(TrainerCallback):
    """Counts non-finite steps; `after_backward` is called by the trainer after each micro-batch."""

    def __init__(self, max_nonfinite_steps: int = DEFAULT_MAX_NONFINITE_STEPS):
        if max_nonfinite_steps < 1:
            raise UserError(f"train.max_nonfinite_steps: got {max_nonfinite_steps}, expected a positive integer")
        self.max_nonfinite_steps = max_nonfinite_steps
        self.skipped_steps: list[int] = []  # 1-based optimizer steps that were skipped
        self.consecutive = 0
        self._window_bad = False  # a micro-batch of the current accumulation window was non-finite

    def after_backward(self, loss: torch.Tensor, model: nn.Module, *, fp16_scaler: bool) -> None:
        if self._window_bad or not is_finite(loss, model):
            self._window_bad = True
            discard_gradients(model, fp16_scaler=fp16_scaler)

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
        from .checkpoints import complete_checkpoints

        found = complete_checkpoints(checkpoint_root)
        last = f"last good checkpoint: {found[-1]} (resume with --resume)" if found else "no checkpoint was written"
        first = step - self.consecutive + 1
        return (f"training stopped at step {step}: the loss or gradients were NaN/inf for {self.consecutive} "
                f"steps in a row (steps {first}-{step}; limit train.max_nonfinite_steps={self.max_nonfinite_steps}); "
                f"no weights were updated by them; {last}. Lower train.learning_rate, use train.precision=fp32, "
                "or check the data (data_report.json)")
