"""Issue 18: data-parallel training through torchrun's module form, two CPU processes on gloo.

Each run of two ranks is a real `python -m torch.distributed.run --nproc_per_node 2 -m whispertune.cli train` on a
tiny random Whisper and 16 real synthesized clips whose transcripts have the same token count: then the mean of the
two ranks' token-mean losses is exactly the token mean over the global batch, and 2 ranks x 4 equals 1 rank x 8 up
to float rounding (tolerance 1e-4 relative on every logged loss). The one-rank runs they are compared with call the
same `whispertune.cli.main` in this process, on one thread as each rank has (a launch would add nothing but
Python's and torch's start-up).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from tests.helpers import make_tiny_whisper, write_espeak_folder
from whispertune.cli import main as cli_main
from whispertune.training.checkpoints import STAGING, checkpoint_step, is_complete

pytestmark = pytest.mark.synth
STEPS, SAVE = 12, 4
LOSS_RTOL = 1e-4
ADAPTER_ATOL = 1e-5


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return write_espeak_folder(tmp_path_factory.mktemp("clips16"),
                               [f"sample number {i} is spoken here" for i in range(16)])


@pytest.fixture(scope="module")
def model_dir(multilingual_tokenizer_dir, tmp_path_factory) -> Path:
    return make_tiny_whisper(tmp_path_factory.mktemp("model"), multilingual_tokenizer_dir, d_model=32, layers=1)


def _args(model_dir: Path, clips: Path, out: Path, batch: int) -> list[str]:
    return ["train", "--model.name_or_path", str(model_dir), "--model.language", "en", "--data.path", str(clips),
            "--data.eval_split", "none", "--data.cache_dir", str(out.parent / "features"),
            "--train.output_dir", str(out), "--train.per_device_batch_size", str(batch),
            "--train.max_steps", str(STEPS), "--train.save_strategy", "steps", "--train.save_steps", str(SAVE),
            "--train.learning_rate", "0.01", "--train.warmup_steps", "0", "--train.logging_steps", "1",
            "--train.gradient_checkpointing", "false", "--train.report_to", "[]", "--train.eval_strategy", "no",
            "--train.dataloader_num_workers", "0", "--lora.dropout", "0", "--lora.r", "4", "--lora.alpha", "8"]


def _command(ranks: int, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "-m", "whispertune.cli", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _train(ranks: int, args: list[str]) -> None:
    if ranks == 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # OMP_NUM_THREADS=1, as in each rank (_env)
        try:
            assert cli_main(args) == 0
        finally:
            torch.set_num_threads(threads)
        return
    done = subprocess.run(_command(ranks, args), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _losses(run: Path) -> list[float]:
    lines = (run / "train_log.jsonl").read_text().splitlines()
    return [e["loss"] for e in map(json.loads, lines) if "loss" in e]


def _adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "adapter" / "adapter_model.safetensors")


def _assert_same_adapter(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=ADAPTER_ATOL, rtol=0)


@pytest.fixture(scope="module")
def one_rank_run(model_dir, clips, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "run"
    _train(1, _args(model_dir, clips, out, batch=8))
    return out


def test_two_ranks_of_4_match_one_rank_of_8_and_leave_one_complete_checkpoint_per_step(
        one_rank_run, model_dir, clips, tmp_path):
    out = tmp_path / "run"
    _train(2, _args(model_dir, clips, out, batch=4))
    reference = _losses(one_rank_run)
    assert len(reference) == STEPS and reference[-1] < reference[0]  # it learned something
    assert _losses(out) == pytest.approx(reference, rel=LOSS_RTOL)
    _assert_same_adapter(_adapter(out), _adapter(one_rank_run))
    # rank 0 renamed one complete checkpoint per save, holding both ranks' RNG states; nothing staged is left
    root = out / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == [f"checkpoint-{s}" for s in (12, 4, 8)]
    for ckpt in root.iterdir():
        assert is_complete(ckpt) and {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in ckpt.iterdir()}
    assert not (out / "run.lock.json").exists()  # rank 0's lock released
    assert json.loads((out / "metrics.json").read_text())["global_step"] == STEPS


@pytest.mark.slow
def test_accumulation_and_checkpointing_under_ddp_match_one_rank_of_8(one_rank_run, model_dir, clips, tmp_path):
    # DDP's static graph is off with accumulation (it fails in no_sync micro-batches); checkpointed layers on
    args = _args(model_dir, clips, tmp_path / "run", batch=2)
    args[args.index("--train.gradient_checkpointing") + 1] = "true"
    _train(2, [*args, "--train.gradient_accumulation_steps", "2"])
    assert _losses(tmp_path / "run") == pytest.approx(_losses(one_rank_run), rel=LOSS_RTOL)
    _assert_same_adapter(_adapter(tmp_path / "run"), _adapter(one_rank_run))


@pytest.mark.slow
def test_kill_9_of_the_launcher_then_resume_on_2_ranks_and_on_1_rank_matches_an_uninterrupted_run(
        one_rank_run, model_dir, clips, tmp_path):
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_command(2, _args(model_dir, clips, killed, batch=4)), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (killed / "checkpoints" / f"checkpoint-{SAVE}").is_dir():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # the launcher only: its ranks die with it (PR_SET_PDEATHSIG)
    proc.wait()
    time.sleep(1)
    assert not (killed / "adapter").exists()
    root = killed / "checkpoints"
    for path in root.iterdir():  # complete checkpoints, at most a staging directory
        assert path.name == STAGING or (checkpoint_step(path) is not None and is_complete(path)), path
    for ranks, batch in ((2, 4), (1, 8)):
        run = tmp_path / f"resumed-{ranks}"
        shutil.copytree(killed, run)
        args = _args(model_dir, clips, run, batch=batch)
        _train(ranks, [*args, "--resume"])
        _assert_same_adapter(_adapter(run), _adapter(one_rank_run))


def _guard_rank(rank: int, init_file: str, results) -> None:
    """One of two gloo ranks: only rank 1 sees a NaN loss; the guard must skip the step on both."""
    from whispertune.training.guards import NonFiniteGuard

    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        model = torch.nn.Linear(2, 1)
        model.weight.grad = torch.ones_like(model.weight)
        model.bias.grad = torch.ones_like(model.bias)
        guard = NonFiniteGuard(3)
        guard.after_backward(torch.tensor(float("nan") if rank == 1 else 1.0), model)
        skipped = guard.check(model)
        results[rank] = (skipped, model.weight.grad is None, guard.host_syncs)
    finally:
        torch.distributed.destroy_process_group()


def test_the_non_finite_guard_skips_the_same_step_on_every_rank(tmp_path):
    results = mp.get_context("fork").Manager().dict()
    # forked: the ranks need nothing imported again
    mp.start_processes(_guard_rank, args=(str(tmp_path / "init"), results), nprocs=2, start_method="fork")
    assert dict(results) == {0: (True, True, 1), 1: (True, True, 1)}


def test_adalora_on_2_ranks_of_4_matches_1_rank_of_8(model_dir, clips, tmp_path):
    """AdaLoRA's rank allocation reads the gradients after DDP has averaged them: every rank prunes the same
    ranks, as one process with the global batch does (checkpoints' allocator state written by rank 0)."""
    adalora = ["--lora.variant", "adalora"]
    _train(1, [*_args(model_dir, clips, tmp_path / "one", batch=8), *adalora])
    _train(2, [*_args(model_dir, clips, tmp_path / "two", batch=4), *adalora])
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), rel=LOSS_RTOL)
    pruned = _adapter(tmp_path / "two")
    _assert_same_adapter(pruned, _adapter(tmp_path / "one"))
    assert sum(v.shape[0] for k, v in pruned.items() if "lora_E" in k) < 4 * sum("lora_E" in k for k in pruned)
    for step in (4, 8, 12):
        assert (tmp_path / "two" / "checkpoints" / f"checkpoint-{step}" / "adalora_state.safetensors").is_file()
