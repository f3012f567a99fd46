"""What the scorecard runs: how many clips per probe, long-form length, decoding settings and where its
inputs come from (kept apart from the engine so that `whispertune --help` reads the defaults cheaply)."""

from __future__ import annotations

from dataclasses import dataclass

LANGID_LANGUAGES = ("hi", "de", "fr", "es")


@dataclass
class ScorecardSettings:
    clips: int = 12  # clips per probe: English control, translate, timestamps; language ID and no-speech share them
    test_clips: int = 24  # target-language test clips scored for WER/CER and loops (and joined for long form)
    long_form_seconds: float = 120.0
    long_form_files: int = 1
    no_speech_seconds: float = 10.0
    batch_size: int = 8
    max_new_tokens: int = 128
    guard: bool = True  # the repetition guard, as evaluate and transcribe run by default
    seed: int = 0
    english_dir: str | None = None
    translations: str | None = None
    langid_languages: tuple[str, ...] = LANGID_LANGUAGES
    corpus_dir: str | None = None  # where synthesized inputs are cached (default: user cache)
    progress: bool = True
