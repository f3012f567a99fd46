"""Export to CTranslate2 (faster-whisper): a model, or an adapter merged into its base, checked for parity.

`export_ct2` runs CTranslate2's own transformers converter, then transcribes a few clips with both the
transformers model and faster-whisper on the export (`parity.check_parity`) and refuses the export
(`ParityError`, exit 2) when the clips show their WERs differ by more than `margin` points (parity.py). Each
output directory gets a `whispertune.json` (what it is, base, language, task) that `hub.push` reads.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UserError
from ..inference.generation import ADAPTER_META
from ..model.portable import portable_base
from ..pretrained.embedded import resolve_model_name
from ..training.model_card import write_card
from .clients import faster_whisper_client
from .merge import merge, prepare_out_dir
from .parity import DEFAULT_MARGIN, Clip, ParityReport, check_parity, check_request, default_clips, enforce_parity

CT2_QUANTIZATIONS = ("int8", "int8_float16", "float16", "float32")
FASTER_WHISPER_FILES = ("model.bin", "config.json", "tokenizer.json", "preprocessor_config.json")


@dataclass
class ExportResult:
    out_dir: Path
    quantization: str
    parity: ParityReport
    seconds: float


def _write_missing_files(out: Path, model_dir: str, code: str | None, task: str) -> None:
    """tokenizer.json / preprocessor_config.json the source directory did not have, from its processor."""
    from ..model.loading import load_processor  # lazy: `whispertune --help` imports this module

    missing = [f for f in ("tokenizer.json", "preprocessor_config.json") if not (out / f).is_file()]
    if not missing:
        return
    processor = load_processor(model_dir, code, task)
    if "tokenizer.json" in missing:
        processor.tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"))
    if "preprocessor_config.json" in missing:
        processor.feature_extractor.to_json_file(str(out / "preprocessor_config.json"))


def export_ct2(out_dir: str | Path, *, adapter: str | Path | None = None, model: str | None = None,
               quantization: str = "int8", clips: str | Path | Sequence[Clip] | None = None,
               margin: float = DEFAULT_MARGIN, overwrite: bool = False, max_new_tokens: int = 255) -> ExportResult:
    """Export `model` (or `adapter` merged into its base) to a faster-whisper directory, checked for parity."""
    import torch
    from ctranslate2.converters import TransformersConverter

    from ..languages import language_code, language_fields  # lazy: `whispertune --help` imports this module

    if quantization not in CT2_QUANTIZATIONS:
        raise UserError(f"quantization: got {quantization!r}, expected one of {', '.join(CT2_QUANTIZATIONS)}")
    start = time.perf_counter()
    given = check_request(adapter, model, margin, clips)
    out = prepare_out_dir(out_dir, overwrite)
    with tempfile.TemporaryDirectory(prefix="whispertune-merge-") as tmp:
        if adapter is not None:
            source = str(merge(adapter, Path(tmp) / "merged", model=model))
        else:
            source = resolve_model_name(str(model))
        meta_path = Path(source, ADAPTER_META)
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        code, task = language_code(meta.get("language")), meta.get("task") or "transcribe"
        user_clips = given is not None
        if given is None:
            given, spoken = default_clips(code)
            code = code or spoken  # a model without a language is checked in the language of the clips
        code = code or "en"

        local = Path(source).is_dir()
        copy = [f for f in ("tokenizer.json", "preprocessor_config.json") if local and Path(source, f).is_file()]
        print(f"converting {source} to CTranslate2 ({quantization}) ...")
        try:
            TransformersConverter(source, copy_files=copy).convert(str(out), quantization=quantization, force=True)
        except (ValueError, OSError) as exc:
            raise UserError(f"CTranslate2 cannot convert {source}: {exc}") from None
        _write_missing_files(out, source, code, task)
        client = faster_whisper_client(out, code, task, device="cuda" if torch.cuda.is_available() else "cpu")
        report = check_parity(client, source, given, language=code, task=task, margin=margin,
                              max_new_tokens=max_new_tokens, given=user_clips)
    base_name = str(meta.get("base_model") or model)
    info = {"kind": "ct2", "quantization": quantization, "source": str(model or source), "base_model": base_name,
            **portable_base(base_name)[1], "adapter": str(adapter) if adapter else None,
            **language_fields(code), "task": task, "run_dir": meta.get("run_dir"),
            "parity": {k: v for k, v in asdict(report).items() if k != "rows"} | {"passed": report.passed}}
    (out / ADAPTER_META).write_text(json.dumps(info, indent=2, ensure_ascii=False), encoding="utf-8")
    (out / "parity.json").write_text(json.dumps(asdict(report) | {"passed": report.passed}, indent=2,
                                                ensure_ascii=False), encoding="utf-8")
    write_card(out)
    enforce_parity(report)
    return ExportResult(out_dir=out, quantization=quantization, parity=report, seconds=time.perf_counter() - start)
