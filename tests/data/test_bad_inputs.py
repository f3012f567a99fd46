"""Issue 8 item 1: a corpus of bad inputs; each is skipped with the right reason in data_report.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from transformers import WhisperProcessor

from whispertune.config import DataConfig
from whispertune.data.features import prepare_split, write_report
from whispertune.data.report import DataReport
from whispertune.data.sources import load_examples
from whispertune.errors import UserError


def tone(seconds: float, sr: int = 16000, freq: float = 440.0) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def build_corpus(root: Path) -> tuple[Path, dict[str, str]]:
    """Audio files plus a manifest; returns the manifest and {file name: expected skip reason or "kept"}."""
    root.mkdir()
    sf.write(root / "good.wav", tone(1.0), 16000)
    sf.write(root / "rate8k.wav", tone(1.0, 8000), 8000)
    sf.write(root / "stereo48k.wav", np.stack([tone(1.0, 48000), tone(1.0, 48000, 880)], axis=1), 48000)
    sf.write(root / "deep24.wav", tone(1.0), 16000, subtype="PCM_24")
    sf.write(root / "silent.wav", np.zeros(16000, np.float32), 16000)
    sf.write(root / "short.wav", tone(0.05), 16000)
    sf.write(root / "long.wav", tone(31.0), 16000)
    for name, bad in (("nan.wav", np.nan), ("inf.wav", np.inf)):
        samples = tone(1.0)
        samples[500:510] = bad
        sf.write(root / name, samples, 16000, subtype="FLOAT")
    (root / "truncated.wav").write_bytes((root / "good.wav").read_bytes()[:30])  # cut inside the header
    (root / "zero.wav").write_bytes(b"")
    (root / "text.wav").write_bytes(b"not audio, just text pretending to be a wav\n" * 20)
    (root / "clip.xyz").write_bytes(b"\x13\x37 unknown container" * 30)
    for name in ("empty_text.wav", "punct.wav", "toolong_text.wav", "dup.wav"):
        sf.write(root / name, tone(1.0), 16000)

    expected = {
        "good.wav": "kept", "rate8k.wav": "kept", "stereo48k.wav": "kept", "deep24.wav": "kept",
        "dup.wav": "kept", "silent.wav": "silent", "short.wav": "too_short", "long.wav": "too_long",
        "nan.wav": "non_finite", "inf.wav": "non_finite", "truncated.wav": "undecodable",
        "zero.wav": "empty_file", "text.wav": "undecodable", "clip.xyz": "unsupported_format",
        "missing.wav": "missing_file",
    }
    texts = {"empty_text.wav": "", "punct.wav": " ?!. ।, ", "toolong_text.wav": "खूप लांब वाक्य " * 40}
    expected.update({"empty_text.wav": "empty_text", "punct.wav": "no_words", "toolong_text.wav": "labels_too_long"})
    lines = [json.dumps({"audio_filepath": name, "text": texts.get(name, "एक वाक्य"), "duration": 1.0}, ensure_ascii=False)
             .encode() for name in expected]
    lines.append(json.dumps({"audio_filepath": "dup.wav", "text": "again"}).encode())  # same id as dup.wav
    lines.append(b'{"audio_filepath": "good.wav", "text": "\xff\xfe broken"}')  # invalid UTF-8
    lines.append(b"{this line is not json")
    manifest = root / "train.jsonl"
    manifest.write_bytes(b"\n".join(lines) + b"\n")
    return manifest, expected


def test_every_bad_input_is_skipped_with_its_reason(tiny_whisper_dir, tmp_path, capsys):
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    manifest, expected = build_corpus(tmp_path / "corpus")
    data = DataConfig(source="manifest", path=str(manifest), cache_dir=str(tmp_path / "cache"))
    report = DataReport()
    ds = prepare_split(load_examples(data, "train", report), processor, data, language="mr", task="transcribe",
                       max_label_length=64, report=report, split="train")
    path = write_report(report, tmp_path / "run")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("data: train: 5 kept, 16 skipped (")

    assert sorted(Path(i).name for i in ds["id"]) == sorted(n for n, r in expected.items() if r == "kept")

    saved = json.loads(path.read_text(encoding="utf-8"))
    skipped = saved["skipped_examples"]
    reasons = {Path(e["file"]).name: e["reason"] for e in skipped if e["file"] and e["reason"] != "duplicate_id"
               and not e["id"].startswith("train.jsonl:")}
    assert reasons == {n: r for n, r in expected.items() if r != "kept"}
    by_reason = {e["reason"]: e for e in skipped}
    assert by_reason["invalid_utf8"]["id"] == f"train.jsonl:{len(expected) + 2}"
    assert by_reason["bad_manifest_line"]["id"] == f"train.jsonl:{len(expected) + 3}"
    assert Path(by_reason["duplicate_id"]["id"]).name == "dup.wav"
    assert saved["splits"]["train"] == {
        "seen": len(expected) + 3, "kept": 5, "skipped_total": 16, "unused": 0,
        "skipped": saved["splits"]["train"]["skipped"],
    }
    assert saved["splits"]["train"]["skipped"]["non_finite"] == 2
    assert all(e["detail"] for e in skipped)  # every skip says why


def test_wholly_unusable_dataset_names_the_file(tmp_path):
    (tmp_path / "zero.wav").write_bytes(b"")
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(b'{"audio_filepath": "missing.wav", "text": "a"}\nnot json\n')
    with pytest.raises(UserError, match=r"m\.jsonl: no usable examples in split 'train' \(main problem: "):
        load_examples(DataConfig(source="manifest", path=str(manifest)), "train")


def test_metadata_rows_reach_training_unchanged_or_are_counted(tmp_path):
    """Issue 14 A: CSV fields, split values, JSON text types, control tokens, path loops through load_examples."""
    root = tmp_path / "folder"
    root.mkdir()
    for name in ("a.wav", "b.wav", "c.wav", "d.wav", "e.wav", "f.wav"):
        sf.write(root / name, tone(1.0), 16000)
    (root / "loop.wav").symlink_to(root / "loop.wav")  # ELOOP when resolved
    (root / "metadata.csv").write_text(
        "file_name,split,sentence\n"
        'a.wav,train,"तो, शाळेत गेला"\n'       # quoted comma: kept whole
        "b.wav,train,तो, शाळेत गेला\n"         # unquoted comma: skipped, not cut
        "c.wav,Train,एक वाक्य\n"               # a split value that names no split
        "d.wav,tran,एक वाक्य\n"
        "e.wav,test,एक वाक्य\n"                # another split: not counted under train
        "loop.wav,train,एक वाक्य\n"
        "f.wav,train,एक<|endoftext|>वाक्य\n",  # kept here; features skips it (special_token)
        encoding="utf-8")
    report = DataReport()
    ds = load_examples(DataConfig(source="folder", path=str(root), eval_split="test", text_column="sentence"), "train", report)
    assert dict(zip([Path(p).name for p in ds["id"]], ds["text"])) == {
        "a.wav": "तो, शाळेत गेला", "f.wav": "एक<|endoftext|>वाक्य"}
    assert report.skipped("train") == {"csv_extra_fields": 1, "unknown_split": 2, "unreadable_path": 1}
    assert report.seen("train") == 6

    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps({"audio_filepath": str(root / "a.wav"), "text": t}, ensure_ascii=False)
                                  for t in ["ठीक", ["तो", "शाळेत"], {"t": 1}, 42, True]) + "\n"
                        + '{"audio_filepath": "a.wav", "text": NaN}\n', encoding="utf-8")
    report = DataReport()
    ds = load_examples(DataConfig(source="manifest", path=str(manifest)), "train", report)
    assert ds["text"] == ["ठीक"]
    assert report.skipped("train") == {"bad_text_type": 4, "bad_manifest_line": 1}

    from whispertune.data.features import text_problem
    assert text_problem("एक<|endoftext|>वाक्य") == "special_token" and text_problem("a <b> c") is None


def test_too_long_max_duration_is_refused(tmp_path):
    from whispertune.config import load_config
    from whispertune.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data.max_duration_s: got 60.0, expected a number in \(0, 30\]"):
        load_config(None, ["data.max_duration_s=60"])


def build_more_corpus(root: Path) -> tuple[Path, dict[str, str]]:
    """Issue 14's further kinds: audio content, path forms and text values; {audio name: expected reason or kept}."""
    root.mkdir()
    t = tone(1.0)
    sf.write(root / "dc_only.wav", np.full(16000, 0.4, np.float32), 16000)  # a constant: no sound at all
    sf.write(root / "dc_tone.wav", t + 0.3, 16000)
    sf.write(root / "inverted.wav", np.stack([t, -t], axis=1), 16000)  # channels cancel in the mono mix
    sf.write(root / "clipped.wav", np.clip(t * 10, -1.0, 1.0), 16000)
    sf.write(root / "one_sample.wav", t[:1], 16000)
    sf.write(root / "flac_inside.wav", t, 16000, format="FLAC")  # the content decides, not the extension
    (root / "folder.wav").mkdir()
    (root / "dangling.wav").symlink_to(root / "gone.wav")
    sf.write(root / "target.wav", t, 16000)
    (root / "link.wav").symlink_to(root / "target.wav")
    sf.write(root.parent / "outside.wav", t, 16000)
    sf.write(root / "absolute.wav", t, 16000)
    for name in ("spaces.wav", "timestamp.wav"):
        sf.write(root / name, t, 16000)
    long_name = "x" * 300 + ".wav"
    expected = {
        "dc_only.wav": "silent", "dc_tone.wav": "kept", "inverted.wav": "channels_cancel", "clipped.wav": "kept",
        "one_sample.wav": "too_short", "flac_inside.wav": "kept", "folder.wav": "not_a_file",
        "dangling.wav": "missing_file", "link.wav": "kept", "../outside.wav": "kept",
        str(root / "absolute.wav"): "kept", long_name: "unreadable_path",
        "spaces.wav": "empty_text", "timestamp.wav": "special_token",
    }
    texts = {"spaces.wav": " \t  ", "timestamp.wav": "<|0.00|> एक वाक्य <|1.00|>"}
    lines = [json.dumps({"audio_filepath": name, "text": texts.get(name, "एक वाक्य")}, ensure_ascii=False)
             for name in expected]
    lines += [
        '{"audio_filepath": "target.wav", "text": null}',               # no transcript
        '{"text": "एक वाक्य"}',                                          # no audio
        '{"audio_filepath": "target.wav", "text": "a", "text": "b"}',  # which one? json keeps "b" silently
        '{"audio_filepath": "target.wav", "text": "a",}',               # trailing comma
    ]
    manifest = root / "more.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest, expected


def test_more_bad_inputs_are_skipped_with_their_reason(tiny_whisper_dir, tmp_path):
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    manifest, expected = build_more_corpus(tmp_path / "more")
    data = DataConfig(source="manifest", path=str(manifest), cache_dir=str(tmp_path / "cache"))
    report = DataReport()
    ds = prepare_split(load_examples(data, "train", report), processor, data, language="mr", task="transcribe",
                       max_label_length=64, report=report, split="train")
    kept = {Path(i).name for i in ds["id"]}
    assert kept == {"dc_tone.wav", "clipped.wav", "flac_inside.wav", "target.wav", "outside.wav", "absolute.wav"}
    saved = json.loads(write_report(report, tmp_path / "run").read_text(encoding="utf-8"))
    by_file = {Path(e["file"]).name: e for e in saved["skipped_examples"] if not e["id"].startswith("more.jsonl:")}
    named = {"dangling.wav": "gone.wav"}  # the report names the link's missing target
    assert {name: e["reason"] for name, e in by_file.items()} == {
        named.get(n, Path(n).name): r for n, r in expected.items() if r != "kept"}
    assert "phase-inverted" in by_file["inverted.wav"]["detail"]
    assert "a directory, not an audio file" in by_file["folder.wav"]["detail"]
    assert "File name too long" in by_file["x" * 300 + ".wav"]["detail"]
    by_line = {e["id"]: e["reason"] for e in saved["skipped_examples"] if e["id"].startswith("more.jsonl:")}
    n = len(expected)
    assert by_line == {f"more.jsonl:{n + 1}": "missing_column", f"more.jsonl:{n + 2}": "missing_column",
                       f"more.jsonl:{n + 3}": "bad_manifest_line", f"more.jsonl:{n + 4}": "bad_manifest_line"}
    assert saved["splits"]["train"]["seen"] == n + 4
    assert saved["splits"]["train"]["kept"] + saved["splits"]["train"]["skipped_total"] == n + 4  # none lost


def test_metadata_encodings_line_ends_and_split_values(tmp_path):
    """latin-1 rows, CRLF line ends and an empty split value through the folder source."""
    root = tmp_path / "folder"
    root.mkdir()
    for name in ("a.wav", "b.wav", "c.wav", "d.wav"):
        sf.write(root / name, tone(1.0), 16000)
    (root / "metadata.csv").write_bytes(
        b"file_name,split,text\r\n"
        b"a.wav,train,caf\xe9 au lait\r\n"      # latin-1: not UTF-8, skipped and counted
        b"b.wav,train,plain text\r\n"           # CRLF: the text comes out without the \r
        b"c.wav,,empty split\r\n"               # an empty split value names no split
        + "d.wav,train,कॅफे\r\n".encode())
    report = DataReport()
    ds = load_examples(DataConfig(source="folder", path=str(root)), "train", report)
    assert dict(zip([Path(p).name for p in ds["id"]], ds["text"])) == {"b.wav": "plain text", "d.wav": "कॅफे"}
    assert report.skipped("train") == {"invalid_utf8": 1, "unknown_split": 1}
    detail = {e["reason"]: e["detail"] for e in report.to_dict()["skipped_examples"]}
    assert "re-save the file as UTF-8" in detail["invalid_utf8"] and "''" in detail["unknown_split"]


@pytest.mark.parametrize("content, message", [
    (b"", r"metadata\.csv: empty metadata file \(expected a header row\)"),
    (b"file_name,text\n", r"no usable examples in split 'train'"),
])
def test_empty_metadata_is_one_clear_error(tmp_path, content, message):
    root = tmp_path / "folder"
    root.mkdir()
    (root / "metadata.csv").write_bytes(content)
    with pytest.raises(UserError, match=message):
        load_examples(DataConfig(source="folder", path=str(root)), "train")
