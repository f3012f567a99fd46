"""Subtitle cues timed by Whisper's timestamp tokens: three espeak-ng sentences joined by known pauses, transcribed
by the embedded tiny.en with timestamps (the cue boundaries land in the pauses), read back by `srt` and
`webvtt-py`; and the rules that decide when a window's timestamps are used and when the estimate is."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import srt
import webvtt

from whispertune.cli import main as cli_main
from whispertune.data.audio import load_audio
from whispertune.inference.generation import load_for_inference
from whispertune.inference.options import DecodingOptions
from whispertune.inference.subtitles import render
from whispertune.inference.timestamps import TimedPiece, kept_pieces, timed_pieces
from whispertune.inference.transcribe import Window, merge_windows, transcribe

SR = 16000
PAUSE = 1.5  # seconds of silence between the sentences
SENTENCES = ["The old lighthouse stood alone on the rocky island.", "My brother plays the guitar every Sunday morning.",
             "Please close the window before it starts to rain."]
TOLERANCE = 0.35  # seconds: a cue may start this far from its sentence's first sound


def _speech_span(audio: np.ndarray) -> tuple[float, float]:
    """(first, last) second of `audio` louder than -40 dBFS in 10 ms frames: where espeak-ng's speech is."""
    frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
    loud = np.flatnonzero(np.sqrt((frames**2).mean(axis=1)) > 0.01)
    return loud[0] * 0.01, (loud[-1] + 1) * 0.01


@pytest.fixture(scope="module")
def joined(tmp_path_factory):
    """(path of the three sentences joined by PAUSE s of silence, each sentence's (start, end) of speech in s)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    folder = tmp_path_factory.mktemp("joined")
    pieces, spans, offset = [], [], 0.0
    for i, text in enumerate(SENTENCES):
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(folder / f"{i}.wav"), text], check=True)
        audio = load_audio(str(folder / f"{i}.wav"))
        first, last = _speech_span(audio)
        spans.append((offset + first, offset + last))
        pieces += [audio, np.zeros(int(PAUSE * SR), np.float32)]
        offset += len(audio) / SR + PAUSE
    path = folder / "three.wav"
    sf.write(path, np.concatenate(pieces[:-1]), SR)
    return path, spans


@pytest.mark.embedded
@pytest.mark.synth
def test_cues_start_and_end_in_the_pauses(joined, tmp_path):
    path, spans = joined
    loaded = load_for_inference("embedded:tiny.en")
    [timed] = transcribe([path], loaded=loaded, decoding=DecodingOptions(batch_size=1, timestamps=True), progress=False)
    [estimated] = transcribe([path], loaded=loaded, decoding=DecodingOptions(batch_size=1), progress=False)
    print([(round(s.start, 2), round(s.end, 2), s.text) for s in timed.segments], spans)
    assert timed.untimed_windows == 0 and all(s.timed for s in timed.segments)
    cues = list(srt.parse(render(timed, "srt")))
    captions = webvtt.from_string(render(timed, "vtt")).captions
    assert len(cues) == len(captions) == 3  # one per sentence: each is short enough for one cue
    assert [c.content.replace("\n", " ") for c in cues] == [" ".join(c.text.split()) for c in captions]
    for cue, caption, (first, last), following in zip(cues, captions, spans, [*spans[1:], (np.inf, np.inf)]):
        start, end = cue.start.total_seconds(), cue.end.total_seconds()
        assert abs(start - first) <= TOLERANCE, (cue, first)
        assert last - 2 * TOLERANCE <= end < following[0], (cue, last)  # ends in the pause after its sentence
        assert (caption.start_in_seconds, caption.end_in_seconds) == (int(start), int(end))
    # the estimate (no timestamp tokens) knows only the window and the characters: further from the true starts
    guessed = list(srt.parse(render(estimated, "srt")))
    print("estimated starts", [c.start.total_seconds() for c in guessed], "timed", [c.start.total_seconds() for c in cues])
    assert sum(abs(c.start.total_seconds() - s[0]) for c, s in zip(cues, spans)) < \
        sum(abs(c.start.total_seconds() - s[0]) for c, s in zip(guessed, spans))


def test_timestamp_validity_rules(multilingual_tokenizer_dir):
    from transformers import WhisperTokenizer

    tokenizer = WhisperTokenizer.from_pretrained(multilingual_tokenizer_dir)
    begin = tokenizer.convert_tokens_to_ids("<|0.00|>")
    hello, world = tokenizer.encode(" hello", add_special_tokens=False), tokenizer.encode(" world", add_special_tokens=False)

    def seg(start: float, end: float, text: list[int], closed: bool = True):
        tokens = [begin + round(start / 0.02), *text] + ([begin + round(end / 0.02)] if closed else [])
        return {"start": start, "end": end, "tokens": tokens}

    pieces = timed_pieces([seg(0.0, 1.0, hello), seg(2.0, 3.5, world)], begin, 30.0, tokenizer)
    assert [(p.start, p.end, p.words) for p in pieces] == [(0.0, 1.0, ["hello"]), (2.0, 3.5, ["world"])]
    assert timed_pieces([seg(0.0, 1.0, hello), seg(2.0, 30.0, world, closed=False)], begin, 30.0, tokenizer) is None
    assert timed_pieces([seg(2.0, 3.0, hello), seg(1.0, 1.5, world)], begin, 30.0, tokenizer) is None  # goes back
    assert timed_pieces([seg(0.0, 9.0, hello)], begin, 5.0, tokenizer) is None  # past the window
    assert timed_pieces([seg(0.0, 1.0, [])], begin, 5.0, tokenizer) is None  # no words at all


def test_merge_keeps_the_time_share_of_cut_pieces():
    pieces = [TimedPiece(0.0, 2.0, ["a", "b", "c", "d"]), TimedPiece(3.0, 4.0, ["e", "f"])]
    assert kept_pieces(pieces, 10.0, 2, 5) == [(11.0, 12.0, "c d"), (13.0, 13.5, "e")]
    windows = [Window(0, 30 * SR, 0.0, 27.5), Window(25 * SR, 40 * SR, 27.5, 40.0)]
    later = [TimedPiece(1.0, 3.0, ["late", "words"]), TimedPiece(5.0, 6.0, ["end."])]
    segments = merge_windows(["early late words", "late words end."], windows, "en",
                             [[TimedPiece(20.0, 26.5, ["early", "late", "words"])], later])
    # the overlap "late words" is kept once (half from each window); the second window's times are offset by 25 s
    assert [(s.start, s.end, s.text, s.timed) for s in segments] == [
        (20.0, 24.333333333333332, "early late", True), (27.0, 28.0, "words", True), (30.0, 31.0, "end.", True)]
    # an untimed window (its timestamps were not valid) spans its window, a guess: it gives way to the next times
    segments = merge_windows(["early late words", "late words end."], windows, "en", [None, later])
    assert [(s.start, s.end, s.timed) for s in segments] == [(0.0, 27.0, False), (27.0, 28.0, True), (30.0, 31.0, True)]


def test_cli_says_when_cue_times_are_estimated(tiny_whisper_dir, tmp_path, capsys):
    """A random tiny model emits no valid timestamps: the srt is timed by the estimate, and stderr says so."""
    sf.write(tmp_path / "a.wav", (np.random.default_rng(0).standard_normal(SR * 2) * 0.1).astype(np.float32), SR)
    code = cli_main(["transcribe", str(tmp_path / "a.wav"), "--model", str(tiny_whisper_dir), "--language", "mr",
                     "--format", "srt", "--max-new-tokens", "6", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0 and "without valid timestamp tokens" in captured.err and "estimated" in captured.err
    assert list(srt.parse(captured.out))
