"""Build a Whisper processor (feature extractor + tokenizer) from a CTranslate2 model directory.

faster-whisper directories ship `tokenizer.json` and `config.json` but none of transformers' processor
files, so the tokenizer is rebuilt here. Special tokens are listed in id order so that
`<|notimestamps|>` is the last special id: transformers derives the first timestamp id from it.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperProcessor,
    WhisperTokenizerFast,
)

from ..data.audio import SAMPLE_RATE
from ..errors import UserError

ENDOFTEXT = "<|endoftext|>"


def build_tokenizer(ct2_dir: str | Path) -> WhisperTokenizerFast:
    path = Path(ct2_dir) / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"{ct2_dir}: no tokenizer.json (a faster-whisper model directory ships one)")
    added = json.loads(path.read_text(encoding="utf-8")).get("added_tokens", [])
    specials = [a["content"] for a in sorted(added, key=lambda a: a["id"]) if a.get("special")]
    return WhisperTokenizerFast(
        tokenizer_file=str(path),
        unk_token=ENDOFTEXT,
        bos_token=ENDOFTEXT,
        eos_token=ENDOFTEXT,
        pad_token=ENDOFTEXT,
        additional_special_tokens=[s for s in specials if s != ENDOFTEXT],
    )


def build_processor(ct2_dir: str | Path, num_mel_bins: int = 80) -> WhisperProcessor:
    """A processor for a CTranslate2 Whisper directory: 16 kHz, 30 s windows, `num_mel_bins` bands."""
    features = WhisperFeatureExtractor(feature_size=num_mel_bins, sampling_rate=SAMPLE_RATE)
    return WhisperProcessor(feature_extractor=features, tokenizer=build_tokenizer(ct2_dir))


def build_generation_config(
    ct2_dir: str | Path, tokenizer: WhisperTokenizerFast, model_config: WhisperConfig
) -> GenerationConfig:
    """Generation settings from a CTranslate2 `config.json`: languages, tasks, suppressions, alignment heads.

    English-only models (vocab 51864) get no `lang_to_id` at all: a null one makes generate fail.
    """
    path = Path(ct2_dir) / "config.json"
    if not path.is_file():
        raise UserError(f"{ct2_dir}: no config.json (a faster-whisper model directory ships one)")
    try:
        ct2 = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    tid = tokenizer.convert_tokens_to_ids
    multilingual = model_config.vocab_size >= 51865
    gen = GenerationConfig(
        decoder_start_token_id=tid("<|startoftranscript|>"),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_length=model_config.max_target_positions,
        suppress_tokens=list(ct2.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2.get("suppress_ids_begin", [])),
        alignment_heads=[list(h) for h in ct2.get("alignment_heads", [])],
        no_timestamps_token_id=tid("<|notimestamps|>"),
        prev_sot_token_id=tid("<|startofprev|>"),
        # Timestamp decoding may open with at most 1.0 s (50 steps of 20 ms), as in OpenAI's decoder.
        max_initial_timestamp_index=50,
        is_multilingual=multilingual,
    )
    if multilingual:
        gen.lang_to_id = {tokenizer.convert_ids_to_tokens(i): i for i in ct2.get("lang_ids", [])}
        gen.task_to_id = {"transcribe": tid("<|transcribe|>"), "translate": tid("<|translate|>")}
    return gen
