"""SIGTERM / SIGINT during training: finish the current step, write a checkpoint, stop, say how to resume.

Job schedulers send SIGTERM before they kill a job, and Ctrl-C sends SIGINT. Either one sets a flag; at the end
of the optimizer step in progress the callback asks the Trainer to save (an atomic checkpoint, see
`checkpoints`) and to stop, and `train()` then raises `TrainingInterrupted` naming the checkpoint and the resume
flag. A second signal while that checkpoint is written is left to Python's default (an immediate stop): the
checkpoint rename keeps the previous one intact either way.
"""

from __future__ import annotations

import signal
import threading

from transformers import TrainerCallback

from ..errors import UserError
from .distributed import max_over_ranks


class TrainingInterrupted(UserError):
    """Training stopped on a signal after saving a checkpoint; exit code 128 + the signal's number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class StopOnSignal(TrainerCallback):
    """Install with `with StopOnSignal() as stop:`; `stop.signum` is the signal that arrived, if any."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # the second one: stop now
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: finishing this step, then saving a checkpoint", flush=True)

    def on_step_end(self, args, state, control, **kwargs):
        # Under torchrun each rank gets the signal, maybe a step apart: they all stop at the same step.
        self.signum = max_over_ranks(self.signum or 0) or None
        if self.signum is not None:
            control.should_save = True
            control.should_training_stop = True
        return control

    def error(self, run_dir, step: int) -> TrainingInterrupted:
        name = signal.Signals(self.signum).name
        return TrainingInterrupted(f"{name} at step {step}: checkpoint-{step} saved in {run_dir}/checkpoints; "
                                   "resume with the same command plus --resume", self.signum)
