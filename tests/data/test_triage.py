"""Data triage by speaking rate (issue 17 item 2): Unicode-aware speech units, flags on a prepared split of
real audio files, the report's `flagged` section, and dropping exactly the flagged rows."""

from __future__ import annotations

import json

import pytest

from tests.helpers import RATE_CORPUS, write_rate_corpus
from whispertune.config import Config, load_config
from whispertune.data.features import prepare_split
from whispertune.data.report import DataReport
from whispertune.data.sources import load_examples
from whispertune.data.triage import chars_per_second, rate_flags, speech_units, triage_training_split
from whispertune.errors import ConfigError


@pytest.mark.parametrize("text, units", [
    ("Hello, world!", 10),  # punctuation and spaces count nothing
    ("caf\u00e9", 4), ("cafe\u0301", 4),  # é precomposed or as e + combining acute: one unit either way
    ("नमस्ते", 4),  # न म स त: the virama and the vowel signs belong to their consonants (6 code points)
    ("क्षत्रिय", 5),  # क ष त र य: each consonant of a conjunct is pronounced
    ("\u1100\u1161\u11a8", 1), ("각", 1),  # a Hangul syllable, decomposed into jamo or not
    ("你好，世界", 4), ("2024", 4), ("Ⅻ", 1),
    ("\u0301", 1),  # a mark with nothing before it is a unit of its own
    ("... !?", 0), ("", 0),
])
def test_speech_units_across_scripts(text, units):
    assert speech_units(text) == units


def test_rate_thresholds_are_exclusive():
    texts, durations = ["abcdefghij", "abcdefghij", "abcdefghij", "abc"], [1.0, 0.25, 0.2, 0.0]
    rates, flags = rate_flags(texts, durations, ["a", "b", "c", "d"], min_cps=10.0, max_cps=40.0)
    assert rates[:3] == [10.0, 40.0, 50.0] and rates[3] == float("inf")
    assert [(f.id, f.reason) for f in flags] == [("c", "too_fast"), ("d", "too_fast")]  # 10 and 40 are in range
    assert "50.0 chars/s > data.max_chars_per_second 40" in flags[0].detail
    _, flags = rate_flags(["a"], [2.0], ["x"], min_cps=1.0, max_cps=40.0)
    assert [(f.reason, f.value) for f in flags] == [("too_slow", 0.5)]
    assert chars_per_second("नमस्ते", 0.5) == 8.0


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_whisper_dir):
    """The rate corpus read and featurized as `train` does: (source examples, prepared split, report, config)."""
    from whispertune.model.loading import load_processor

    root = tmp_path_factory.mktemp("triage")
    cfg = load_config(None, [f"data.path={write_rate_corpus(root / 'corpus')}", f"data.cache_dir={root / 'cache'}"])
    report = DataReport()
    examples = load_examples(cfg.data, "train", report)
    processor = load_processor(str(tiny_whisper_dir), "en", "transcribe")
    split = prepare_split(examples, processor, cfg.data, language="en", task="transcribe", report=report,
                          split="train", cache_dir=cfg.data.cache_dir)
    return examples, split, report, cfg


def _fresh(prepared):
    """A copy of the fixture's report, so that each test records its own triage."""
    examples, split, report, cfg = prepared
    copy = DataReport()
    copy.add_seen("train", report.seen("train"))
    copy.set_kept("train", report.kept("train"))
    return examples, split, copy, cfg


def test_flagged_rows_are_reported_and_kept(prepared):
    examples, split, report, cfg = _fresh(prepared)
    assert sorted(split["duration"]) == sorted(d for d, _ in RATE_CORPUS.values())  # durations measured
    kept = triage_training_split(split, examples, cfg.data, report, "train")
    assert len(kept) == len(RATE_CORPUS) == report.kept("train")  # nothing dropped without data.drop_flagged
    saved = report.to_dict()["splits"]["train"]
    assert saved["skipped"] == {} and saved["kept"] == 6
    flagged = saved["flagged"]
    assert flagged["rows"] == 2 and flagged["by_reason"] == {"too_fast": 1, "too_slow": 1}
    assert (flagged["rows_checked"], flagged["dropped"]) == (6, 0)
    assert (flagged["min_chars_per_second"], flagged["max_chars_per_second"]) == (1.0, 35.0)
    by_id = {e["id"]: e for e in flagged["examples"]}
    assert set(by_id) == {"fast", "slow"}
    assert by_id["fast"]["reason"] == "too_fast" and by_id["fast"]["duration"] == 0.5
    assert by_id["fast"]["value"] == pytest.approx(speech_units(RATE_CORPUS["fast"][1]) / 0.5, abs=0.01)
    assert by_id["fast"]["text"] == RATE_CORPUS["fast"][1]
    assert by_id["slow"] == {"id": "slow", "file": str(cfg.data.path) + "/slow.wav", "reason": "too_slow",
                             "text": "ok", "duration": 20.0, "value": 0.1}
    assert report.flag_line("train") == "data triage (train): 2 of 6 rows flagged (1 too_fast, 1 too_slow); kept, not dropped"


def test_drop_flagged_removes_exactly_the_flagged_rows(prepared, tmp_path):
    examples, split, report, cfg = _fresh(prepared)
    cfg.data.drop_flagged = True
    kept = triage_training_split(split, examples, cfg.data, report, "train")
    assert sorted(kept["id"]) == ["good1", "good2", "good3", "good4"]
    assert len(kept["input_features"][0]) == 80  # the kept rows keep their features
    saved = json.loads(report.write(tmp_path).read_text(encoding="utf-8"))
    train = saved["splits"]["train"]
    assert (train["seen"], train["kept"], train["skipped_total"]) == (6, 4, 2)
    assert train["skipped"] == {"too_fast": 1, "too_slow": 1} and train["flagged"]["dropped"] == 2
    skipped = {e["id"]: e for e in saved["skipped_examples"]}
    assert set(skipped) == {"fast", "slow"} and skipped["slow"]["file"].endswith("/slow.wav")
    assert skipped["slow"]["detail"] == "0.10 chars/s < data.min_chars_per_second 1"
    assert "2 dropped" in report.flag_line("train") and "4 kept, 2 skipped (1 too_fast, 1 too_slow)" in saved["summary"]


def test_thresholds_from_the_config(prepared):
    examples, split, report, cfg = _fresh(prepared)
    cfg.data.min_chars_per_second, cfg.data.max_chars_per_second = 0.0, 200.0  # both checks off in effect
    triage_training_split(split, examples, cfg.data, report, "train")
    assert report.flagged("train") == {} and report.flag_line("train").startswith("data triage (train): 0 of 6")
    cfg.data.min_chars_per_second, cfg.data.max_chars_per_second = 5.0, 9.0  # good1 (9.5) and good3 (4.7) too
    report = _fresh(prepared)[2]
    triage_training_split(split, examples, cfg.data, report, "train")
    assert report.flagged("train") == {"too_fast": 2, "too_slow": 2}


@pytest.mark.parametrize("overrides, message", [
    (["data.min_chars_per_second=-1"], "data.min_chars_per_second: got -1.0, expected a number >= 0"),
    (["data.min_chars_per_second=.nan"], "data.min_chars_per_second: got nan"),
    (["data.max_chars_per_second=0.5"], "data.max_chars_per_second: got 0.5, expected a finite number above "
                                        "data.min_chars_per_second (1.0)"),
    (["data.max_chars_per_second=.inf"], "data.max_chars_per_second: got inf"),
    (["data.drop_flagged=true", "data.streaming=true", "data.source=hub", "train.max_steps=10"],
     "data.drop_flagged: a streamed training split"),
])
def test_bad_triage_settings(overrides, message):
    with pytest.raises(ConfigError) as caught:
        load_config(None, overrides)
    assert message in str(caught.value)


def test_defaults():
    data = Config().data
    assert (data.min_chars_per_second, data.max_chars_per_second, data.drop_flagged) == (1.0, 35.0, False)
