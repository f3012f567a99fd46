"""error_rates: corpus-level WER/CER (x100) checked against edits counted by hand."""

from __future__ import annotations

import pytest

from whispertune.inference.metrics import edit_counts, error_rates, utterance_rates

# Utterance 1: ref "the cat sat on the mat" (6 words)
#              hyp "the cat sit on the mat today"
#   the=the, cat=cat, sat->sit (S), on=on, the=the, mat=mat, "today" extra (I) -> S=1 I=1, 5 hits
# Utterance 2: ref "hello big wide world" (4 words), hyp "hello world"
#   hello=hello, "big" and "wide" missing (D=2), world=world -> 2 hits
# Corpus WER = (1+1+2) / (6+4) = 4/10 = 40 %.  The mean of per-utterance WERs would be
# (2/6 + 2/4) / 2 = 41.67 %: a different (wrong) number.
REFS = ["the cat sat on the mat", "hello big wide world"]
HYPS = ["the cat sit on the mat today", "hello world"]


def test_word_edits_by_hand():
    counts = edit_counts(REFS, HYPS, "word")
    assert counts == {"hits": 7, "substitutions": 1, "deletions": 2, "insertions": 1, "ref": 10, "hyp": 9}
    assert error_rates(REFS, HYPS)["wer"] == pytest.approx(40.0)


def test_character_edits_by_hand():
    # ref "kitten" hyp "sitting": k->s (S), e->i (S), "g" appended (I): 3 edits over 6 characters
    counts = edit_counts(["kitten"], ["sitting"], "char")
    assert (counts["substitutions"], counts["deletions"], counts["insertions"], counts["ref"]) == (2, 0, 1, 6)
    # second utterance "ab" -> "b": one deletion over 2; corpus CER = (3+1) / (6+2) = 50 %
    assert error_rates(["kitten", "ab"], ["sitting", "b"])["cer"] == pytest.approx(50.0)


def test_corpus_level_not_mean_of_utterances():
    per_utt = [utterance_rates(r, h)["wer"] for r, h in zip(REFS, HYPS)]
    assert per_utt == [pytest.approx(100 / 3), pytest.approx(50.0)]
    assert error_rates(REFS, HYPS)["wer"] == pytest.approx(40.0)
    assert sum(per_utt) / 2 == pytest.approx(125 / 3)


def test_raw_vs_normalized():
    # raw: "Hello," vs "hello" and "World." vs "world" are 2 substitutions out of 2 words
    rates = error_rates(["Hello, World."], ["hello world"], "en")
    assert rates["wer"] == pytest.approx(100.0)
    assert rates["wer_normalized"] == 0.0 and rates["cer_normalized"] == 0.0
    # Devanagari: one wrong vowel sign is one substituted word and one substituted character
    ref, hyp = "मला मराठी आवडते", "मला मराठि आवडते"  # ी (U+0940) -> ि (U+093F)
    rates = error_rates([ref], [hyp], "mr")
    assert rates["wer_normalized"] == pytest.approx(100 / 3)
    assert rates["cer_normalized"] == pytest.approx(100 / len(ref))


def test_empty_references():
    # an empty reference with an empty hypothesis is no error; alone, with words, 100 %
    assert error_rates([""], [""])["wer"] == 0.0
    assert error_rates(["", "  "], ["oops", ""])["wer"] == 100.0
    # mixed in a corpus, an empty reference's hypothesis words are insertions:
    # (0 edits + 2 insertions) / 2 reference words
    assert error_rates(["a b", ""], ["a b", "x y"])["wer"] == pytest.approx(100.0)
    # a reference that only normalizes to nothing ("।") is treated the same way
    assert error_rates(["।", "एक"], ["", "एक"], "mr")["wer_normalized"] == 0.0
    assert error_rates([], [])["n_utterances"] == 0


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        error_rates(["a", "b"], ["a"])


def test_utterance_rates_keys():
    rates = utterance_rates("a b c d", "a x c d")
    assert set(rates) == {"wer", "cer", "wer_normalized", "cer_normalized"}
    assert rates["wer"] == pytest.approx(25.0)
    assert rates["cer"] == pytest.approx(100 / 7)  # "b"->"x": 1 of 7 characters (spaces included)
