"""Batch prepared rows for Whisper: stacked log-Mel features (or cached encoder outputs) and -100-masked labels."""

from __future__ import annotations

from typing import Any

import datasets
import numpy as np
import torch

# Columns a training batch is built from; `training_view` makes the dataset hand out only these, as arrays.
BATCH_COLUMNS = ("input_features", "encoder_hidden_states", "cross_kv", "labels")


def training_view(dataset: Any) -> Any:
    """The dataset as the trainer's DataLoader should read it: the batch columns only, as numpy arrays.

    Read as Python lists (datasets' default format), one large-v2 row is 240,000 floats turned into
    nested lists and back, on the process that also drives the GPU; as numpy it is a copy out of the
    memory-mapped Arrow file. Datasets that are not Arrow-backed (the encoder cache's) pass unchanged.
    """
    names = getattr(dataset, "column_names", None)
    if not names or not hasattr(dataset, "with_format"):
        return dataset
    columns = [c for c in BATCH_COLUMNS if c in names]
    if isinstance(dataset, datasets.IterableDataset):  # a stream (training.streaming) formats all its columns
        return dataset.select_columns(columns).with_format("numpy")
    return dataset.with_format("numpy", columns=columns)


class SpeechCollator:
    """Turn rows of `features.prepare_split` output into a model batch.

    Features are always Whisper's fixed 30 s window, so they are stacked, not padded. Labels are
    padded and every padded position becomes -100 (ignored by the loss); `pad_to_multiple_of` rounds
    the label length up (fewer distinct shapes for compiled layers; the loss is the same, padded positions
    come after every real token and the decoder is causal). When EVERY row starts with
    `decoder_start_token_id`, that column is dropped: Whisper shifts the labels right and prepends the
    start token itself, so keeping it would teach it twice.
    """

    def __init__(self, processor: Any, decoder_start_token_id: int, pad_to_multiple_of: int | None = None):
        self.decoder_start_token_id = int(decoder_start_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        if not rows:
            raise ValueError("SpeechCollator got an empty batch")
        batch: dict[str, Any] = {}
        if "encoder_hidden_states" in rows[0]:
            batch["encoder_outputs"] = (_stack([r["encoder_hidden_states"] for r in rows], "encoder_hidden_states"),)
        else:
            batch["input_features"] = _stack([r["input_features"] for r in rows], "input_features")
        batch["labels"] = self.labels([r["labels"] for r in rows])
        return batch

    def labels(self, sequences: list[Any]) -> torch.Tensor:
        rows = [np.asarray(s, dtype=np.int64).reshape(-1) for s in sequences]
        drop_start = all(len(r) and r[0] == self.decoder_start_token_id for r in rows)
        if drop_start:
            rows = [r[1:] for r in rows]
        width = max(len(r) for r in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        ids = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.from_numpy(r)
        return ids


def _stack(items: list[Any], name: str) -> torch.Tensor:
    arrays = [torch.as_tensor(np.asarray(x), dtype=torch.float32) for x in items]
    shapes = {tuple(a.shape) for a in arrays}
    if len(shapes) > 1:  # features are always one 30 s window; anything else is a bug upstream
        raise ValueError(f"SpeechCollator: rows have different {name} shapes {sorted(shapes)}")
    return torch.stack(arrays)
