"""Issue 14 C: every numeric option of every command has a checked range, refused up front in one line naming
the option and the range (before any model is loaded: `--model` below names a directory that does not exist,
so reaching the loader would give another message)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from whispertune.cli import main


def error_line(argv: list[str], capsys) -> str:
    capsys.readouterr()
    code = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("whispertune:")]  # no bars
    assert code == 2 and len(err) == 1 and err[0].startswith("whispertune: error: "), err
    return err[0]


@pytest.fixture()
def clip(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, np.zeros(16000, np.float32), 16000)
    return str(path)


TRANSCRIBE = [
    (["--batch-size", "0"], "argument --batch-size: got '0', expected an integer in [1, 4096]"),
    (["--batch-size", "-3"], "argument --batch-size: got '-3'"),
    (["--batch-size", "100000"], "argument --batch-size: got '100000', expected an integer in [1, 4096]"),
    (["--batch-size", "2.5"], "argument --batch-size: got '2.5', expected an integer"),
    (["--max-new-tokens", "0"], "argument --max-new-tokens: got '0', expected an integer in [1, 448]"),
    (["--max-new-tokens", "449"], "argument --max-new-tokens: got '449'"),
    (["--chunk-seconds", "0.001"], "argument --chunk-seconds: got '0.001', expected a number in [1.0, 30.0]"),
    (["--chunk-seconds", "45"], "argument --chunk-seconds: got '45'"),
    (["--chunk-seconds", "nan"], "argument --chunk-seconds: got 'nan'"),
    (["--overlap-seconds", "-1"], "argument --overlap-seconds: got '-1', expected a number in [0.0, 15.0]"),
    (["--overlap-seconds", "inf"], "argument --overlap-seconds: got 'inf'"),
    # each in range, together impossible: a step of almost nothing once looped (nearly) forever
    (["--chunk-seconds", "10", "--overlap-seconds", "9.99999"], "chunk_seconds 10.0, overlap_seconds 9.99999: "
     "expected a chunk of 1 to 30 s and an overlap of 0 to half the chunk"),
]


@pytest.mark.parametrize("flags, expected", TRANSCRIBE)
def test_transcribe_options(flags, expected, clip, tmp_path, capsys):
    line = error_line(["transcribe", clip, "--model", str(tmp_path / "no-model"), *flags], capsys)
    assert expected in line, line


def test_max_new_tokens_beyond_the_models_decoder(tiny_whisper_dir, clip, capsys):
    """449 is refused by the flag; 445 only once the model's 4-token prompt is known (it failed deep in generate)."""
    line = error_line(["transcribe", clip, "--model", str(tiny_whisper_dir), "--language", "mr",
                       "--max-new-tokens", "445"], capsys)
    assert "max_new_tokens: got 445, expected an integer in [1, 444] for this model (448 decoder positions, 4 of " \
           "them taken by its prompt)" in line


EVALUATE = [
    (["--batch-size", "0"], "argument --batch-size: got '0'"),
    (["--max-new-tokens", "-1"], "argument --max-new-tokens: got '-1'"),
    (["--max-samples", "0"], "argument --max-samples: got '0', expected an integer in [1, inf]"),
    (["--generation.num_beams", "0"], "generation.num_beams: got 0, expected an integer in [1, 64]"),
    (["--generation.max_new_tokens", "1000"], "generation.max_new_tokens: got 1000, expected an integer in [1, 448]"),
    (["--eval.batch_size", "-1"], "eval.batch_size: got -1, expected an integer in [0, 4096]"),
    (["--data.max_eval_samples", "0"], "data.max_eval_samples: got 0, expected an integer >= 1"),
]


@pytest.mark.parametrize("flags, expected", EVALUATE)
def test_evaluate_options(flags, expected, tmp_path, capsys):
    line = error_line(["evaluate", "--model", str(tmp_path / "no-model"), "--data.path", str(tmp_path), *flags], capsys)
    assert expected in line, line


TRAIN = [
    (["--train.learning_rate", "nan"], "train.learning_rate: got 'nan', expected a number"),
    (["--train.learning_rate", ".nan"], "train.learning_rate: got nan, expected a positive number"),  # YAML's NaN
    (["--train.learning_rate", "-1e-4"], "train.learning_rate: got -0.0001"),
    (["--train.num_epochs", "0"], "train.num_epochs: got 0.0, expected a positive number"),
    (["--train.max_steps", "0"], "train.max_steps: got 0, expected -1 (train.num_epochs decides) or a positive"),
    (["--train.gradient_accumulation_steps", "0"], "train.gradient_accumulation_steps: got 0, expected an integer in"),
    (["--train.warmup_steps", "-5"], "train.warmup_steps: got -5, expected an integer >= 0"),
    (["--train.save_steps", "0"], "train.save_steps: got 0"),
    (["--train.eval_steps", "0"], "train.eval_steps: got 0"),
    (["--train.logging_steps", "0"], "train.logging_steps: got 0"),
    (["--train.save_total_limit", "0"], "train.save_total_limit: got 0"),
    (["--train.seed", "-1"], "train.seed: got -1, expected an integer in [0, 4294967295]"),
    (["--data.max_train_samples", "0"], "data.max_train_samples: got 0"),
    (["--quantization.llm_int8_threshold", ".inf"], "quantization.llm_int8_threshold: got inf"),
    (["--generation.train_generation_max_length", "0"], "generation.train_generation_max_length: got 0"),
]


@pytest.mark.parametrize("flags, expected", TRAIN)
def test_train_config_ranges(flags, expected, capsys):
    assert expected in error_line(["train", "--print-config", *flags], capsys)


OTHER = [
    (["demo", "--variants", "0"], "argument --variants: got '0', expected an integer in [1, inf]"),
    (["demo", "--epochs", "0"], "argument --epochs: got '0', expected a number in (0, inf]"),
    (["demo", "--learning-rate", "nan"], "argument --learning-rate: got 'nan'"),
    (["demo", "--batch-size", "0"], "argument --batch-size: got '0'"),
    (["demo", "--lora-r", "0"], "argument --lora-r: got '0'"),
    (["demo", "--seed", "-1"], "argument --seed: got '-1', expected an integer in [0, 4294967295]"),
    (["demo", "--train-sentences", "0"], "argument --train-sentences: got '0'"),
    (["demo", "--test-sentences", "-2"], "argument --test-sentences: got '-2'"),
    (["synth", "--out", "x", "--variants", "0"], "argument --variants: got '0'"),
    (["synth", "--out", "x", "--jobs", "0"], "argument --jobs: got '0', expected an integer in [1, 256]"),
    (["synth", "--out", "x", "--noise-snr", "nan"], "argument --noise-snr/--snr: got 'nan', expected a number in [-30.0, 100.0]"),
    (["synth", "--out", "x", "--seed", "x"], "argument --seed: got 'x', expected an integer"),
]


@pytest.mark.parametrize("argv, expected", OTHER)
def test_other_commands_numeric_flags(argv, expected, capsys):
    assert expected in error_line(argv, capsys)
