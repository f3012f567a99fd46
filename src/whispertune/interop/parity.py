"""Parity check of a CTranslate2 export against the transformers model it came from.

Both models transcribe a few clips from the same log-Mel features and the same decoder prompt
(greedy); the export is refused (`ParityError`, exit 2) when their WERs differ by more than `margin`
points. The clips are a folder's `metadata.csv` or, by default, a few sentences of the shipped test
list spoken by espeak-ng, built once into the cache.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..data.audio import SAMPLE_RATE, load_audio
from ..data.sentences import load_sentences
from ..data.synth import synthesize_corpus
from ..errors import AudioError, UserError
from ..inference.generation import generate_batch, load_for_inference
from ..inference.options import LoadOptions
from ..pretrained.embedded import cache_root

DEFAULT_CLIPS = 6  # sentences of the shipped test list spoken by espeak-ng for the parity check
MAX_CLIP_SECONDS = 30.0  # parity compares single 30 s windows


class ParityError(UserError):
    """The CTranslate2 model transcribes worse (or better) than the transformers model beyond the margin."""


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

    from ..inference.metrics import error_rates  # lazy: `whispertune --help` imports this module

    loaded = load_for_inference(str(model_dir), options=LoadOptions(language=language, task=task))
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
            if len(audio) > MAX_CLIP_SECONDS * SAMPLE_RATE:
                raise AudioError(f"{clip.path}: {len(audio) / SAMPLE_RATE:.1f} s long; parity clips must be at most 30 s",
                                 "too_long")
        feats = extractor(audios, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features.astype(np.float32)
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
