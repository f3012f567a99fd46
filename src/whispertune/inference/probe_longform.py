"""Long-form scoring: WER of a joined file's transcript and the deletion rate by where each utterance sits
in its 30 s window (models trained on short clips drop speech late in the window).

The reference and the transcript are normalized (`normalize.normalize_text`) and aligned word by word with
jiwer; each reference word belongs to one utterance, and an utterance's position is its midpoint's offset
from the start of the transcribe window that owns that moment (`transcribe.plan_windows`, own spans).
"""

from __future__ import annotations

from collections.abc import Sequence

import jiwer

from .metrics import error_rates
from .normalize import normalize_text
from .probe_signals import SAMPLE_RATE, LongForm
from .transcribe import plan_windows

POSITION_BUCKETS = ((0.0, 10.0), (10.0, 20.0), (20.0, 30.0))


def bucket_name(low: float, high: float) -> str:
    return f"{low:.0f}-{high:.0f}s"


def window_offset(moment: float, total_seconds: float, chunk_seconds: float = 30.0,
                  overlap_seconds: float = 5.0) -> float:
    """Seconds from the start of the window whose own span holds `moment`."""
    windows = plan_windows(int(total_seconds * SAMPLE_RATE), chunk_seconds, overlap_seconds)
    for window in windows:
        if window.own_start <= moment < window.own_end:
            return moment - window.start / SAMPLE_RATE
    return moment - windows[-1].start / SAMPLE_RATE


def _deleted_reference_words(reference: list[str], hypothesis: list[str]) -> set[int]:
    if not reference:
        return set()
    if not hypothesis:
        return set(range(len(reference)))
    out = jiwer.process_words(" ".join(reference), " ".join(hypothesis))
    return {i for chunk in out.alignments[0] if chunk.type == "delete"
            for i in range(chunk.ref_start_idx, chunk.ref_end_idx)}


def score_long_form(files: Sequence[LongForm], transcripts: Sequence[str], language: str | None) -> dict:
    """`wer`/`cer` (normalized, x100) over all files, and `deletion_by_position` (% of reference words
    deleted, per POSITION_BUCKETS name) with the word count of each bucket."""
    refs = [" ".join(u.text for u in f.utterances) for f in files]
    rates = error_rates(refs, list(transcripts), language)
    deleted = {bucket_name(*b): 0 for b in POSITION_BUCKETS}
    words = {bucket_name(*b): 0 for b in POSITION_BUCKETS}
    for long_form, text in zip(files, transcripts):
        ref_words: list[str] = []
        owner: list[str] = []
        for utterance in long_form.utterances:
            offset = window_offset((utterance.start + utterance.end) / 2, long_form.seconds)
            low, high = next((b for b in POSITION_BUCKETS if b[0] <= offset < b[1]), POSITION_BUCKETS[-1])
            piece = normalize_text(utterance.text, language).split()
            ref_words += piece
            owner += [bucket_name(low, high)] * len(piece)
        for index in _deleted_reference_words(ref_words, normalize_text(text, language).split()):
            deleted[owner[index]] += 1
        for name in owner:
            words[name] += 1
    return {
        "wer": rates["wer_normalized"], "cer": rates["cer_normalized"],
        "deletion_by_position": {k: (100.0 * deleted[k] / words[k] if words[k] else None) for k in words},
        "words_by_position": words,
    }
