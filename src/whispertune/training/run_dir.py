"""A run directory's identity and lock, and how files in it appear (atomic directory writes).

`train.output_dir` holds one run. Its `run.json` records what the run is: a hash of the config fields that
decide the trained weights, the base model, the LoRA shape and the data's fingerprint. `claim()` compares a
new start with that record before anything is loaded: a different run refuses to start there unless
`--overwrite` (which first removes the old run's checkpoints, adapter and logs), and a fresh start of the same
run over existing checkpoints refuses too (continue with `--resume`, or `--overwrite`). Fields that change how
fast or how verbosely a run goes (output paths, workers, logging, evaluation batch) are not part of the hash.

`RunLock` keeps a second process out: an OS file lock (the `filelock` package, `flock` on POSIX) that the kernel
releases when its holder dies, so a lock left by a killed run is never stale; `run.lock.json` beside it names
the holder (pid, host, start) for the error message.

Files in it appear by atomic renames (`whispertune.atomic_files`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..atomic_files import write_file_atomically
from ..config_lora import ADALORA_KEYS, LoraConfig
from ..data.report import REPORT_FILENAME, SKIP_LOG_FILENAME
from ..errors import UserError

IDENTITY_FILE = "run.json"
LOCK_FILE = "run.lock"
HOLDER_FILE = "run.lock.json"
# What a run writes into its directory: removed by --overwrite (anything else there is left alone).
RUN_OUTPUTS = ("checkpoints", "adapter", "logs", "metrics.json", "train_log.jsonl", "loss.png", "config.yaml",
               REPORT_FILENAME, SKIP_LOG_FILENAME, IDENTITY_FILE)
# Config fields that do not change what is trained: paths, speed of the data pipeline, logging, evaluation batch.
_NOT_IDENTITY = {
    "train": {"output_dir", "logging_steps", "report_to", "dataloader_num_workers", "save_total_limit",
              "push_to_hub", "max_nonfinite_steps",
              # training longer (or evaluating/saving on another schedule) continues the same run
              "max_steps", "num_epochs", "eval_strategy", "eval_steps", "save_strategy", "save_steps"},
    "data": {"num_proc", "cache_dir", "token"},
    "model": {"token"},
    "eval": {"batch_size"},
}


@dataclass(frozen=True)
class RunIdentity:
    config_hash: str
    base_model: str
    lora: dict[str, Any]
    data_fingerprint: str

    @classmethod
    def of(cls, cfg, data_fingerprint: str, world_size: int = 1) -> RunIdentity:
        """The identity of a run of `cfg` (a `whispertune.config.Config`) on data with `data_fingerprint`,
        trained by `world_size` data-parallel processes.

        The batch counts as the global batch (per-device batch x accumulation steps x processes): a run of
        2 ranks x 4 continues as 1 rank x 8 (or x 4 with 2 accumulation steps), the same optimizer steps."""
        fields = cfg.to_dict()
        for section, names in _NOT_IDENTITY.items():
            for name in names:
                fields.get(section, {}).pop(name, None)
        # the variant keys at their defaults (plain LoRA) are left out: a run recorded before they existed
        # keeps its identity and resumes
        defaults = LoraConfig()
        for key in ("variant", *ADALORA_KEYS):
            if fields["lora"].get(key) == getattr(defaults, key):
                fields["lora"].pop(key)
        if fields["data"].get("pack_utterances") == 1:  # off, as before the key existed: old runs resume
            fields["data"].pop("pack_utterances")
        train = fields["train"]
        train["global_batch_size"] = (train.pop("per_device_batch_size") * train.pop("gradient_accumulation_steps")
                                      * world_size)
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
        lora = {"r": cfg.lora.r, "alpha": cfg.lora.alpha, "target_modules": sorted(cfg.lora.target_modules)}
        if cfg.lora.variant != "lora":
            lora["variant"] = cfg.lora.variant
        return cls(digest, str(cfg.model.name_or_path), lora, data_fingerprint)

    def differences(self, other: RunIdentity) -> list[str]:
        """Human-readable fields where `other` (the recorded run) differs from this one."""
        out = []
        if self.base_model != other.base_model:
            out.append(f"base model {other.base_model} -> {self.base_model}")
        if self.lora != other.lora:
            out.append(f"LoRA {other.lora} -> {self.lora}")
        if self.data_fingerprint != other.data_fingerprint:
            out.append("training data")
        if not out and self.config_hash != other.config_hash:
            out.append("training settings")
        return out


def data_fingerprint(data) -> str:
    """A hash of what identifies the training data (`data`: a `DataConfig`), cheap enough to take before loading.

    Local folders and manifests: the bytes of their metadata / manifest files (the transcripts and file list;
    audio files are not read). Hub and saved datasets: their id, config and splits (already in the config hash,
    plus the revision a Hub id resolves to when given).
    """
    digest = hashlib.sha256(json.dumps([data.source, data.path, data.config_name, data.train_split]).encode())
    root = Path(data.path).expanduser()
    if data.source in ("folder", "manifest"):
        files = [root] if root.is_file() else sorted(
            p for p in root.rglob("*") if p.is_file() and (p.name.startswith("metadata.") or p.suffix == ".jsonl"))
        for path in files:
            digest.update(str(path.relative_to(root) if path != root else path.name).encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def read_identity(run_dir: Path) -> RunIdentity | None:
    path = run_dir / IDENTITY_FILE
    if not path.is_file():
        return None
    try:
        return RunIdentity(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise UserError(f"{path}: unreadable run record ({exc}); pass --overwrite to start a new run there") from None


def _holds_a_run(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in ("checkpoints", "adapter", "train_log.jsonl"))


def _has_checkpoints(run_dir: Path) -> bool:
    """A renamed-into-place `checkpoint-N` (a run killed before its first one left only staging files)."""
    root = run_dir / "checkpoints"
    return root.is_dir() and any(p.is_dir() and p.name.startswith("checkpoint-") for p in root.iterdir())


def _clear(run_dir: Path) -> None:
    for name in RUN_OUTPUTS:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def claim(run_dir: Path, identity: RunIdentity, *, resuming: bool, overwrite: bool) -> None:
    """Check that `run_dir` may hold this run (see the module docstring), then record its identity."""
    recorded = read_identity(run_dir) if run_dir.is_dir() else None
    if overwrite:
        if resuming:
            raise UserError("--overwrite and --resume contradict each other: pass one of them")
        if run_dir.is_dir():
            _clear(run_dir)
    elif recorded is not None:
        changed = identity.differences(recorded)
        if changed:
            raise UserError(f"{run_dir} holds another run ({'; '.join(changed)}); choose another train.output_dir "
                            "or pass --overwrite to replace it")
        if not resuming and _has_checkpoints(run_dir):
            raise UserError(f"{run_dir} already holds checkpoints of this run: pass --resume to continue it "
                            "or --overwrite to start again")
    elif run_dir.is_dir() and _holds_a_run(run_dir):
        raise UserError(f"{run_dir} holds training output without a run record ({IDENTITY_FILE}); choose another "
                        "train.output_dir or pass --overwrite to replace it")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_file_atomically(run_dir / IDENTITY_FILE, json.dumps(asdict(identity), indent=2) + "\n")


class RunLock:
    """Exclusive use of a run directory by one process (see the module docstring). A context manager."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self._lock = FileLock(str(run_dir / LOCK_FILE), timeout=0)

    def __enter__(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            raise UserError(f"{self.run_dir} is in use by another whispertune process ({self._holder()}); "
                            "wait for it to finish or choose another train.output_dir") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_file_atomically(self.run_dir / HOLDER_FILE, json.dumps(holder) + "\n")
        return self

    def __exit__(self, *exc) -> None:
        (self.run_dir / HOLDER_FILE).unlink(missing_ok=True)
        self._lock.release()

    def _holder(self) -> str:
        try:
            info = json.loads((self.run_dir / HOLDER_FILE).read_text(encoding="utf-8"))
            return f"pid {info['pid']} on {info['host']} since {info['since']}"
        except (OSError, ValueError, KeyError):
            return "holder unknown"
