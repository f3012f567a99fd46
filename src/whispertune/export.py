"""Export stage: merge a LoRA adapter into its base, convert to CTranslate2 (faster-whisper) with a
parity check against the transformers model.

`merge` re-loads the base UNQUANTIZED (merging into int8/nf4 weights would round the update away),
applies the adapter and folds it in (`merge_and_unload`). `export_ct2` runs CTranslate2's own
transformers converter, then transcribes a few clips with both the transformers model and the
CTranslate2 model from the same log-Mel features and the same decoder prompt (greedy) and refuses the
export (`ParityError`, exit 2) when their WERs differ by more than `margin` points. Each output
directory gets a `whispertune.json` (what it is, base, language, task) that `hub.push` reads.
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from .errors import AudioError, UserError
from .inference import ADAPTER_META, adapter_metadata, base_of_adapter, generate_batch, language_code, load_for_inference

DTYPES = ("float32", "float16")
CT2_QUANTIZATIONS = ("int8", "int8_float16", "float16", "float32")
FASTER_WHISPER_FILES = ("model.bin", "config.json", "tokenizer.json", "preprocessor_config.json")
DEFAULT_CLIPS = 6  # sentences of the shipped test list spoken by espeak-ng for the parity check
MAX_CLIP_SECONDS = 30.0  # parity compares single 30 s windows


class ParityError(UserError):
    """The CTranslate2 model transcribes worse (or better) than the transformers model beyond the margin."""


def _prepare_out(out_dir: str | Path, overwrite: bool) -> Path:
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise UserError(f"{out}: already exists and is not empty; choose another --out or pass --force")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    return out


def _language_fields(code: str | None) -> dict[str, str | None]:
    from .languages import resolve_language

    resolved = resolve_language(code) if code else None
    return {"language": resolved[1] if resolved else None, "language_name": resolved[0] if resolved else None}


def merge(adapter_dir: str | Path, out_dir: str | Path, *, dtype: str = "float32", model: str | None = None,
          overwrite: bool = False) -> Path:
    """Merge the LoRA adapter in `adapter_dir` into its (unquantized) base; write a transformers checkpoint.

    `out_dir` receives model.safetensors, config + generation config (language/task set), processor
    files, preprocessor_config.json and whispertune.json. `model` overrides the adapter's base.
    """
    from peft import PeftModel

    from .config import ModelConfig, QuantizationConfig
    from .model import load_base, load_processor

    if dtype not in DTYPES:
        raise UserError(f"dtype: got {dtype!r}, expected one of {', '.join(DTYPES)}")
    adapter = str(adapter_dir)
    adapter_cfg, meta = adapter_metadata(adapter)
    base_name = model or base_of_adapter(adapter_cfg, meta, adapter)
    code, task = language_code(meta.get("language")), meta.get("task") or "transcribe"
    out = _prepare_out(out_dir, overwrite)

    base = load_base(ModelConfig(name_or_path=base_name, language=code, task=task), QuantizationConfig(mode="none"),
                     for_training=False, device="cpu")
    try:
        peft_model = PeftModel.from_pretrained(base, adapter, is_trainable=False)
    except (OSError, ValueError, RuntimeError) as exc:
        raise UserError(f"cannot load adapter {adapter!r} on {base_name!r}: {exc}") from None
    merged = peft_model.merge_and_unload()
    if dtype == "float16":
        merged = merged.half()
    has_processor = Path(adapter, "tokenizer.json").is_file() or Path(adapter, "processor_config.json").is_file()
    processor = load_processor(adapter if has_processor else base_name, code, task)

    # write next to the destination, then rename: an interrupted merge leaves no half checkpoint
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        merged.save_pretrained(tmp)  # safetensors; the generation config goes with it
        processor.save_pretrained(tmp)
        processor.feature_extractor.save_pretrained(tmp)  # preprocessor_config.json, read by faster-whisper
        run_dir = Path(adapter).resolve().parent if Path(adapter).is_dir() else None
        info = {"kind": "merged", "base_model": base_name, "adapter": adapter, **_language_fields(code), "task": task,
                "dtype": dtype, "adapter_quantization": meta.get("quantization"), "lora": meta.get("lora"),
                "run_dir": str(run_dir) if run_dir and (run_dir / "config.yaml").is_file() else meta.get("run_dir")}
        (tmp / ADAPTER_META).write_text(json.dumps(info, indent=2, ensure_ascii=False), encoding="utf-8")
        if out.exists():
            out.rmdir()  # the empty directory _prepare_out allowed
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


@dataclass
class Clip:
    path: str
    text: str


def read_clips(folder: str | Path) -> list[Clip]:
    """Clips listed in `folder/metadata.csv` (columns file_name, text), or `folder/test/metadata.csv`."""
    folder = Path(folder)
    table = next((p for p in (folder / "metadata.csv", folder / "test" / "metadata.csv") if p.is_file()), None)
    if table is None:
        raise UserError(f"{folder}: no metadata.csv (columns file_name,text) in it or in {folder / 'test'}")
    with open(table, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"file_name", "text"} <= set(rows[0]):
        raise UserError(f"{table}: needs a header with file_name and text columns and at least one row")
    return [Clip(str(table.parent / r["file_name"]), r["text"]) for r in rows]


def default_clips(language: str | None) -> tuple[list[Clip], str]:
    """A few espeak-ng sentences in `language` (English when none is shipped for it), built once into the cache."""
    from .embedded import cache_root
    from .synth import load_sentences, synthesize_corpus

    lang = language if language in ("en", "mr") else "en"
    sentences = load_sentences(lang, None, ["test"])["test"][:DEFAULT_CLIPS]
    folder = cache_root() / "parity-clips" / lang
    synthesize_corpus(folder, lang, sentences, splits=("test",), variants=1, engines=("espeak-ng",))
    return read_clips(folder), lang


@dataclass
class ParityReport:
    """Greedy transcriptions of the same clips by both models, and their normalized WERs (x100)."""

    language: str | None
    n_clips: int
    wer_transformers: float
    wer_ct2: float
    wer_between: float  # CTranslate2 output scored against the transformers output
    identical: int  # clips transcribed identically
    margin: float
    rows: list[dict[str, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return abs(self.wer_transformers - self.wer_ct2) <= self.margin

    def summary(self) -> str:
        return (f"parity on {self.n_clips} clips ({self.language}): WER transformers {self.wer_transformers:.2f}, "
                f"CTranslate2 {self.wer_ct2:.2f} (difference {abs(self.wer_transformers - self.wer_ct2):.2f}, "
                f"margin {self.margin:g}); between them {self.wer_between:.2f}; identical {self.identical}/{self.n_clips}")


def _prompt(gen: Any, code: str | None, task: str) -> list[int]:
    """The decoder prompt transformers' `generate` builds: start, language, task, no-timestamps."""
    prompt = [gen.decoder_start_token_id]
    if getattr(gen, "lang_to_id", None) and code:
        prompt.append(gen.lang_to_id[f"<|{code}|>"])
    if getattr(gen, "task_to_id", None):
        prompt.append(gen.task_to_id[task])
    return prompt + [gen.no_timestamps_token_id]


def check_parity(ct2_dir: str | Path, model_dir: str | Path, clips: Sequence[Clip], *, language: str | None,
                 task: str = "transcribe", margin: float = 1.0, batch_size: int = 4,
                 max_new_tokens: int = 255) -> ParityReport:
    """Transcribe `clips` with the transformers model in `model_dir` and the CTranslate2 model in `ct2_dir`."""
    import ctranslate2

    from .audio import load_audio
    from .metrics import error_rates

    loaded = load_for_inference(str(model_dir), language=language, task=task)
    code = loaded.info["language"]
    device = "cuda" if loaded.info["device"].startswith("cuda") else "cpu"
    ct2_model = ctranslate2.models.Whisper(str(ct2_dir), device=device, compute_type="default")
    prompt = _prompt(loaded.model.generation_config, code, task)
    tokenizer, extractor = loaded.processor.tokenizer, loaded.processor.feature_extractor
    hf_texts: list[str] = []
    ct2_texts: list[str] = []
    batches = [clips[i : i + batch_size] for i in range(0, len(clips), batch_size)]
    for batch in tqdm(batches, desc="parity", unit="batch"):
        audios = [load_audio(c.path) for c in batch]
        for clip, audio in zip(batch, audios):
            if len(audio) > MAX_CLIP_SECONDS * 16000:
                raise AudioError(f"{clip.path}: {len(audio) / 16000:.1f} s long; parity clips must be at most 30 s",
                                 "too_long")
        feats = extractor(audios, sampling_rate=16000, return_tensors="np").input_features.astype(np.float32)
        hf_texts += generate_batch(loaded, feats, max_new_tokens=max_new_tokens).texts
        results = ct2_model.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats)),
                                     [prompt] * len(batch), beam_size=1, max_length=len(prompt) + max_new_tokens)
        ct2_texts += [tokenizer.decode(r.sequences_ids[0], skip_special_tokens=True).strip() for r in results]
    refs = [c.text for c in clips]
    return ParityReport(
        language=code, n_clips=len(clips),
        wer_transformers=error_rates(refs, hf_texts, code)["wer_normalized"],
        wer_ct2=error_rates(refs, ct2_texts, code)["wer_normalized"],
        wer_between=error_rates(hf_texts, ct2_texts, code)["wer_normalized"],
        identical=sum(a == b for a, b in zip(hf_texts, ct2_texts)), margin=margin,
        rows=[{"path": c.path, "reference": c.text, "transformers": h, "ct2": t}
              for c, h, t in zip(clips, hf_texts, ct2_texts)])


def enforce_parity(report: ParityReport) -> None:
    if not report.passed:
        raise ParityError(f"{report.summary()}: outside the margin; the export is not faithful")


@dataclass
class ExportResult:
    out_dir: Path
    quantization: str
    parity: ParityReport
    seconds: float


def _write_missing_files(out: Path, model_dir: str, code: str | None, task: str) -> None:
    """tokenizer.json / preprocessor_config.json the source directory did not have, from its processor."""
    from .model import load_processor

    missing = [f for f in ("tokenizer.json", "preprocessor_config.json") if not (out / f).is_file()]
    if not missing:
        return
    processor = load_processor(model_dir, code, task)
    if "tokenizer.json" in missing:
        processor.tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"))
    if "preprocessor_config.json" in missing:
        processor.feature_extractor.to_json_file(str(out / "preprocessor_config.json"))


def export_ct2(out_dir: str | Path, *, adapter: str | Path | None = None, model: str | None = None,
               quantization: str = "int8", clips: str | Path | Sequence[Clip] | None = None, margin: float = 1.0,
               overwrite: bool = False, max_new_tokens: int = 255) -> ExportResult:
    """Export `model` (or `adapter` merged into its base) to a faster-whisper directory, checked for parity."""
    from ctranslate2.converters import TransformersConverter

    from .embedded import resolve_model_name

    if quantization not in CT2_QUANTIZATIONS:
        raise UserError(f"quantization: got {quantization!r}, expected one of {', '.join(CT2_QUANTIZATIONS)}")
    if margin < 0:
        raise UserError(f"margin must be >= 0 WER points, got {margin}")
    if adapter is None and model is None:
        raise UserError("nothing to export: give an adapter or a model")
    start = time.perf_counter()
    given = None if clips is None else read_clips(clips) if isinstance(clips, (str, Path)) else list(clips)
    if given is not None and not given:
        raise UserError("no clips for the parity check")
    out = _prepare_out(out_dir, overwrite)
    with tempfile.TemporaryDirectory(prefix="whispertune-merge-") as tmp:
        if adapter is not None:
            source = str(merge(adapter, Path(tmp) / "merged", model=model))
        else:
            source = resolve_model_name(str(model))
        meta_path = Path(source, ADAPTER_META)
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        code, task = language_code(meta.get("language")), meta.get("task") or "transcribe"
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
        report = check_parity(out, source, given, language=code, task=task, margin=margin,
                              max_new_tokens=max_new_tokens)
    info = {"kind": "ct2", "quantization": quantization, "source": str(model or source),
            "base_model": meta.get("base_model", model), "adapter": str(adapter) if adapter else None,
            **_language_fields(code), "task": task, "run_dir": meta.get("run_dir"),
            "parity": {k: v for k, v in asdict(report).items() if k != "rows"} | {"passed": report.passed}}
    (out / ADAPTER_META).write_text(json.dumps(info, indent=2, ensure_ascii=False), encoding="utf-8")
    (out / "parity.json").write_text(json.dumps(asdict(report) | {"passed": report.passed}, indent=2,
                                                ensure_ascii=False), encoding="utf-8")
    enforce_parity(report)
    return ExportResult(out_dir=out, quantization=quantization, parity=report, seconds=time.perf_counter() - start)
