"""Joined clips for `whispertune synth --join N`: N consecutive sentences' clips (same voice) put one after
another with short seeded pauses, and each sentence's start/end time written as the clip's `segments`.

A split's clips are then listed in `<split>/metadata.jsonl` (file_name, text, segments, voice settings),
which the folder reader takes with its segment times (data/segments.py): the corpus for timestamp-preserving
training (`train.timestamp_probability`). The sentence clips are intermediate and removed once joined.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from .audio import SAMPLE_RATE

PAUSE_S = (0.3, 0.8)  # silence between two joined sentences, drawn per gap
MAX_CLIP_S = 30.0  # Whisper's window: a longer joined clip would be skipped by training


def group_start(index: int, join: int) -> int:
    """The first sentence index (1-based) of the group sentence `index` belongs to."""
    return (index - 1) // join * join + 1


def _write_wav(path: Path, audio: np.ndarray) -> None:
    partial = path.with_suffix(".part.wav")
    sf.write(partial, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
    os.replace(partial, path)


def join_split(split_dir: Path, split: str, jobs: Sequence[dict], results: dict[int, tuple], join: int, seed: int,
               add_noise=None) -> tuple[list[dict], list[str]]:
    """Join the split's sentence clips; returns the metadata rows written and notes (groups dropped, long clips).

    `jobs`: (work index, job) pairs' jobs with their `index`, `variant`, `path`, `text` and `work_index`;
    `results`: work index -> (seconds, voice) of the clips that were synthesized; `add_noise(audio, rng)`
    mixes noise into a whole joined clip (None: clean)."""
    groups: dict[tuple[int, int], list[dict]] = {}
    for job in jobs:
        groups.setdefault((group_start(job["index"], join), job["variant"]), []).append(job)
    rows, dropped, too_long = [], 0, 0
    for (first, variant), members in sorted(groups.items()):
        if any(m["work_index"] not in results for m in members):
            dropped += 1
            continue
        rng = np.random.default_rng([seed, zlib.crc32(split.encode()), first, variant])
        pieces, segments, offset = [], [], 0.0
        for i, member in enumerate(members):
            audio, _ = sf.read(member["path"], dtype="float32")
            if i:
                gap = np.zeros(int(rng.uniform(*PAUSE_S) * SAMPLE_RATE), np.float32)
                pieces.append(gap)
                offset += len(gap) / SAMPLE_RATE
            pieces.append(audio)
            segments.append({"start": round(offset, 3), "end": round(offset + len(audio) / SAMPLE_RATE, 3),
                             "text": member["text"]})
            offset += len(audio) / SAMPLE_RATE
        joined = np.concatenate(pieces)
        if add_noise is not None:
            joined = add_noise(joined, rng)
        too_long += offset > MAX_CLIP_S
        name = f"j{first:04d}_v{variant}.wav"
        _write_wav(split_dir / name, joined)
        for member in members:
            Path(member["path"]).unlink(missing_ok=True)
        voice = results[members[0]["work_index"]][1]
        rows.append({"file_name": name, "text": " ".join(m["text"] for m in members), "segments": segments,
                     "seconds": round(offset, 3), "engine": voice.engine, "voice": voice.voice, "rate": voice.rate,
                     "pitch": voice.pitch})
    partial = split_dir / "metadata.jsonl.part"
    partial.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(partial, split_dir / "metadata.jsonl")
    (split_dir / "metadata.csv").unlink(missing_ok=True)  # an earlier unjoined build's: the reader would prefer it
    notes = [f"{split}: {dropped} joined clip(s) left out (a sentence failed)"] if dropped else []
    if too_long:
        notes.append(f"{split}: {too_long} joined clip(s) over {MAX_CLIP_S:.0f} s (training skips them; join fewer)")
    return rows, notes
