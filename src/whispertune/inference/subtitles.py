"""Write transcripts as plain text, JSON, SubRip (.srt) or WebVTT (.vtt).

Writers take any object with `path`, `text`, `language`, `duration` and `segments` (each with
`start`, `end` in seconds and `text`), i.e. `transcribe.Transcript`, and return a string.

Subtitles are sentence-length cues, not one per segment (a 30 s window is 150+ characters): each
segment's words are cut at sentence ends, and wherever a cue would pass `MAX_CUE_SECONDS` or two lines
of `LINE_CHARS` (the usual broadcast limits). Segments decoded with Whisper's timestamp tokens (`timed`,
inference/timestamps.py) start and end where the model put them, and a segment too long for one cue has its
time shared out among its cues in proportion to their characters, inside that segment only. Untimed segments
(a decode without timestamps, or a window whose timestamps were not valid) span their whole window: their
cue times are shared out the same way but at no less than `SLOWEST_CHARS_PER_SECOND` (a short text over a
long window is speech plus silence), so each cue's start and end are an estimate; the first cue starts with
its segment.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FORMATS = ("txt", "json", "srt", "vtt")
MAX_CUE_SECONDS = 7.0
LINE_CHARS, MAX_LINES = 42, 2
SLOWEST_CHARS_PER_SECOND = 8.0  # slow, deliberate speech (conversational speech is about 12-15)
_SENTENCE_ENDS = (".", "?", "!", "…", "।", "॥", "。", "？", "！")


@dataclass
class Cue:
    start: float
    end: float
    text: str  # lines joined by "\n"


def format_timestamp(seconds: float, separator: str) -> str:
    """HH:MM:SS<sep>mmm, rounded to the millisecond: "," for SRT, "." for WebVTT."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _lines(text: str) -> list[str]:
    return textwrap.wrap(text, LINE_CHARS, break_long_words=True, break_on_hyphens=False)


def split_segment(start: float, end: float, text: str, timed: bool = False) -> list[Cue]:
    """`text` spoken from `start` to `end` as cues of at most MAX_CUE_SECONDS and MAX_LINES x LINE_CHARS;
    `timed`: `start` and `end` are where the speech is (else a window holding it, see the module doc)."""
    words = text.split()
    if not words:
        return []  # a cue with no text would show an empty subtitle
    per_char = max(end - start, 0.0) / max(1, len(" ".join(words)))
    if not timed:  # a short text over a long window is speech plus silence: a slow speaking rate, not spread out
        per_char = min(per_char, 1 / SLOWEST_CHARS_PER_SECOND)
    cues: list[Cue] = []
    current: list[str] = []
    offset = 0  # characters of the segment before `current`

    def close() -> None:
        nonlocal offset, current
        chunk = " ".join(current)
        cue_start = start + offset * per_char
        cues.append(Cue(cue_start, min(end, cue_start + len(chunk) * per_char), "\n".join(_lines(chunk))))
        offset += len(chunk) + 1
        current = []

    for word in words:
        candidate = " ".join([*current, word])
        too_long = len(_lines(candidate)) > MAX_LINES or len(candidate) * per_char > MAX_CUE_SECONDS
        if current and too_long:
            close()
        current.append(word)
        if word.endswith(_SENTENCE_ENDS):
            close()
    if current:
        close()
    return cues


def _cues(transcript: Any) -> list[Cue]:
    return [cue for s in transcript.segments
            for cue in split_segment(s.start, s.end, s.text, timed=getattr(s, "timed", False))]


def to_txt(transcript: Any) -> str:
    return transcript.text.strip() + "\n"


def to_json(transcript: Any) -> str:
    data = {
        "path": str(transcript.path),
        "language": transcript.language,
        "duration": round(transcript.duration, 3),
        "text": transcript.text,
        "segments": [
            {"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text} for s in transcript.segments
        ],
    }
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


def to_srt(transcript: Any) -> str:
    blocks = []
    for number, seg in enumerate(_cues(transcript), start=1):
        times = f"{format_timestamp(seg.start, ',')} --> {format_timestamp(seg.end, ',')}"
        blocks.append(f"{number}\n{times}\n{seg.text}\n")
    return "\n".join(blocks)


def to_vtt(transcript: Any) -> str:
    blocks = ["WEBVTT\n"]
    for seg in _cues(transcript):
        # "-->" inside cue text would end the cue early
        text = seg.text.replace("-->", "->")
        blocks.append(f"{format_timestamp(seg.start, '.')} --> {format_timestamp(seg.end, '.')}\n{text}\n")
    return "\n".join(blocks)


WRITERS: dict[str, Callable[[Any], str]] = {"txt": to_txt, "json": to_json, "srt": to_srt, "vtt": to_vtt}


def render(transcript: Any, fmt: str) -> str:
    """The transcript in format `fmt` (one of FORMATS)."""
    if fmt not in WRITERS:
        raise ValueError(f"unknown format {fmt!r}; accepted: {', '.join(FORMATS)}")
    return WRITERS[fmt](transcript)
