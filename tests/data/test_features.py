"""features.prepare_split with the tiny model's processor on real wav files."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from transformers import WhisperProcessor

from whispertune.config import DataConfig
from whispertune.data import features
from whispertune.data.features import prepare_split, write_report
from whispertune.data.report import DataReport
from whispertune.data.sources import load_examples
from whispertune.errors import UserError

TEXTS = ["नमस्कार", "पुणे हे शहर आहे", "hello world", "एक दोन तीन"]


@pytest.fixture(scope="module")
def processor(tiny_whisper_dir):
    return WhisperProcessor.from_pretrained(tiny_whisper_dir)


def corpus(root: Path, extra: list[tuple[str, str, np.ndarray | None]] = ()) -> Path:
    """root/train/metadata.csv with four good tone clips plus `extra` (name, text, samples or None)."""
    rng = np.random.default_rng(0)
    rows = []
    for i, text in enumerate(TEXTS):
        samples = 0.3 * np.sin(2 * np.pi * (300 + 100 * i) * np.arange(16000 + 4000 * i) / 16000)
        rows.append((f"good{i}.wav", text, samples + 0.01 * rng.standard_normal(len(samples))))
    (root / "train").mkdir(parents=True)
    for name, _text, samples in [*rows, *extra]:
        if samples is not None:
            sf.write(root / "train" / name, samples, 16000)
    (root / "train" / "metadata.csv").write_text(
        "file_name,text\n" + "".join(f'{n},"{t}"\n' for n, t, _ in [*rows, *extra]), encoding="utf-8"
    )
    return root


def run(processor, root: Path, tmp_path: Path, report: DataReport, **kw):
    data = DataConfig(source="folder", path=str(root), num_proc=kw.pop("num_proc", 1), cache_dir=str(tmp_path / "cache"))
    examples = load_examples(data, "train", report)
    return prepare_split(examples, processor, data, language="mr", task="transcribe", report=report, split="train", **kw)


def test_features_and_labels(processor, tmp_path):
    report = DataReport()
    ds = run(processor, corpus(tmp_path / "c"), tmp_path, report)
    assert ds.column_names == ["input_features", "labels", "duration", "id", "text"] and len(ds) == 4
    row = ds.with_format("numpy")[1]
    assert row["input_features"].shape == (80, 3000) and row["input_features"].dtype == np.float32
    assert np.isfinite(row["input_features"]).all() and row["input_features"].std() > 0
    tok = processor.tokenizer
    tokens = tok.convert_ids_to_tokens(ds[1]["labels"])
    assert tokens[:4] == ["<|startoftranscript|>", "<|mr|>", "<|transcribe|>", "<|notimestamps|>"]
    assert tokens[-1] == "<|endoftext|>"
    assert tok.decode(ds[1]["labels"], skip_special_tokens=True) == TEXTS[1]
    assert ds["duration"] == pytest.approx([1.0, 1.25, 1.5, 1.75])
    # the same frames as the feature extractor run directly on the decoded clip
    direct = processor.feature_extractor(sf.read(tmp_path / "c/train/good1.wav", dtype="float32")[0],
                                         sampling_rate=16000, return_tensors="np").input_features[0]
    np.testing.assert_allclose(row["input_features"], direct, atol=1e-5)
    assert report.summary_line() == "train: 4 kept, 0 skipped"


def test_skips_are_counted_and_report_written(processor, tmp_path, capsys):
    t = np.arange(16000) / 16000
    extra = [("silent.wav", "शांत", np.zeros(16000)), ("short.wav", "लहान", 0.3 * np.sin(2 * np.pi * 440 * t[:800])),
             ("empty.wav", "   ", 0.3 * np.sin(2 * np.pi * 440 * t)), ("gone.wav", "नाही", None),
             ("long.wav", "लांब " * 300, 0.3 * np.sin(2 * np.pi * 440 * t))]
    report = DataReport()
    ds = run(processor, corpus(tmp_path / "c", extra), tmp_path, report, max_label_length=100)
    assert len(ds) == 4
    assert report.skipped("train") == {"silent": 1, "too_short": 1, "empty_text": 1, "missing_file": 1,
                                       "labels_too_long": 1}
    path = write_report(report, tmp_path / "run")
    assert "train: 4 kept, 5 skipped (" in capsys.readouterr().out
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert path.name == "data_report.json" and saved["splits"]["train"]["seen"] == 9
    by_file = {Path(e["file"]).name: e["reason"] for e in saved["skipped_examples"]}
    assert by_file == {"silent.wav": "silent", "short.wav": "too_short", "empty.wav": "empty_text",
                       "gone.wav": "missing_file", "long.wav": "labels_too_long"}


def test_two_processes_give_the_same_result(processor, tmp_path):
    one = run(processor, corpus(tmp_path / "c"), tmp_path / "a", DataReport())
    two = run(processor, tmp_path / "c", tmp_path / "b", DataReport(), num_proc=2)
    assert two["id"] == one["id"] and two["labels"] == one["labels"]
    np.testing.assert_array_equal(two.with_format("numpy")["input_features"], one.with_format("numpy")["input_features"])


class DiesInWorker(features.Featurizer):
    """Kills any worker process it runs in (as an out-of-memory kill would); works in the parent."""

    parent = os.getpid()

    def __call__(self, row):
        if os.getpid() != self.parent:
            os._exit(1)
        return super().__call__(row)


@pytest.mark.timeout(120)
def test_pool_failure_falls_back_to_one_process(processor, tmp_path, monkeypatch):
    monkeypatch.setattr(features, "Featurizer", DiesInWorker)
    with pytest.warns(RuntimeWarning, match="num_proc=2 failed.*using one process"):
        ds = run(processor, corpus(tmp_path / "c"), tmp_path, DataReport(), num_proc=2)
    assert len(ds) == 4


def test_second_run_is_a_cache_hit(processor, tmp_path, caplog):
    root = corpus(tmp_path / "c", [("silent.wav", "शांत", np.zeros(16000))])
    caplog.set_level(logging.INFO, logger="whispertune.data.features")
    first = run(processor, root, tmp_path, DataReport())
    assert "features cache miss" in caplog.text and "cache hit" not in caplog.text
    caplog.clear()
    report = DataReport()
    second = run(processor, root, tmp_path, report)
    assert "features cache hit" in caplog.text and "cache miss" not in caplog.text
    assert second["labels"] == first["labels"] and Path(second.cache_files[0]["filename"]).is_relative_to(tmp_path / "cache")
    assert report.skipped("train") == {"silent": 1}  # skipped rows are restored from the cache too
    caplog.clear()
    run(processor, root, tmp_path, DataReport(), max_label_length=50)  # another setting: another entry
    assert "features cache miss" in caplog.text


def test_max_samples_counts_after_filtering(processor, tmp_path):
    extra = [("silent.wav", "शांत", np.zeros(16000))]
    root = tmp_path / "c"
    corpus(root, extra)
    # the silent clip comes first, so keeping 2 needs 3 rows
    lines = (root / "train" / "metadata.csv").read_text(encoding="utf-8").splitlines()
    (root / "train" / "metadata.csv").write_text("\n".join([lines[0], lines[-1], *lines[1:-1]]) + "\n", encoding="utf-8")
    report = DataReport()
    ds = run(processor, root, tmp_path, report, max_samples=2)
    assert len(ds) == 2 and report.skipped("train") == {"silent": 1}
    assert report.to_dict()["splits"]["train"]["kept"] == 2


def test_nothing_usable_is_a_user_error(processor, tmp_path):
    root = tmp_path / "c"
    (root / "train").mkdir(parents=True)
    sf.write(root / "train" / "s.wav", np.zeros(16000), 16000)
    (root / "train" / "metadata.csv").write_text("file_name,text\ns.wav,hi\n", encoding="utf-8")
    data = DataConfig(source="folder", path=str(root), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(UserError, match=r"main problem: silent; e\.g\. .*s\.wav"):
        prepare_split(load_examples(data, "train"), processor, data, language="mr", task="transcribe")


def test_streaming_is_lazy_and_counts(processor, tmp_path):
    root = corpus(tmp_path / "c", [("silent.wav", "शांत", np.zeros(16000))])
    data = DataConfig(source="folder", path=str(root))
    stream = load_examples(data, "train").to_iterable_dataset()
    report = DataReport()
    ds = prepare_split(stream, processor, data, language="mr", task="transcribe", report=report, split="stream")
    assert report.summary_line() == "stream: 0 kept, 0 skipped"  # nothing read yet
    rows = list(ds)
    assert len(rows) == 4 and np.asarray(rows[0]["input_features"]).shape == (80, 3000)
    list(ds)  # a second epoch does not count again
    assert report.summary_line() == "stream: 4 kept, 1 skipped (1 silent)"
