"""Packing (`data.pack_utterances`): several short training utterances in one 30 s window.

Whisper's encoder always hears a 30 s window, so a 4 s clip costs as much to encode as a 30 s one; with the
encoder frozen and its outputs cached (`train.cache_encoder_outputs`) that pass is most of a CPU run. Packing
puts several clips of the training split one after another in one window, with a short seeded silence between
two of them, and joins their transcripts with a space: the encoder runs once per window while the decoder
still learns every clip's tokens (Whisper itself was pre-trained on 30 s windows holding several utterances).

Each window takes a random number of clips, 1 to `data.pack_utterances` (uniform, seeded by `train.seed`),
in a seeded random order, and closes early when the next clip would take it past `data.max_duration_s` or its
label past the decoder's length: some windows hold a single clip, so the model still sees speech followed by
silence and learns to stop there. Only the training split is packed; evaluation splits stay single clips.
Input: the split as `features.prepare_split(keep_audio=True)` leaves it (validated, counted, triaged, with its
16 kHz `samples`); output: the same columns as a plain prepared split, one row per window, cached on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, load_from_disk

from ..config import DataConfig
from .audio import SAMPLE_RATE
from .feature_cache import default_cache_dir, store_dataset
from .features import Featurizer
from .report import DataReport

log = logging.getLogger(__name__)

PACK_FORMAT = 1  # bump when the windows or their columns change
GAP_S = (0.2, 0.8)  # silence between two packed clips, drawn per gap
MARKER = "packing.json"  # written last into a cache entry: the packing statistics


@dataclass(frozen=True)
class Window:
    rows: tuple[int, ...]  # indices into the prepared split, in the order they are heard
    gaps: tuple[int, ...]  # samples of silence before rows[1:] (one fewer than rows)


def plan_windows(lengths: Sequence[int], max_utterances: int, max_samples: int, seed: int,
                 fits: Callable[[list[int]], bool] = lambda rows: True) -> list[Window]:
    """Every row in exactly one window (module docstring); `lengths` in samples, `fits(rows)`: whether those
    rows' joined label is short enough. Deterministic for a seed."""
    rng = np.random.default_rng([seed, PACK_FORMAT])
    order = [int(i) for i in rng.permutation(len(lengths))]
    windows, pos = [], 0
    while pos < len(order):
        wanted = int(rng.integers(1, max_utterances + 1))
        rows, gaps, total = [order[pos]], [], lengths[order[pos]]
        pos += 1
        while len(rows) < wanted and pos < len(order):
            gap = int(rng.uniform(*GAP_S) * SAMPLE_RATE)
            nxt = order[pos]
            if total + gap + lengths[nxt] > max_samples or not fits(rows + [nxt]):
                break
            rows.append(nxt)
            gaps.append(gap)
            total += gap + lengths[nxt]
            pos += 1
        windows.append(Window(tuple(rows), tuple(gaps)))
    return windows


def window_audio(pieces: Sequence[np.ndarray], gaps: Sequence[int]) -> np.ndarray:
    """The clips one after another, `gaps[i]` samples of silence before clip i + 1."""
    out = [np.asarray(pieces[0], np.float32)]
    for gap, piece in zip(gaps, pieces[1:]):
        out += [np.zeros(gap, np.float32), np.asarray(piece, np.float32)]
    return np.concatenate(out)


def packing_stats(windows: Sequence[Window], lengths: Sequence[int], max_utterances: int, seed: int) -> dict[str, Any]:
    """What the data report records: clips, windows, windows by clip count, seconds per window."""
    seconds = [(sum(lengths[r] for r in w.rows) + sum(w.gaps)) / SAMPLE_RATE for w in windows]
    counts = Counter(len(w.rows) for w in windows)
    return {"utterances": sum(len(w.rows) for w in windows), "windows": len(windows),
            "max_utterances": max_utterances, "windows_by_utterances": {str(k): counts[k] for k in sorted(counts)},
            "mean_window_seconds": round(float(np.mean(seconds)), 2) if seconds else 0.0,
            "max_window_seconds": round(max(seconds), 2) if seconds else 0.0, "gap_seconds": list(GAP_S),
            "seed": seed}


def pack_split(prepared: Dataset, processor: Any, data: DataConfig, *, seed: int, language: str | None, task: str,
               max_label_length: int, report: DataReport, split: str, cache_dir: str | Path | None = None) -> Dataset:
    """The prepared split (`samples`, `labels`, `duration`, `id`, `text`) packed into windows with log-Mel
    `input_features`; the statistics go to `report.packing[split]`."""
    featurizer = Featurizer(processor, language, task, max_label_length, data.max_duration_s)
    tokenizer = featurizer.tokenizer
    ids, texts = [str(i) for i in prepared["id"]], [str(t) for t in prepared["text"]]
    lengths = [int(round(float(d) * SAMPLE_RATE)) for d in prepared["duration"]]

    def joined(rows: Sequence[int]) -> str:
        return " ".join(texts[r] for r in rows)

    def fits(rows: list[int]) -> bool:
        return len(tokenizer(joined(rows)).input_ids) <= max_label_length

    windows = plan_windows(lengths, data.pack_utterances, int(data.max_duration_s * SAMPLE_RATE), seed, fits)
    stats = packing_stats(windows, lengths, data.pack_utterances, seed)
    report.packing[split] = stats
    key = hashlib.sha256(json.dumps([PACK_FORMAT, featurizer.settings(), ids, texts, lengths,
                                     [[w.rows, w.gaps] for w in windows]]).encode()).hexdigest()[:32]
    target = Path(cache_dir or data.cache_dir or default_cache_dir()) / f"packed-{key}"
    if (target / MARKER).is_file():
        log.info("packed features cache hit: %s", target)
        return load_from_disk(str(target))
    log.info("packing %d clips into %d windows: %s", stats["utterances"], stats["windows"], target)
    audio = prepared.with_format("numpy", columns=["samples"])

    def rows():
        for w in windows:
            samples = window_audio([audio[r]["samples"] for r in w.rows], w.gaps)
            # the gaps are part of the window's identity: the encoder cache keys its outputs by row id
            tag = hashlib.sha256(json.dumps([PACK_FORMAT, w.gaps]).encode()).hexdigest()[:8]
            features = featurizer.feature_extractor(samples, sampling_rate=SAMPLE_RATE,
                                                    return_tensors="np").input_features[0]
            yield {"input_features": features.astype(np.float32), "labels": tokenizer(joined(w.rows)).input_ids,
                   "duration": len(samples) / SAMPLE_RATE, "id": "+".join(ids[r] for r in w.rows) + f"@{tag}",
                   "text": joined(w.rows)}

    features = featurizer.features.copy()
    for name in ("samples", "file", "skip_reason", "skip_detail"):
        features.pop(name, None)
    packed = Dataset.from_list(list(rows()), features=features)
    return store_dataset(packed.select_columns(featurizer.output_columns), target, MARKER, json.dumps(stats))
