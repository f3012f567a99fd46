"""Issue 18: streaming training from a local dataset of parquet shards read with `streaming=True`.

The shards hold real synthesized clips (audio bytes in the parquet rows, as Hub datasets store them) and one
row with an empty transcript; training runs through the real command line with 2 DataLoader workers (the
features are computed there) and a shuffle buffer smaller than the data.
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

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import make_tiny_whisper
from whispertune.config import load_config
from whispertune.errors import ConfigError

STEPS, SAVE, BATCH = 8, 4, 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """train-0000{0..3}-of-00004.parquet (13 usable rows + 1 empty transcript), test-00000-of-00001.parquet."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    clips, root = tmp_path_factory.mktemp("clips"), tmp_path_factory.mktemp("parquet")
    rows = []
    for i in range(16):
        text = f"sample number {i} is spoken here"
        subprocess.run(["espeak-ng", "-w", str(clips / f"c{i}.wav"), text], check=True)
        rows.append({"id": f"c{i}", "audio": {"bytes": (clips / f"c{i}.wav").read_bytes(), "path": f"c{i}.wav"},
                     "text": "" if i == 10 else text})
    for n, (start, stop) in enumerate([(0, 3), (3, 6), (6, 9), (9, 14)]):
        pq.write_table(pa.Table.from_pylist(rows[start:stop]), root / f"train-{n:05d}-of-00004.parquet")
    pq.write_table(pa.Table.from_pylist(rows[14:]), root / "test-00000-of-00001.parquet")
    return root


@pytest.fixture(scope="module")
def model_dir(multilingual_tokenizer_dir, tmp_path_factory) -> Path:
    return make_tiny_whisper(tmp_path_factory.mktemp("model"), multilingual_tokenizer_dir, d_model=32, layers=1)


def _args(model_dir: Path, shards: Path, out: Path) -> list[str]:
    return ["train", "--model.name_or_path", str(model_dir), "--model.language", "en", "--data.source", "hub",
            "--data.path", str(shards), "--data.streaming", "true", "--data.shuffle_buffer", "4",
            "--data.eval_split", "test", "--data.cache_dir", str(out.parent / "features"),
            "--train.output_dir", str(out), "--train.per_device_batch_size", str(BATCH),
            "--train.max_steps", str(STEPS), "--train.save_strategy", "steps", "--train.save_steps", str(SAVE),
            "--train.eval_strategy", "steps", "--train.eval_steps", str(SAVE), "--train.dataloader_num_workers", "2",
            "--train.learning_rate", "0.01", "--train.warmup_steps", "0", "--train.logging_steps", "1",
            "--train.gradient_checkpointing", "false", "--train.report_to", "[]",
            "--lora.dropout", "0", "--lora.r", "4", "--lora.alpha", "8"]


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "whispertune.cli", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _train(args: list[str]) -> None:
    done = subprocess.run(_cli(args), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def streamed_run(model_dir, shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("streamed") / "run"
    _train(_args(model_dir, shards, out))
    return out


def test_streaming_config_needs_max_steps_and_a_hub_style_source():
    with pytest.raises(ConfigError, match=r"data\.streaming: true needs train\.max_steps > 0"):
        load_config(None, ["data.source=hub", "data.path=x", "data.streaming=true"])
    with pytest.raises(ConfigError, match=r"data\.source=folder is read whole"):
        load_config(None, ["data.path=x", "data.streaming=true", "train.max_steps=10"])


def test_streaming_trains_evaluates_on_the_whole_test_split_and_counts_skipped_rows(streamed_run):
    metrics = json.loads((streamed_run / "metrics.json").read_text())
    assert metrics["global_step"] == STEPS and "eval_loss" in metrics["eval"]
    losses = [e["loss"] for e in map(json.loads, (streamed_run / "train_log.jsonl").read_text().splitlines())
              if "loss" in e]
    assert len(losses) == STEPS and losses[-1] < losses[0]
    report = json.loads((streamed_run / "data_report.json").read_text())
    assert report["splits"]["test"]["kept"] == 2  # evaluation read its split whole
    assert report["splits"]["train"]["kept"] == STEPS * BATCH  # rows trained on (the stream passed more than once)
    assert report["splits"]["train"]["skipped"] == {"empty_text": 1}
    assert [e["id"] for e in report["skipped_examples"]] == ["c10"]


@pytest.mark.slow
def test_a_killed_streaming_run_resumes_where_its_checkpoint_was(streamed_run, model_dir, shards, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(_cli(_args(model_dir, shards, run)), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (run / "checkpoints" / f"checkpoint-{SAVE}").is_dir():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "adapter").exists()
    _train([*_args(model_dir, shards, run), "--resume"])
    # the same rows in the same order after the checkpoint: the same losses and the same adapter
    logged = [(run / "train_log.jsonl"), (streamed_run / "train_log.jsonl")]
    resumed, reference = ([e["loss"] for e in map(json.loads, p.read_text().splitlines()) if "loss" in e]
                          for p in logged)
    assert resumed == pytest.approx(reference, rel=1e-5)
    a, b = (load_file(r / "adapter" / "adapter_model.safetensors") for r in (run, streamed_run))
    for name in b:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0)
