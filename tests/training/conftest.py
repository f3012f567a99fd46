"""Fixtures of the end-to-end training tests: real speech clips and a tiny Whisper that can learn."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers import WhisperForConditionalGeneration

from tests.helpers import write_espeak_folder

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
