"""Trainer callbacks of `train()`: the flushed JSON-lines log (and its trim on resume), TensorBoard, the stage
clock, and the epoch handed to an augmented training dataset."""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback

from ..config import Config
from .distributed import is_main


class JsonlLogCallback(TrainerCallback):
    """Append every log entry to `train_log.jsonl` and flush at once, so a killed run keeps them."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")
                fh.flush()


def trim_log(path: Path, last_step: int) -> None:
    """On resume, drop log lines from steps after the checkpoint (they will be logged again)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= last_step:
                kept.append(line)
        except ValueError:  # a line torn by a kill mid-write
            continue
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


class StageClock(TrainerCallback):
    """Wall-clock seconds of the stages of one `train()`: model loading, data preparation, training steps
    and evaluation (each evaluation runs between an epoch's end, or a step's, and `on_evaluate`)."""

    def __init__(self):
        self.seconds: dict[str, float] = {"load_model": 0.0, "prepare_data": 0.0, "train_steps": 0.0, "evaluate": 0.0}
        self._mark = time.perf_counter()
        self._train_start: float | None = None
        self._eval_start: float | None = None

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._mark
        self._mark = now

    def on_train_begin(self, args, state, control, **kwargs):
        self._train_start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._eval_start = time.perf_counter()  # an evaluation, if one follows, starts here

    def on_epoch_end(self, args, state, control, **kwargs):
        self._eval_start = time.perf_counter()

    def on_evaluate(self, args, state, control, **kwargs):
        if self._eval_start is not None:
            self.seconds["evaluate"] += time.perf_counter() - self._eval_start

    def on_train_end(self, args, state, control, **kwargs):
        if self._train_start is not None:
            self.seconds["train_steps"] = time.perf_counter() - self._train_start - self.seconds["evaluate"]


class DatasetEpoch(TrainerCallback):
    """Give the training dataset (data.augment.AugmentedSpeech) each epoch's number as the epoch begins.

    accelerate's DataLoader calls `dataset.set_epoch` itself on one process, but not under data parallelism:
    there its sampler sits in a BatchSamplerShard and `DataLoaderShard.set_epoch` sets only that sampler's
    epoch. `state.epoch` is the epochs done so far (resumed from a checkpoint too): its integer part is the
    epoch beginning."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int(state.epoch or 0))


def callbacks(cfg: Config, run_dir: Path, log_path: Path) -> list[TrainerCallback]:
    found: list[TrainerCallback] = [JsonlLogCallback(log_path)]
    if "tensorboard" in cfg.train.report_to and is_main():  # one event file per run, rank 0's
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        found.append(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(run_dir / "logs"))))
    return found
