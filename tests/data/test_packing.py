"""data.packing: training clips packed into 30 s windows, on real wav files and the tiny model's processor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from transformers import WhisperProcessor

from whispertune.config import load_config
from whispertune.data.audio import SAMPLE_RATE
from whispertune.data.packing import GAP_S, plan_windows, window_audio
from whispertune.errors import ConfigError
from whispertune.training.plan import resolve_plan
from whispertune.training.trainer import prepare_data

TEXTS = ["नमस्कार", "पुणे हे शहर आहे", "एक दोन तीन", "आज पाऊस आला", "मी घरी जातो", "हे पुस्तक छान आहे", "चहा गरम आहे"]


@pytest.fixture(scope="module")
def processor(tiny_whisper_dir):
    return WhisperProcessor.from_pretrained(tiny_whisper_dir)


def tone(i: int, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * (300 + 60 * i) * t)).astype(np.float32)


def corpus(root: Path, seconds: list[float]) -> Path:
    """root/{train,test}/metadata.csv: one tone clip per text (clip i lasts seconds[i])."""
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
        for i, s in enumerate(seconds):
            sf.write(root / split / f"c{i}.wav", tone(i, s), SAMPLE_RATE, subtype="FLOAT")
        (root / split / "metadata.csv").write_text(
            "file_name,text\n" + "".join(f"c{i}.wav,{t}\n" for i, t in enumerate(TEXTS)),
            encoding="utf-8")
    return root


def clips_of(window_id: str) -> list[int]:
    """The clip numbers of a window, from its id: the clips' ids (here their paths) joined with +, then @tag."""
    return [int(Path(name).stem[1:]) for name in str(window_id).split("@")[0].split("+")]


def config(tiny_whisper_dir, root: Path, tmp_path: Path, pack: int = 3, seed: int = 0, max_s: float = 30.0):
    return load_config(None, [
        f"model.name_or_path={tiny_whisper_dir}", "model.language=mr", "data.source=folder", f"data.path={root}",
        f"data.cache_dir={tmp_path / 'cache'}", f"data.pack_utterances={pack}", f"data.max_duration_s={max_s}",
        "train.eval_strategy=epoch", f"train.seed={seed}", f"train.output_dir={tmp_path / 'run'}"])


def prepared(tiny_whisper_dir, processor, cfg):
    return prepare_data(resolve_plan(cfg, device="cpu"), processor, 448)


def test_plan_windows_bounds_gaps_and_seed():
    lengths = [SAMPLE_RATE * s for s in (4, 9, 2, 7, 3, 8, 5, 6, 1, 9, 3, 2)]
    limit = 12 * SAMPLE_RATE
    windows = plan_windows(lengths, 4, limit, seed=7)
    assert sorted(r for w in windows for r in w.rows) == list(range(len(lengths)))  # each clip exactly once
    for w in windows:
        assert 1 <= len(w.rows) <= 4 and len(w.gaps) == len(w.rows) - 1
        assert all(GAP_S[0] * SAMPLE_RATE <= g <= GAP_S[1] * SAMPLE_RATE for g in w.gaps)
        assert sum(lengths[r] for r in w.rows) + sum(w.gaps) <= limit
    assert any(len(w.rows) > 1 for w in windows)
    assert plan_windows(lengths, 4, limit, seed=7) == windows
    assert plan_windows(lengths, 4, limit, seed=8) != windows
    # a label check that refuses every pair leaves one clip per window
    assert all(len(w.rows) == 1 for w in plan_windows(lengths, 4, limit, seed=7, fits=lambda rows: len(rows) < 2))


def test_window_audio_puts_silence_between_clips():
    a, b = tone(0, 0.5), tone(1, 0.25)
    out = window_audio([a, b], [800])
    assert len(out) == len(a) + 800 + len(b) and out.dtype == np.float32
    np.testing.assert_array_equal(out[: len(a)], a)
    assert not out[len(a) : len(a) + 800].any()
    np.testing.assert_array_equal(out[len(a) + 800 :], b)


def test_training_split_packed_eval_split_untouched(tiny_whisper_dir, processor, tmp_path):
    seconds = [1.0, 1.5, 0.8, 2.0, 1.2, 0.6, 1.7]
    root = corpus(tmp_path / "c", seconds)
    train_ds, eval_ds, report = prepared(tiny_whisper_dir, processor, config(tiny_whisper_dir, root, tmp_path))

    assert train_ds.column_names == ["input_features", "labels", "duration", "id", "text"]
    stats = report.packing["train"]
    assert stats["utterances"] == report.kept("train") == len(TEXTS) and stats["windows"] == len(train_ds) < len(TEXTS)
    assert sum(stats["windows_by_utterances"].values()) == len(train_ds)
    assert "packed into" in report.summary_line() and report.to_dict()["packing"]["train"] == stats
    heard = []
    for row in train_ds.with_format("numpy"):
        members = clips_of(row["id"])
        heard += members
        assert str(row["text"]) == " ".join(TEXTS[m] for m in members)
        assert processor.tokenizer.decode(row["labels"], skip_special_tokens=True) == row["text"]
        gaps = row["duration"] - sum(seconds[m] for m in members)
        assert GAP_S[0] * (len(members) - 1) - 1e-3 <= gaps <= GAP_S[1] * (len(members) - 1) + 1e-3
        assert row["input_features"].shape == (80, 3000)
    assert sorted(heard) == list(range(len(TEXTS)))
    # the eval split stays one row per clip, with the plain features
    assert len(eval_ds) == len(TEXTS) and "packing" not in report.to_dict()["splits"]["test"]
    assert sorted(eval_ds["text"]) == sorted(TEXTS)


def test_packed_features_are_the_joined_audio(tiny_whisper_dir, processor, tmp_path):
    seconds = [1.0, 1.5, 0.8, 2.0, 1.2, 0.6, 1.7]
    root = corpus(tmp_path / "c", seconds)
    cfg = config(tiny_whisper_dir, root, tmp_path, pack=7)
    train_ds, _, _ = prepared(tiny_whisper_dir, processor, cfg)
    row = train_ds.with_format("numpy")[int(np.argmax(train_ds["duration"]))]
    members = clips_of(row["id"])
    assert len(members) > 1
    # the gaps are what is left of the duration; re-build the window from the wav files with them
    lengths = [len(tone(m, seconds[m])) for m in members]
    total = int(round(float(row["duration"]) * SAMPLE_RATE))
    windows = plan_windows([len(tone(i, s)) for i, s in enumerate(seconds)], 7, 30 * SAMPLE_RATE, seed=0)
    window = next(w for w in windows if list(w.rows) == members)
    assert sum(lengths) + sum(window.gaps) == total
    audio = window_audio([sf.read(root / "train" / f"c{m}.wav", dtype="float32")[0] for m in members], window.gaps)
    direct = processor.feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]
    np.testing.assert_allclose(row["input_features"], direct, atol=1e-5)


def test_same_seed_same_windows_and_the_bound(tiny_whisper_dir, processor, tmp_path):
    seconds = [1.0, 1.5, 0.8, 2.0, 1.2, 0.6, 1.7]
    root = corpus(tmp_path / "c", seconds)
    runs = {}
    for name, seed, max_s in (("a", 0, 3.0), ("b", 0, 3.0), ("c", 5, 3.0)):
        cfg = config(tiny_whisper_dir, root, tmp_path / name, pack=7, seed=seed, max_s=max_s)
        train_ds, _, report = prepared(tiny_whisper_dir, processor, cfg)
        assert max(train_ds["duration"]) <= 3.0 and report.packing["train"]["max_window_seconds"] <= 3.0
        runs[name] = list(train_ds["id"])
    assert runs["a"] == runs["b"] and runs["a"] != runs["c"]


def test_packed_split_is_cached_and_one_means_off(tiny_whisper_dir, processor, tmp_path):
    root = corpus(tmp_path / "c", [1.0, 1.5, 0.8, 2.0, 1.2, 0.6, 1.7])
    cfg = config(tiny_whisper_dir, root, tmp_path, pack=4)
    first, _, _ = prepared(tiny_whisper_dir, processor, cfg)
    again, _, report = prepared(tiny_whisper_dir, processor, cfg)
    entries = sorted((tmp_path / "cache").glob("packed-*"))
    assert len(entries) == 1 and (entries[0] / "packing.json").is_file()  # the second run read the first's
    assert list(again["id"]) == list(first["id"]) and report.packing["train"]["windows"] == len(first)
    single, _, report = prepared(tiny_whisper_dir, processor, config(tiny_whisper_dir, root, tmp_path, pack=1))
    assert len(single) == len(TEXTS) and not report.packing and "packed" not in report.summary_line()
    assert len(list((tmp_path / "cache").glob("packed-*"))) == 1


@pytest.mark.parametrize("override, message", [
    ("data.pack_utterances=0", "expected an integer in [1, 32]"),
    ("data.pack_utterances=33", "expected an integer in [1, 32]"),
    ("train.timestamp_probability=0.5", "train.timestamp_probability"),
    ("augment.enabled=true", "augment's audio transforms"),
])
def test_config_refuses_bad_packing(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, ["data.pack_utterances=4", override])
