"""A window's speech timed by Whisper's own timestamp tokens, for sentence-length subtitle cues.

transformers' Whisper `generate(return_timestamps=True, return_segments=True)` splits each decode at the
timestamp tokens the model emitted (`_retrieve_segment`): a segment runs from one timestamp to the next, in
seconds from the window's start. A decode without a closing timestamp becomes one segment whose times are
guesses (the window's start and its end or last timestamp), so a window's segments are used only when each
one starts and ends with a timestamp token, their times never go back, and none ends more than
TIMESTAMP_TOLERANCE past the window. A window that fails is timed by the estimate of inference/subtitles.py
(characters shared out inside the window) and counted, so that the caller can say so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .probe_checks import TIMESTAMP_TOLERANCE


@dataclass
class TimedPiece:
    start: float  # seconds from the window's start
    end: float
    words: list[str]


def timed_pieces(segments: Sequence[dict[str, Any]], timestamp_begin: int, seconds: float,
                 tokenizer: Any) -> list[TimedPiece] | None:
    """The window's segments (from `Generated.segments`) with their words, or None when their timestamps are not
    valid (see the module doc) or hold no words. `seconds`: the window's length."""
    pieces: list[TimedPiece] = []
    last_end = 0.0
    for segment in segments:
        tokens = list(segment["tokens"])
        words = tokenizer.decode([t for t in tokens if t < timestamp_begin], skip_special_tokens=True).split()
        if not words:
            continue  # a timestamp pair around nothing (silence)
        start, end = float(segment["start"]), float(segment["end"])
        closed = len(tokens) >= 2 and tokens[0] >= timestamp_begin and tokens[-1] >= timestamp_begin
        if not closed or start < last_end - 1e-6 or end <= start or end > seconds + TIMESTAMP_TOLERANCE:
            return None
        pieces.append(TimedPiece(start, min(end, seconds), words))
        last_end = end
    return pieces or None


def kept_pieces(pieces: Sequence[TimedPiece], offset: float, first: int, stop: int) -> list[tuple[float, float, str]]:
    """(start, end, text) on the file's timeline (`offset`: the window's start) of words `first` to `stop` of the
    window's pieces (the words the overlap merge kept); a piece cut by the merge keeps its share of its time,
    in proportion to its words."""
    kept, index = [], 0
    for piece in pieces:
        n = len(piece.words)
        lo, hi = max(first, index), min(stop, index + n)
        if lo < hi:
            per_word = (piece.end - piece.start) / n
            kept.append((offset + piece.start + (lo - index) * per_word, offset + piece.start + (hi - index) * per_word,
                         " ".join(piece.words[lo - index : hi - index])))
        index += n
    return kept
