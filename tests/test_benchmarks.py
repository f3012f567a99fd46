"""The benchmark scripts (benchmarks/): a smoke run of each on the tiny architecture, and the batched
log-Mel features they use checked against transformers' feature extractor. Each script's `main(argv)` runs in
this process (what `python benchmarks/SCRIPT ARGS` runs once its imports are done): a fresh interpreter for
each would add nothing but Python's and torch's start-up."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from transformers import WhisperFeatureExtractor

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def common():
    """benchmarks/common.py, loaded from its file (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("benchmarks_common", REPO / "benchmarks" / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(name: str, argv: list[str]) -> None:
    """benchmarks/NAME loaded from its file and its `main(argv)` run; a script that fails raises or returns nonzero."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{Path(name).stem}", REPO / "benchmarks" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(argv) in (None, 0), name


@pytest.mark.synth
def test_log_mel_batch_equals_feature_extractor_on_speech(common, tmp_path):
    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en", "-w", str(wav), "whispertune makes fine tuning faster"], check=True)
    audio, sr = sf.read(wav, dtype="float32")
    speech = soxr.resample(audio, sr, 16000).astype(np.float32)
    clips = [speech, speech[: len(speech) // 3], np.concatenate([speech] * 12)]  # short, shorter, over 30 s
    fe = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000)
    expected = fe(clips, sampling_rate=16000, return_tensors="np")["input_features"]
    got = common.log_mel_batch(clips, fe.mel_filters).numpy()
    assert got.shape == expected.shape == (3, 80, 3000)
    assert np.abs(got - expected).max() < 1e-4


def test_benchmark_scripts_smoke(tmp_path):
    """train/eval/preprocess benchmarks on the tiny architecture write JSON lines that render to a table."""
    common_args = ["--results-dir", str(tmp_path), "--model-root", str(tmp_path / "models")]
    run_script("train_throughput.py", ["--arch", "tiny-random", "--steps", "1", "--warmup", "1", "--label-len", "4",
                                       "--spec", "preset=plain,batch=1,precision=fp32,label=plain", *common_args])
    run_script("eval_throughput.py", ["--arch", "tiny-random", "--new-tokens", "3", "--batches", "1", "--warmup", "0",
                                      "--check", "2", "--spec", "loop=whispertune,batch=2", *common_args])
    run_script("preprocess_throughput.py", ["--clips", "4", "--batch", "2", "--repeats", "1",
                                            "--methods", "hf,batched-cpu", "--results-dir", str(tmp_path)])
    train = json.loads((tmp_path / "train_throughput.jsonl").read_text().splitlines()[0])
    assert train["loss_finite"] and train["samples_per_s"] > 0 and "error" not in train
    evaluation = json.loads((tmp_path / "eval_throughput.jsonl").read_text().splitlines()[0])
    assert evaluation["tokens_generated"] == 3 and evaluation["check_identical_sequences"] == 2
    pre = [json.loads(x) for x in (tmp_path / "preprocess_throughput.jsonl").read_text().splitlines()]
    assert {p["method"] for p in pre} == {"hf", "batched-cpu"} and all(p["max_abs_diff_vs_hf"] < 1e-4 for p in pre)
    table = subprocess.run([sys.executable, "benchmarks/render_table.py", "--results-dir", str(tmp_path)],
                           cwd=REPO, check=True, capture_output=True, text=True).stdout
    assert "| plain | fp32 | 1 |" in table and "batched-cpu" in table


@pytest.mark.synth
def test_adapter_variants_benchmark_trains_and_scores_each_variant(tiny_whisper_dir, tmp_path):
    """benchmarks/adapter_variants.py end to end (2 steps) on a tiny random Whisper and espeak-ng clips."""
    for split in ("train", "test"):
        folder = tmp_path / "corpus" / split
        folder.mkdir(parents=True)
        lines = ["file_name,text"]
        for i, text in enumerate(["hello world", "good morning"]):
            subprocess.run(["espeak-ng", "-w", str(folder / f"c{i}.wav"), text], check=True)
            lines.append(f"c{i}.wav,{text}")
        (folder / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    run_script("adapter_variants.py", [
        "--model", str(tiny_whisper_dir), "--data", str(tmp_path / "corpus"), "--steps", "2", "--batch", "2", "--r", "4",
        "--alpha", "8", "--variants", "dora,adalora", "--work", str(tmp_path / "runs"),
        "--results", str(tmp_path / "results"), "--set", "generation.max_new_tokens=4",
        "--set", "data.cache_dir=" + str(tmp_path / "features")])
    rows = [json.loads(x) for x in (tmp_path / "results" / "adapter_variants.jsonl").read_text().splitlines()]
    assert [r["variant"] for r in rows] == ["dora", "adalora"] and len({r["run_id"] for r in rows}) == 1
    for row in rows:
        assert "error" not in row, row.get("traceback")
        assert row["settings"]["lora"]["variant"] == row["variant"] and row["global_step"] == 2
        assert row["eval_utterances"] == 2 and row["wer"] >= 0 and row["samples_per_s_train_steps"] > 0
        assert {"torch", "transformers", "peft", "date", "device"} <= row.keys()
    dora, adalora = rows
    assert dora["adapter_params"] == dora["trainable_params"]  # magnitudes included
    assert adalora["adapter_params"] < adalora["trainable_params"]  # the saved AdaLoRA adapter is pruned


def test_launch_ratio_pairs_each_launcher_with_plain_rows_of_the_same_config():
    """torchrun-/pgplain- rows against plain- rows of the same config since --calls: by median and step for step."""
    spec = importlib.util.spec_from_file_location("benchmarks_launch_ratio", REPO / "benchmarks" / "launch_ratio.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def row(label, run, steps, date="2026-12-03T06:00:00"):
        median = sorted(steps)[len(steps) // 2]
        return {"label": label, "run_id": run, "date": date, "step_s": steps, "samples_per_s": round(8 / median, 3)}

    rows = [row("plain-default-auto", "p1", [9.0, 1.0, 1.0, 2.0]),
            row("torchrun-default-auto", "t1", [9.0, 1.1, 1.1, 2.2]),
            row("pgplain-default-auto", "g1", [9.0, 1.0, 1.0, 2.0]),
            row("torchrun-default-auto", "old", [1.0, 1.0, 1.0, 1.0], date="2026-12-01T00:00:00"),
            row("torchrun-recipe", "t1", [1.0, 1.0, 1.0, 1.0])]  # no plain row of that config: no pair
    [ranked] = module.pairs(rows, "2026-12-03", warmup=1)
    assert (ranked["config"], ranked["plain_run"], ranked["torchrun_run"], ranked["timed_steps"]) == ("default-auto", "p1", "t1", 3)
    # medians 2.2 and 2.0 s; timed steps 1.1+1.1+2.2 against 1+1+2 s
    assert ranked["by_median"] == round(2.0 / 2.2, 3) and ranked["paired_mean"] == round(4 / 4.4, 3)
    [grouped] = module.pairs(rows, "2026-12-03", warmup=1, launcher="pgplain")
    assert grouped["pgplain_run"] == "g1" and grouped["by_median"] == 1.0 and grouped["paired_mean"] == 1.0
