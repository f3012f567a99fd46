"""Sentence-length subtitles: every cue at most 7 s and 2 lines of 42 characters, read back by `srt` and
`webvtt-py` (the libraries players and editors use), the words in order and none lost."""

from __future__ import annotations

import pytest

from whispertune.inference.subtitles import LINE_CHARS, MAX_CUE_SECONDS, render, split_segment
from whispertune.inference.transcribe import Segment, Transcript

srt = pytest.importorskip("srt")
webvtt = pytest.importorskip("webvtt")

# 30 s windows as transcribe() returns them (about 184 characters each), Marathi and English
WINDOWS = [
    (0.0, 27.5, "आज हवामान खूप छान आहे. आम्ही सकाळी बागेत फिरायला गेलो आणि तिथे अनेक पक्षी पाहिले. "
                "संध्याकाळी आम्ही मित्रांसोबत जेवण केले आणि खूप गप्पा मारल्या. उद्या शाळा आहे."),
    (27.5, 55.0, "The committee met on Tuesday to discuss the budget for the next financial year, and after a "
                 "long debate it agreed to fund the new library. Work starts in May! Will it finish on time?"),
    (55.0, 58.0, "Yes."),
]


def _transcript() -> Transcript:
    segments = [Segment(a, b, text) for a, b, text in WINDOWS]
    return Transcript("talk.wav", " ".join(s.text for s in segments), "mr", segments, duration=58.0)


def _check(cues: list[tuple[float, float, str]]) -> None:
    assert len(cues) >= 8  # not one cue per window
    for start, end, text in cues:
        lines = text.split("\n")
        assert 0 < end - start <= MAX_CUE_SECONDS + 1e-3, (start, end, text)
        assert len(lines) <= 2 and all(0 < len(line) <= LINE_CHARS for line in lines), text
    assert all(a[1] <= b[0] + 1e-3 for a, b in zip(cues, cues[1:]))  # in order, no overlap
    spoken = " ".join(text for _, _, text in WINDOWS).split()
    assert " ".join(text.replace("\n", " ") for _, _, text in cues).split() == spoken


def test_srt_parses_into_short_cues():
    subs = list(srt.parse(render(_transcript(), "srt")))
    _check([(s.start.total_seconds(), s.end.total_seconds(), s.content) for s in subs])
    assert [s.index for s in subs] == list(range(1, len(subs) + 1))
    assert any(s.content.endswith("आहे.") for s in subs)  # cut at the Devanagari sentence end
    assert subs[-1].content == "Yes." and subs[-1].start.total_seconds() == 55.0


def test_vtt_parses_into_short_cues():
    captions = webvtt.from_string(render(_transcript(), "vtt")).captions
    _check([(c.start_in_seconds + c.start_time.milliseconds / 1000, c.end_in_seconds + c.end_time.milliseconds / 1000,
             c.text) for c in captions])


def test_sentence_ends_and_long_words():
    cues = split_segment(10.0, 14.0, "Work starts in May! Will it finish?")
    assert [c.text for c in cues] == ["Work starts in May!", "Will it finish?"]
    assert cues[0].start == 10.0 and abs(cues[-1].end - 14.0) < 1e-6
    word = "x" * 100  # wider than two lines: broken, never dropped
    assert "".join(c.text.replace("\n", "") for c in split_segment(0.0, 2.0, word)) == word
    assert split_segment(0.0, 5.0, "   ") == []
