"""What identifies a source dataset's content, for the features cache key.

The one place whispertune reads a private attribute of `datasets`: `Dataset._fingerprint`, the deterministic
hash datasets keeps for an Arrow-backed dataset (it has no public accessor). tests/data/test_fingerprint.py
fails at once if an upgrade removes it or it stops following the content.
"""

from __future__ import annotations

import hashlib
import json
import os

from datasets import Dataset


def source_fingerprint(examples: Dataset) -> str:
    """Arrow-backed datasets carry a deterministic fingerprint; in-memory ones are hashed row by row
    (audio bytes, or the file's path, size and modification time)."""
    if examples.cache_files:
        return examples._fingerprint
    digest = hashlib.sha256()
    timed = "segments" in examples.column_names  # segment times (data/segments.py) change timestamped labels
    for row in examples.select_columns(["id", "audio", "text"] + (["segments"] if timed else [])):
        audio = row["audio"] or {}
        if audio.get("bytes") is not None:
            stamp = hashlib.sha256(audio["bytes"]).hexdigest()
        else:
            try:
                st = os.stat(audio.get("path") or "")
                stamp = f"{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                stamp = "missing"
        digest.update(json.dumps([row["id"], row["text"], audio.get("path"), stamp]
                                 + ([row["segments"]] if timed else [])).encode())
    return digest.hexdigest()
