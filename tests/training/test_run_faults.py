"""Issue 14 B/C: signals, a second process, a finished or mismatching run, through the real command line.

The runs that receive a real SIGTERM / SIGINT are `python -m whispertune.cli train` subprocesses (real exit codes)
on a tiny random Whisper and real synthesized clips. What is checked on their run directory afterwards (a refused
fresh start, the resume, a finished run, a LoRA mismatch, the lock held by the running subprocess, --overwrite)
goes through the same `whispertune.cli.main` in this process: its return value is the process's exit code, and
each launch would pay ~6-16 s of importing torch/transformers/peft for nothing else.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import CLI_STEPS, cli_config, cli_env
from whispertune.cli import main as cli_main
from whispertune.training.checkpoints import checkpoint_step, complete_checkpoints

pytestmark = pytest.mark.slow


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "whispertune.cli", "train", *args], env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _main(capsys, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `whispertune train ARGS` run in this process."""
    capsys.readouterr()
    code = cli_main(["train", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _losses(run: Path) -> dict[int, float]:
    path = run / "train_log.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return {e["step"]: e["loss"] for e in map(json.loads, lines) if "loss" in e}


def _wait_for_step(run: Path, proc: subprocess.Popen, step: int) -> None:
    deadline = time.monotonic() + 240
    while max(_losses(run), default=0) < step:
        assert proc.poll() is None, f"training ended (exit {proc.returncode}) before step {step}: {proc.stderr.read()}"
        assert time.monotonic() < deadline, f"no step {step} within 240 s"
        time.sleep(0.01)


def test_sigterm_saves_resume_finishes_and_a_finished_run_does_nothing(
        cli_reference_run, cli_model_dir, speech_folder, tmp_path, capsys):
    expected = _losses(cli_reference_run)
    assert sorted(expected) == list(range(1, CLI_STEPS + 1))

    run = tmp_path / "run"
    # no periodic checkpoint before the end: the only one is the one the signal handler writes
    cfg = str(cli_config(tmp_path / "run.yaml", cli_model_dir, speech_folder, run, save_steps=100))
    proc = _start("--config", cfg)
    _wait_for_step(run, proc, 3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    last = err.strip().splitlines()[-1]
    saved = complete_checkpoints(run / "checkpoints")
    assert saved and last.startswith(f"whispertune: error: SIGTERM at step {checkpoint_step(saved[-1])}: checkpoint-")
    assert last.endswith("resume with the same command plus --resume")
    assert not (run / "adapter").exists()  # an interrupted run has no final adapter

    code, _, err = _main(capsys, "--config", cfg)  # a fresh start over this run's checkpoints is refused
    assert code == 2 and "--resume to continue it or --overwrite" in err
    assert complete_checkpoints(run / "checkpoints") == saved and not (run / "adapter").exists()  # nothing touched
    code, _, err = _main(capsys, "--config", cfg, "--resume")
    assert code == 0, err[-2000:]
    got = _losses(run)
    assert sorted(got) == list(range(1, CLI_STEPS + 1))
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, rel=1e-5), step

    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    code, out, _ = _main(capsys, "--config", cfg, "--resume")
    assert code == 0 and f"already finished at step {CLI_STEPS}" in out
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before

    code, _, err = _main(capsys, "--config", cfg, "--resume", "--lora.r", "8")
    assert code == 2
    assert "holds another run (LoRA" in err.strip().splitlines()[-1]
    code, _, err = _main(capsys, "--config", cfg, "--lora.r", "8", "--train.max_steps", "2", "--overwrite")
    assert code == 0, err[-2000:]
    assert sorted(_losses(run)) == [1, 2]
    assert json.loads((run / "run.json").read_text())["lora"]["r"] == 8


def test_second_process_is_locked_out_and_sigint_checkpoints(cli_model_dir, speech_folder, tmp_path, capsys):
    run = tmp_path / "run"
    cfg = str(cli_config(tmp_path / "run.yaml", cli_model_dir, speech_folder, run, save_steps=100))
    first = _start("--config", cfg, "--train.max_steps", "2000")  # still running while the second one starts
    _wait_for_step(run, first, 2)
    code, _, err = _main(capsys, "--config", cfg, "--train.max_steps", "2000", "--resume")  # this process is the second
    assert code == 2
    assert f"is in use by another whispertune process (pid {first.pid} on " in err
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGINT, err[-2000:]
    assert "SIGINT at step" in err and complete_checkpoints(run / "checkpoints")
    assert not (run / "run.lock.json").exists()  # released on the way out
