"""Issue 14 B/C: signals, a second process, a finished or mismatching run, through the real command line.

Each run is a `python -m whispertune.cli train` subprocess (real SIGTERM / SIGINT, real exit codes) on a tiny
random Whisper and real synthesized clips; ~18 s of each launch is importing torch/transformers/peft.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import make_tiny_whisper
from whispertune.training.checkpoints import checkpoint_step, complete_checkpoints

pytestmark = pytest.mark.slow
STEPS = 12


def _config(path: Path, model_dir: Path, data_dir: Path, out: Path) -> Path:
    cfg = {
        "model": {"name_or_path": str(model_dir), "language": "en"},
        "quantization": {"mode": "none"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]},
        "data": {"path": str(data_dir), "eval_split": None, "cache_dir": str(path.parent / "features")},
        "train": {"output_dir": str(out), "max_steps": STEPS, "per_device_batch_size": 2, "learning_rate": 0.01,
                  "warmup_steps": 0, "logging_steps": 1, "save_strategy": "steps", "save_steps": 100,
                  "gradient_checkpointing": False, "report_to": [], "eval_strategy": "no"},
    }
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "HF_HUB_OFFLINE": "1"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "whispertune.cli", "train", *args], env=_env(),
                          capture_output=True, text=True, timeout=300)


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "whispertune.cli", "train", *args], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


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


@pytest.fixture()
def model_dir(multilingual_tokenizer_dir, tmp_path):
    return make_tiny_whisper(tmp_path / "model", multilingual_tokenizer_dir, d_model=32, layers=1)


def test_sigterm_saves_resume_finishes_and_a_finished_run_does_nothing(model_dir, speech_folder, tmp_path):
    reference = _cli("--config", str(_config(tmp_path / "ref.yaml", model_dir, speech_folder, tmp_path / "ref")))
    assert reference.returncode == 0, reference.stderr[-2000:]
    expected = _losses(tmp_path / "ref")

    run = tmp_path / "run"
    cfg = str(_config(tmp_path / "run.yaml", model_dir, speech_folder, run))
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

    fresh = _cli("--config", cfg)  # a fresh start over this run's checkpoints is refused, nothing touched
    assert fresh.returncode == 2 and "--resume to continue it or --overwrite" in fresh.stderr
    resumed = _cli("--config", cfg, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got = _losses(run)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, rel=1e-5), step

    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    again = _cli("--config", cfg, "--resume")
    assert again.returncode == 0 and f"already finished at step {STEPS}" in again.stdout
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before

    other = _cli("--config", cfg, "--resume", "--lora.r", "8")
    assert other.returncode == 2
    assert "holds another run (LoRA" in other.stderr.strip().splitlines()[-1]
    replaced = _cli("--config", cfg, "--lora.r", "8", "--train.max_steps", "2", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert sorted(_losses(run)) == [1, 2]
    assert json.loads((run / "run.json").read_text())["lora"]["r"] == 8


def test_second_process_is_locked_out_and_sigint_checkpoints(model_dir, speech_folder, tmp_path):
    run = tmp_path / "run"
    cfg = str(_config(tmp_path / "run.yaml", model_dir, speech_folder, run))
    first = _start("--config", cfg, "--train.max_steps", "2000")  # still running while the second one starts
    _wait_for_step(run, first, 2)
    second = _cli("--config", cfg, "--train.max_steps", "2000", "--resume")
    assert second.returncode == 2
    assert f"is in use by another whispertune process (pid {first.pid} on " in second.stderr
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGINT, err[-2000:]
    assert "SIGINT at step" in err and complete_checkpoints(run / "checkpoints")
    assert not (run / "run.lock.json").exists()  # released on the way out
