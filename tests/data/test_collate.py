"""collate.SpeechCollator with the tiny model's real processor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import WhisperProcessor

from whispertune.data.collate import SpeechCollator, training_view


@pytest.fixture(scope="module")
def processor(tiny_whisper_dir):
    return WhisperProcessor.from_pretrained(tiny_whisper_dir)


def rows_with(processor, texts, with_prefix=True):
    tok = processor.tokenizer
    tok.set_prefix_tokens(language="marathi", task="transcribe", predict_timestamps=False)
    rng = np.random.default_rng(0)
    rows = []
    for text in texts:
        labels = tok(text).input_ids if with_prefix else tok(text, add_special_tokens=False).input_ids
        rows.append({"input_features": rng.standard_normal((80, 3000)).astype(np.float32), "labels": labels})
    return rows, tok.convert_tokens_to_ids("<|startoftranscript|>")


def test_pads_labels_with_minus_100_and_drops_start_column(processor):
    rows, sot = rows_with(processor, ["नमस्कार", "पुणे हे महाराष्ट्रातील शहर आहे"])
    batch = SpeechCollator(processor, sot)(rows)
    assert batch["input_features"].shape == (2, 80, 3000) and batch["input_features"].dtype == torch.float32
    torch.testing.assert_close(batch["input_features"][0], torch.from_numpy(rows[0]["input_features"]))
    labels = batch["labels"]
    longest = max(len(r["labels"]) for r in rows)
    assert labels.shape == (2, longest - 1)  # start token column dropped
    assert labels[0, : len(rows[0]["labels"]) - 1].tolist() == rows[0]["labels"][1:]
    assert (labels[0, len(rows[0]["labels"]) - 1 :] == -100).all()
    assert labels[1].tolist() == rows[1]["labels"][1:]
    assert labels[0, 0].item() == processor.tokenizer.convert_tokens_to_ids("<|mr|>")


def test_keeps_first_column_when_not_every_row_starts_with_it(processor):
    rows, sot = rows_with(processor, ["नमस्कार", "पुणे"])
    rows[1]["labels"] = rows[1]["labels"][1:]  # this row lacks the start token
    batch = SpeechCollator(processor, sot)(rows)
    assert batch["labels"][0, 0].item() == sot
    assert batch["labels"][1, 0].item() != sot
    assert batch["labels"].shape[1] == max(len(r["labels"]) for r in rows)


def test_cached_encoder_outputs(processor):
    rows, sot = rows_with(processor, ["नमस्कार", "पुणे"])
    states = [torch.randn(1500, 64), np.random.default_rng(1).standard_normal((1500, 64)).astype(np.float32)]
    cached = [{"encoder_hidden_states": s, "labels": r["labels"]} for s, r in zip(states, rows)]
    batch = SpeechCollator(processor, sot)(cached)
    assert "input_features" not in batch
    (hidden,) = batch["encoder_outputs"]
    assert hidden.shape == (2, 1500, 64) and hidden.dtype == torch.float32
    torch.testing.assert_close(hidden[1], torch.from_numpy(states[1]))
    assert batch["labels"][0, 0].item() == processor.tokenizer.convert_tokens_to_ids("<|mr|>")


def test_labels_rounded_up_to_a_multiple_keep_their_tokens(processor):
    rows, sot = rows_with(processor, ["नमस्कार", "पुणे हे महाराष्ट्रातील शहर आहे"])
    plain = SpeechCollator(processor, sot)(rows)["labels"]
    padded = SpeechCollator(processor, sot, pad_to_multiple_of=8)(rows)["labels"]
    assert padded.shape[1] % 8 == 0 and padded.shape[1] >= plain.shape[1]
    assert torch.equal(padded[:, : plain.shape[1]], plain) and (padded[:, plain.shape[1]:] == -100).all()


def test_training_view_hands_out_numpy_batch_columns_only(processor):
    import datasets

    rows, sot = rows_with(processor, ["नमस्कार", "पुणे"])
    ds = datasets.Dataset.from_list([{**r, "id": str(i), "text": "x", "duration": 1.0} for i, r in enumerate(rows)])
    view = training_view(ds)
    row = view[0]
    assert sorted(row) == ["input_features", "labels"]
    assert isinstance(row["input_features"], np.ndarray) and row["input_features"].shape == (80, 3000)
    batch = SpeechCollator(processor, sot)([view[0], view[1]])
    listed = SpeechCollator(processor, sot)(rows)
    assert torch.equal(batch["input_features"], listed["input_features"]) and torch.equal(batch["labels"], listed["labels"])


def test_features_of_different_lengths_are_refused(processor):
    rows, sot = rows_with(processor, ["नमस्कार", "पुणे"])
    rows[1]["input_features"] = rows[1]["input_features"][:, :100]
    with pytest.raises(ValueError, match="different input_features shapes"):
        SpeechCollator(processor, sot)(rows)
