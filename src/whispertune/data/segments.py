"""Segment times of a row (start, end and text of each stretch of speech in the clip), for
timestamp-preserving training (data/timestamps.py).

Where a local row's come from, first found wins: the row's own `segments` value (a manifest or metadata.jsonl
line's list of `{"start": s, "end": s, "text": "..."}`, or that list as JSON text in a metadata.csv/.tsv column),
else a subtitle file next to the clip with the same name (`clip.srt` or `clip.vtt`, read with the `srt` and
`webvtt-py` libraries). A Hub or saved dataset's come from its `segments` column (`SEGMENTS_FEATURE`, or the
list as JSON text), checked row by row as features are computed (`stored_segments`). A row with none stays
plain. Segments that cannot be read or do not fit together raise SegmentError, whose reason the data report
counts the row's skip under.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import datasets
import srt
import webvtt
import webvtt.errors
from datasets import Value

from ..errors import UserError

SUBTITLE_SUFFIXES = (".srt", ".vtt")
OVERLAP_TOLERANCE_S = 0.02  # one timestamp step: a segment may start this much before the previous one ends
_FIELDS = {"start": Value("float64"), "end": Value("float64"), "text": Value("string")}
SEGMENTS_FEATURE = datasets.List(_FIELDS)  # the `segments` column of examples


class SegmentError(UserError):
    """The row's segment times are unusable; `reason` is the data report's skip reason."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SegmentError("bad_segments", f"{what} is {value!r}, not a number of seconds")
    return float(value)


def check_segments(raw: Any, where: str) -> list[dict[str, Any]]:
    """`raw` as a list of {"start", "end", "text"}: times in seconds, in order, each segment's end after its start."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise SegmentError("bad_segments", f"{where}: segments is not JSON ({exc})") from None
    if not isinstance(raw, list) or not raw:
        raise SegmentError("bad_segments", f"{where}: segments must be a non-empty list of "
                           '{"start": s, "end": s, "text": "..."}')
    out: list[dict[str, Any]] = []
    for i, seg in enumerate(raw):
        if not isinstance(seg, dict) or not isinstance(seg.get("text"), str) or not seg["text"].strip():
            raise SegmentError("bad_segments", f"{where}: segment {i} needs a non-empty text and start/end seconds")
        start, end = _number(seg.get("start"), f"{where}: segment {i} start"), _number(seg.get("end"), f"{where}: segment {i} end")
        if start < 0 or end <= start:
            raise SegmentError("bad_segments", f"{where}: segment {i} runs from {start} to {end} s (needs 0 <= start < end)")
        if out and start < out[-1]["end"] - OVERLAP_TOLERANCE_S:
            raise SegmentError("bad_segments", f"{where}: segment {i} starts at {start} s, before segment {i - 1} "
                               f"ends ({out[-1]['end']} s); segments must be in order and not overlap")
        out.append({"start": start, "end": end, "text": " ".join(seg["text"].split())})
    return out


def _subtitle_segments(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SegmentError("bad_subtitles", f"{path}: cannot be read as UTF-8 text ({exc})") from None
    try:
        if path.suffix == ".srt":
            cues = [(c.start.total_seconds(), c.end.total_seconds(), c.content) for c in srt.parse(text)]
        else:
            cues = [(c.start_time.in_milliseconds() / 1000, c.end_time.in_milliseconds() / 1000, c.text)
                    for c in webvtt.from_string(text).captions]
    except (srt.SRTParseError, srt.TimestampParseError, webvtt.errors.MalformedFileError,
            webvtt.errors.MalformedCaptionError) as exc:
        raise SegmentError("bad_subtitles", f"{path}: not a readable {path.suffix[1:]} file ({exc})") from None
    return check_segments([{"start": s, "end": e, "text": t} for s, e, t in cues], str(path))


def row_segments(row: dict[str, Any], audio_path: Path, where: str) -> list[dict[str, Any]] | None:
    """The row's segments (see the module docstring), or None when it has none."""
    if row.get("segments") not in (None, ""):
        return check_segments(row["segments"], where)
    for suffix in SUBTITLE_SUFFIXES:
        sidecar = audio_path.with_suffix(suffix)
        if sidecar.is_file():
            return _subtitle_segments(sidecar)
    return None


def column_feature(feature: Any, where: str) -> Any:
    """The type a dataset's `segments` column is cast to: JSON text stays text, a list of structs becomes
    `SEGMENTS_FEATURE`, and the columnar form a `Sequence` of a dict declares (a dict of lists) keeps that form
    with float seconds (`stored_segments` turns it into a list)."""
    inner = getattr(feature, "feature", None)
    if feature == Value("string"):
        return feature
    if isinstance(feature, (datasets.List, datasets.LargeList)) and isinstance(inner, dict) and set(inner) == set(_FIELDS):
        return SEGMENTS_FEATURE
    if isinstance(feature, dict) and set(feature) == set(_FIELDS) and all(
            isinstance(v, (datasets.List, datasets.LargeList)) for v in feature.values()):
        return {name: datasets.List(kind) for name, kind in _FIELDS.items()}
    raise UserError(f"{where}: the 'segments' column is {feature}; expected a list of "
                    '{"start": s, "end": s, "text": "..."} (or that list as JSON text)')


def stored_segments(value: Any, where: str) -> list[dict[str, Any]] | None:
    """A dataset row's `segments` value checked (`check_segments`), or None when it is empty (a plain row)."""
    if isinstance(value, dict):  # the columnar form: {"start": [...], "end": [...], "text": [...]}
        value = [dict(zip(value, seg)) for seg in zip(*value.values())]
    if value is None or (isinstance(value, (str, list)) and not value):
        return None
    return check_segments(value, where)
