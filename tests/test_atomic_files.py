"""Artifacts appear by atomic renames (whispertune.atomic_files)."""

from __future__ import annotations

import json

import pytest

from whispertune.atomic_files import write_dir_atomically, write_file_atomically


def test_directory_write_is_all_or_nothing(tmp_path):
    target = tmp_path / "adapter"

    def write(version):
        def _write(d):
            (d / "a.txt").write_text(version)
            (d / "b.txt").write_text(version)
        return _write

    write_dir_atomically(target, write("v1"))
    assert (target / "a.txt").read_text() == "v1"

    def broken(d):
        (d / "a.txt").write_text("v2")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_dir_atomically(target, broken)
    assert [p.read_text() for p in sorted(target.iterdir())] == ["v1", "v1"]  # old copy intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no staging left behind
    write_dir_atomically(target, write("v3"))
    assert (target / "b.txt").read_text() == "v3" and len(list(tmp_path.iterdir())) == 1


def test_file_write_replaces_whole_or_not_at_all_and_names_the_target(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    write_file_atomically(target, json.dumps({"wer": 1.0}))
    real_fsync = __import__("os").fsync

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("whispertune.atomic_files.os.fsync", full_disk)
    with pytest.raises(OSError) as info:
        write_file_atomically(target, json.dumps({"wer": 2.0}))
    monkeypatch.setattr("whispertune.atomic_files.os.fsync", real_fsync)
    assert info.value.filename == str(target) and info.value.errno == 28
    assert json.loads(target.read_text()) == {"wer": 1.0}  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left behind
