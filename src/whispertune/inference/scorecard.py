"""Before/after scorecard: the base model and the tuned one (base + LoRA adapter) on the same inputs.

Each model runs every probe (`scorecard_inputs.py` gathers the inputs once), one model loaded at a time,
through the product's own paths: `evaluate()` for the test split and the English control set,
`transcribe()` for long form, `guarded_generate` (the guard evaluate and transcribe use) elsewhere. The
base is loaded with the tuned model's language and task, so both decode the same prompt. What each probe
measures, and how, is in docs/scorecard.md; the rows and thresholds are `scorecard_report.py`.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import DataConfig
from ..data.timestamps import timestamp_begin
from ..errors import UserError
from ..model.parts import input_dtype
from .decode_guards import guarded_generate, token_limit
from .evaluate import evaluate
from .generation import Loaded, adapter_metadata, base_of_adapter, generate_batch, load_for_inference
from .options import DecodingOptions, LoadOptions
from .probe_checks import chrf, is_english, timestamps_valid, whisper_basic_rates, words_per_minute
from .probe_longform import score_long_form
from .probe_signals import SAMPLE_RATE
from .scorecard_inputs import ScorecardInputs, gather_inputs
from .scorecard_report import Scorecard, build_rows
from .scorecard_settings import ScorecardSettings
from .transcribe import transcribe


@dataclass
class ModelScores:
    metrics: dict[str, float | None]
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def resolve_adapter(adapter: str) -> str:
    """An adapter directory, or a training run directory holding one in `adapter/`."""
    path = Path(adapter)
    if (path / "adapter" / "adapter_config.json").is_file() and not (path / "adapter_config.json").is_file():
        return str(path / "adapter")
    return adapter


def _batches(items: Sequence, size: int) -> list[Sequence]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _features(loaded: Loaded, audios: Sequence[np.ndarray]) -> np.ndarray:
    extractor = loaded.processor.feature_extractor
    return extractor(list(audios), sampling_rate=SAMPLE_RATE, return_tensors="np").input_features


def decode(loaded: Loaded, audios: Sequence[np.ndarray], settings: ScorecardSettings) -> list[str]:
    """Texts of `audios` (each at most 30 s) through the guarded generation, in batches."""
    texts: list[str] = []
    for batch in _batches(audios, settings.batch_size):
        out = guarded_generate(loaded, _features(loaded, batch), seconds=[len(a) / SAMPLE_RATE for a in batch],
                               max_new_tokens=settings.max_new_tokens, guard=settings.guard, seed=settings.seed)
        texts += out.generated.texts
    return texts


def detect_languages(loaded: Loaded, audios: Sequence[np.ndarray], batch_size: int) -> list[str]:
    """The language Whisper detects for each clip (none forced): the most likely language token."""
    gen = loaded.model.generation_config
    id_to_code = {v: k[2:-2] for k, v in (getattr(gen, "lang_to_id", None) or {}).items()}
    if not id_to_code:
        raise UserError("language ID needs a multilingual model (this one has no language tokens)")
    device = torch.device(loaded.info.get("device", "cpu"))
    dtype = input_dtype(loaded.model)
    found: list[str] = []
    for batch in _batches(audios, batch_size):
        feats = torch.as_tensor(_features(loaded, batch)).to(device=device, dtype=dtype)
        with torch.inference_mode():
            found += [id_to_code[int(i)] for i in loaded.model.detect_language(input_features=feats).tolist()]
    return found


def timestamp_validity(loaded: Loaded, audios: Sequence[np.ndarray], settings: ScorecardSettings) -> float:
    """% of outputs decoded with timestamps on whose timestamp tokens are valid (`timestamps_valid`)."""
    gen = loaded.model.generation_config
    begin = timestamp_begin(loaded.processor.tokenizer)
    valid = 0
    for batch in _batches(audios, settings.batch_size):
        seconds = [len(a) / SAMPLE_RATE for a in batch]
        out = generate_batch(loaded, _features(loaded, batch), max_new_tokens=token_limit(max(seconds),
                             settings.max_new_tokens), options={"return_timestamps": True})
        for sequence, s in zip(out.sequences, seconds):
            # text and timestamp tokens only: the prompt (ids between the end token and the first
            # timestamp), the end token and its padding are left out
            body = [t for t in sequence if t >= begin or t < int(gen.eos_token_id)]
            valid += timestamps_valid(body, begin, int(gen.eos_token_id), s)
    return 100.0 * valid / len(audios)


def _view(loaded: Loaded, **info: Any) -> Loaded:
    """The same weights with another language or task."""
    return replace(loaded, info={**loaded.info, **info})


def score_model(loaded: Loaded, inputs: ScorecardInputs, settings: ScorecardSettings, name: str) -> ModelScores:
    """Every probe on one model; `metrics` are the rows' values (`scorecard_report.ROWS` keys)."""
    start = time.perf_counter()
    m: dict[str, float | None] = {}
    details: dict[str, Any] = {}
    steps = tqdm(total=7, desc=f"scorecard {name}", unit="probe", disable=not settings.progress)
    decoding = DecodingOptions(batch_size=settings.batch_size, max_new_tokens=settings.max_new_tokens)
    common = dict(decoding=decoding, progress=False, guard=settings.guard)
    test = evaluate(loaded=loaded, dataset=inputs.test_dataset, split="test", **common)
    refs, hyps = [p.reference for p in test.predictions], [p.hypothesis for p in test.predictions]
    basic = whisper_basic_rates(refs, hyps)
    m.update(wer=test.wer, cer=test.cer, wer_normalized=test.wer_normalized, cer_normalized=test.cer_normalized,
             wer_whisper_basic=basic["wer"], cer_whisper_basic=basic["cer"],
             loop_rate=100.0 * test.info["guard"]["looping_greedy"] / test.n_utterances,
             loop_rate_guarded=100.0 * test.info["guard"]["looping_kept"] / test.n_utterances)
    details.update(marks_removed_by_whisper_normalizer=basic["marks_removed"],
                   test_examples=[{"reference": r, "hypothesis": h} for r, h in zip(refs[:3], hyps[:3])])
    steps.update()

    english = evaluate(loaded=_view(loaded, language="en"), dataset=inputs.english_dataset, split="english", **common)
    m["english_wer"] = english.wer_normalized
    details["english_examples"] = [{"reference": p.reference, "hypothesis": p.hypothesis}
                                   for p in english.predictions[:3]]
    steps.update()

    detected = detect_languages(loaded, [c.audio for c in inputs.langid], settings.batch_size)
    m["langid_accuracy"] = 100.0 * np.mean([d == c.language for d, c in zip(detected, inputs.langid)])
    details["langid"] = [{"expected": c.language, "detected": d} for c, d in zip(inputs.langid, detected)]
    steps.update()

    translated = decode(_view(loaded, task="translate"), [c.audio for c in inputs.translate], settings)
    m["translate_english"] = 100.0 * np.mean([is_english(t) for t in translated])
    pairs = [(t, c.translation) for t, c in zip(translated, inputs.translate) if c.translation]
    m["translate_chrf"] = chrf([p[0] for p in pairs], [p[1] for p in pairs]) if pairs else None
    details["translate_examples"] = [{"reference": c.translation, "hypothesis": t}
                                     for t, c in zip(translated[:3], inputs.translate)]
    steps.update()

    total_texts: list[str] = []
    total_seconds = 0.0
    for kind, clips in inputs.no_speech.items():
        texts = decode(loaded, clips, settings)
        seconds = sum(len(c) for c in clips) / SAMPLE_RATE
        m[f"{kind}_wpm"] = words_per_minute(texts, seconds)
        details[f"{kind}_outputs"] = texts[:3]
        total_texts, total_seconds = total_texts + texts, total_seconds + seconds
    m["no_speech_wpm"] = words_per_minute(total_texts, total_seconds)
    steps.update()

    if inputs.long_form:
        transcripts = transcribe([f.path for f in inputs.long_form], loaded=loaded, decoding=decoding, progress=False,
                                 guard=settings.guard)
        long_form = score_long_form(inputs.long_form, [t.text for t in transcripts], inputs.language)
        m["longform_wer"] = long_form["wer"]
        for bucket, rate in long_form["deletion_by_position"].items():
            m[f"longform_deletion_{bucket}"] = rate
        details["longform_words_by_position"] = long_form["words_by_position"]
    steps.update()

    m["timestamp_validity"] = timestamp_validity(loaded, [c.audio for c in inputs.test[: settings.clips]], settings)
    steps.update()
    steps.close()
    return ModelScores(m, details, round(time.perf_counter() - start, 1))


def scorecard(
    adapter: str,
    *,
    data: DataConfig,
    model: str | None = None,
    split: str = "test",
    language: str | None = None,
    quantization: str = "none",
    device: str | None = None,
    settings: ScorecardSettings | None = None,
) -> Scorecard:
    """Score the base (`model`, default the adapter's base) and base + `adapter` on the same inputs."""
    settings = settings or ScorecardSettings()
    adapter = resolve_adapter(adapter)
    config, meta = adapter_metadata(adapter)
    base_name = model or base_of_adapter(config, meta, adapter)
    load = LoadOptions(quantization=quantization, device=device, language=language)
    with tempfile.TemporaryDirectory(prefix="whispertune-scorecard-") as tmp:
        tuned = load_for_inference(base_name, adapter, load)
        code = tuned.info.get("language")
        if not code:
            raise UserError("scorecard: no target language (the adapter names none): pass --language")
        task = tuned.info.get("task", "transcribe")
        inputs = gather_inputs(data, split, code, settings, Path(tmp))
        tuned_scores = score_model(tuned, inputs, settings, "tuned")
        del tuned
        base = load_for_inference(base_name, options=replace(load, language=code, task=task))
        base_scores = score_model(base, inputs, settings, "base")
    info = {"base": base_name, "adapter": adapter, "language": code, "task": task, "split": split,
            "data": data.path, "device": base.info["device"], "quantization": quantization,
            "test_clips": len(inputs.test), "notes": inputs.notes, "settings": asdict(settings),
            "seconds": {"base": base_scores.seconds, "tuned": tuned_scores.seconds}}
    rows = build_rows(base_scores.metrics, tuned_scores.metrics,
                      tuned_scores.details["marks_removed_by_whisper_normalizer"])
    return Scorecard(rows=rows, info=info, details={"base": base_scores.details, "tuned": tuned_scores.details})
