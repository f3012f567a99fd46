"""What a local model or processor directory must hold, checked before transformers reads it.

transformers' own failures on such directories do not say what is wrong in the user's terms (a `bert` config
gives a list of 30 config classes, a missing config "Unrecognized model", a broken tokenizer.json a bare JSON
error with no file name); these checks name the file and the fix. Hub ids are left to transformers (and to
`errors.reading`, which maps what downloading them can raise).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import UserError

MODEL_TYPE = "whisper"
_FEATURE_EXTRACTOR_FILES = ("preprocessor_config.json", "processor_config.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
# JSON files of a processor that transformers reads (a broken one is named before it is read)
_PROCESSOR_JSON = (*_FEATURE_EXTRACTOR_FILES, *_TOKENIZER_FILES, "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "normalizer.json")
_FIX = "use a Whisper model directory, a Hub id (e.g. openai/whisper-small) or embedded:whisper-base"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); the file is damaged: re-download or re-save it") from None


def check_model_dir(path: Path) -> None:
    """A local directory given as a model must hold a Whisper `config.json`."""
    if not path.is_dir():
        return
    config_path = path / "config.json"
    if not config_path.is_file():
        raise UserError(f"{path}: no config.json, so not a Hugging Face model directory; {_FIX} (a CTranslate2 "
                        "folder: convert it with whispertune import-ct2 first)")
    config = _read_json(config_path)
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != MODEL_TYPE:
        raise UserError(f"{config_path}: model_type {model_type!r} is not a Whisper model; {_FIX}")


def check_processor_dir(path: Path) -> None:
    """A local directory a processor is read from must hold a feature extractor and a tokenizer, as valid JSON."""
    if not path.is_dir():
        return
    fix = "copy the processor files of the base model there (WhisperProcessor.save_pretrained writes them)"
    if not any((path / name).is_file() for name in _FEATURE_EXTRACTOR_FILES):
        raise UserError(f"{path}: no {' or '.join(_FEATURE_EXTRACTOR_FILES)} (the feature extractor); {fix}")
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise UserError(f"{path}: no tokenizer.json (or vocab.json + merges.txt); {fix}")
    for name in _PROCESSOR_JSON:
        if (path / name).is_file():
            _read_json(path / name)
