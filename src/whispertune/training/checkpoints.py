"""Adapter-only checkpoints written atomically, and finding the checkpoint to resume from.

The trainer (`atomic_trainer.AtomicCheckpointTrainer`) writes each checkpoint into `checkpoints/.tmp/checkpoint-N` and renames it to
`checkpoints/checkpoint-N` only once every file is on disk, so a run killed mid-save never leaves a
half-written `checkpoint-N` for resume to pick up. A checkpoint holds the LoRA adapter
(`adapter_model.safetensors`, `adapter_config.json`), optimizer, scheduler, RNG and trainer state;
never full-model weights.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..errors import UserError

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


def saved_variant(adapter_config: dict) -> str:
    """The whispertune lora.variant an adapter_config.json (peft's) was written by."""
    if adapter_config.get("peft_type") == "ADALORA":
        return "adalora"
    return "dora" if adapter_config.get("use_dora") else "rslora" if adapter_config.get("use_rslora") else "lora"


def check_lora_matches(checkpoint: str, r: int, alpha: int, target_modules: list[str], variant: str = "lora") -> None:
    """UserError in one line when the checkpoint's adapter has another shape or variant than the config's LoRA.

    peft may save target modules as full module paths; a config names suffixes (q_proj, self_attn.k_proj):
    they match when every saved module ends with a configured name and every configured name is used.
    AdaLoRA saves its starting rank as `init_r` (its `r` is unused).
    """
    saved = json.loads((Path(checkpoint) / "adapter_config.json").read_text(encoding="utf-8"))
    modules = saved.get("target_modules") or []
    modules = [modules] if isinstance(modules, str) else list(modules)
    old_variant = saved_variant(saved)
    old_r = saved.get("init_r") if old_variant == "adalora" else saved.get("r")

    def hits(module: str, name: str) -> bool:
        return module == name or module.endswith("." + name)

    if old_variant != variant:
        raise UserError(f"--resume {Path(checkpoint).name}: trained as lora.variant {old_variant}; this config has "
                        f"{variant}: resume with lora.variant {old_variant}, or start a new run")
    same_modules = all(any(hits(m, n) for n in target_modules) for m in modules) and \
        all(any(hits(m, n) for m in modules) for n in target_modules)
    if (old_r, saved.get("lora_alpha")) != (r, alpha) or not same_modules:
        shown = sorted({m.rsplit(".", 1)[-1] for m in modules})
        raise UserError(f"--resume {Path(checkpoint).name}: trained with LoRA r={old_r}, "
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


def best_record(state, metric: str) -> dict | None:
    """What metrics.json says of the checkpoint `train.select_best` chose (None when no evaluation had run):
    the metric, its step, its score, the checkpoint's name and every eval_* number logged at its step."""
    if not state.best_model_checkpoint:
        return None
    step = state.best_global_step
    evals = [h for h in state.log_history if h.get("step") == step and any(k.startswith("eval_") for k in h)]
    return {"metric": f"eval_{metric}", "step": step, "score": state.best_metric,
            "checkpoint": Path(state.best_model_checkpoint).name,
            "eval": {k: v for k, v in (evals[-1] if evals else {}).items() if k.startswith("eval_")}}


def full_weight_files(root: Path) -> list[Path]:
    """Full-model weight files anywhere under `root` (a checkpoint must hold none)."""
    return [p for p in root.rglob("*") if p.is_file() and FULL_WEIGHTS.match(p.name)]


def rotate_checkpoints(root: Path, keep: int | None, keep_also: Path | None = None) -> None:
    """Delete all but the newest `keep` complete checkpoints under `root` (None or 0: keep all) and `keep_also`
    (the best one, with train.select_best)."""
    if keep is None or keep <= 0:
        return
    for old in complete_checkpoints(root)[:-keep]:
        if keep_also is None or old.resolve() != keep_also.resolve():
            shutil.rmtree(old)
