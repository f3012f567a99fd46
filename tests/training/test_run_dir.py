"""Run-directory identity, lock and atomic directory writes, on real files and real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from whispertune.config import load_config
from whispertune.errors import UserError
from whispertune.training.run_dir import (
    HOLDER_FILE,
    IDENTITY_FILE,
    RunIdentity,
    RunLock,
    claim,
)


def _identity(tmp_path, *overrides: str, data: str = "fp-a") -> RunIdentity:
    cfg = load_config(None, [f"train.output_dir={tmp_path / 'run'}", *overrides])
    return RunIdentity.of(cfg, data)


def test_identity_ignores_paths_and_logging_but_not_training(tmp_path):
    base = _identity(tmp_path)
    assert base == _identity(tmp_path, "train.logging_steps=7", "data.num_proc=3", "eval.batch_size=64")
    assert base.config_hash != _identity(tmp_path, "train.learning_rate=0.5").config_hash
    assert _identity(tmp_path, "lora.r=8").differences(base) == [f"LoRA {base.lora} -> {_identity(tmp_path, 'lora.r=8').lora}"]
    assert _identity(tmp_path, data="fp-b").differences(base) == ["training data"]


def test_claim_records_and_refuses_another_run(tmp_path):
    run = tmp_path / "run"
    claim(run, _identity(tmp_path), resuming=False, overwrite=False)
    recorded = json.loads((run / IDENTITY_FILE).read_text())
    assert recorded["data_fingerprint"] == "fp-a"
    with pytest.raises(UserError, match=r"holds another run \(LoRA .*--overwrite"):
        claim(run, _identity(tmp_path, "lora.r=4"), resuming=False, overwrite=False)
    claim(run, _identity(tmp_path), resuming=True, overwrite=False)  # same run: fine


def test_fresh_start_over_checkpoints_needs_resume_or_overwrite(tmp_path):
    run = tmp_path / "run"
    claim(run, _identity(tmp_path), resuming=False, overwrite=False)
    (run / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (run / "adapter").mkdir()
    (run / "mine.txt").write_text("user file")
    with pytest.raises(UserError, match="--resume to continue"):
        claim(run, _identity(tmp_path), resuming=False, overwrite=False)
    claim(run, _identity(tmp_path, "lora.r=4"), resuming=False, overwrite=True)
    assert not (run / "checkpoints").exists() and not (run / "adapter").exists()
    assert (run / "mine.txt").read_text() == "user file"  # only the run's own outputs are removed
    assert json.loads((run / IDENTITY_FILE).read_text())["lora"]["r"] == 4


def test_output_without_a_record_is_not_taken_over(tmp_path):
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    with pytest.raises(UserError, match="without a run record"):
        claim(run, _identity(tmp_path), resuming=False, overwrite=False)
    with pytest.raises(UserError, match="contradict"):
        claim(run, _identity(tmp_path), resuming=True, overwrite=True)


def test_lock_keeps_a_second_process_out_and_dies_with_its_holder(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pathlib import Path
        from whispertune.training.run_dir import RunLock
        with RunLock(Path({str(run)!r})):
            print("held", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"in use by another whispertune process \(pid {holder.pid} on "):
            with RunLock(run):
                pass
    finally:
        holder.kill()  # SIGKILL: no cleanup runs in the holder
        holder.wait()
    assert (run / HOLDER_FILE).exists()  # left behind by the killed holder ...
    with RunLock(run):  # ... but the kernel released its lock: not stale
        assert json.loads((run / HOLDER_FILE).read_text())["pid"] == os.getpid()
    assert not (run / HOLDER_FILE).exists()
