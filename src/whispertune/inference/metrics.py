"""Word and character error rates through jiwer, raw and normalized, reported x100.

Rates are corpus-level: total edits over total reference words (characters) across all utterances,
never a mean of per-utterance rates (which would over-weight short utterances).

Raw rates compare the texts as given (whitespace folded, case and punctuation kept). Normalized
rates compare `normalize.normalize_text` of both sides, so punctuation-only differences cost nothing.
Characters are Unicode code points after NFC (a Devanagari vowel sign counts as one character); the
CER includes the spaces between words.

Empty references: an utterance whose reference is empty adds its hypothesis words as insertions and
no reference words. When the whole corpus has no reference words the rate is 0 if every hypothesis
is empty too and 100 otherwise (jiwer would return the raw insertion count, which is not a rate).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import jiwer

from .normalize import NormalizerKind, fold_whitespace, normalize_text


def _clean(texts: Sequence[str]) -> list[str]:
    return [fold_whitespace(unicodedata.normalize("NFC", t or "")) for t in texts]


def _rate(errors: int, ref_units: int, hyp_units: int) -> float:
    if ref_units == 0:
        return 0.0 if hyp_units == 0 else 100.0
    return 100.0 * errors / ref_units


def edit_counts(references: Sequence[str], hypotheses: Sequence[str], unit: str) -> dict[str, int]:
    """Corpus totals of hits, substitutions, deletions, insertions, reference and hypothesis units.

    `unit` is "word" or "char". Texts are used as given (callers clean or normalize them first).
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if unit not in ("word", "char"):
        raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
    totals = {"hits": 0, "substitutions": 0, "deletions": 0, "insertions": 0, "ref": 0, "hyp": 0}
    if not references:
        return totals
    process = jiwer.process_words if unit == "word" else jiwer.process_characters
    out = process(list(references), list(hypotheses))
    totals.update(hits=out.hits, substitutions=out.substitutions, deletions=out.deletions, insertions=out.insertions)
    totals["ref"] = sum(len(r) for r in out.references)
    totals["hyp"] = sum(len(h) for h in out.hypotheses)
    return totals


def _rates(references: list[str], hypotheses: list[str]) -> tuple[float, float]:
    words = edit_counts(references, hypotheses, "word")
    chars = edit_counts(references, hypotheses, "char")
    wer = _rate(words["substitutions"] + words["deletions"] + words["insertions"], words["ref"], words["hyp"])
    cer = _rate(chars["substitutions"] + chars["deletions"] + chars["insertions"], chars["ref"], chars["hyp"])
    return wer, cer


def error_rates(
    references: Sequence[str],
    hypotheses: Sequence[str],
    language: str | None = None,
    normalizer: NormalizerKind = "auto",
) -> dict[str, float]:
    """Corpus-level `wer`, `cer`, `wer_normalized`, `cer_normalized` (x100) and `n_utterances`."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    refs, hyps = _clean(references), _clean(hypotheses)
    wer, cer = _rates(refs, hyps)
    norm_refs = [normalize_text(r, language, normalizer) for r in refs]
    norm_hyps = [normalize_text(h, language, normalizer) for h in hyps]
    wer_n, cer_n = _rates(norm_refs, norm_hyps)
    return {
        "wer": wer,
        "cer": cer,
        "wer_normalized": wer_n,
        "cer_normalized": cer_n,
        "n_utterances": len(refs),
    }


def utterance_rates(
    reference: str, hypothesis: str, language: str | None = None, normalizer: NormalizerKind = "auto"
) -> dict[str, float]:
    """The same four rates for one utterance."""
    rates = error_rates([reference], [hypothesis], language, normalizer)
    rates.pop("n_utterances")
    return rates
