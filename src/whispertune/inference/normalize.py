"""Text normalization for error rates that keeps Indic words whole.

Whisper's (and transformers') `BasicTextNormalizer` maps every Unicode mark (category M) to a space.
Devanagari vowel signs and viramas are marks, so "मराठी" becomes "मर ठ " and a WER computed after it
counts broken word pieces. `normalize_text` here keeps marks:

- `basic` (every language but English): NFKC, lower-case, drop text in <...> / [...] annotations,
  turn punctuation and symbols (Unicode P* and S*, which includes the danda "।" and "॥") into spaces,
  drop invisible format characters (Cf: zero-width joiner/non-joiner, soft hyphen, BOM; they change
  only how a word is drawn), fold whitespace. Marks (M*) and digits stay.
- `english`: transformers' `EnglishTextNormalizer` (contractions, titles, numbers written as digits,
  "hmm"/"uh" fillers dropped) with an EMPTY British->American spelling map: the map ships with the
  Hub checkpoints, not with ours, so "colour" and "color" still count as different words.
- `none`: whitespace folding only.

`auto` picks `english` for language "en"/"english" and `basic` for anything else (or no language).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Literal

NormalizerKind = Literal["auto", "basic", "english", "none"]
KINDS: tuple[str, ...] = ("auto", "basic", "english", "none")

_ANNOTATION = re.compile(r"<[^>]*>|\[[^\]]*\]")  # "<|en|>", "[noise]", "[MUSIC]"
_SPACES = re.compile(r"\s+")


def _is_english(language: str | None) -> bool:
    return language is not None and language.strip().lower() in ("en", "english")


@lru_cache(maxsize=1)
def _english_normalizer():
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer({})


def fold_whitespace(text: str) -> str:
    """Collapse runs of whitespace to one space and strip both ends."""
    return _SPACES.sub(" ", text).strip()


def basic_normalize(text: str) -> str:
    """Language-neutral normalization that keeps combining marks (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _ANNOTATION.sub(" ", text)
    chars = []
    for char in text:
        category = unicodedata.category(char)
        if category[0] in "PS":
            chars.append(" ")
        elif category == "Cf":
            continue
        else:
            chars.append(char)
    return fold_whitespace("".join(chars))


def resolve_kind(kind: str, language: str | None) -> str:
    """The concrete normalizer (`basic`, `english` or `none`) that `kind` means for `language`."""
    if kind not in KINDS:
        raise ValueError(f"unknown normalizer {kind!r}; accepted: {', '.join(KINDS)}")
    if kind == "auto":
        return "english" if _is_english(language) else "basic"
    return kind


def normalize_text(text: str, language: str | None = None, kind: NormalizerKind = "auto") -> str:
    """Normalize `text` for scoring; `language` is a Whisper code or name ("mr", "Marathi", "en")."""
    kind = resolve_kind(kind, language)
    if kind == "none":
        return fold_whitespace(unicodedata.normalize("NFC", text))
    if kind == "english":
        # It keeps "." "%" "$" next to numbers ("3.5", "$20") and strips accents (right for English
        # only), but can leave a lone "." behind (from "..."): drop words made only of P*/S* characters.
        words = _english_normalizer()(text).split()
        return " ".join(w for w in words if any(unicodedata.category(c)[0] not in "PS" for c in w))
    return basic_normalize(text)
