"""The scorecard's measures on known inputs: loop detection and token limit, timestamp validity, Whisper's
normalizer flag, English share, chrF, long-form files and deletions by window position, thresholds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from whispertune.commands.scorecard import finish
from whispertune.errors import UserError
from whispertune.inference.decode_guards import compression_ratio, is_looping, longest_repeat, token_limit
from whispertune.inference.probe_checks import (
    chrf,
    is_english,
    timestamps_valid,
    whisper_basic_rates,
    words_per_minute,
)
from whispertune.inference.probe_longform import score_long_form, window_offset
from whispertune.inference.probe_signals import join_utterances, no_speech_clip
from whispertune.inference.scorecard_report import (
    THRESHOLD_EXIT_CODE,
    Scorecard,
    apply_thresholds,
    build_rows,
    parse_thresholds,
)

BEGIN, END = 50364, 50257  # multilingual Whisper: first timestamp token (<|0.00|>), <|endoftext|>


def ts(seconds: float) -> int:
    return BEGIN + round(seconds / 0.02)


def test_loops_are_found_by_compression_or_repeated_words():
    looping = "बाभी " * 30
    assert compression_ratio(looping) > 2.4 and is_looping(looping)
    assert longest_repeat("मला एक कप कप कप कप".split()) == 4 and is_looping("मला एक कप कप कप कप")
    assert longest_repeat("a b c a b c a b c a b c".split()) == 4  # a 3-word run, 4 times
    sentence = "आज मला लवकर कामावर जायचे आहे आणि संध्याकाळी लवकर परत यायचे आहे"
    assert not is_looping(sentence) and not is_looping("no no no") and not is_looping("")


def test_token_limit_grows_with_the_audio_and_stays_under_the_cap():
    assert token_limit(None, 255) == 255
    assert token_limit(0.0, 255) == 16 and token_limit(2.0, 255) == 76
    assert token_limit(30.0, 255) == 255 and token_limit(2.0, 10) == 10


def test_timestamp_validity_rules():
    text = [100, 101, 102]
    assert timestamps_valid([ts(0), *text, ts(1.5), END], BEGIN, END, 2.0)
    assert timestamps_valid([ts(0), *text, ts(1.0), ts(1.0), *text, ts(1.8), ts(1.8), END], BEGIN, END, 2.0)
    assert not timestamps_valid([*text, ts(1.0), END], BEGIN, END, 2.0)  # no start timestamp
    assert not timestamps_valid([ts(0), *text, END], BEGIN, END, 2.0)  # text never closed
    assert not timestamps_valid([ts(1.0), *text, ts(0.5), END], BEGIN, END, 2.0)  # goes backwards
    assert not timestamps_valid([ts(0), *text, ts(1.0), *text, ts(1.5), END], BEGIN, END, 2.0)  # no new start
    assert not timestamps_valid([ts(0), *text, ts(25.0), END], BEGIN, END, 2.0)  # far past the clip's end
    assert not timestamps_valid([ts(0), ts(0), END], BEGIN, END, 2.0)  # no text at all


def test_whisper_basic_normalizer_flags_the_script_change():
    refs, hyps = ["मला मराठी आवडते."], ["मला मराठी आवडते"]
    basic = whisper_basic_rates(refs, hyps)
    assert basic["marks_removed"] == 100.0 and basic["wer"] == 0.0
    assert whisper_basic_rates(["Hello, world"], ["hello world"])["marks_removed"] == 0.0
    rows = build_rows({"wer_whisper_basic": 10.0}, {"wer_whisper_basic": 5.0}, basic["marks_removed"])
    assert "changes the script" in rows[0].note


def test_english_share_chrf_and_words_per_minute():
    assert is_english("Today I have to go to work early.") and not is_english("आज मला लवकर जायचे आहे")
    assert not is_english("") and not is_english("123 ...")
    assert chrf(["the dog plays"], ["the dog plays"]) == pytest.approx(100.0)
    assert 0 < chrf(["the dog runs"], ["the dog plays"]) < 100
    assert words_per_minute(["one two", "three"], 30.0) == 6.0


def test_no_speech_probes():
    assert not no_speech_clip("silence", 1.0, 0).any()
    noise = no_speech_clip("noise", 1.0, 0)
    assert noise.shape == (16000,) and 0.005 < float(np.sqrt((noise**2).mean())) < 0.02
    assert not np.array_equal(no_speech_clip("tone", 1.0, 0), no_speech_clip("tone", 1.0, 1))
    with pytest.raises(ValueError):
        no_speech_clip("music", 1.0, 0)


def test_long_form_file_and_deletions_by_window_position(tmp_path):
    cycled = join_utterances([(np.full(16000, 0.1, dtype=np.float32), "एक")], 5.0, tmp_path / "short.wav")
    assert [u.text for u in cycled.utterances] == ["एक"] * len(cycled.utterances) and len(cycled.utterances) >= 3
    clips = [(np.full(3 * 16000, 0.1, dtype=np.float32), f"वाक्य{i} शब्द{i}") for i in range(25)]
    long_form = join_utterances(clips, 62.0, tmp_path / "long.wav")
    audio, rate = sf.read(long_form.path)
    assert rate == 16000 and len(audio) / rate == pytest.approx(long_form.seconds) and long_form.seconds >= 62
    spans = [(u.start, u.end) for u in long_form.utterances]
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))  # in order, pauses between
    assert [u.text for u in long_form.utterances[:2]] == ["वाक्य0 शब्द0", "वाक्य1 शब्द1"]
    # windows of 70 s start at 0, 25, 50 and own [0, 27.5), [27.5, 52.5), [52.5, 70)
    assert window_offset(5.0, 70.0) == 5.0 and window_offset(28.0, 70.0) == 3.0 and window_offset(60.0, 70.0) == 10.0

    words = [u.text for u in long_form.utterances]
    perfect = score_long_form([long_form], [" ".join(words)], "mr")
    assert perfect["wer"] == 0.0 and all(v == 0.0 for v in perfect["deletion_by_position"].values() if v is not None)
    late = {i for i, u in enumerate(long_form.utterances) if window_offset((u.start + u.end) / 2, long_form.seconds) >= 20}
    dropped = score_long_form([long_form], [" ".join(w for i, w in enumerate(words) if i not in late)], "mr")
    assert late and dropped["deletion_by_position"]["20-30s"] == 100.0
    assert dropped["deletion_by_position"]["0-10s"] == 0.0 and dropped["wer"] > 0


def _card() -> Scorecard:
    base = {"english_wer": 10.0, "loop_rate": 0.0, "langid_accuracy": 90.0, "wer_normalized": 80.0}
    tuned = {"english_wer": 17.5, "loop_rate": 1.0, "langid_accuracy": 70.0, "wer_normalized": 30.0}
    return Scorecard(build_rows(base, tuned), info={"adapter": "a", "base": "b", "language": "mr"})


def test_thresholds_fail_only_rows_worse_by_more_than_their_limit():
    assert parse_thresholds("forgetting=5, loop_rate=2") == {"english_wer": 5.0, "loop_rate": 2.0}
    for bad in ("forgeting=5", "loop_rate", "loop_rate=x", "loop_rate=-1"):
        with pytest.raises(UserError, match="--fail-on"):
            parse_thresholds(bad)
    card = _card()
    failed = apply_thresholds(card, parse_thresholds("forgetting=5,loop_rate=2,langid=10,wer_normalized=0"))
    assert [r.key for r in failed] == ["english_wer", "langid_accuracy"]  # WER improved, loops within limit
    with pytest.raises(UserError, match="no timestamp_validity row"):
        apply_thresholds(_card(), {"timestamp_validity": 1.0})


def test_crossed_threshold_writes_the_files_then_exits_3(tmp_path, capsys):
    code = finish(_card(), {"english_wer": 5.0}, str(tmp_path))
    assert code == THRESHOLD_EXIT_CODE == 3
    data = json.loads((tmp_path / "scorecard.json").read_text("utf-8"))
    assert data["failed"] == ["english_wer"]
    assert next(r for r in data["rows"] if r["key"] == "english_wer")["change"] == 7.5
    assert "**FAIL**" in (tmp_path / "scorecard.md").read_text("utf-8")
    assert (tmp_path / "scorecard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind
    assert "thresholds crossed: english_wer" in capsys.readouterr().out
    assert finish(_card(), {"english_wer": 8.0}, str(tmp_path / "ok")) == 0
