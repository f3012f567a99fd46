"""Transcribe audio files of any format, rate, channel count and length.

Whisper sees 30 s at a time. Longer audio is cut into `chunk_seconds` windows that overlap by
`overlap_seconds` (30 s / 5 s: windows start every 25 s), each window is transcribed on its own
(windows of all files go through the model in batches), and neighbouring texts are merged where
they overlap: the longest run of words at the end of one window that matches (mostly) the start of
the next is found (ties: the run nearest the window edges), the first half of it is kept from the earlier window and the second
half from the later one, and the fragments beyond it (words cut at a window's edge) are dropped. A word spoken inside the overlap is therefore heard whole by at least one window and nothing
is lost at the 30 s mark.

Segments are per window: each covers the window's own span (overlaps split in the middle), so
subtitle cues are at most `chunk_seconds - overlap_seconds` long. Windows whose loudest 30 ms frame
is below `SILENCE_RMS` are not transcribed (Whisper invents text on silence). Languages written
without spaces are merged by whole window texts only (no word to align on).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.audio import load_audio
from ..errors import AudioError, UserError
from .decode_guards import guarded_generate
from .generation import Loaded, load_for_inference
from .normalize import normalize_text

SAMPLE_RATE = 16000
SILENCE_RMS = 0.003  # about -50 dBFS
_FRAME = 480  # 30 ms at 16 kHz


@dataclass
class Segment:
    start: float
    end: float
    text: str


@dataclass
class Transcript:
    path: str
    text: str
    language: str | None
    segments: list[Segment] = field(default_factory=list)
    duration: float = 0.0
    error: str | None = None  # set when the file could not be transcribed (text then empty)


@dataclass
class Window:
    start: int  # samples
    end: int
    own_start: float  # seconds: the part of the timeline this window's segment covers
    own_end: float


def plan_windows(n_samples: int, chunk_seconds: float = 30.0, overlap_seconds: float = 5.0) -> list[Window]:
    """Windows of `chunk_seconds` every `chunk_seconds - overlap_seconds`, the last one ending at the end."""
    if not 0 <= overlap_seconds < chunk_seconds <= 30:
        raise UserError(f"need 0 <= overlap ({overlap_seconds}) < chunk ({chunk_seconds}) <= 30 seconds")
    chunk, step = int(chunk_seconds * SAMPLE_RATE), int((chunk_seconds - overlap_seconds) * SAMPLE_RATE)
    starts = [0]
    while starts[-1] + chunk < n_samples:
        starts.append(starts[-1] + step)
    windows = []
    for i, s in enumerate(starts):
        e = min(s + chunk, n_samples)
        own_start = 0.0 if i == 0 else (s + (starts[i - 1] + chunk - s) / 2) / SAMPLE_RATE
        own_end = e / SAMPLE_RATE if i == len(starts) - 1 else (starts[i + 1] + (e - starts[i + 1]) / 2) / SAMPLE_RATE
        windows.append(Window(s, e, own_start, own_end))
    return windows


def is_silent(audio: np.ndarray, threshold: float = SILENCE_RMS) -> bool:
    """True when no 30 ms frame of `audio` reaches RMS `threshold`."""
    if audio.size == 0:
        return True
    n = audio.size // _FRAME
    frames = audio[None, :] if n == 0 else audio[: n * _FRAME].reshape(n, _FRAME)
    return float(np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)).max()) < threshold


def find_overlap(previous: list[str], following: list[str], language: str | None,
                 max_words: int = 30) -> tuple[int, int] | None:
    """Where the words both windows heard are: (cut `previous` at, resume `following` at), or None.

    Among the runs of equal (normalized) words between the last `max_words` of `previous` and the
    first `max_words` of `following`, the longest one is the overlap; among equally long runs, the
    one closest to the two edges (fewest words after it in `previous` and before it in `following`;
    those are fragments cut at a window edge). Half the run comes from each side. A run of one word
    counts only if the word is long (4+ characters), so that a shared "the" does not merge text.
    """
    tail_start = max(0, len(previous) - max_words)
    a = [normalize_text(w, language) for w in previous[tail_start:]]
    b = [normalize_text(w, language) for w in following[:max_words]]
    best: tuple[int, int, int, int] | None = None  # (size, -edge fragments, i, j)
    for i in range(len(a)):
        for j in range(len(b)):
            size = 0
            while i + size < len(a) and j + size < len(b) and a[i + size] and a[i + size] == b[j + size]:
                size += 1
            if size == 0 or (size == 1 and len(a[i]) < 4):
                continue
            candidate = (size, -((len(a) - i - size) + j), i, j)
            if best is None or candidate > best:
                best = candidate
    if best is None:
        return None
    size, _, i, j = best
    half = (size + 1) // 2
    return tail_start + i + half, j + half


def merge_windows(texts: list[str], windows: list[Window], language: str | None) -> list[Segment]:
    """One segment per non-empty window, with the words both neighbours heard kept only once."""
    words = [t.split() for t in texts]
    for i in range(1, len(words)):
        if not words[i - 1] or not words[i]:
            continue
        cut = find_overlap(words[i - 1], words[i], language)
        if cut is not None:
            words[i - 1], words[i] = words[i - 1][: cut[0]], words[i][cut[1] :]
    return [Segment(w.own_start, w.own_end, " ".join(ws)) for w, ws in zip(windows, words) if ws]


def transcribe(
    files: list[str | Path],
    model: str | None = None,
    adapter: str | None = None,
    *,
    language: str | None = None,
    task: str | None = None,
    quantization: str = "none",
    device: str | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 255,
    num_beams: int = 1,
    chunk_seconds: float = 30.0,
    overlap_seconds: float = 5.0,
    autocast: bool = True,
    progress: bool = True,
    loaded: Loaded | None = None,
    guard: bool = True,
) -> list[Transcript]:
    """Transcribe `files` (wav, flac, mp3, ogg, ...); a file that fails gets `error` set, the others go on.

    Each window gets the token limit of its length; `guard`: the repetition guard (`decode_guards.py`)."""
    if batch_size <= 0 or max_new_tokens <= 0:
        raise UserError("batch_size and max_new_tokens must be positive integers")
    if loaded is None:
        loaded = load_for_inference(model, adapter, quantization=quantization, device=device,
                                    language=language, task=task)
    transcripts: list[Transcript] = []
    jobs: list[tuple[int, int, np.ndarray]] = []  # (transcript index, window index, samples)
    plans: list[list[Window]] = []
    for path in files:
        try:
            audio = load_audio(path, sampling_rate=SAMPLE_RATE)
        except AudioError as exc:
            transcripts.append(Transcript(str(path), "", None, error=str(exc)))
            plans.append([])
            continue
        windows = plan_windows(len(audio), chunk_seconds, overlap_seconds)
        for j, w in enumerate(windows):
            piece = audio[w.start : w.end]
            if not is_silent(piece):
                jobs.append((len(transcripts), j, piece))
        transcripts.append(Transcript(str(path), "", loaded.info.get("language"), duration=len(audio) / SAMPLE_RATE))
        plans.append(windows)

    texts = [[""] * len(p) for p in plans]
    detected: list[list[str]] = [[] for _ in plans]
    extractor = loaded.processor.feature_extractor
    batches = [jobs[i : i + batch_size] for i in range(0, len(jobs), batch_size)]
    for batch in tqdm(batches, desc="transcribe", unit="batch", disable=not progress or not batches):
        feats = extractor([b[2] for b in batch], sampling_rate=SAMPLE_RATE, return_tensors="np").input_features
        generated = guarded_generate(loaded, feats, seconds=[len(b[2]) / SAMPLE_RATE for b in batch],
                                     max_new_tokens=max_new_tokens, num_beams=num_beams, autocast=autocast,
                                     guard=guard).generated
        for (t, j, _), text, lang in zip(batch, generated.texts, generated.languages):
            texts[t][j] = text
            if lang:
                detected[t].append(lang)

    for t, transcript in enumerate(transcripts):
        if transcript.error:
            continue
        transcript.segments = merge_windows(texts[t], plans[t], transcript.language)
        transcript.text = " ".join(s.text for s in transcript.segments)
        if transcript.language is None and detected[t]:
            transcript.language = max(set(detected[t]), key=detected[t].count)
    return transcripts
