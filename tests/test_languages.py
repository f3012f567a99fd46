"""languages.resolve_language against transformers' Whisper language table."""

from __future__ import annotations

import pytest

from whispertune.errors import ConfigError
from whispertune.languages import resolve_language


@pytest.mark.parametrize("value", ["Marathi", "marathi", "mr", "MR", " <|mr|> "])
def test_marathi_spellings(value):
    assert resolve_language(value) == ("marathi", "mr")


def test_aliases_resolve_to_canonical_name():
    assert resolve_language("Castilian") == ("spanish", "es")
    assert resolve_language("en") == ("english", "en")


def test_none_means_no_language():
    assert resolve_language(None) is None
    assert resolve_language("") is None


def test_unknown_language_suggests_close_matches():
    with pytest.raises(ConfigError) as err:
        resolve_language("Marathy")
    message = str(err.value)
    assert "'marathi'" in message and "LANGUAGES" in message
    with pytest.raises(ConfigError, match="unknown Whisper language 'klingon'"):
        resolve_language("klingon")
