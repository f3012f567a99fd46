"""datasets' private `Dataset._fingerprint`, read in data/fingerprint.py only: it must exist on an Arrow-backed
dataset, stay the same for the same files and change with their content (else the features cache would
serve stale features)."""

from __future__ import annotations

import datasets

from whispertune.data.fingerprint import source_fingerprint


def _saved(tmp_path, name: str, texts: list[str]) -> datasets.Dataset:
    rows = {"id": [str(i) for i in range(len(texts))], "audio": [None] * len(texts), "text": texts}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / name))
    return datasets.load_from_disk(str(tmp_path / name))


def test_arrow_backed_fingerprint_follows_the_content(tmp_path):
    first = _saved(tmp_path, "a", ["one", "two"])
    assert first.cache_files and isinstance(first._fingerprint, str) and first._fingerprint
    assert source_fingerprint(first) == first._fingerprint
    assert source_fingerprint(datasets.load_from_disk(str(tmp_path / "a"))) == source_fingerprint(first)
    assert source_fingerprint(_saved(tmp_path, "b", ["one", "three"])) != source_fingerprint(first)


def test_in_memory_rows_are_hashed_with_their_audio_file(tmp_path):
    clip = tmp_path / "clip.wav"
    clip.write_bytes(b"RIFF0000")
    rows = datasets.Dataset.from_dict({"id": ["0"], "audio": [{"path": str(clip), "bytes": None}], "text": ["hi"]})
    before = source_fingerprint(rows)
    assert before == source_fingerprint(rows)
    clip.write_bytes(b"RIFF00000000")  # the file changed: so do its features
    assert source_fingerprint(rows) != before
