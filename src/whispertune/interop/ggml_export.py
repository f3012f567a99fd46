"""Export to whisper.cpp: a model, or an adapter merged into its base, as GGML files checked with whisper.cpp.

`export_ggml` writes `ggml-model-<format>.bin` for each format (f16, q8_0, q5_0; interop/ggml_format.py)
from the checkpoint's own weights, then transcribes the parity clips with whisper.cpp itself
(pywhispercpp, its own audio front end) and with whispertune, and refuses the export (`ParityError`)
when the clips show a variant's WER differs by more than `margin` points (parity.py). The directory gets
`whispertune.json`, `parity.json` and a model card.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..atomic_files import write_file_atomically
from ..errors import UserError
from ..inference.generation import ADAPTER_META
from ..model.portable import portable_base
from ..pretrained.embedded import resolve_model_name
from ..training.model_card import write_card
from .clients import whispercpp_client
from .ggml_format import FORMATS, write_ggml
from .merge import merge, prepare_out_dir
from .parity import (
    DEFAULT_MARGIN,
    Clip,
    ParityReport,
    check_request,
    compare,
    default_clips,
    enforce_parity,
    transformers_texts,
)

DEFAULT_FORMATS = ("f16", "q8_0")  # q5_0 on request: measured further from transformers (docs/deploy.md)


@dataclass
class GgmlExport:
    out_dir: Path
    files: dict[str, Path]  # format -> file
    parity: dict[str, ParityReport]  # format -> its check
    seconds: float


def _tokens(model_dir: str) -> list[bytes]:
    """The byte strings of the BPE vocabulary below the first special token (<|endoftext|>)."""
    from transformers import AutoTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    to_byte = {char: byte for byte, char in bytes_to_unicode().items()}
    vocab = tokenizer.backend_tokenizer.get_vocab(with_added_tokens=False)
    first_special = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    by_id = sorted((i, t) for t, i in vocab.items() if i < first_special)
    if [i for i, _ in by_id] != list(range(first_special)):
        raise UserError(f"{model_dir}: its tokenizer is not Whisper's byte-level BPE vocabulary; cannot write GGML")
    return [bytes(to_byte[c] for c in token) for _, token in by_id]


def _write_file(path: Path, model_dir: str, fmt: str) -> Path:
    from safetensors import safe_open
    from transformers import WhisperFeatureExtractor

    config = json.loads(Path(model_dir, "config.json").read_text(encoding="utf-8"))
    filters = WhisperFeatureExtractor.from_pretrained(model_dir).mel_filters.T  # [n_mels, n_fft]
    tokens = _tokens(model_dir)
    with safe_open(str(Path(model_dir, "model.safetensors")), "np") as weights:
        state = ((name, weights.get_tensor(name).astype(np.float32)) for name in weights.keys())
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as out:
            write_ggml(out, config, state, filters, tokens, fmt)
        tmp.replace(path)
    return path


def export_ggml(out_dir: str | Path, *, adapter: str | Path | None = None, model: str | None = None,
                formats: Sequence[str] = DEFAULT_FORMATS, clips: str | Path | Sequence[Clip] | None = None,
                margin: float = DEFAULT_MARGIN, overwrite: bool = False, max_new_tokens: int = 255) -> GgmlExport:
    """Export `model` (or `adapter` merged into its base) to GGML files for whisper.cpp, checked for parity."""
    from ..languages import language_code, language_fields  # lazy: `whispertune --help` imports this module

    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UserError(f"ggml format: got {', '.join(unknown) or 'none'}, expected some of {', '.join(FORMATS)}")
    start = time.perf_counter()
    given = check_request(adapter, model, margin, clips)
    out = prepare_out_dir(out_dir, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="whispertune-merge-") as tmp:
        source = str(merge(adapter, Path(tmp) / "merged", model=model)) if adapter else resolve_model_name(str(model))
        if not Path(source, "model.safetensors").is_file():
            raise UserError(f"{source}: no model.safetensors; export a local checkpoint, an embedded: model or an adapter")
        meta_path = Path(source, ADAPTER_META)
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        code, task = language_code(meta.get("language")), meta.get("task") or "transcribe"
        user_clips = given is not None
        if given is None:
            given, spoken = default_clips(code)
            code = code or spoken
        files = {fmt: _write_file(out / f"ggml-model-{fmt}.bin", source, fmt) for fmt in formats}
        hf_texts, code = transformers_texts(source, given, language=code, task=task, max_new_tokens=max_new_tokens)
    reports = {fmt: compare(whispercpp_client(path, code, task), given, hf_texts, code, margin=margin, given=user_clips)
               for fmt, path in files.items()}
    base_name = str(meta.get("base_model") or model)
    first = formats[0]
    info = {"kind": "ggml", "file": files[first].name, "files": {f: p.name for f, p in files.items()},
            "quantization": ", ".join(formats), "base_model": base_name, **portable_base(base_name)[1],
            "adapter": str(adapter) if adapter else None, **language_fields(code), "task": task,
            "run_dir": meta.get("run_dir"),
            "parity": {k: v for k, v in asdict(reports[first]).items() if k != "rows"} | {"format": first},
            "parity_by_format": {f: {k: v for k, v in asdict(r).items() if k != "rows"} for f, r in reports.items()}}
    write_file_atomically(out / ADAPTER_META, json.dumps(info, indent=2, ensure_ascii=False))
    write_file_atomically(out / "parity.json", json.dumps({f: asdict(r) | {"passed": r.passed}
                                                           for f, r in reports.items()}, indent=2, ensure_ascii=False))
    write_card(out)
    for report in reports.values():
        enforce_parity(report)
    return GgmlExport(out_dir=out, files=files, parity=reports, seconds=time.perf_counter() - start)
