"""normalize_text keeps Devanagari words whole, removes punctuation, and has an English mode."""

from __future__ import annotations

import unicodedata

import pytest
from transformers.models.whisper.english_normalizer import BasicTextNormalizer

from whispertune.inference.metrics import error_rates
from whispertune.inference.normalize import normalize_text, resolve_kind

MARATHI = "पुणे हे महाराष्ट्रातील एक मोठे शहर आहे। मला मराठी भाषा आवडते॥"
HINDI = "भारत एक विशाल देश है, और यहाँ कई भाषाएँ बोली जाती हैं!"
ENGLISH = "Hello, World! The quick brown fox -- it's jumping over the lazy dog."


def _strip_punct(word: str) -> str:
    return "".join(c for c in word if unicodedata.category(c)[0] not in "PS")


@pytest.mark.parametrize("text,lang", [(MARATHI, "mr"), (HINDI, "hi"), (MARATHI, "Marathi")])
def test_indic_words_kept_whole(text, lang):
    normalized = normalize_text(text, lang)
    expected = [_strip_punct(w) for w in unicodedata.normalize("NFKC", text).split()]
    assert normalized.split() == [w for w in expected if w]
    assert len(normalized.split()) == len(text.split())
    # every combining mark of the input survives (vowel signs, virama, anusvara, chandrabindu)
    marks = [c for c in text if unicodedata.category(c).startswith("M")]
    assert [c for c in normalized if unicodedata.category(c).startswith("M")] == marks
    assert "।" not in normalized and "॥" not in normalized and "," not in normalized


def test_whisper_basic_normalizer_would_split_marathi():
    """The reason this module exists: transformers' basic normalizer breaks the words apart."""
    broken = BasicTextNormalizer()(MARATHI)
    assert len(broken.split()) > len(MARATHI.split())
    assert "मराठी" not in broken.split()
    assert "मराठी" in normalize_text(MARATHI, "mr").split()


def test_marathi_sentence_exact():
    assert normalize_text("पुणे हे महाराष्ट्रातील शहर आहे।", "mr") == "पुणे हे महाराष्ट्रातील शहर आहे"


def test_basic_lowercases_folds_space_drops_annotations_and_format_chars():
    assert normalize_text("  Bonjour,\tle   MONDE [music] <|fr|> ", "fr") == "bonjour le monde"
    # zero-width joiner / non-joiner only change how a Devanagari word is drawn
    assert normalize_text("क्\u200dष", "mr") == normalize_text("क्ष", "mr")
    # NFKC: full-width letters and compatibility digits fold to plain ones
    assert normalize_text("ＡＢＣ １２", None) == "abc 12"


def test_english_normalizer():
    assert normalize_text(ENGLISH, "en") == "hello world the quick brown fox it is jumping over the lazy dog"
    assert normalize_text("I can't pay twenty five dollars...", "english") == "i can not pay $25"
    assert normalize_text("Um, hmm, okay.", "en") == "okay"
    # no spelling map is shipped with our checkpoints: British and American spellings stay apart
    assert normalize_text("colour", "en") == "colour"


def test_kinds():
    assert resolve_kind("auto", "en") == "english"
    assert resolve_kind("auto", "mr") == "basic"
    assert resolve_kind("auto", None) == "basic"
    assert normalize_text("Hello,  World!", "en", kind="none") == "Hello, World!"
    assert normalize_text("It's", "en", kind="basic") == "it s"
    with pytest.raises(ValueError, match="unknown normalizer"):
        normalize_text("x", None, kind="fancy")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "ref,hyp,lang",
    [
        (MARATHI, MARATHI.replace("।", "").replace("॥", "."), "mr"),
        (HINDI, HINDI.replace(",", "").replace("!", "।"), "hi"),
        (ENGLISH, ENGLISH.lower().replace(",", "").replace("!", "").replace("--", ""), "en"),
    ],
)
def test_punctuation_only_differences_give_zero_wer(ref, hyp, lang):
    rates = error_rates([ref], [hyp], lang)
    assert rates["wer_normalized"] == 0.0
    assert rates["cer_normalized"] == 0.0
    assert rates["wer"] > 0.0  # the raw rate does see the punctuation
