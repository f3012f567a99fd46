"""Fixtures of the end-to-end training tests: real speech clips, a tiny Whisper that can learn, and one
uninterrupted `python -m whispertune.cli train` run that the signal and kill tests compare against."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import WhisperForConditionalGeneration

from tests.helpers import cli_config, cli_env, make_tiny_whisper, write_espeak_folder

TEXTS = ["hello world", "good morning", "one two three", "the cat sat", "open the door", "blue sky"]


@pytest.fixture(scope="session")
def speech_folder(tmp_path_factory) -> Path:
    """Six real speech clips (espeak-ng wav, 22.05 kHz) and a metadata.csv in audiofolder layout.

    Tests using it carry the `synth` marker (skipped without espeak-ng)."""
    return write_espeak_folder(tmp_path_factory.mktemp("speech"), list(TEXTS))


@pytest.fixture(scope="session")
def trainable_whisper_dir(tiny_whisper_dir, tmp_path_factory) -> Path:
    """The tiny random Whisper with its (tied) token embeddings scaled x8.

    At the default init (std 0.02, d_model 64) every logit stays within about +-1, so no adapter can
    move the loss far from ln(vocab); real checkpoints have much larger embeddings. Scaling them
    lets LoRA on the attention/MLP layers lower the loss visibly within a few steps.
    """
    out = tmp_path_factory.mktemp("trainable-whisper")
    shutil.copytree(tiny_whisper_dir, out, dirs_exist_ok=True)
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir)
    with torch.no_grad():
        model.model.decoder.embed_tokens.weight.mul_(8)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def cli_model_dir(multilingual_tokenizer_dir, tmp_path_factory) -> Path:
    """The tiny random Whisper (d_model 32, one layer) of the CLI runs."""
    return make_tiny_whisper(tmp_path_factory.mktemp("cli-model"), multilingual_tokenizer_dir, d_model=32, layers=1)


@pytest.fixture(scope="session")
def cli_reference_run(cli_model_dir, speech_folder, tmp_path_factory) -> Path:
    """The run directory of one uninterrupted `python -m whispertune.cli train` subprocess (CLI_STEPS steps,
    a checkpoint every 2): the losses, metrics and adapter that interrupted and resumed runs must reproduce."""
    root = tmp_path_factory.mktemp("cli-reference")
    cfg = cli_config(root / "ref.yaml", cli_model_dir, speech_folder, root / "ref", save_steps=2)
    done = subprocess.run([sys.executable, "-m", "whispertune.cli", "train", "--config", str(cfg)], env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "ref"
