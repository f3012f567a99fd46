"""Data triage by speaking rate: rows of a prepared split whose transcript cannot belong to its audio.

The rate is speech units of the transcript per second of the clip (`chars_per_second`). A unit is a letter
or a digit (Unicode categories L*, N*) after NFC, together with the combining marks (M*) that follow it;
a mark with no letter before it counts as a unit of its own. Spaces, punctuation and symbols count nothing.
So a unit is close to what a reader sees as one character: "é" is one unit whether it is stored as one code
point or as e + U+0301; Devanagari "नमस्ते" is four (न म स त: the virama and vowel signs are marks that belong
to their consonant), where it has six code points; a Hangul syllable or a Han character is one. Each
consonant of a conjunct is a unit (स्त is two), unlike Unicode 15.1's extended grapheme clusters, which merge
conjuncts: a consonant is pronounced, so counting it follows the speech more closely.

Rows above `data.max_chars_per_second` are `too_fast` (the transcript cannot be said in that time: a wrong
or merged transcript, a cut clip); rows below `data.min_chars_per_second` are `too_slow` (long audio with a
tiny transcript: a truncated transcript, or a clip that is mostly something else). Flagged rows are recorded
in the DataReport and kept, unless dropped: then each is also a skipped row with its reason.
`inference.data_check` adds flags by a model's CER on the row (`high_cer`) through the same functions.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..config import DataConfig
from .report import DataReport

TOO_FAST, TOO_SLOW, HIGH_CER = "too_fast", "too_slow", "high_cer"


def speech_units(text: str) -> int:
    """Letters and digits of `text`, each with the combining marks after it as one unit (module docstring)."""
    units, after_base = 0, False
    for ch in unicodedata.normalize("NFC", text or ""):
        kind = unicodedata.category(ch)[0]
        if kind in "LN":
            units, after_base = units + 1, True
        elif kind == "M":
            if not after_base:  # a mark with nothing to attach to
                units, after_base = units + 1, True
        else:
            after_base = False
    return units


def chars_per_second(text: str, duration: float) -> float:
    """Speech units of `text` per second of audio; infinite for a clip of no length."""
    return speech_units(text) / duration if duration > 0 else float("inf")


@dataclass(frozen=True)
class Flag:
    index: int  # the row in the prepared split
    id: str
    reason: str  # TOO_FAST, TOO_SLOW or HIGH_CER
    value: float  # chars/s, or CER %
    detail: str  # the value against its threshold, for the report's skipped entry


def split_rows(prepared: Any) -> tuple[list[str], list[str], list[float]]:
    """(ids, texts, durations) of a prepared split, read without its feature column."""
    columns = prepared.select_columns(["id", "text", "duration"])
    return [str(i) for i in columns["id"]], [str(t) for t in columns["text"]], [float(d) for d in columns["duration"]]


def rate_flags(texts: Sequence[str], durations: Sequence[float], ids: Sequence[str], min_cps: float,
               max_cps: float) -> tuple[list[float], list[Flag]]:
    """(chars/s of every row, the rows outside [min_cps, max_cps]); `min_cps` 0 checks no lower bound."""
    rates = [chars_per_second(t, d) for t, d in zip(texts, durations)]
    flags = []
    for index, (row_id, rate) in enumerate(zip(ids, rates)):
        if rate > max_cps:
            flags.append(Flag(index, row_id, TOO_FAST, rate, f"{rate:.1f} chars/s > data.max_chars_per_second {max_cps:g}"))
        elif rate < min_cps:
            flags.append(Flag(index, row_id, TOO_SLOW, rate, f"{rate:.2f} chars/s < data.min_chars_per_second {min_cps:g}"))
    return rates, flags


def source_files(examples: Any, ids: set[str]) -> dict[str, str]:
    """The audio file of each of `ids` in the source examples (`id`, `audio`): the prepared split has no
    file column. Only the rows asked for are read (a Hub source's audio column holds the audio bytes)."""
    if not ids or examples is None:
        return {}
    rows = [i for i, row_id in enumerate(examples["id"]) if str(row_id) in ids]
    return {str(row["id"]): (row["audio"] or {}).get("path") or "<bytes>" for row in examples.select(rows)}


def apply_flags(prepared: Any, flags: Sequence[Flag], report: DataReport, split: str, *,
                rows: tuple[list[str], list[str], list[float]], files: Mapping[str, str], drop: Sequence[Flag] = (),
                settings: dict[str, Any] | None = None) -> Any:
    """Record `flags` in `report` under `split` (`rows`: the split's `split_rows`; `files`: the audio file of
    each flagged id, `source_files`); remove the rows of `drop` (a subset of `flags`), each recorded as skipped
    with its reason. Returns the split without the dropped rows."""
    _, texts, durations = rows
    for flag in flags:
        report.flag(split, flag.id, files.get(flag.id), flag.reason, text=texts[flag.index],
                    duration=durations[flag.index], value=flag.value)
    dropped: dict[int, Flag] = {}
    for flag in drop:
        dropped.setdefault(flag.index, flag)  # a row flagged twice is skipped once, for its first reason
    for flag in dropped.values():
        report.skip(split, flag.id, files.get(flag.id), flag.reason, flag.detail)
    report.set_flag_settings(split, rows_checked=len(prepared), dropped=len(dropped), **(settings or {}))
    if not dropped:
        return prepared
    remaining = prepared.select([i for i in range(len(prepared)) if i not in dropped])
    report.set_kept(split, len(remaining))
    return remaining


def rate_settings(data: DataConfig) -> dict[str, Any]:
    return {"min_chars_per_second": data.min_chars_per_second, "max_chars_per_second": data.max_chars_per_second}


def triage_training_split(prepared: Any, examples: Any, data: DataConfig, report: DataReport, split: str) -> Any:
    """The rate triage `train` runs on its training split: flags recorded, rows dropped only with
    `data.drop_flagged`. Returns the split to train on."""
    rows = split_rows(prepared)
    _, flags = rate_flags(rows[1], rows[2], rows[0], data.min_chars_per_second, data.max_chars_per_second)
    return apply_flags(prepared, flags, report, split, rows=rows, files=source_files(examples, {f.id for f in flags}),
                       drop=flags if data.drop_flagged else (), settings=rate_settings(data))
