"""Transcribe audio files of any format, rate, channel count and length.

Whisper sees 30 s at a time. Longer audio is cut into `chunk_seconds` windows that overlap by
`overlap_seconds` (30 s / 5 s: windows start every 25 s), each window is transcribed on its own
(windows of all files go through the model in batches), and neighbouring texts are merged where
they overlap: the longest run of words at the end of one window that matches (mostly) the start of
the next is found (ties: the run nearest the window edges), the first half of it is kept from the earlier window and the second
half from the later one, and the fragments beyond it (words cut at a window's edge) are dropped. A word spoken inside the overlap is therefore heard whole by at least one window and nothing
is lost at the 30 s mark.

Segments are per window: each covers the window's own span (overlaps split in the middle), so
subtitle cues are at most `chunk_seconds - overlap_seconds` long. With `DecodingOptions(timestamps=True)`
segments are those of Whisper's timestamp tokens instead (inference/timestamps.py, `timed` set), for each
window whose timestamps are valid; the others keep the window segment and are counted in
`Transcript.untimed_windows`. Windows whose loudest 30 ms frame
is below `SILENCE_RMS` are not transcribed (Whisper invents text on silence). Languages written
without spaces are merged by whole window texts only (no word to align on).

Memory stays bounded whatever the length or number of files: audio is read block by block
(`data.audio.stream_audio`), cut into windows as it arrives, and each batch of windows is transcribed as
soon as it is full, so at most one window plus one block per file and one batch are held, never a whole
file (see docs/reliability.md for the measured peak on a 1-hour file).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.audio import SAMPLE_RATE, audio_seconds, stream_audio
from ..data.timestamps import timestamp_begin
from ..errors import AudioError, ConfigError
from ..model.parts import base_model
from .decode_guards import guarded_generate
from .generation import Loaded, check_decoding, load_for_inference
from .normalize import normalize_text
from .options import PROMPT_TOKENS, DecodingOptions, LoadOptions, resolve_batch_size
from .timestamps import TimedPiece, kept_pieces, timed_pieces

SILENCE_RMS = 0.003  # about -50 dBFS
_FRAME = 480  # 30 ms at 16 kHz


@dataclass
class Segment:
    start: float
    end: float
    text: str
    timed: bool = False  # start and end are Whisper's timestamp tokens (else the window's span)


@dataclass
class Transcript:
    path: str
    text: str
    language: str | None
    segments: list[Segment] = field(default_factory=list)
    duration: float = 0.0
    error: str | None = None  # set when the file could not be transcribed (text then empty)
    untimed_windows: int = 0  # decoded with timestamps but without valid ones: timed by the estimate


@dataclass
class Window:
    start: int  # samples
    end: int
    own_start: float  # seconds: the part of the timeline this window's segment covers
    own_end: float


def window_samples(chunk_seconds: float, overlap_seconds: float) -> tuple[int, int]:
    """(window length, step) in samples; ConfigError unless 1 <= chunk <= 30 s and 0 <= overlap <= chunk / 2.

    Beyond half the window, a word would be heard by three windows, and the merge aligns neighbours only;
    below 1 s (or a step of almost nothing) an hour of audio would become millions of windows.
    """
    if not (1.0 <= chunk_seconds <= 30.0 and 0.0 <= overlap_seconds <= chunk_seconds / 2):
        raise ConfigError(f"chunk_seconds {chunk_seconds}, overlap_seconds {overlap_seconds}: expected a chunk of "
                          "1 to 30 s and an overlap of 0 to half the chunk")
    return int(chunk_seconds * SAMPLE_RATE), int((chunk_seconds - overlap_seconds) * SAMPLE_RATE)


def plan_windows(n_samples: int, chunk_seconds: float = 30.0, overlap_seconds: float = 5.0) -> list[Window]:
    """Windows of `chunk_seconds` every `chunk_seconds - overlap_seconds`, the last one ending at the end."""
    chunk, step = window_samples(chunk_seconds, overlap_seconds)
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


def stream_windows(blocks: Iterable[np.ndarray], chunk: int, step: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start, samples) of each window `plan_windows` plans, cut from consecutive blocks of audio as they come.

    A window is complete, and not the last, once more audio than it holds has arrived after its start; the
    last one is what is left at the end. Only one window plus one block are held at a time.
    """
    buffer, start = np.zeros(0, np.float32), 0
    for block in blocks:
        buffer = np.concatenate([buffer, block])
        while len(buffer) > chunk:
            yield start, buffer[:chunk].copy()
            buffer, start = buffer[step:], start + step
    yield start, buffer[:chunk].copy()


def is_silent(audio: np.ndarray, threshold: float = SILENCE_RMS) -> bool:
    """True when no 30 ms frame of `audio` reaches RMS `threshold` (about its mean: a DC offset is silence)."""
    if audio.size == 0:
        return True
    n = audio.size // _FRAME
    frames = audio[None, :] if n == 0 else audio[: n * _FRAME].reshape(n, _FRAME)
    frames = frames.astype(np.float64)
    return float(np.sqrt(((frames - frames.mean(axis=1, keepdims=True)) ** 2).mean(axis=1)).max()) < threshold


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


def merge_windows(texts: list[str], windows: list[Window], language: str | None,
                  timed: list[list[TimedPiece] | None] | None = None) -> list[Segment]:
    """One segment per non-empty window, with the words both neighbours heard kept only once; a window with
    `timed` pieces (its text is theirs) gives one timed segment per piece instead."""
    words = [t.split() for t in texts]
    first = [0] * len(words)  # the first word of each window still kept
    for i in range(1, len(words)):
        if not words[i - 1] or not words[i]:
            continue
        cut = find_overlap(words[i - 1], words[i], language)
        if cut is not None:
            words[i - 1], words[i] = words[i - 1][: cut[0]], words[i][cut[1] :]
            first[i] += cut[1]
    segments: list[Segment] = []
    for j, (w, ws) in enumerate(zip(windows, words)):
        pieces = timed[j] if timed else None
        if not ws:
            continue
        if pieces is None:
            segments.append(Segment(w.own_start, w.own_end, " ".join(ws)))
            continue
        for start, end, text in kept_pieces(pieces, w.start / SAMPLE_RATE, first[j], first[j] + len(ws)):
            if segments and start < segments[-1].end:  # neighbouring windows' times overlap: no cue may
                if segments[-1].timed:
                    start = segments[-1].end
                else:  # an untimed window's span is a guess: it gives way to the model's time
                    segments[-1].end = max(segments[-1].start, start)
            segments.append(Segment(start, max(start, end), text, timed=True))
    return segments


def transcribe(
    files: list[str | Path],
    model: str | None = None,
    adapter: str | None = None,
    *,
    load: LoadOptions = LoadOptions(),
    decoding: DecodingOptions = DecodingOptions(batch_size=8),
    chunk_seconds: float = 30.0,
    overlap_seconds: float = 5.0,
    progress: bool = True,
    loaded: Loaded | None = None,
    guard: bool = True,
) -> list[Transcript]:
    """Transcribe `files` (wav, flac, mp3, ogg, ...); a file that fails gets `error` set, the others go on.

    `load`: what to load (ignored with `loaded`); `decoding`: how to generate (batch: windows per call).
    Each window gets the token limit of its length; `guard`: the repetition guard (`decode_guards.py`).
    Progress is shown in seconds of audio done (the total from the files' headers).
    """
    chunk, step = window_samples(chunk_seconds, overlap_seconds)  # before the model loads: fail fast
    if loaded is None:
        loaded = load_for_inference(model, adapter, load)
    check_decoding(loaded, decoding.max_new_tokens, decoding.num_beams)
    options, max_new_tokens = _generate_options(loaded, decoding)
    first_timestamp = timestamp_begin(loaded.processor.tokenizer) if decoding.timestamps else 0
    batch_size = resolve_batch_size(decoding.batch_size, loaded.info.get("device", "cpu"))
    transcripts = [Transcript(str(path), "", loaded.info.get("language")) for path in files]
    texts: list[list[str]] = [[] for _ in files]
    detected: list[list[str]] = [[] for _ in files]
    timed: list[list[list[TimedPiece] | None]] = [[] for _ in files]
    pending: list[tuple[int, int, np.ndarray, float]] = []  # (file, window, samples, seconds of new audio)
    extractor = loaded.processor.feature_extractor
    bar = tqdm(total=round(sum(audio_seconds(p) or 0.0 for p in files), 1), desc="transcribe", unit="s",
               disable=not progress)

    def run_pending() -> None:
        if not pending:
            return
        feats = extractor([p[2] for p in pending], sampling_rate=SAMPLE_RATE, return_tensors="np").input_features
        device = torch.device(loaded.info.get("device", "cpu"))
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(decoding.seed)  # sampling (temperature > 0) is reproducible for the same inputs
            generated = guarded_generate(loaded, feats, seconds=[len(p[2]) / SAMPLE_RATE for p in pending],
                                         max_new_tokens=max_new_tokens, num_beams=decoding.num_beams,
                                         autocast=decoding.autocast, guard=guard, seed=decoding.seed,
                                         options=options).generated
        for k, ((t, j, piece, _), text, lang) in enumerate(zip(pending, generated.texts, generated.languages)):
            if generated.segments is not None:
                timed[t][j] = timed_pieces(generated.segments[k], first_timestamp, len(piece) / SAMPLE_RATE,
                                           loaded.processor.tokenizer)
                transcripts[t].untimed_windows += timed[t][j] is None
                text = " ".join(w for p in timed[t][j] or [] for w in p.words) or text
            texts[t][j] = text
            if lang:
                detected[t].append(lang)
        bar.update(sum(p[3] for p in pending))
        pending.clear()

    lengths = [0] * len(files)
    for t, path in enumerate(files):
        done = 0  # samples of this file whose window is planned
        try:
            for j, (start, piece) in enumerate(stream_windows(stream_audio(path, SAMPLE_RATE), chunk, step)):
                texts[t].append("")
                timed[t].append(None)
                seconds, done = (start + len(piece) - done) / SAMPLE_RATE, start + len(piece)
                if is_silent(piece):
                    bar.update(seconds)
                    continue
                pending.append((t, j, piece, seconds))
                if len(pending) >= batch_size:
                    run_pending()
        except AudioError as exc:
            transcripts[t].error = str(exc)
            pending[:] = [p for p in pending if p[0] != t]
            continue
        lengths[t] = done
    run_pending()
    bar.close()

    for t, transcript in enumerate(transcripts):
        if transcript.error:
            continue
        transcript.duration = lengths[t] / SAMPLE_RATE
        transcript.segments = merge_windows(texts[t], plan_windows(lengths[t], chunk_seconds, overlap_seconds),
                                            transcript.language, timed[t])
        transcript.text = " ".join(s.text for s in transcript.segments)
        if transcript.language is None and detected[t]:
            transcript.language = max(set(detected[t]), key=detected[t].count)
    return transcripts


def _generate_options(loaded: Loaded, decoding: DecodingOptions) -> tuple[dict[str, Any], int]:
    """`model.generate` options for `decoding`'s prompt, sampling and timestamps, and the new tokens allowed
    (the prompt takes decoder positions: 448 in all)."""
    options: dict[str, Any] = {}
    max_new_tokens = decoding.max_new_tokens
    if decoding.prompt and decoding.prompt.strip():
        ids = loaded.processor.get_prompt_ids(decoding.prompt.strip(), return_tensors="pt")
        ids = torch.cat([ids[:1], ids[1:][-PROMPT_TOKENS:]])  # <|startofprev|> and the prompt's end
        options["prompt_ids"] = ids.to(loaded.info.get("device", "cpu"))
        positions = int(base_model(loaded.model).config.max_target_positions)
        max_new_tokens = min(max_new_tokens, positions - len(ids) - 4)  # 4: start, language, task, timestamps
    if decoding.temperature > 0:
        options.update(do_sample=True, temperature=decoding.temperature)
    if decoding.timestamps:
        options.update(return_timestamps=True, return_segments=True)
    return options, max_new_tokens
