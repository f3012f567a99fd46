"""Decode audio files or bytes to 16 kHz mono float32, and check a decoded clip for problems.

soundfile (libsndfile: wav, flac, ogg, mp3, ...) is tried first; formats it cannot read (m4a, aac,
opus in mp4, webm, ...) go through torchcodec (FFmpeg). Resampling is done with soxr so every path
gives identical results. Every failure is an `AudioError` with a machine-readable `reason`.

`stream_audio` gives the same samples block by block (soundfile formats; others are decoded whole), so that
an hour-long file never sits in memory. Channels are mixed down by their mean; a file whose channels cancel
in that mix (one phase-inverted) is refused (`channels_cancel`) rather than passed on as silence.
"""

from __future__ import annotations

import io
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from ..errors import AudioError, os_error_message

SAMPLE_RATE = 16000

# Extensions that soundfile or FFmpeg are expected to read; anything else that fails to decode is
# reported as `unsupported_format` rather than as a damaged file.
AUDIO_EXTENSIONS = {
    ".wav", ".wave", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".mp4", ".aac", ".webm",
    ".wma", ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf", ".w64", ".rf64", ".mka", ".mkv", ".amr", ".3gp",
}
SILENCE_PEAK = 1e-4  # below this absolute peak (about -80 dBFS) a clip is treated as silent
CANCEL_RATIO = 0.01  # a mix this much quieter (in energy) than its channels: they cancel each other
STREAM_BLOCK_SECONDS = 20.0


def _describe(src: Any) -> str:
    return str(src) if isinstance(src, (str, Path)) else f"<{len(src)} bytes of audio>"


def _read_soundfile(data: str | Path | bytes) -> tuple[np.ndarray, int]:
    source = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    samples, rate = sf.read(source, dtype="float32", always_2d=True)
    return samples.T, int(rate)  # (channels, frames)


def _read_torchcodec(data: str | Path | bytes) -> tuple[np.ndarray, int]:
    from torchcodec.decoders import AudioDecoder

    decoded = AudioDecoder(data if isinstance(data, bytes) else str(data)).get_all_samples()
    return decoded.data.numpy().astype(np.float32, copy=False), int(decoded.sample_rate)


def _decode(data: str | Path | bytes, name: str, suffix: str) -> tuple[np.ndarray, int]:
    try:
        return _read_soundfile(data)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as sf_exc:
        first_error = str(sf_exc)
    try:
        return _read_torchcodec(data)
    except Exception as tc_exc:  # torchcodec raises RuntimeError/ValueError with FFmpeg's message
        reason = "unsupported_format" if suffix and suffix not in AUDIO_EXTENSIONS else "undecodable"
        what = f"unsupported audio format {suffix!r}" if reason == "unsupported_format" else "cannot decode audio"
        raise AudioError(
            f"{name}: {what} (soundfile: {first_error}; ffmpeg: {str(tc_exc).splitlines()[0][:200]})", reason
        ) from None


def load_audio(src: str | Path | bytes | dict, sampling_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode `src` (a path, raw file bytes, or datasets' undecoded `{"path", "bytes"}`) to mono float32.

    The result is resampled to `sampling_rate`. Raises AudioError with reason `missing_file`,
    `empty_file`, `undecodable`, `unsupported_format` or `non_finite`.
    """
    if isinstance(src, dict):
        data, path = src.get("bytes"), src.get("path")
        if data is None:
            if not path:
                raise AudioError("audio entry has neither bytes nor a path", "missing_file")
            return load_audio(path, sampling_rate)
        name, suffix = (str(path) if path else f"<{len(data)} bytes of audio>"), Path(path or "").suffix.lower()
    elif isinstance(src, (bytes, bytearray)):
        data, name, suffix = bytes(src), _describe(src), ""
    else:
        path = Path(src)
        name, suffix = str(path), path.suffix.lower()
        check_audio_path(path)
        data = path
    if isinstance(data, bytes) and len(data) == 0:
        raise AudioError(f"{name}: audio is empty (0 bytes)", "empty_file")

    samples, rate = _decode(data, name, suffix)
    if samples.size == 0:
        raise AudioError(f"{name}: audio has no samples", "empty_file")
    mix = _MixDown(name)
    mono = mix(samples)
    mix.check()
    if rate != sampling_rate:
        mono = soxr.resample(mono, rate, sampling_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def check_audio_path(path: Path) -> None:
    """AudioError unless `path` is a non-empty regular file: `missing_file`, `not_a_file`, `unreadable_path`
    (a symlink loop, a name too long, no permission: the OS's words and the fix) or `empty_file`."""
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise AudioError(f"{path}: audio file not found", "missing_file") from None
    except OSError as exc:
        raise AudioError(os_error_message(exc, str(path)) or f"{path}: {exc}", "unreadable_path") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise AudioError(f"{path}: {kind}, not an audio file; name the audio file itself", "not_a_file")
    if info.st_size == 0:
        raise AudioError(f"{path}: audio file is empty (0 bytes)", "empty_file")


class _MixDown:
    """(channels, frames) blocks -> mono, refusing NaN/inf and remembering the energy for `check()`."""

    def __init__(self, name: str):
        self.name, self.mix_energy, self.channel_energy, self.peak = name, 0.0, 0.0, 0.0

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        if not np.isfinite(samples).all():
            # Checked before resampling: the filter would smear one NaN over the whole clip.
            raise AudioError(f"{self.name}: audio contains NaN or infinite samples", "non_finite")
        if samples.shape[0] == 1:
            return samples[0]
        mono = samples.mean(axis=0)
        if samples.size:
            self.mix_energy += float(np.square(mono, dtype=np.float64).sum())
            self.channel_energy += float(np.square(samples, dtype=np.float64).mean(axis=0).sum())
            self.peak = max(self.peak, float(np.abs(samples).max()))
        return mono

    def check(self) -> None:
        if self.peak >= SILENCE_PEAK and self.mix_energy < CANCEL_RATIO * self.channel_energy:
            raise AudioError(f"{self.name}: its channels cancel when mixed to mono (one is phase-inverted); "
                             "re-export it as mono from one channel", "channels_cancel")


def stream_audio(path: str | Path, sampling_rate: int = SAMPLE_RATE,
                 block_seconds: float = STREAM_BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """The samples `load_audio(path)` gives, as consecutive mono float32 blocks (same values: soxr's stream
    resampler equals its one-shot one). Formats soundfile cannot open are decoded whole (one block)."""
    path = Path(path)
    check_audio_path(path)
    try:
        sound = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        yield load_audio(path, sampling_rate)
        return
    with sound:
        rate, mix, total = int(sound.samplerate), _MixDown(str(path)), 0
        resampler = None if rate == sampling_rate else soxr.ResampleStream(rate, sampling_rate, 1, dtype="float32",
                                                                             quality="HQ")
        size = max(1, int(block_seconds * rate))
        last = False
        while not last:
            try:
                block = sound.read(size, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise AudioError(f"{path}: cannot decode audio after {total / rate:.1f} s ({exc})",
                                 "undecodable") from None
            last, total = len(block) < size, total + len(block)
            mono = mix(block.T)
            if resampler is not None:
                mono = resampler.resample_chunk(mono, last=last)
            if mono.size:
                yield np.ascontiguousarray(mono, dtype=np.float32)
        if total == 0:
            raise AudioError(f"{path}: audio has no samples", "empty_file")
        mix.check()


def audio_problem(
    array: np.ndarray, sr: int = SAMPLE_RATE, *, min_seconds: float = 0.1, max_seconds: float | None = None
) -> str | None:
    """Why a decoded clip should not be used (`non_finite`, `too_short`, `too_long`, `silent`), or None."""
    if array.size and not np.isfinite(array).all():
        return "non_finite"
    seconds = array.shape[-1] / sr
    if seconds < min_seconds:
        return "too_short"
    if max_seconds is not None and seconds > max_seconds:
        return "too_long"
    if float(np.max(np.abs(array - array.mean()))) < SILENCE_PEAK:  # a constant (DC offset) is silence too
        return "silent"
    return None


def audio_seconds(path: str | Path) -> float | None:
    """A file's duration from its header (soundfile formats), without decoding it; None when unknown."""
    try:
        return float(sf.info(str(path)).duration)
    except Exception:  # noqa: BLE001 - any unreadable header just means "unknown"; decoding reports the error
        return None
