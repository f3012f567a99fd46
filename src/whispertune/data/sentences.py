"""Sentences to synthesize: the shipped per-language split lists (`whispertune/assets/`), a `.tsv` of
`split<TAB>sentence`, or a plain file / list."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from importlib.resources import files
from pathlib import Path

from ..errors import UserError


def load_sentences(
    language: str, sentences: str | os.PathLike | Sequence[str] | None, splits: Sequence[str]
) -> dict[str, list[str]]:
    """Sentences per split: the shipped split files, a `.tsv` of `split<TAB>sentence`, or a plain
    file / list (one sentence per line; all of it goes to the first of `splits`)."""
    if sentences is None:
        assets = files("whispertune") / "assets"
        found = {s: assets / f"sentences_{language}_{s}.txt" for s in splits}
        missing = [str(p) for p in found.values() if not p.is_file()]
        if missing:
            raise UserError(f"no shipped sentences for language {language!r}: {', '.join(missing)}; pass --sentences FILE")
        return {s: _clean(p.read_text(encoding="utf-8").splitlines()) for s, p in found.items()}
    if isinstance(sentences, (list, tuple)):
        return {splits[0]: _clean(sentences)}
    path = Path(sentences)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read sentences ({exc})") from exc
    if path.suffix.lower() != ".tsv":
        return {splits[0]: _clean(lines)}
    by_split: dict[str, list[str]] = {s: [] for s in splits}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        split, sep, text = line.partition("\t")
        if not sep or not re.fullmatch(r"[\w-]+", split.strip()) or not text.strip():
            raise UserError(f"{path}:{number}: expected 'split<TAB>sentence', got {line!r}")
        if split.strip() in by_split:  # splits not asked for are left out
            by_split[split.strip()].append(text.strip())
    return by_split


def _clean(lines: Iterable[str]) -> list[str]:
    return [line.strip() for line in lines if line.strip()]
