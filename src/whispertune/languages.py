"""Whisper language names and codes, from transformers' own table (the one `generate` checks against)."""

from __future__ import annotations

import difflib

from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

from .errors import ConfigError

TABLE_LOCATION = "transformers.models.whisper.tokenization_whisper.LANGUAGES (listed in docs/data.md)"


def resolve_language(name_or_code: str | None) -> tuple[str, str] | None:
    """"Marathi" / "marathi" / "mr" / "<|mr|>" -> ("marathi", "mr"); None or "" -> None (no language token).

    Aliases in Whisper's table ("castilian", "burmese", ...) resolve to their canonical name.
    """
    if name_or_code is None or not str(name_or_code).strip():
        return None
    key = str(name_or_code).strip().lower()
    if key.startswith("<|") and key.endswith("|>"):
        key = key[2:-2]
    if key in LANGUAGES:
        return LANGUAGES[key], key
    if key in TO_LANGUAGE_CODE:
        code = TO_LANGUAGE_CODE[key]
        return LANGUAGES[code], code
    candidates = list(TO_LANGUAGE_CODE) + list(LANGUAGES)
    close = difflib.get_close_matches(key, candidates, n=4, cutoff=0.6)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise ConfigError(
        f"unknown Whisper language {name_or_code!r}; {hint}"
        f"use a name or code from {TABLE_LOCATION} ({len(LANGUAGES)} languages)"
    )


def language_code(name_or_code: str | None) -> str | None:
    """The Whisper code of a language name or code ("Marathi" -> "mr"); None or "" -> None."""
    resolved = resolve_language(name_or_code)
    return resolved[1] if resolved else None


def language_fields(name_or_code: str | None) -> dict[str, str | None]:
    """The `language` (code) and `language_name` fields of a whispertune.json."""
    resolved = resolve_language(name_or_code)
    return {"language": resolved[1] if resolved else None, "language_name": resolved[0] if resolved else None}
