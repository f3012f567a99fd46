"""Decode audio files or bytes to 16 kHz mono float32, and check a decoded clip for problems.

soundfile (libsndfile: wav, flac, ogg, mp3, ...) is tried first; formats it cannot read (m4a, aac,
opus in mp4, webm, ...) go through torchcodec (FFmpeg). Resampling is done with soxr so every path
gives identical results. Every failure is an `AudioError` with a machine-readable `reason`.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from ..errors import AudioError

SAMPLE_RATE = 16000

# Extensions that soundfile or FFmpeg are expected to read; anything else that fails to decode is
# reported as `unsupported_format` rather than as a damaged file.
AUDIO_EXTENSIONS = {
    ".wav", ".wave", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".mp4", ".aac", ".webm",
    ".wma", ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf", ".w64", ".rf64", ".mka", ".mkv", ".amr", ".3gp",
}
SILENCE_PEAK = 1e-4  # below this absolute peak (about -80 dBFS) a clip is treated as silent


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
        if not path.is_file():
            raise AudioError(f"{path}: audio file not found", "missing_file")
        if path.stat().st_size == 0:
            raise AudioError(f"{path}: audio file is empty (0 bytes)", "empty_file")
        data = path
    if isinstance(data, bytes) and len(data) == 0:
        raise AudioError(f"{name}: audio is empty (0 bytes)", "empty_file")

    samples, rate = _decode(data, name, suffix)
    if samples.size == 0:
        raise AudioError(f"{name}: audio has no samples", "empty_file")
    if not np.isfinite(samples).all():
        # Checked before resampling: the filter would smear one NaN over the whole clip.
        raise AudioError(f"{name}: audio contains NaN or infinite samples", "non_finite")
    mono = samples.mean(axis=0) if samples.shape[0] > 1 else samples[0]
    if rate != sampling_rate:
        mono = soxr.resample(mono, rate, sampling_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


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
    if float(np.max(np.abs(array))) < SILENCE_PEAK:
        return "silent"
    return None
