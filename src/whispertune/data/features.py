"""Turn examples (id, audio, text) into model inputs: log-Mel `input_features` and `labels` token ids.

With `keep_audio` (a training split that is augmented on the fly, data/augment.py) the decoded 16 kHz
float32 `samples` are stored instead of the features, which are then computed per item after augmentation.

Audio is decoded inside the map function, in `data.num_proc` worker processes (falling back to one
process with a warning when the pool fails). Bad rows are not raised: the map marks them with a
`skip_reason` and they are filtered out afterwards and listed in the DataReport. Results are cached
on disk under a hash of everything that determines them, so a second run only loads them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import unicodedata
import warnings
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from datasets import Array2D, Dataset, IterableDataset, Value

from ..config import DataConfig
from ..errors import AudioError, UserError
from .audio import SAMPLE_RATE, audio_problem, load_audio
from .feature_cache import default_cache_dir, store_dataset
from .fingerprint import source_fingerprint
from .report import DataReport, SkipLog
from .segments import SegmentError, stored_segments
from .timestamps import PLAIN, TimestampChoice, segments_problem, timestamped_labels

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the stored columns or their meaning change
SKIP_COLUMNS = ["file", "skip_reason", "skip_detail"]
OUTPUT_COLUMNS = ["labels", "duration", "id", "text"]  # and the signal: input_features, or samples (keep_audio)


# Whisper's control tokens (<|endoftext|>, <|en|>, <|0.00|>...): inside a transcript they would be tokenized as
# text that mimics them, and the row trained to emit fake control sequences.
SPECIAL_TOKEN = re.compile(r"<\|[^|<>]{1,20}\|>")


def text_problem(text: str | None) -> str | None:
    """`empty_text` for empty/whitespace text, `special_token` for a Whisper control token inside it,
    `no_words` when it has no letter, digit or mark at all."""
    if text is None or not text.strip():
        return "empty_text"
    if SPECIAL_TOKEN.search(text):
        return "special_token"
    if not any(unicodedata.category(ch)[0] in "LNM" for ch in text):
        return "no_words"
    return None


class Featurizer:
    """The per-row map function; picklable so worker processes can run it."""

    def __init__(self, processor: Any, language: str | None, task: str, max_label_length: int, max_duration_s: float,
                 keep_audio: bool = False, timestamps: TimestampChoice = PLAIN):
        self.feature_extractor = processor.feature_extractor
        if self.feature_extractor.sampling_rate != SAMPLE_RATE:
            raise UserError(f"feature extractor expects {self.feature_extractor.sampling_rate} Hz; Whisper uses {SAMPLE_RATE}")
        # A copy: set_prefix_tokens changes the tokenizer, which belongs to the caller.
        self.tokenizer = copy.deepcopy(processor.tokenizer)
        self.tokenizer.set_prefix_tokens(language=language, task=task, predict_timestamps=False)
        self.max_label_length = max_label_length
        self.max_duration_s = max_duration_s
        self.timestamps = timestamps  # which rows with segment times get timestamped labels (data/timestamps.py)
        self.num_frames = int(self.feature_extractor.nb_max_frames)
        self.keep_audio = keep_audio
        self.signal = "samples" if keep_audio else "input_features"
        self._parent_pid = os.getpid()
        self.features = datasets.Features(
            {
                "id": Value("string"),
                "text": Value("string"),
                # input_features: (0, frames) for skipped rows; samples: empty for them
                self.signal: datasets.List(Value("float32")) if keep_audio else Array2D((None, self.num_frames), "float32"),
                "labels": datasets.List(Value("int32")),
                "duration": Value("float32"),
                "file": Value("string"),
                "skip_reason": Value("string"),
                "skip_detail": Value("string"),
            }
        )

    def settings(self) -> str:
        """Everything about the processor that changes the output, for the cache key."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        vocab = backend.to_str() if backend is not None else json.dumps(self.tokenizer.get_vocab(), sort_keys=True)
        return json.dumps(
            {
                "feature_extractor": self.feature_extractor.to_dict(),
                "tokenizer": hashlib.sha256(vocab.encode()).hexdigest(),
                "prefix": self.tokenizer.prefix_tokens,
                "max_label_length": self.max_label_length,
                "max_duration_s": self.max_duration_s,
                # only when on: the keys of the feature caches written before this option stay valid
                **({"keep_audio": True} if self.keep_audio else {}),
                **({"timestamps": self.timestamps.settings()} if self.timestamps.settings() else {}),
            },
            sort_keys=True,
            default=str,
        )

    @property
    def output_columns(self) -> list[str]:
        return [self.signal, *OUTPUT_COLUMNS]

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        if os.getpid() != self._parent_pid and torch.get_num_threads() != 1:
            # A forked worker must not enter OpenMP's thread pool, which it inherited in a broken state
            # once the parent had run parallel torch work (the feature extractor computes with torch):
            # it would hang. One thread per worker is also what num_proc workers want.
            torch.set_num_threads(1)
        audio = row["audio"] or {}
        out = {"file": audio.get("path") or "<bytes>", "duration": 0.0, "labels": [], "skip_reason": None,
               "skip_detail": "",
               self.signal: np.zeros(0 if self.keep_audio else (0, self.num_frames), np.float32)}
        reason = text_problem(row["text"])
        if reason:
            return {**out, "skip_reason": reason, "skip_detail": f"transcript {row['text']!r}"}
        try:
            samples = load_audio(audio)
        except AudioError as exc:
            return {**out, "skip_reason": exc.reason, "skip_detail": str(exc)}
        out["duration"] = len(samples) / SAMPLE_RATE
        reason = audio_problem(samples, SAMPLE_RATE, min_seconds=0.1, max_seconds=self.max_duration_s)
        if reason:
            return {**out, "skip_reason": reason, "skip_detail": f"{out['duration']:.2f} s"}
        try:  # local rows' were checked as they were read; a Hub or saved dataset's are checked here
            segments = stored_segments(row.get("segments"), f"row {row['id']}")
        except SegmentError as exc:
            return {**out, "skip_reason": exc.reason, "skip_detail": str(exc)}
        problem = segments_problem(segments, out["duration"]) if segments else None
        if problem:
            return {**out, "skip_reason": "segments_past_end", "skip_detail": problem}
        if segments and self.timestamps.keeps(row["id"]):
            labels = timestamped_labels(self.tokenizer, segments, out["duration"])
        else:
            labels = self.tokenizer(row["text"]).input_ids  # prefix tokens + text + <|endoftext|>
        if len(labels) > self.max_label_length:
            return {**out, "skip_reason": "labels_too_long",
                    "skip_detail": f"{len(labels)} tokens > max_label_length {self.max_label_length}"}
        if self.keep_audio:
            return {**out, "labels": labels, "samples": samples.astype(np.float32)}
        features = self.feature_extractor(samples, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]
        return {**out, "labels": labels, "input_features": features.astype(np.float32)}


def _map(ds: Dataset, featurizer: Featurizer, num_proc: int, fingerprint: str) -> Dataset:
    dropped = ["audio"] + (["segments"] if "segments" in ds.column_names else [])
    kwargs = dict(features=featurizer.features, remove_columns=dropped, new_fingerprint=fingerprint,
                  load_from_cache_file=False, desc="features")
    if num_proc > 1 and len(ds) > 1:
        try:
            return ds.map(featurizer, num_proc=min(num_proc, len(ds)), **kwargs)
        except Exception as exc:  # a pool that cannot start or whose worker died (datasets raises RuntimeError)
            message = f"feature extraction with num_proc={num_proc} failed ({type(exc).__name__}: {exc}); using one process"
            warnings.warn(message, RuntimeWarning, stacklevel=3)
            log.warning(message)
    return ds.map(featurizer, **kwargs)


def _compute(examples: Dataset, featurizer: Featurizer, num_proc: int, key: str, max_samples: int | None
             ) -> tuple[Dataset, list[dict[str, Any]]]:
    """Kept rows and skipped rows.

    With `max_samples`, rows are processed in chunks until enough are kept: the limit applies after
    filtering without decoding the whole source.
    """
    total = len(examples)
    chunks, skipped, start, kept = [], [], 0, 0
    while start < total and (max_samples is None or kept < max_samples):
        size = total - start if max_samples is None else max(max_samples - kept, 16)
        part = examples.select(range(start, min(start + size, total)))
        mapped = _map(part, featurizer, num_proc, f"{key[:24]}-{start}")
        for row in mapped.select_columns(["id", "file", "skip_reason", "skip_detail"]):
            if row["skip_reason"] is not None:
                skipped.append({"id": row["id"], "file": row["file"], "reason": row["skip_reason"],
                                "detail": row["skip_detail"]})
        good = mapped.filter(lambda reason: reason is None, input_columns="skip_reason")
        chunks.append(good.remove_columns(SKIP_COLUMNS))
        kept += len(good)
        start += size
    result = datasets.concatenate_datasets(chunks) if len(chunks) > 1 else chunks[0]
    if max_samples is not None and len(result) > max_samples:
        result = result.select(range(max_samples))
    return result.select_columns(featurizer.output_columns), skipped


def _prepare_stream(stream: IterableDataset, featurizer: Featurizer, report: DataReport, split: str,
                    max_samples: int | None, skip_log: SkipLog | None) -> IterableDataset:
    """Lazy version for streamed data: bad rows are counted as the iterator meets them (first pass only), in
    the process that iterates; with `skip_log`, each skip is also appended there (DataLoader workers)."""
    counted: set[str] = set()
    count_seen = not report.has_split(split)
    report.register(split)

    def run(row: dict[str, Any]) -> dict[str, Any]:
        out = featurizer(row)
        if row["id"] not in counted:  # later epochs meet the same ids again
            counted.add(row["id"])
            if count_seen:
                report.add_seen(split)
            if out["skip_reason"]:
                report.skip(split, row["id"], out["file"], out["skip_reason"], out["skip_detail"])
                if skip_log is not None:
                    skip_log.add(split, row["id"], out["file"], out["skip_reason"], out["skip_detail"])
            else:
                report.add_kept(split)
        return out

    dropped = ["audio"] + (["segments"] if "segments" in (stream.column_names or []) else [])
    mapped = stream.map(run, remove_columns=dropped, features=featurizer.features)
    good = mapped.filter(lambda reason: reason is None, input_columns="skip_reason").remove_columns(SKIP_COLUMNS)
    return good.take(max_samples) if max_samples is not None else good


def prepare_split(
    examples: Dataset | IterableDataset,
    processor: Any,
    data: DataConfig,
    *,
    language: str | None,
    task: str,
    max_label_length: int = 448,
    report: DataReport | None = None,
    split: str = "train",
    cache_dir: str | Path | None = None,
    max_samples: int | None = None,
    skip_log: SkipLog | None = None,
    keep_audio: bool = False,
    timestamps: TimestampChoice = PLAIN,
) -> Dataset | IterableDataset:
    """Features and labels for `examples`; skipped rows go to `report` under `split`.

    `language`: a Whisper code (or None) as the caller resolved it. Columns: input_features (n_mels x 3000
    float32), labels (prefix + text + <|endoftext|>, or timestamped for the rows `timestamps` picks among
    those with segment times), duration, id, text. `keep_audio`: `samples` (the 16 kHz float32 audio) instead of
    input_features.
    Raises UserError when no example is usable.
    """
    report = report if report is not None else DataReport()
    featurizer = Featurizer(processor, language, task, max_label_length, data.max_duration_s, keep_audio, timestamps)
    if isinstance(examples, IterableDataset):
        return _prepare_stream(examples, featurizer, report, split, max_samples, skip_log)
    if not report.has_split(split):
        report.add_seen(split, len(examples))

    key = hashlib.sha256(
        json.dumps([CACHE_FORMAT, source_fingerprint(examples), featurizer.settings(), task, max_samples]).encode()
    ).hexdigest()[:32]
    target = Path(cache_dir or data.cache_dir or default_cache_dir()) / key
    if (target / "skipped.json").is_file():
        log.info("features cache hit: %s", target)
        result = datasets.load_from_disk(str(target))
        skipped = json.loads((target / "skipped.json").read_text(encoding="utf-8"))
    else:
        log.info("features cache miss: computing %d examples into %s", len(examples), target)
        result, skipped = _compute(examples, featurizer, data.num_proc, key, max_samples)
        result = store_dataset(result, target, "skipped.json", json.dumps(skipped))

    for row in skipped:
        report.skip(split, row["id"], row["file"], row["reason"], row["detail"])
    report.set_kept(split, len(result))
    if len(result) == 0:
        files = sorted({row["file"] for row in skipped})[:3]
        raise UserError(
            f"no usable examples in split {split!r} (main problem: {report.main_reason(split)}; "
            f"e.g. {', '.join(files)}; {report.summary_line()})"
        )
    return result


def write_report(report: DataReport, run_dir: str | Path) -> Path:
    """Write `<run_dir>/data_report.json` and print its one-line summary."""
    path = report.write(Path(run_dir))
    print(f"data: {report.summary_line()} (details: {path})")
    return path
