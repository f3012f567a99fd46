"""Timestamp-preserving training data: segment times read from manifests and subtitle files, timestamped
labels for a seeded share of the rows, the features cache keyed by the setting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from transformers import WhisperProcessor

from whispertune.config import DataConfig
from whispertune.data.features import prepare_split
from whispertune.data.report import DataReport
from whispertune.data.sources import load_examples
from whispertune.data.timestamps import TimestampChoice, timestamp_begin
from whispertune.inference.probe_checks import timestamps_valid

SEGMENTS = [{"start": 0.0, "end": 0.9, "text": "hello there"}, {"start": 1.2, "end": 1.9, "text": "good morning"}]


@pytest.fixture(scope="module")
def processor(tiny_whisper_dir):
    return WhisperProcessor.from_pretrained(tiny_whisper_dir)


def _tone(path: Path, seconds: float = 2.0) -> None:
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, 0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * np.random.default_rng(0).standard_normal(len(t)), 16000)


def manifest(root: Path, rows: int = 8, timed: int | None = None) -> Path:
    """A manifest of `rows` 2 s clips, the first `timed` (default: all) with segment times."""
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(rows):
        _tone(root / f"c{i}.wav")
        row = {"audio_filepath": f"c{i}.wav", "text": "hello there good morning", "id": f"row{i}"}
        if timed is None or i < timed:
            row["segments"] = SEGMENTS
        lines.append(json.dumps(row))
    (root / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "train.jsonl"


def prepared(processor, path: Path, tmp_path: Path, choice: TimestampChoice, report: DataReport | None = None):
    report = report if report is not None else DataReport()
    data = DataConfig(source="manifest", path=str(path), cache_dir=str(tmp_path / "cache"))
    examples = load_examples(data, "train", report)
    return prepare_split(examples, processor, data, language="en", task="transcribe", report=report,
                         split="train", timestamps=choice)


def test_choice_is_seeded_per_row_and_takes_its_share():
    ids = [f"clip{i}" for i in range(2000)]
    half = TimestampChoice(0.5, seed=1)
    picked = [half.keeps(i) for i in ids]
    assert picked == [TimestampChoice(0.5, seed=1).keeps(i) for i in ids]  # the same rows every time
    assert picked != [TimestampChoice(0.5, seed=2).keeps(i) for i in ids]
    assert 0.45 < sum(picked) / len(ids) < 0.55
    assert not any(TimestampChoice(0.0).keeps(i) for i in ids) and all(TimestampChoice(1.0).keeps(i) for i in ids)
    # a path id (a local row without an id column) counts by its file name: moving the corpus keeps the choice
    assert [half.keeps(f"/a/{i}.wav") for i in ids] == [half.keeps(f"/elsewhere/b/{i}.wav") for i in ids]


def test_timestamped_labels_are_valid_whisper_sequences(processor, tmp_path):
    ds = prepared(processor, manifest(tmp_path / "m"), tmp_path, TimestampChoice(1.0))
    tok = processor.tokenizer
    begin = timestamp_begin(tok)
    labels = ds[0]["labels"]
    assert tok.convert_ids_to_tokens(labels[:3]) == ["<|startoftranscript|>", "<|en|>", "<|transcribe|>"]
    assert tok.convert_tokens_to_ids("<|notimestamps|>") not in labels
    # 20 ms steps: 0.9 s is <|0.90|>, the second segment starts at <|1.20|>
    stamps = [(t - begin) * 0.02 for t in labels if t >= begin]
    assert stamps == pytest.approx([0.0, 0.9, 1.2, 1.9])
    assert tok.decode(labels, decode_with_timestamps=True, skip_special_tokens=False).endswith(
        "<|0.00|> hello there<|0.90|><|1.20|> good morning<|1.90|><|endoftext|>")
    # what the scorecard's timestamp probe accepts from a model's output
    assert timestamps_valid(labels[3:], begin, tok.eos_token_id, 2.0)


def test_only_the_chosen_share_of_timed_rows_is_timestamped(processor, tmp_path):
    choice = TimestampChoice(0.5, seed=3)
    ds = prepared(processor, manifest(tmp_path / "m", rows=12, timed=8), tmp_path, choice)
    begin = timestamp_begin(processor.tokenizer)
    timestamped = {row["id"] for row in ds if any(t >= begin for t in row["labels"])}
    expected = {f"row{i}" for i in range(8) if choice.keeps(f"row{i}")}
    assert timestamped == expected and 0 < len(expected) < 8  # rows 8-11 have no segments: always plain
    plain = next(row for row in ds if row["id"] not in timestamped)
    assert processor.tokenizer.decode(plain["labels"], skip_special_tokens=True) == "hello there good morning"


def test_features_cache_key_follows_the_setting(processor, tmp_path):
    path = manifest(tmp_path / "m", rows=2)
    begin = timestamp_begin(processor.tokenizer)
    plain = prepared(processor, path, tmp_path, TimestampChoice(0.0))
    timed = prepared(processor, path, tmp_path, TimestampChoice(1.0))
    assert not any(t >= begin for t in plain[0]["labels"]) and any(t >= begin for t in timed[0]["labels"])
    assert len(list((tmp_path / "cache").iterdir())) == 2
    # other segment times: another source fingerprint, so other labels (not the cached ones)
    text = path.read_text(encoding="utf-8").replace('"end": 1.9', '"end": 1.5')
    path.write_text(text, encoding="utf-8")
    moved = prepared(processor, path, tmp_path, TimestampChoice(1.0))
    assert [(t - begin) * 0.02 for t in moved[0]["labels"] if t >= begin][-1] == pytest.approx(1.5)


def test_subtitle_files_next_to_clips_give_segments(tmp_path):
    root = tmp_path / "f" / "train"
    root.mkdir(parents=True)
    for name in ("a", "b", "c"):
        _tone(root / f"{name}.wav")
    (root / "a.srt").write_text("1\n00:00:00,000 --> 00:00:00,800\nfirst part\n\n2\n00:00:01,000 --> 00:00:01,900\n"
                                "second part\n", encoding="utf-8")
    (root / "b.vtt").write_text("WEBVTT\n\n00:00:00.100 --> 00:00:01.500\nonly part\n", encoding="utf-8")
    (root / "metadata.csv").write_text("file_name,text\na.wav,first part second part\nb.wav,only part\nc.wav,plain\n",
                                       encoding="utf-8")
    ds = load_examples(DataConfig(source="folder", path=str(tmp_path / "f")), "train")
    by_file = {Path(r["audio"]["path"]).stem: r["segments"] for r in ds}
    assert by_file["a"] == [{"start": 0.0, "end": 0.8, "text": "first part"},
                            {"start": 1.0, "end": 1.9, "text": "second part"}]
    assert by_file["b"] == [{"start": 0.1, "end": 1.5, "text": "only part"}] and by_file["c"] is None


def test_bad_segments_are_skipped_and_counted(processor, tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    rows = [
        {"audio_filepath": "ok.wav", "text": "hello", "segments": [{"start": 0, "end": 1, "text": "hello"}]},
        {"audio_filepath": "back.wav", "text": "a b", "segments": [{"start": 1, "end": 1.5, "text": "a"},
                                                                   {"start": 0.5, "end": 0.8, "text": "b"}]},
        {"audio_filepath": "notext.wav", "text": "a", "segments": [{"start": 0, "end": 1}]},
        {"audio_filepath": "late.wav", "text": "a", "segments": [{"start": 0, "end": 9.0, "text": "a"}]},
    ]
    for row in rows:
        _tone(root / row["audio_filepath"])
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    report = DataReport()
    ds = prepared(processor, root / "train.jsonl", tmp_path, TimestampChoice(1.0), report)
    assert len(ds) == 1
    assert report.skipped("train") == {"bad_segments": 2, "segments_past_end": 1}


def _write_dataset(root: Path, kind: str) -> DataConfig:
    """Three 2 s clips as a Hub-style dataset (audio bytes in the rows): parquet shards that `load_dataset`
    reads (`hub`), or a DatasetDict saved with save_to_disk (`disk`, segments as JSON text); the second row
    has none, the third has segments out of order."""
    import datasets

    (root / "wav").mkdir(parents=True)
    clips = []
    for i in range(3):
        _tone(root / "wav" / f"c{i}.wav")
        clips.append({"bytes": (root / "wav" / f"c{i}.wav").read_bytes(), "path": f"c{i}.wav"})
    backwards = [SEGMENTS[1], SEGMENTS[0]]
    segments = [SEGMENTS, [], backwards]
    if kind == "disk":
        segments = [json.dumps(s) if s else "" for s in segments]  # an empty text is no segments, as in a csv
    ds = datasets.Dataset.from_dict({"audio": clips, "sentence": ["hello there good morning"] * 3,
                                     "id": ["r0", "r1", "r2"], "segments": segments})
    if kind == "disk":
        datasets.DatasetDict({"train": ds}).save_to_disk(str(root / "saved"))
        return DataConfig(source="disk", path=str(root / "saved"), text_column="sentence",
                          cache_dir=str(root / "cache"))
    (root / "shards").mkdir()
    for n in range(2):  # two shards, as the Hub's parquet conversion writes them
        ds.select(range(n, 3, 2)).to_parquet(str(root / "shards" / f"train-0000{n}-of-00002.parquet"))
    return DataConfig(source="hub", path=str(root / "shards"), text_column="sentence", cache_dir=str(root / "cache"),
                      streaming=kind == "stream")


@pytest.mark.parametrize("kind", ["hub", "stream", "disk"])
def test_hub_and_saved_datasets_carry_a_segments_column_into_timestamped_labels(processor, tmp_path, kind):
    data = _write_dataset(tmp_path, kind)
    (tmp_path / "wav").rename(tmp_path / "gone")  # the rows carry their audio
    report = DataReport()
    examples = load_examples(data, "train", report)
    assert "segments" in examples.column_names
    ds = prepare_split(examples, processor, data, language="en", task="transcribe", report=report, split="train",
                       timestamps=TimestampChoice(1.0))
    rows = {row["id"]: row["labels"] for row in ds}
    begin = timestamp_begin(processor.tokenizer)
    assert set(rows) == {"r0", "r1"}  # r2's segments run backwards: skipped
    assert [(t - begin) * 0.02 for t in rows["r0"] if t >= begin] == pytest.approx([0.0, 0.9, 1.2, 1.9])
    assert not any(t >= begin for t in rows["r1"])  # no segments: a plain label
    if kind != "stream":  # a stream counts its rows where they are read (training.streaming)
        assert report.skipped("train") == {"bad_segments": 1}


def test_segments_column_types_a_dataset_may_declare():
    import datasets

    from whispertune.data.segments import SEGMENTS_FEATURE, column_feature, stored_segments
    from whispertune.errors import UserError

    fields = {"start": datasets.Value("float32"), "end": datasets.Value("int64"), "text": datasets.Value("string")}
    assert column_feature(datasets.List(fields), "d") == SEGMENTS_FEATURE
    assert column_feature(datasets.Value("string"), "d") == datasets.Value("string")
    # a Sequence of a dict is declared columnar (a dict of lists); its rows become the same list of segments
    columnar = column_feature(datasets.Sequence(fields), "d")
    ds = datasets.Dataset.from_dict({"segments": [{k: [s[k] for s in SEGMENTS] for k in fields}]},
                                    features=datasets.Features({"segments": columnar}))
    assert stored_segments(ds[0]["segments"], "d") == SEGMENTS
    assert stored_segments({"start": [], "end": [], "text": []}, "d") is None and stored_segments([], "d") is None
    with pytest.raises(UserError, match=r"d: the 'segments' column is List\(Value\('string'\)\); expected a list of"):
        column_feature(datasets.List(datasets.Value("string")), "d")
