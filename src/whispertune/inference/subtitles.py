"""Write transcripts as plain text, JSON, SubRip (.srt) or WebVTT (.vtt).

Writers take any object with `path`, `text`, `language`, `duration` and `segments` (each with
`start`, `end` in seconds and `text`), i.e. `transcribe.Transcript`, and return a string.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

FORMATS = ("txt", "json", "srt", "vtt")


def format_timestamp(seconds: float, separator: str) -> str:
    """HH:MM:SS<sep>mmm, rounded to the millisecond: "," for SRT, "." for WebVTT."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _cues(transcript: Any) -> list[Any]:
    # a cue with no text would show an empty subtitle
    return [s for s in transcript.segments if s.text.strip()]


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
        blocks.append(f"{number}\n{times}\n{seg.text.strip()}\n")
    return "\n".join(blocks)


def to_vtt(transcript: Any) -> str:
    blocks = ["WEBVTT\n"]
    for seg in _cues(transcript):
        # "-->" inside cue text would end the cue early
        text = seg.text.strip().replace("-->", "->")
        blocks.append(f"{format_timestamp(seg.start, '.')} --> {format_timestamp(seg.end, '.')}\n{text}\n")
    return "\n".join(blocks)


WRITERS: dict[str, Callable[[Any], str]] = {"txt": to_txt, "json": to_json, "srt": to_srt, "vtt": to_vtt}


def render(transcript: Any, fmt: str) -> str:
    """The transcript in format `fmt` (one of FORMATS)."""
    if fmt not in WRITERS:
        raise ValueError(f"unknown format {fmt!r}; accepted: {', '.join(FORMATS)}")
    return WRITERS[fmt](transcript)
