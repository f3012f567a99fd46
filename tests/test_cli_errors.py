"""Issue 8 item 3: bad configs and arguments give one clear line naming what is accepted, exit code 2,
and no traceback unless --debug; so do library failures on paths the user gave."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from whispertune.cli import main
from whispertune.errors import ConfigError


def run_cli(argv: list[str], capsys) -> str:
    """Run the CLI in-process; assert exit 2 and a single error line; return that line."""
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("whispertune: error: ")
    return lines[0]


@pytest.mark.parametrize("flags, expected", [
    (["--train.bogus", "1"], ["unknown key train.bogus", "accepted:", "output_dir", "max_nonfinite_steps"]),
    (["--trian.max_steps", "1"], ["unknown config section 'trian'", "accepted: model, quantization, lora"]),
    (["--train.max_steps", "ten"], ["train.max_steps: got 'ten', expected an integer"]),
    (["--train.gradient_checkpointing", "maybe"], ["expected true/false"]),
    (["--quantization.mode", "int4"], ["quantization.mode", "one of 'none', 'int8', 'nf4'"]),
    (["--model.language", "klingon"], ["model.language: unknown Whisper language 'klingon'", "LANGUAGES"]),
    (["--model.language", "marathy"], ["did you mean", "'marathi'"]),
    (["--model.language", "xx"], ["unknown Whisper language 'xx'"]),
    (["--lora.r", "0"], ["lora.r: got 0, expected a positive integer"]),
    (["--lora.r", "-4"], ["lora.r: got -4"]),
    (["--quantization.device_map", "gpu0"], ["quantization.device_map: got 'gpu0'", "auto, balanced", "cuda:N"]),
    (["--train.max_nonfinite_steps", "0"], ["train.max_nonfinite_steps: got 0, expected a positive integer"]),
])
def test_bad_config_values(flags, expected, capsys):
    line = run_cli(["train", "--print-config", *flags], capsys)
    for part in expected:
        assert part in line, line


def test_bad_yaml_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lora:\n  r: 8\n  rank: 4\n")
    assert "unknown key lora.rank; accepted: r, alpha" in run_cli(["train", "--config", str(bad)], capsys)
    bad.write_text("train: [1, 2\n")
    assert "not valid YAML" in run_cli(["train", "--config", str(bad)], capsys)
    assert "config file not found" in run_cli(["train", "--config", str(tmp_path / "nope.yaml")], capsys)


def test_bad_arguments(capsys):
    line = run_cli(["frobnicate"], capsys)
    assert "invalid choice: 'frobnicate'" in line and "train" in line and "transcribe" in line
    assert "unrecognized arguments: --bogus" in run_cli(["train", "--bogus"], capsys)
    assert "(see whispertune transcribe --help)" in run_cli(["transcribe", "--format", "doc", "a.wav"], capsys)


def test_lora_targets_that_match_nothing(tiny_whisper_dir, capsys):
    line = run_cli(["train", "--dry-run", "--model.name_or_path", str(tiny_whisper_dir),
                    "--lora.target_modules", "q_proj,query"], capsys)
    assert "lora.target_modules: 'query' matches no linear module" in line
    assert "fc1, fc2, k_proj, out_proj" in line and "q_proj, v_proj" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a CPU-only machine")
def test_quantization_this_machine_cannot_do(tiny_whisper_dir, tmp_path, capsys):
    line = run_cli(["train", "--model.name_or_path", str(tiny_whisper_dir), "--data.path", str(tmp_path),
                    "--train.output_dir", str(tmp_path / "run"), "--quantization.mode", "nf4",
                    "--quantization.device_map", "cuda"], capsys)
    assert "quantization.device_map=cuda with quantization.mode=nf4 needs a CUDA GPU" in line
    assert "accepted on this machine: auto, cpu" in line


def test_user_paths_that_cannot_be_used(tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    # a library OSError (mkdir under a regular file) becomes one line naming the path
    line = run_cli(["train", "--train.output_dir", str(a_file / "run")], capsys)
    assert str(a_file / "run") in line and "Not a directory" in line
    line = run_cli(["train", "--model.name_or_path", str(tmp_path / "no-such-model"),
                    "--train.output_dir", str(tmp_path / "run")], capsys)
    assert "no-such-model" in line and "no such directory" in line and "embedded:whisper-base" in line
    assert "no complete checkpoint" in run_cli(["train", "--train.output_dir", str(tmp_path / "r"), "--resume"], capsys)


def test_debug_shows_the_traceback():
    with pytest.raises(ConfigError, match="lora.r"):
        main(["--debug", "train", "--print-config", "--lora.r", "0"])


def test_real_process_exit_code_and_stderr(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "whispertune.cli", "train", "--print-config", "--lora.r", "0"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "whispertune: error: lora.r: got 0, expected a positive integer (e.g. 8, 16, 32)"]
