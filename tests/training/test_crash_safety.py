"""Issue 8 item 2: a training process killed with SIGKILL at random moments (one of them in the middle
of a checkpoint write) and resumed with `--resume` each time ends exactly where an uninterrupted run ends.

Start-up cost, measured on the 2-core CI machine: `python -m whispertune.cli train` spends ~16 s of an
18 s tiny run importing torch/transformers/peft/bitsandbytes. Paying that for each of 7 launches would
take ~2 minutes, so the reference run is a real `python -m whispertune.cli train` subprocess
(`cli_reference_run` of tests/training/conftest.py, shared with tests/training/test_run_faults.py) and the
killed/resumed runs are children of a multiprocessing fork server that imported whispertune once; each runs
the same `whispertune.cli.main([...])` entry point in its own process and is killed with a real SIGKILL.
(Not plain fork from the test process: after torch has run parallel CPU work there, a forked child can hang
in OpenMP's thread pool.)
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import CLI_STEPS, cli_config
from whispertune.training.checkpoints import STAGING, checkpoint_step, complete_checkpoints

STEPS = CLI_STEPS
SAVE_STEPS = 2  # as in the reference run
KILLS = 6
TIMEOUT_S = 60.0


def _run_cli(argv: list[str], log: str, threads: int) -> None:
    """Child process body: the CLI entry point with its output in `log`."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    torch.set_num_threads(threads)  # the same as the reference run's, for identical arithmetic
    from whispertune.cli import main

    os._exit(main(argv))


def _logged_losses(run: Path) -> dict[int, float]:
    path = run / "train_log.jsonl"
    if not path.is_file():
        return {}
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {e["step"]: e["loss"] for e in entries if "loss" in e}


def _wait_for(predicate, proc, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not predicate():
        if not proc.is_alive():
            raise AssertionError(f"training process ended (exit {proc.exitcode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.0005)


def _writing_checkpoint(staging: Path) -> bool:
    """True once a checkpoint in the staging dir has files but has not been renamed yet."""
    return any((d / "adapter_model.safetensors").exists() for d in staging.glob("checkpoint-*"))


@pytest.mark.synth
def test_sigkill_at_random_moments_then_resume_matches_uninterrupted(
        cli_reference_run, cli_model_dir, speech_folder, tmp_path):
    threads = torch.get_num_threads()  # the reference ran with this many (cli_env); the forked runs set the same
    reference = _logged_losses(cli_reference_run)
    assert sorted(reference) == list(range(1, STEPS + 1))

    run = tmp_path / "killed"
    cfg = cli_config(tmp_path / "killed.yaml", cli_model_dir, speech_folder, run, save_steps=SAVE_STEPS)
    staging = run / "checkpoints" / STAGING
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "whispertune.cli", "whispertune.training.trainer"])
    rng = random.Random(8)
    mid_write_kill_at = rng.randrange(1, KILLS)  # which kill waits for a checkpoint being written
    mid_write_seen = False
    kills = 0
    while kills < KILLS:
        resume = ["--resume"] if complete_checkpoints(run / "checkpoints") else []
        before = _logged_losses(run)
        start = max(before, default=0)
        proc = ctx.Process(target=_run_cli,
                           args=(["train", "--config", str(cfg), *resume], str(tmp_path / "out.log"), threads))
        proc.start()
        if kills >= mid_write_kill_at and not mid_write_seen:
            _wait_for(lambda: _writing_checkpoint(staging), proc, "a checkpoint write")
        else:  # a random moment: some time after a randomly chosen step has been logged
            target = rng.randint(min(start + 1, STEPS - 3), STEPS - 3)  # leave time to kill before the end
            _wait_for(lambda: max(_logged_losses(run), default=0) >= target, proc, f"step {target}")  # noqa: B023
            time.sleep(rng.uniform(0.0, 0.2))
        proc.kill()  # SIGKILL
        proc.join()
        assert proc.exitcode == -signal.SIGKILL, "the process ended before it was killed"
        kills += 1
        partial = [d for d in staging.glob("checkpoint-*")] if staging.is_dir() else []
        if kills > mid_write_kill_at and not mid_write_seen and partial:
            mid_write_seen = True
            # the half-written checkpoint was never renamed into place and resume will not see it
            step = checkpoint_step(partial[0])
            assert not (run / "checkpoints" / partial[0].name).exists()
            assert all(checkpoint_step(c) < step for c in complete_checkpoints(run / "checkpoints"))

        after = _logged_losses(run)
        print(f"kill {kills}: resumed={bool(resume)} last logged step {max(after, default=0)}, "
              f"checkpoints {[checkpoint_step(c) for c in complete_checkpoints(run / 'checkpoints')]}, "
              f"staging {[d.name for d in partial]}")
        # everything logged before this kill is still there (later steps may extend it)
        for step, loss in before.items():
            if step <= max(after, default=0):
                assert after[step] == pytest.approx(loss, rel=1e-6), step
        for step, loss in after.items():  # and every loss logged so far equals the reference
            assert loss == pytest.approx(reference[step], rel=1e-5), (step, loss, reference[step])
    assert mid_write_seen, "no kill landed inside a checkpoint write"

    # Finish with --resume and compare with the uninterrupted run.
    proc = ctx.Process(target=_run_cli,
                       args=(["train", "--config", str(cfg), "--resume"], str(tmp_path / "out.log"), threads))
    proc.start()
    proc.join(timeout=300)
    assert proc.exitcode == 0, (tmp_path / "out.log").read_text()[-3000:]
    assert not staging.exists()  # the interrupted write was cleared
    final = _logged_losses(run)
    lines = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in lines if "loss" in e] == list(range(1, STEPS + 1))  # each step once
    for step in range(1, STEPS + 1):
        assert final[step] == pytest.approx(reference[step], rel=1e-5), step
    ref_metrics = json.loads((cli_reference_run / "metrics.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["final_train_loss"] == pytest.approx(ref_metrics["final_train_loss"], rel=1e-5)
    ref_adapter = load_file(cli_reference_run / "adapter" / "adapter_model.safetensors")
    adapter = load_file(run / "adapter" / "adapter_model.safetensors")
    assert ref_adapter.keys() == adapter.keys()
    for name, tensor in ref_adapter.items():
        torch.testing.assert_close(adapter[name], tensor, rtol=1e-5, atol=1e-7)
