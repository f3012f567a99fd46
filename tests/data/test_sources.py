"""sources.load_examples for every kind, on real local files."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf

from whispertune.config import DataConfig
from whispertune.data.report import DataReport
from whispertune.data.sources import load_examples
from whispertune.errors import UserError


def write_tone(path: Path, freq: float = 440.0, seconds: float = 0.5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, 0.3 * np.sin(2 * np.pi * freq * np.arange(int(16000 * seconds)) / 16000), 16000)
    return path


def split_folder(root: Path, text_column: str = "text") -> Path:
    """root/train (csv, 3 rows) and root/validation (jsonl, 2 rows), with an extra column."""
    for i in range(3):
        write_tone(root / "train" / f"t{i}.wav", 300 + 50 * i)
    (root / "train" / "metadata.csv").write_text(
        f"file_name,{text_column},speaker\n" + "".join(f"t{i}.wav,वाक्य {i},s{i}\n" for i in range(3)), encoding="utf-8"
    )
    for i in range(2):
        write_tone(root / "validation" / "clips" / f"v{i}.wav", 600 + 50 * i)
    (root / "validation" / "metadata.jsonl").write_text(
        "".join(json.dumps({"file_name": f"clips/v{i}.wav", text_column: f"val {i}", "age": 30}) + "\n" for i in range(2)),
        encoding="utf-8",
    )
    return root


def test_folder_with_split_subfolders_and_sentence_column(tmp_path):
    root = split_folder(tmp_path / "corpus", text_column="sentence")
    report = DataReport()
    ds = load_examples(DataConfig(source="folder", path=str(root), text_column="sentence"), "train+validation", report)
    assert isinstance(ds, datasets.Dataset) and ds.column_names == ["id", "audio", "text"]
    assert ds["text"] == ["वाक्य 0", "वाक्य 1", "वाक्य 2", "val 0", "val 1"]
    assert Path(ds[3]["audio"]["path"]) == (root / "validation" / "clips" / "v0.wav").resolve()
    assert ds[0]["audio"]["bytes"] is None and len(set(ds["id"])) == 5
    assert report.summary_line() == "train+validation: 5 kept, 0 skipped"


def test_folder_single_metadata_with_split_column(tmp_path):
    for i in range(4):
        write_tone(tmp_path / f"c{i}.wav")
    rows = [{"file_name": f"c{i}.wav", "text": f"clip {i}", "split": "train" if i < 3 else "test"} for i in range(4)]
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    data = DataConfig(source="folder", path=str(tmp_path))
    assert load_examples(data, "train")["text"] == ["clip 0", "clip 1", "clip 2"]
    assert load_examples(data, "test")["text"] == ["clip 3"]


def test_folder_single_metadata_without_split_is_train(tmp_path):
    write_tone(tmp_path / "a.wav")
    (tmp_path / "metadata.csv").write_text("file_name,text\na.wav,hello\n", encoding="utf-8")
    data = DataConfig(source="folder", path=str(tmp_path))
    assert load_examples(data, "train")["text"] == ["hello"]
    with pytest.raises(UserError, match="no split 'test'"):
        load_examples(data, "test")


def test_folder_missing_text_column_is_a_clear_error(tmp_path):
    root = split_folder(tmp_path / "corpus", text_column="sentence")
    with pytest.raises(UserError, match=r"metadata.csv: no 'text' column \(found: file_name, sentence, speaker\)"):
        load_examples(DataConfig(source="folder", path=str(root)), "train")


def test_manifest_relative_paths_and_split_placeholder(tmp_path):
    write_tone(tmp_path / "audio" / "x.wav")
    write_tone(tmp_path / "audio" / "y.wav")
    (tmp_path / "manifests").mkdir()
    lines = [{"audio_filepath": "../audio/x.wav", "text": "x", "duration": 0.5, "language": "mr"},
             {"audio_filepath": "../audio/y.wav", "text": "y"}]
    (tmp_path / "manifests" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    (tmp_path / "manifests" / "test.jsonl").write_text(json.dumps(lines[1]) + "\n", encoding="utf-8")
    ds = load_examples(DataConfig(source="manifest", path=str(tmp_path / "manifests" / "train.jsonl")), "train")
    assert ds.column_names == ["id", "audio", "text"] and ds["text"] == ["x", "y"]
    assert Path(ds[0]["audio"]["path"]) == (tmp_path / "audio" / "x.wav").resolve()
    by_split = DataConfig(source="manifest", path=str(tmp_path / "manifests" / "{split}.jsonl"))
    assert load_examples(by_split, "test")["text"] == ["y"]
    report = DataReport()  # a directory of <split>.jsonl; y.wav in both parts is the same example
    both = load_examples(DataConfig(source="manifest", path=str(tmp_path / "manifests")), "train+test", report)
    assert both["text"] == ["x", "y"] and report.skipped("train+test") == {"duplicate_id": 1}


def saved_dict(tmp_path: Path) -> Path:
    def part(names):
        rows = {"audio": [str(write_tone(tmp_path / "src" / f"{n}.wav")) for n in names],
                "transcription": [f"text {n}" for n in names], "speaker_id": [1] * len(names)}
        return datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio(decode=False))
    dd = datasets.DatasetDict({"train": part(["a", "b"]), "validation": part(["c"]), "test": part(["d"])})
    dd.save_to_disk(str(tmp_path / "saved"))
    return tmp_path / "saved"


def test_disk_split_expression(tmp_path):
    data = DataConfig(source="disk", path=str(saved_dict(tmp_path)), text_column="transcription")
    report = DataReport()
    ds = load_examples(data, "train+validation", report)
    assert ds.column_names == ["id", "audio", "text"] and ds["text"] == ["text a", "text b", "text c"]
    assert ds["id"] == ["train:0", "train:1", "validation:0"]
    assert ds[0]["audio"]["path"].endswith("a.wav")
    assert report.seen("train+validation") == 3
    with pytest.raises(UserError, match="no split 'dev' \\(available: train, validation, test\\)"):
        load_examples(data, "dev")


def audiofolder_dataset(root: Path) -> Path:
    """A local directory in the layout a Hub audio dataset uses (audiofolder), read by load_dataset."""
    for split, names in {"train": ["a", "b", "c"], "validation": ["d"]}.items():
        for n in names:
            write_tone(root / split / f"{n}.wav")
        (root / split / "metadata.csv").write_text(
            "file_name,sentence,accent\n" + "".join(f"{n}.wav,say {n},x\n" for n in names), encoding="utf-8"
        )
    return root


def test_hub_kind_on_local_dataset_with_split_expression(tmp_path):
    root = audiofolder_dataset(tmp_path / "hubdata")
    data = DataConfig(source="hub", path=str(root), text_column="sentence")
    ds = load_examples(data, "train+validation")
    assert isinstance(ds, datasets.Dataset) and ds.column_names == ["id", "audio", "text"]
    assert sorted(ds["text"]) == ["say a", "say b", "say c", "say d"]
    assert all(Path(a["path"]).is_file() for a in ds["audio"])


def test_hub_kind_streaming(tmp_path):
    root = audiofolder_dataset(tmp_path / "hubdata")
    data = DataConfig(source="hub", path=str(root), text_column="sentence", streaming=True)
    ds = load_examples(data, "train+validation")
    assert isinstance(ds, datasets.IterableDataset)
    rows = list(ds)
    assert sorted(r["text"] for r in rows) == ["say a", "say b", "say c", "say d"]
    assert set(rows[0]) == {"id", "audio", "text"} and rows[-1]["id"] == "validation:0"


def test_unknown_local_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="audio folder not found"):
        load_examples(DataConfig(source="folder", path=str(tmp_path / "nope")), "train")
    with pytest.raises(UserError, match="saved dataset not found"):
        load_examples(DataConfig(source="disk", path=str(tmp_path / "nope")), "train")


def test_local_folder_needs_no_torchcodec(tmp_path, tiny_whisper_dir):
    """The GPU machines users rent often lack FFmpeg/torchcodec: a local folder of wav/flac/mp3 must still load
    and featurize (datasets' Audio feature imports torchcodec even for undecoded paths; we do not use it)."""
    import subprocess
    import sys

    write_tone(tmp_path / "corpus" / "a.wav")
    tone = 0.3 * np.sin(2 * np.pi * 500 * np.arange(48000) / 48000)
    sf.write(tmp_path / "corpus" / "b.mp3", tone, 48000)  # 48 kHz mp3, as Common Voice ships
    sf.write(tmp_path / "corpus" / "c.flac", tone, 48000)
    (tmp_path / "corpus" / "metadata.csv").write_text("file_name,text\na.wav,एक\nb.mp3,दोन\nc.flac,तीन\n", "utf-8")
    script = f"""
import sys
sys.modules["torchcodec"] = None  # any import of it fails
from transformers import AutoProcessor
from whispertune.config import DataConfig
from whispertune.data.features import prepare_split
from whispertune.data.sources import load_examples
data = DataConfig(source="folder", path={str(tmp_path / "corpus")!r}, cache_dir={str(tmp_path / "cache")!r})
rows = load_examples(data, "train")
ds = prepare_split(rows, AutoProcessor.from_pretrained({str(tiny_whisper_dir)!r}), data, language="mr", task="transcribe")
print(len(ds), sorted(round(d, 1) for d in ds["duration"]))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "3 [0.5, 1.0, 1.0]"
