"""transcribe + subtitles: windows, merging, formats, bad files; a 70 s real transcription (embedded)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import srt
import webvtt

from whispertune.cli import main as cli_main
from whispertune.inference.generation import load_for_inference
from whispertune.inference.normalize import normalize_text
from whispertune.inference.options import DecodingOptions, LoadOptions
from whispertune.inference.subtitles import format_timestamp, render
from whispertune.inference.transcribe import (
    Segment,
    Transcript,
    find_overlap,
    is_silent,
    merge_windows,
    plan_windows,
    transcribe,
)

SR = 16000


def noise(seconds: float, rms: float, rate: int = SR, channels: int = 1, seed: int = 0) -> np.ndarray:
    shape = (int(seconds * rate), channels) if channels > 1 else (int(seconds * rate),)
    return (np.random.default_rng(seed).standard_normal(shape) * rms).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_loaded(tiny_whisper_dir):
    return load_for_inference(str(tiny_whisper_dir), options=LoadOptions(language="mr", device="cpu"))


def test_plan_windows_cover_everything():
    windows = plan_windows(70 * SR)
    assert [(w.start / SR, w.end / SR) for w in windows] == [(0, 30), (25, 55), (50, 70)]
    # each window's own span: overlaps split in the middle, no gap, no overlap
    assert [(w.own_start, w.own_end) for w in windows] == [(0, 27.5), (27.5, 52.5), (52.5, 70)]
    assert [(w.start, w.end) for w in plan_windows(12 * SR)] == [(0, 12 * SR)]
    assert len(plan_windows(30 * SR)) == 1 and len(plan_windows(30 * SR + 1)) == 2


def test_overlap_merge():
    before = "we went to the market and bought some app".split()  # window cut inside "apples"
    after = "ght some apples and bread for dinner".split()  # the next one starts inside "bought"
    cut = find_overlap(before, after, "en")
    assert cut is not None
    windows = plan_windows(40 * SR)
    segments = merge_windows([" ".join(before), " ".join(after)], windows, "en")
    assert " ".join(s.text for s in segments) == "we went to the market and bought some apples and bread for dinner"
    assert [(s.start, s.end) for s in segments] == [(0.0, 27.5), (27.5, 40.0)]
    # nothing shared (silence in the overlap): both texts kept whole
    assert find_overlap(["hello", "there"], ["good", "morning"], "en") is None
    # one short common word is not enough evidence to merge
    assert find_overlap("i saw the".split(), "the dog ran".split(), "en") is None
    # Devanagari words are compared whole, after normalization (danda ignored)
    assert find_overlap("मला मराठी भाषा आवडते।".split(), "भाषा आवडते आणि".split(), "mr") is not None


def test_is_silent():
    assert is_silent(noise(2, 0.0005))
    assert not is_silent(np.concatenate([noise(2, 0.0005), noise(0.1, 0.1)]))
    assert is_silent(np.zeros(0, dtype=np.float32))


def test_srt_and_vtt_formatting():
    assert format_timestamp(3661.5, ",") == "01:01:01,500"
    assert format_timestamp(0.0004, ".") == "00:00:00.000"
    t = Transcript("a.wav", "Hello there. Second part", "en",
                   [Segment(0.0, 27.5, "Hello there."), Segment(27.5, 52.5, " "), Segment(52.5, 61.25, "Second part")],
                   duration=61.25)
    # short texts over long windows: timed at 8 characters a second from the window's start (subtitles.py)
    assert render(t, "srt") == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n"
        "2\n00:00:52,500 --> 00:00:53,875\nSecond part\n"
    )
    assert render(t, "vtt") == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n\n00:00:52.500 --> 00:00:53.875\nSecond part\n"
    )
    assert render(t, "txt") == "Hello there. Second part\n"
    data = json.loads(render(t, "json"))
    assert data["segments"][2] == {"start": 52.5, "end": 61.25, "text": "Second part"} and data["language"] == "en"
    with pytest.raises(ValueError, match="unknown format"):
        render(t, "doc")


def test_formats_rates_channels_and_bad_file(tiny_loaded, tmp_path):
    files = []
    stereo = noise(3, 0.1, rate=44100, channels=2)
    sf.write(tmp_path / "stereo44k.wav", stereo, 44100)
    files.append(tmp_path / "stereo44k.wav")
    sf.write(tmp_path / "clip.flac", noise(2, 0.1, rate=22050), 22050)
    sf.write(tmp_path / "clip.ogg", noise(2, 0.1, rate=48000), 48000)
    files += [tmp_path / "clip.flac", tmp_path / "clip.ogg"]
    if shutil.which("ffmpeg"):
        subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(tmp_path / "clip.flac"), str(tmp_path / "clip.mp3")],
                       check=True)
        files.append(tmp_path / "clip.mp3")
    (tmp_path / "broken.wav").write_bytes(b"RIFF....garbage")
    files.insert(1, tmp_path / "broken.wav")
    sf.write(tmp_path / "long.wav", noise(45, 0.1, seed=3), SR)
    files.append(tmp_path / "long.wav")

    results = transcribe(files, loaded=tiny_loaded, decoding=DecodingOptions(batch_size=4, max_new_tokens=3), progress=False)
    assert [Path(r.path).name for r in results] == [f.name for f in files]
    broken = results[1]
    assert broken.error is not None and "broken.wav" in broken.error and broken.text == ""
    good = [r for r in results if r.error is None]
    assert len(good) == len(files) - 1
    assert results[0].duration == pytest.approx(3.0, abs=1e-3)
    assert all(r.text and r.language == "mr" for r in good)
    long = results[-1]
    assert long.duration == pytest.approx(45.0)
    assert [(s.start, s.end) for s in long.segments] == [(0.0, 27.5), (27.5, 45.0)]  # two windows, whole file


def test_cli_transcribe_outputs_and_exit_code(tiny_whisper_dir, tmp_path, capsys):
    sf.write(tmp_path / "a.wav", noise(2, 0.1), SR)
    sf.write(tmp_path / "b.flac", noise(1, 0.1), SR)
    code = cli_main(["transcribe", str(tmp_path / "a.wav"), str(tmp_path / "b.flac"), "--model", str(tiny_whisper_dir),
                     "--language", "mr", "--format", "srt", "--output-dir", str(tmp_path / "subs"),
                     "--max-new-tokens", "3"])
    assert code == 0
    for name in ("a.srt", "b.srt"):
        text = (tmp_path / "subs" / name).read_text(encoding="utf-8")
        assert text.startswith("1\n00:00:00,000 --> 00:00:0")
    capsys.readouterr()
    (tmp_path / "bad.mp3").write_bytes(b"\x00" * 100)
    code = cli_main(["transcribe", str(tmp_path / "a.wav"), str(tmp_path / "bad.mp3"), "--model", str(tiny_whisper_dir),
                     "--language", "mr", "--format", "vtt", "--max-new-tokens", "3"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.startswith("WEBVTT\n")  # the good file still printed
    errors = [line for line in captured.err.splitlines() if line.startswith("whispertune: error:")]
    assert len(errors) == 1 and "bad.mp3" in errors[0]


# --- the real embedded whisper-base on 70 s of audio -------------------------------------------------

SENTENCES = [
    "The old lighthouse stood alone on the rocky island.",
    "My brother plays the guitar every Sunday morning.",
    "Fresh bread from the bakery smells wonderful.",
]


def speak(text: str, path: Path) -> np.ndarray:
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), text], check=True, capture_output=True)
    audio, rate = sf.read(path, dtype="float32")
    return soxr.resample(audio, rate, SR).astype(np.float32)


@pytest.mark.embedded
@pytest.mark.synth
def test_embedded_long_audio_not_cut_at_30s(tmp_path):
    """70 s: sentences at 1 s, straddling the 30 s mark, and at 58 s, with quiet noise between."""
    audio = noise(70, 0.0005, seed=7)
    starts = [1.0, 28.5, 58.0]
    for text, start in zip(SENTENCES, starts):
        speech = speak(text, tmp_path / "s.wav")
        begin = int(start * SR)
        audio[begin : begin + len(speech)] += speech
    assert 28.5 + 3 > 30  # the second sentence crosses the first window's edge
    sf.write(tmp_path / "long.wav", audio, SR)

    [result] = transcribe([tmp_path / "long.wav"], "embedded:whisper-base", load=LoadOptions(language="en"), progress=False)
    print(f"70 s transcript: {result.text!r}")
    for seg in result.segments:
        print(f"  [{seg.start:6.2f} - {seg.end:6.2f}] {seg.text}")
    assert result.duration == pytest.approx(70.0)
    heard = normalize_text(result.text, "en").split()
    for sentence in SENTENCES:
        words = normalize_text(sentence, "en").split()
        found = sum(w in heard for w in words) / len(words)
        assert found >= 0.7, f"{sentence!r}: only {found:.0%} of its words in the transcript"
        # and not transcribed twice by the overlapping windows
        assert sum(heard.count(w) for w in words if len(w) > 4) <= sum(1 for w in words if len(w) > 4) + 1
    # the real transcript's subtitles, as a player reads them: short cues, none longer than 7 s or 2 x 42 chars
    cues = list(srt.parse(render(result, "srt")))
    captions = webvtt.from_string(render(result, "vtt")).captions
    assert len(cues) == len(captions) >= 3
    assert all(0 < (c.end - c.start).total_seconds() <= 7 for c in cues)
    assert all(len(line) <= 42 for c in cues for line in c.content.split("\n")) and max(c.content.count("\n") for c in cues) <= 1
    assert [c.text for c in captions] == [c.content for c in cues]


def test_same_names_in_other_folders_never_overwrite(tiny_whisper_dir, tmp_path, capsys):
    """a/x.wav, b/x.wav and an x-2.wav: three outputs (the old naming gave b/x.wav and x-2.wav both x-2.txt)."""
    files = [tmp_path / "a" / "x.wav", tmp_path / "b" / "x.wav", tmp_path / "x-2.wav"]
    for i, path in enumerate(files):
        path.parent.mkdir(exist_ok=True)
        sf.write(path, noise(1, 0.1, seed=i), SR)
    code = cli_main(["transcribe", *map(str, files), "--model", str(tiny_whisper_dir), "--language", "mr",
                     "--max-new-tokens", "3", "--output-dir", str(tmp_path / "out"), "--format", "json"])
    assert code == 0
    written = dict(line[len("wrote "):-1].split(" (") for line in capsys.readouterr().err.splitlines()
                   if line.startswith("wrote "))
    assert sorted(Path(p).name for p in written) == ["x-2-2.json", "x-2.json", "x.json"]
    for output, source in written.items():  # each output holds its own input's transcript
        assert json.loads(Path(output).read_text(encoding="utf-8"))["path"] == source


def test_bad_paths_and_cancelling_channels_are_reported_and_the_rest_goes_on(tiny_loaded, tmp_path):
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)).astype(np.float32)
    sf.write(tmp_path / "good.wav", tone, SR)
    sf.write(tmp_path / "inverted.wav", np.stack([tone, -tone], axis=1), SR)
    (tmp_path / "folder.wav").mkdir()
    (tmp_path / "loop.wav").symlink_to(tmp_path / "loop.wav")
    files = [tmp_path / n for n in ("inverted.wav", "folder.wav", "loop.wav", "missing.wav", "good.wav")]
    results = transcribe(files, loaded=tiny_loaded, decoding=DecodingOptions(max_new_tokens=3), progress=False)
    errors = [r.error for r in results]
    assert "channels cancel when mixed to mono" in errors[0]
    assert "folder.wav: a directory, not an audio file" in errors[1]
    assert "loop.wav: Too many levels of symbolic links; a symlink loop?" in errors[2]
    assert "missing.wav: audio file not found" in errors[3]
    assert errors[4] is None and results[4].text
