"""Adapter-only checkpoints written atomically, and finding the checkpoint to resume from.

The trainer writes each checkpoint into `checkpoints/.tmp/checkpoint-N` and renames it to
`checkpoints/checkpoint-N` only once every file is on disk, so a run killed mid-save never leaves a
half-written `checkpoint-N` for resume to pick up. A checkpoint holds the LoRA adapter
(`adapter_model.safetensors`, `adapter_config.json`), optimizer, scheduler, RNG and trainer state;
never full-model weights.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import Seq2SeqTrainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..errors import UserError
from ..inference.generation import input_dtype
from .guards import DEFAULT_MAX_NONFINITE_STEPS, NonFiniteGuard

STAGING = ".tmp"
# Files a resumable checkpoint must hold (the rename makes them all-or-nothing; this also rejects
# directories copied in by hand).
REQUIRED = ("adapter_model.safetensors", "adapter_config.json", "trainer_state.json", "optimizer.pt", "scheduler.pt")
FULL_WEIGHTS = re.compile(r"^(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?$")
_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def checkpoint_step(path: Path) -> int | None:
    match = _CHECKPOINT.match(path.name)
    return int(match.group(1)) if match else None


def is_complete(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in REQUIRED)


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete `checkpoint-N` directories under `root`, oldest step first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if checkpoint_step(p) is not None and is_complete(p)]
    return sorted(found, key=lambda p: checkpoint_step(p))


def newest_checkpoint(root: Path) -> Path | None:
    """The complete checkpoint with the highest step under `root`, or None."""
    found = complete_checkpoints(root)
    return found[-1] if found else None


def unreadable(path: Path) -> str | None:
    """What keeps a complete checkpoint from loading (adapter, optimizer or trainer state), or None."""
    try:
        with safe_open(str(path / "adapter_model.safetensors"), framework="pt") as fh:
            list(fh.keys())
        torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)  # our own file, tensors only
        json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except Exception as exc:  # noqa: BLE001 - any failure to load makes it unusable; say which
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
    return None


def resolve_resume(root: Path, resume: bool | str | None) -> str | None:
    """`True`: the newest complete checkpoint under `root` that loads, falling back to older ones (UserError if
    none); a path: that one, checked complete and loadable; `None`/`False`: no resume."""
    if resume is None or resume is False:
        return None
    if resume is True:
        found = complete_checkpoints(root)
        if not found:
            raise UserError(f"--resume: no complete checkpoint in {root} (nothing to resume; drop --resume)")
        for path in reversed(found):
            problem = unreadable(path)
            if problem is None:
                return str(path)
            print(f"resume: skipping {path.name}, it does not load ({problem})")
        raise UserError(f"--resume: no checkpoint in {root} loads (newest: {found[-1].name}); start again without --resume")
    path = Path(resume)
    if not path.is_dir():
        raise UserError(f"--resume {resume}: no such checkpoint directory")
    if not is_complete(path):
        missing = [n for n in REQUIRED if not (path / n).is_file()]
        raise UserError(f"--resume {resume}: incomplete checkpoint (missing {', '.join(missing)})")
    problem = unreadable(path)
    if problem:
        raise UserError(f"--resume {resume}: the checkpoint does not load ({problem})")
    return str(path)


def check_lora_matches(checkpoint: str, r: int, alpha: int, target_modules: list[str]) -> None:
    """UserError in one line when the checkpoint's adapter has another shape than the config's LoRA.

    peft may save target modules as full module paths; a config names suffixes (q_proj, self_attn.k_proj):
    they match when every saved module ends with a configured name and every configured name is used.
    """
    saved = json.loads((Path(checkpoint) / "adapter_config.json").read_text(encoding="utf-8"))
    modules = saved.get("target_modules") or []
    modules = [modules] if isinstance(modules, str) else list(modules)

    def hits(module: str, name: str) -> bool:
        return module == name or module.endswith("." + name)

    same_modules = all(any(hits(m, n) for n in target_modules) for m in modules) and \
        all(any(hits(m, n) for m in modules) for n in target_modules)
    if (saved.get("r"), saved.get("lora_alpha")) != (r, alpha) or not same_modules:
        shown = sorted({m.rsplit(".", 1)[-1] for m in modules})
        raise UserError(f"--resume {Path(checkpoint).name}: trained with LoRA r={saved.get('r')}, "
                        f"alpha={saved.get('lora_alpha')}, modules {','.join(shown)}; this config has r={r}, "
                        f"alpha={alpha}, modules {','.join(sorted(target_modules))}: resume with the run's own "
                        "config, or start a new run")


def finished_at(checkpoint: str, max_steps: int, num_epochs: float) -> int | None:
    """The step at which the checkpoint's run had reached the end this config plans, or None if steps are left.

    The checkpoint's own plan counts unless the config asks for more: more steps (`max_steps` > 0) or, for
    an epoch-based plan, more epochs than the checkpoint's run had.
    """
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
    step, planned = state.get("global_step", 0), state.get("max_steps", 0)
    if not planned or step < planned:
        return None
    if max_steps > 0:
        return step if step >= max_steps else None
    return step if num_epochs <= float(state.get("num_train_epochs", 0)) else None


def full_weight_files(root: Path) -> list[Path]:
    """Full-model weight files anywhere under `root` (a checkpoint must hold none)."""
    return [p for p in root.rglob("*") if p.is_file() and FULL_WEIGHTS.match(p.name)]


def _rotate(root: Path, keep: int | None) -> None:
    if keep is None or keep <= 0:
        return
    for old in complete_checkpoints(root)[:-keep]:
        shutil.rmtree(old)


class AtomicCheckpointTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer whose checkpoints appear by an atomic rename and hold the adapter only, and
    whose steps with a NaN/inf loss or gradient update nothing (see `training.guards`)."""

    _staging_root: str | None = None

    def __init__(self, *args, max_nonfinite_steps: int = DEFAULT_MAX_NONFINITE_STEPS, **kwargs):
        super().__init__(*args, **kwargs)
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

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if self.nonfinite_guard.skipped_steps:  # also lands in train_log.jsonl and metrics
            logs = {**logs, "nonfinite_skipped": len(self.nonfinite_guard.skipped_steps)}
        super().log(logs, *args, **kwargs)

    def _get_output_dir(self, trial) -> str:
        # While a checkpoint is being written, the parent class writes into the staging directory.
        return self._staging_root or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        root = Path(self.args.output_dir)
        staging = root / STAGING
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        self._staging_root = str(staging)
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_root = None
        written = staging / name
        stray = full_weight_files(written)
        if stray:  # a PeftModel saves only its adapter; anything else is a bug, not a checkpoint
            raise RuntimeError(f"checkpoint {name} would contain full-model weights: {[p.name for p in stray]}")
        for path in written.rglob("*"):
            if path.is_file():
                with open(path, "rb") as fh:
                    os.fsync(fh.fileno())
        target = root / name
        if target.exists():  # same step saved again (e.g. after resume): replace the old copy
            shutil.rmtree(target)
        os.replace(written, target)
        shutil.rmtree(staging, ignore_errors=True)
        _rotate(root, self.args.save_total_limit)
