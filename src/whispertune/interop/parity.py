"""Parity check of an export, run by its real client, against the transformers model it came from.

whispertune (transformers, greedy) and the export's client (interop/clients.py: faster-whisper or
whisper.cpp, each with its own audio front end) transcribe the same audio files. The clips are the user's
evaluation clips (a folder's `metadata.csv`) or, by default, a few held-out sentences of the shipped
test list spoken by espeak-ng, built once into the cache.

The decision is on the paired WER difference (client minus transformers, normalized, x100) with its
uncertainty: the clips are resampled with replacement (the same clips for both sides: a paired percentile
bootstrap, BOOTSTRAP_RESAMPLES draws, fixed seed) and the export is refused (`ParityError`, exit 2) only when
the whole CONFIDENCE interval of the difference lies beyond `margin` points on one side, i.e. when the clips
show that the export transcribes worse (or better) than the model by more than the margin. With six short
clips one changed word is several points, and a single such clip gives an interval that reaches 0: a faithful
export is not refused for it. An export with the weights of another model differs on most clips, which pushes
the whole interval past the margin. The interval narrows as clips are added (`--clips`): more clips can
refuse smaller differences.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.audio import SAMPLE_RATE, load_audio
from ..data.sentences import load_sentences
from ..data.synth import synthesize_corpus
from ..errors import AudioError, UserError
from ..inference.generation import generate_batch, load_for_inference
from ..inference.options import LoadOptions
from ..pretrained.embedded import cache_root
from .clients import Client

DEFAULT_CLIPS = 6  # sentences of the shipped test list spoken by espeak-ng for the parity check
MAX_CLIP_SECONDS = 30.0  # parity compares single 30 s windows
DEFAULT_MARGIN = 1.0  # WER points of difference tolerated beyond what the clips' sampling explains
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000


class ParityError(UserError):
    """The export transcribes worse (or better) than the transformers model beyond the margin."""


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
    """Greedy transcriptions of the same clips by whispertune (transformers) and by the export's own client
    (faster-whisper, whisper.cpp), and their normalized WERs (x100)."""

    language: str | None
    client: str
    clips: str  # "given" (the user's evaluation clips) or "synthesized" (the shipped test sentences, espeak-ng)
    n_clips: int
    wer_transformers: float
    wer_client: float
    wer_between: float  # the client's output scored against whispertune's
    identical: int  # clips transcribed identically
    margin: float
    words: int = 0  # reference words (normalized) of the clips
    interval: tuple[float, float] = (0.0, 0.0)  # CONFIDENCE bootstrap interval of wer_client - wer_transformers
    rows: list[dict[str, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """False only when the whole interval of the difference lies beyond the margin (see the module doc)."""
        low, high = self.interval
        return low <= self.margin and high >= -self.margin

    @property
    def identical_share(self) -> float:
        return self.identical / self.n_clips if self.n_clips else 0.0

    def summary(self) -> str:
        low, high = self.interval
        return (f"parity through {self.client} on {self.n_clips} {self.clips} clips ({self.words} words, "
                f"{self.language}): WER transformers {self.wer_transformers:.2f}, {self.client} {self.wer_client:.2f} "
                f"(difference {self.wer_client - self.wer_transformers:+.2f}, {CONFIDENCE:.0%} interval "
                f"[{low:+.2f}, {high:+.2f}], margin {self.margin:g}); between them {self.wer_between:.2f}; "
                f"identical {self.identical}/{self.n_clips}")


def check_request(adapter: object, model: object, margin: float,
                  clips: str | Path | Sequence[Clip] | None) -> list[Clip] | None:
    """The checks every export makes before any work: something to export, a margin of 0 or more, and the
    clips (None: the default ones) read and not empty."""
    if margin < 0:
        raise UserError(f"margin must be >= 0 WER points, got {margin}")
    if adapter is None and model is None:
        raise UserError("nothing to export: give an adapter or a model")
    given = None if clips is None else read_clips(clips) if isinstance(clips, (str, Path)) else list(clips)
    if given is not None and not given:
        raise UserError("no clips for the parity check")
    return given


def clip_errors(references: Sequence[str], hypotheses: Sequence[str],
                language: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(word edits, reference words) of each clip, after whispertune's normalizer (as `wer_normalized`)."""
    from ..inference.metrics import edit_counts  # lazy: `whispertune --help` imports this module
    from ..inference.normalize import normalize_text

    counts = [edit_counts([normalize_text(r, language)], [normalize_text(h, language)], "word")
              for r, h in zip(references, hypotheses)]
    return (np.array([c["substitutions"] + c["deletions"] + c["insertions"] for c in counts]),
            np.array([c["ref"] for c in counts]))


def paired_interval(errors_model: np.ndarray, errors_export: np.ndarray, words: np.ndarray, *,
                    confidence: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES,
                    seed: int = 0) -> tuple[float, float]:
    """The percentile bootstrap interval of 100 x (export's edits - model's edits) / words over clips drawn with
    replacement, the same clips for both (paired)."""
    if len(words) == 0:
        return 0.0, 0.0
    draws = np.random.default_rng(seed).integers(0, len(words), size=(resamples, len(words)))
    rates = 100.0 * (errors_export - errors_model)[draws].sum(axis=1) / np.maximum(words[draws].sum(axis=1), 1)
    low, high = np.quantile(rates, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def transformers_texts(model_dir: str | Path, clips: Sequence[Clip], *, language: str | None, task: str = "transcribe",
                       batch_size: int = 4, max_new_tokens: int = 255) -> tuple[list[str], str | None]:
    """whispertune's greedy transcripts of `clips` with the transformers model in `model_dir`, and its language."""
    loaded = load_for_inference(str(model_dir), options=LoadOptions(language=language, task=task))
    extractor = loaded.processor.feature_extractor
    texts: list[str] = []
    batches = [clips[i : i + batch_size] for i in range(0, len(clips), batch_size)]
    for batch in tqdm(batches, desc="parity: transformers", unit="batch"):
        audios = [load_audio(c.path) for c in batch]
        for clip, audio in zip(batch, audios):
            if len(audio) > MAX_CLIP_SECONDS * SAMPLE_RATE:
                raise AudioError(f"{clip.path}: {len(audio) / SAMPLE_RATE:.1f} s long; parity clips must be at most 30 s",
                                 "too_long")
        feats = extractor(audios, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features.astype(np.float32)
        texts += generate_batch(loaded, feats, max_new_tokens=max_new_tokens).texts
    return texts, loaded.info["language"]


def compare(client: Client, clips: Sequence[Clip], hf_texts: list[str], language: str | None, *, margin: float,
            given: bool) -> ParityReport:
    """`client`'s transcripts of `clips` scored against the references and against whispertune's `hf_texts`."""
    from ..inference.metrics import error_rates  # lazy: `whispertune --help` imports this module

    client_texts = [client.transcribe(c.path) for c in tqdm(clips, desc=f"parity: {client.name}", unit="clip")]
    refs = [c.text for c in clips]
    errors_model, words = clip_errors(refs, hf_texts, language)
    errors_export, _ = clip_errors(refs, client_texts, language)
    return ParityReport(
        language=language, client=client.name, clips="given" if given else "synthesized", n_clips=len(clips),
        wer_transformers=error_rates(refs, hf_texts, language)["wer_normalized"],
        wer_client=error_rates(refs, client_texts, language)["wer_normalized"],
        wer_between=error_rates(hf_texts, client_texts, language)["wer_normalized"],
        identical=sum(a == b for a, b in zip(hf_texts, client_texts)), margin=margin, words=int(words.sum()),
        interval=paired_interval(errors_model, errors_export, words),
        rows=[{"path": c.path, "reference": c.text, "transformers": h, client.name: t}
              for c, h, t in zip(clips, hf_texts, client_texts)])


def check_parity(client: Client, model_dir: str | Path, clips: Sequence[Clip], *, language: str | None,
                 task: str = "transcribe", margin: float = DEFAULT_MARGIN, batch_size: int = 4, max_new_tokens: int = 255,
                 given: bool = True) -> ParityReport:
    """Transcribe `clips` with the transformers model in `model_dir` (whispertune) and with `client`."""
    hf_texts, code = transformers_texts(model_dir, clips, language=language, task=task, batch_size=batch_size,
                                        max_new_tokens=max_new_tokens)
    return compare(client, clips, hf_texts, code, margin=margin, given=given)


def enforce_parity(report: ParityReport) -> None:
    if not report.passed:
        raise ParityError(f"{report.summary()}: the whole interval is beyond the margin; the export does not "
                          "transcribe like the model (the rows are in parity.json)")
