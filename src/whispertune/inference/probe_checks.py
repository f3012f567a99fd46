"""What the scorecard's probes compute from decoded outputs: rates after Whisper's own basic normalizer (and
whether it breaks the script), timestamp sequences' validity, English output share, chrF, words per minute."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from functools import lru_cache

from ..data.timestamps import TIME_PRECISION
from .metrics import error_rates

TIMESTAMP_TOLERANCE = 1.0  # seconds a last timestamp may lie past the clip's end
ENGLISH_LETTER_SHARE = 0.9  # an output is English when this share of its letters is ASCII


@lru_cache(maxsize=1)
def _whisper_basic():
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer

    return BasicTextNormalizer()


def _marks(texts: Sequence[str]) -> int:
    return sum(unicodedata.category(c).startswith("M") for t in texts for c in unicodedata.normalize("NFC", t))


def whisper_basic_rates(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """WER/CER (x100) after transformers' `BasicTextNormalizer` (what published Whisper numbers use), and
    `marks_removed`: the % of the references' combining marks (Devanagari vowel signs, viramas, ...) that
    normalizer deletes. Above 0 it changes the script: words are cut into pieces and the rates mislead."""
    normalize = _whisper_basic()
    refs, hyps = [normalize(r) for r in references], [normalize(h) for h in hypotheses]
    rates = error_rates(refs, hyps, None, "none")
    before = _marks(references)
    removed = 100.0 * (before - _marks(refs)) / before if before else 0.0
    return {"wer": rates["wer"], "cer": rates["cer"], "marks_removed": removed}


def timestamps_valid(tokens: Sequence[int], timestamp_begin: int, end_token: int, seconds: float) -> bool:
    """Whether decoded `tokens` (after the prompt) form valid timestamped segments.

    Valid: the output starts with a timestamp; every run of text lies between a start and a later end
    timestamp; timestamps never decrease; at least one segment holds text; the last timestamp is at most
    `TIMESTAMP_TOLERANCE` past the clip's `seconds`. A lone timestamp right before the end token is
    allowed (Whisper's rules permit it).
    """
    body = [t for t in tokens if t != end_token]
    if not body or body[0] < timestamp_begin:
        return False
    last, opened, has_text, segments = -1.0, None, False, 0
    for token in body:
        if token < timestamp_begin:
            if opened is None:
                return False  # text after a closed segment without a new start timestamp
            has_text = True
            continue
        value = (token - timestamp_begin) * TIME_PRECISION
        if value < last:
            return False
        if opened is not None and has_text:
            if value <= opened:
                return False
            segments, opened = segments + 1, None
        else:
            opened = value  # a start (or an empty segment's end doubling as the next start)
        last, has_text = value, False
    return segments > 0 and not has_text and last <= seconds + TIMESTAMP_TOLERANCE


def is_english(text: str) -> bool:
    """True when `text` has letters and at least 90 % of them are ASCII (Latin script)."""
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and sum(c.isascii() for c in letters) >= ENGLISH_LETTER_SHARE * len(letters)


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (sacrebleu's defaults: character 6-grams, beta 2), 0-100."""
    from sacrebleu.metrics import CHRF

    return float(CHRF().corpus_score(list(hypotheses), [list(references)]).score)


def words_per_minute(texts: Sequence[str], seconds: float) -> float:
    """Words output per minute of audio."""
    return 60.0 * sum(len(t.split()) for t in texts) / seconds if seconds > 0 else 0.0
