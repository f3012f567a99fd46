"""Timestamp-preserving training: labels in Whisper's timestamped form for a seeded share of the rows that
carry segment times (data/segments.py), so that fine-tuning on plain transcripts does not unlearn timestamps.

A timestamped label is the decoder prefix without <|notimestamps|>, then for each segment its start
timestamp token, its text and its end timestamp token, then <|endoftext|>: `<|0.00|> Hello.<|1.20|><|1.60|>
Bye.<|2.40|>`. Timestamp tokens follow <|notimestamps|> in every Whisper vocabulary, one per 20 ms
(<|0.00|> ... <|30.00|>). Which rows are timestamped is decided once per row from a hash of the seed and
the row's id (as distil-whisper keeps timestamps on a share of its examples): the same rows every run and
every epoch, whatever the order or the number of worker processes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

TIME_PRECISION = 0.02  # seconds per timestamp token (Whisper's)
END_TOLERANCE_S = 0.5  # a segment may end this far past the decoded clip (trimmed audio, rounding), clamped to it


@dataclass(frozen=True)
class TimestampChoice:
    """`probability`: the share of rows with segments trained with timestamps (`train.timestamp_probability`)."""

    probability: float = 0.0
    seed: int = 0

    def keeps(self, row_id: str) -> bool:
        if self.probability <= 0.0:
            return False
        # A local row without an id column has its clip's absolute path as id: keyed by the file name, the
        # same rows are chosen wherever the corpus lies (moved, or built in another temporary directory).
        key = os.path.basename(row_id) if os.path.isabs(row_id) else row_id
        draw = int.from_bytes(hashlib.sha256(f"{self.seed}:{key}".encode()).digest()[:8], "big") / 2**64
        return draw < self.probability

    def settings(self) -> dict[str, Any] | None:
        """What changes the labels, for the features cache key (None when nothing is timestamped)."""
        return {"probability": self.probability, "seed": self.seed} if self.probability > 0.0 else None


PLAIN = TimestampChoice()  # every row plain (the eval split, evaluation, data checks)


def timestamp_begin(tokenizer: Any) -> int:
    """The id of <|0.00|>: the token after <|notimestamps|>."""
    return int(tokenizer.convert_tokens_to_ids("<|notimestamps|>")) + 1


def segments_problem(segments: list[dict[str, Any]], seconds: float) -> str | None:
    """Why the segments cannot be the clip's (the last ends past it), or None."""
    end = segments[-1]["end"]
    if end > seconds + END_TOLERANCE_S:
        return f"the last segment ends at {end:.2f} s, past the clip's {seconds:.2f} s"
    return None


def timestamped_labels(tokenizer: Any, segments: list[dict[str, Any]], seconds: float) -> list[int]:
    """Label ids of `segments` in timestamped form; `tokenizer` has the plain (no-timestamps) prefix set."""
    no_timestamps = timestamp_begin(tokenizer) - 1
    begin = no_timestamps + 1

    def token(t: float) -> int:
        return begin + round(min(t, seconds) / TIME_PRECISION)

    ids = [t for t in tokenizer.prefix_tokens if t != no_timestamps]
    for seg in segments:
        # the leading space: Whisper's segments start a word, as its own timestamped output does
        ids += [token(seg["start"]), *tokenizer.encode(" " + seg["text"], add_special_tokens=False), token(seg["end"])]
    return ids + [int(tokenizer.eos_token_id)]
