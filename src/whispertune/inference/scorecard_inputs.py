"""The scorecard's inputs, gathered once and given to both models: target-language test clips, an English
control set, clips of other languages for language ID, English translations of the test clips, long-form
files joined from the test clips, and no-speech probes.

The English control set is the user's audio folder (`english_dir`, split `test`) or the shipped English test
sentences synthesized with espeak-ng; the language-ID clips of other languages are synthesized from
`assets/langid_sentences.tsv` (a language espeak-ng cannot speak is left out, with a note). Synthesized
corpora are cached under the user cache (`whispertune/corpora/scorecard-*`) and reused. Translations come
from `translations` (a `.tsv` of `source<TAB>english`) or, for Marathi, the shipped
`assets/translations_mr_test_en.tsv` (the shipped Marathi test sentences, translated by hand).
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from ..config import DataConfig
from ..data.audio import load_audio
from ..data.feature_cache import default_cache_dir
from ..data.report import DataReport
from ..data.sources import load_examples
from ..data.synth import synthesize_corpus
from ..errors import UserError
from .probe_signals import NO_SPEECH_KINDS, LongForm, join_utterances, no_speech_clip
from .scorecard_settings import ScorecardSettings


@dataclass
class Clip:
    audio: np.ndarray
    text: str
    language: str | None = None  # expected language code (language ID)
    translation: str | None = None


@dataclass
class ScorecardInputs:
    language: str
    test_dataset: Any  # id / audio / text rows for evaluate()
    test: list[Clip]
    english_dataset: Any
    langid: list[Clip]
    translate: list[Clip]
    long_form: list[LongForm]
    no_speech: dict[str, list[np.ndarray]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _key(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def _sample(dataset: Any, limit: int, seed: int) -> Any:
    if len(dataset) <= limit:
        return dataset
    return dataset.select(sorted(random.Random(seed).sample(range(len(dataset)), limit)))


def _clips(dataset: Any, language: str | None) -> list[Clip]:
    return [Clip(load_audio(row["audio"]), str(row["text"]), language) for row in dataset]


def _load_split(data: DataConfig, split: str) -> Any:
    report = DataReport()
    dataset = load_examples(data, split, report)
    if isinstance(dataset, datasets.IterableDataset):  # streaming: materialized (rows are sampled)
        dataset = datasets.Dataset.from_generator(lambda: (yield from dataset))
    if len(dataset) == 0:
        raise UserError(f"{data.path}: no usable examples in split {split!r} ({report.summary_line()})")
    return dataset


def _corpus_root(settings: ScorecardSettings) -> Path:
    return Path(settings.corpus_dir) if settings.corpus_dir else default_cache_dir().parent / "corpora"


def _synthesized(settings: ScorecardSettings, name: str, language: str, sentences: list[str] | None) -> DataConfig:
    out = _corpus_root(settings) / name
    synthesize_corpus(out, language=language, sentences=sentences, splits=("test",), variants=1,
                      seed=settings.seed, engines=("espeak-ng",), progress=False)
    return DataConfig(source="folder", path=str(out))


def _langid_sentences() -> dict[str, list[str]]:
    by_language: dict[str, list[str]] = {}
    text = (files("whispertune") / "assets" / "langid_sentences.tsv").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.strip():
            code, _, sentence = line.partition("\t")
            by_language.setdefault(code.strip(), []).append(sentence.strip())
    return by_language


def read_translations(path: str | None, language: str) -> dict[str, str]:
    """{source sentence: English} from `path`, else the shipped table for `language` (empty if none)."""
    if path is None:
        shipped = files("whispertune") / "assets" / f"translations_{language}_test_en.tsv"
        if not shipped.is_file():
            return {}
        text = shipped.read_text(encoding="utf-8")
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: cannot read translations ({exc})") from None
    table = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        source, sep, english = line.partition("\t")
        if not sep or not source.strip() or not english.strip():
            raise UserError(f"{path}:{number}: expected 'source sentence<TAB>English translation'")
        table[_key(source)] = english.strip()
    return table


def gather_inputs(data: DataConfig, split: str, language: str, settings: ScorecardSettings,
                  work_dir: Path) -> ScorecardInputs:
    """Everything both models are run on; long-form files are written to `work_dir`."""
    if settings.clips < 1 or settings.test_clips < 1 or settings.long_form_files < 0:
        raise UserError("scorecard: clips and test clips must be at least 1, long-form files at least 0")
    test_dataset = _sample(_load_split(data, split), settings.test_clips, settings.seed)
    test = _clips(test_dataset, language)
    english_data = DataConfig(source="folder", path=settings.english_dir) if settings.english_dir else \
        _synthesized(settings, "scorecard-en", "en", None)
    english_dataset = _sample(_load_split(english_data, "test"), settings.clips, settings.seed)

    notes: list[str] = []
    per_language = max(1, settings.clips // (2 + len(settings.langid_languages)))
    langid = test[:per_language] + _clips(english_dataset.select(range(min(per_language, len(english_dataset)))), "en")
    sentences = _langid_sentences()
    for code in settings.langid_languages:
        if code in (language, "en") or code not in sentences:
            continue
        try:
            corpus = _synthesized(settings, f"scorecard-langid-{code}", code, sentences[code][:per_language])
        except UserError as exc:
            notes.append(f"language ID: {code} left out ({exc})")
            continue
        langid += _clips(_load_split(corpus, "test"), code)

    table = read_translations(settings.translations, language)
    translate = [Clip(c.audio, c.text, language, table.get(_key(c.text))) for c in test]
    with_reference = [c for c in translate if c.translation]
    translate = (with_reference or translate)[: settings.clips]
    if not with_reference:
        notes.append(f"translate: no English references for these {language} clips (pass translations), "
                     "so only the English-output share is scored")

    long_form = [join_utterances([(c.audio, c.text) for c in test], settings.long_form_seconds,
                                 work_dir / f"long_form_{i}.wav", seed=settings.seed + i)
                 for i in range(settings.long_form_files)]
    no_speech = {kind: [no_speech_clip(kind, settings.no_speech_seconds, i, settings.seed)
                        for i in range(max(1, settings.clips // len(NO_SPEECH_KINDS)))] for kind in NO_SPEECH_KINDS}
    return ScorecardInputs(language, test_dataset, test, english_dataset, langid, translate, long_form,
                           no_speech, notes)
