"""audio.load_audio / audio_problem on real files written here with soundfile and ffmpeg."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from whispertune.data.audio import SAMPLE_RATE, audio_problem, load_audio
from whispertune.errors import AudioError


def tone(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def assert_tone(samples: np.ndarray, freq: float, seconds: float) -> None:
    """16 kHz, the right length, and nearly all energy within 15 Hz of `freq`."""
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - seconds * SAMPLE_RATE) <= 4
    power = np.abs(np.fft.rfft(samples * np.hanning(len(samples)))) ** 2
    bins = np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)
    assert abs(bins[np.argmax(power)] - freq) < 3
    assert power[np.abs(bins - freq) < 15].sum() / power.sum() > 0.99


def ffmpeg(src: Path, dst: Path, *args: str) -> Path:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(src), *args, str(dst)], check=True)
    return dst


def test_48k_stereo_becomes_16k_mono(tmp_path):
    stereo = np.stack([tone(1000, 1.0, 48000), tone(1000, 1.0, 48000)], axis=1)
    sf.write(tmp_path / "s.wav", stereo, 48000)
    assert_tone(load_audio(tmp_path / "s.wav"), 1000, 1.0)


def test_stereo_with_different_tones_is_mixed_down(tmp_path):
    stereo = np.stack([tone(500, 1.0, 48000), tone(1500, 1.0, 48000)], axis=1)
    sf.write(tmp_path / "s.wav", stereo, 48000)
    samples = load_audio(tmp_path / "s.wav")
    power = np.abs(np.fft.rfft(samples)) ** 2
    bins = np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)
    both = power[(np.abs(bins - 500) < 15) | (np.abs(bins - 1500) < 15)].sum()
    assert both / power.sum() > 0.99
    assert 0.4 < power[np.abs(bins - 500) < 15].sum() / both < 0.6  # equal halves


def test_8k_is_upsampled(tmp_path):
    sf.write(tmp_path / "n.wav", tone(440, 0.5, 8000), 8000)
    assert_tone(load_audio(str(tmp_path / "n.wav")), 440, 0.5)


@pytest.mark.parametrize("fmt", ["flac", "ogg"])
def test_soundfile_formats(tmp_path, fmt):
    path = tmp_path / f"t.{fmt}"
    sf.write(path, tone(700, 1.0, 22050), 22050)
    assert_tone(load_audio(path), 700, 1.0)


@pytest.mark.parametrize("ext", ["mp3", "m4a"])
def test_ffmpeg_encoded_formats(tmp_path, ext):
    """mp3 is read by libsndfile; m4a (AAC) only by the torchcodec fallback."""
    sf.write(tmp_path / "t.wav", tone(600, 1.0, 16000), 16000)
    path = ffmpeg(tmp_path / "t.wav", tmp_path / f"t.{ext}")
    samples = load_audio(path)
    # Encoders add padding: the length is checked loosely, the spectrum strictly.
    assert abs(len(samples) - SAMPLE_RATE) < 0.1 * SAMPLE_RATE
    power = np.abs(np.fft.rfft(samples)) ** 2
    bins = np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)
    assert abs(bins[np.argmax(power)] - 600) < 3


def test_24bit_wav(tmp_path):
    sf.write(tmp_path / "d.wav", tone(1000, 1.0, 44100), 44100, subtype="PCM_24")
    assert sf.info(tmp_path / "d.wav").subtype == "PCM_24"
    assert_tone(load_audio(tmp_path / "d.wav"), 1000, 1.0)


def test_bytes_and_datasets_dict(tmp_path):
    sf.write(tmp_path / "t.flac", tone(800, 1.0, 16000), 16000)
    raw = (tmp_path / "t.flac").read_bytes()
    from_bytes = load_audio(raw)
    assert_tone(from_bytes, 800, 1.0)
    np.testing.assert_array_equal(load_audio({"path": "t.flac", "bytes": raw}), from_bytes)
    np.testing.assert_array_equal(load_audio({"path": str(tmp_path / "t.flac"), "bytes": None}), from_bytes)


def test_nan_float_wav_is_non_finite(tmp_path):
    samples = tone(440, 0.5, 16000)
    samples[100] = np.nan
    sf.write(tmp_path / "nan.wav", samples, 16000, subtype="FLOAT")
    with pytest.raises(AudioError) as err:
        load_audio(tmp_path / "nan.wav")
    assert err.value.reason == "non_finite" and "nan.wav" in str(err.value)


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("missing.wav", None, "missing_file"),
        ("empty.wav", b"", "empty_file"),
        ("noise.wav", b"this is not audio at all " * 40, "undecodable"),
        ("data.xyz", b"\x00\x01binary" * 50, "unsupported_format"),
    ],
)
def test_errors_name_file_and_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AudioError) as err:
        load_audio(path)
    assert err.value.reason == reason
    assert name in str(err.value)


def test_audio_problem():
    assert audio_problem(tone(440, 1.0, 16000)) is None
    assert audio_problem(np.zeros(16000, np.float32)) == "silent"
    assert audio_problem(tone(440, 0.05, 16000)) == "too_short"
    assert audio_problem(tone(440, 2.0, 16000), max_seconds=1.5) == "too_long"
    assert audio_problem(np.array([0.1, np.inf] * 2000, np.float32)) == "non_finite"
