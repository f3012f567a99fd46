"""Audio the scorecard builds itself: no-speech probes (silence, noise, a tone) and long-form files made by
joining test utterances, with where each utterance lies in the file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ..data.audio import SAMPLE_RATE

NO_SPEECH_KINDS = ("silence", "noise", "tone")
NOISE_RMS = 0.01  # about -40 dBFS: audible hiss, well above transcribe's SILENCE_RMS so it is decoded
TONE_AMPLITUDE = 0.1
GAP_SECONDS = (0.3, 1.2)  # pause drawn between joined utterances


def no_speech_clip(kind: str, seconds: float, index: int, seed: int = 0) -> np.ndarray:
    """Probe `index` of `kind`: digital silence, seeded white noise, or a sine tone (220 Hz up a fifth
    per index), float32 at 16 kHz."""
    n = int(seconds * SAMPLE_RATE)
    if kind == "silence":
        return np.zeros(n, dtype=np.float32)
    if kind == "noise":
        return (np.random.default_rng([seed, index]).standard_normal(n) * NOISE_RMS).astype(np.float32)
    if kind == "tone":
        freq = 220.0 * 1.5 ** (index % 6)
        return (TONE_AMPLITUDE * np.sin(2 * np.pi * freq * np.arange(n) / SAMPLE_RATE)).astype(np.float32)
    raise ValueError(f"unknown probe kind {kind!r}; expected one of {NO_SPEECH_KINDS}")


@dataclass
class Placed:
    """One utterance inside a long-form file: its transcript and span in seconds."""

    text: str
    start: float
    end: float


@dataclass
class LongForm:
    path: Path
    seconds: float
    utterances: list[Placed]


def join_utterances(clips: list[tuple[np.ndarray, str]], target_seconds: float, path: Path,
                    seed: int = 0) -> LongForm:
    """Utterances (cycled through when there are too few) joined with seeded pauses until the file reaches
    `target_seconds`; written to `path` as 16 kHz PCM16 wav."""
    if not clips:
        raise ValueError("no utterances to join")
    rng = np.random.default_rng(seed)
    pieces: list[np.ndarray] = []
    placed: list[Placed] = []
    cursor = 0
    index = 0
    while cursor < target_seconds * SAMPLE_RATE:
        audio, text = clips[index % len(clips)]
        gap = np.zeros(int(rng.uniform(*GAP_SECONDS) * SAMPLE_RATE), dtype=np.float32)
        pieces += [gap, audio.astype(np.float32)]
        start = cursor + len(gap)
        placed.append(Placed(text, start / SAMPLE_RATE, (start + len(audio)) / SAMPLE_RATE))
        cursor = start + len(audio)
        index += 1
    pieces.append(np.zeros(int(GAP_SECONDS[0] * SAMPLE_RATE), dtype=np.float32))
    audio = np.concatenate(pieces)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(audio, -1, 1), SAMPLE_RATE, subtype="PCM_16")
    return LongForm(path, len(audio) / SAMPLE_RATE, placed)
