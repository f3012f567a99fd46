"""Batch prepared rows for Whisper: padded log-Mel features (or cached encoder outputs) and -100-masked labels."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class SpeechCollator:
    """Turn rows of `features.prepare_split` output into a model batch.

    Labels are padded with the tokenizer and every padded position becomes -100 (ignored by the loss).
    When EVERY row starts with `decoder_start_token_id`, that column is dropped: Whisper shifts the
    labels right and prepends the start token itself, so keeping it would teach it twice.
    """

    def __init__(self, processor: Any, decoder_start_token_id: int):
        self.processor = processor
        self.decoder_start_token_id = int(decoder_start_token_id)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        if not rows:
            raise ValueError("SpeechCollator got an empty batch")
        batch: dict[str, Any] = {}
        if "encoder_hidden_states" in rows[0]:
            states = [torch.as_tensor(np.asarray(r["encoder_hidden_states"]), dtype=torch.float32) for r in rows]
            batch["encoder_outputs"] = (torch.stack(states),)
        else:
            padded = self.processor.feature_extractor.pad(
                [{"input_features": r["input_features"]} for r in rows], return_tensors="pt"
            )
            batch["input_features"] = padded["input_features"].to(torch.float32)

        labels = self.processor.tokenizer.pad(
            [{"input_ids": list(r["labels"])} for r in rows], return_tensors="pt", padding=True
        )
        ids = labels["input_ids"].masked_fill(labels["attention_mask"].ne(1), -100)
        if bool((ids[:, 0] == self.decoder_start_token_id).all()):
            ids = ids[:, 1:]
        batch["labels"] = ids
        return batch
