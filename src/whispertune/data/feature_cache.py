"""Where prepared splits are cached on disk, and how an entry appears there (whole, by one rename, or not at all).

Used by the features (data/features.py) and the packed training windows (data/packing.py); entries are keyed by
a hash of everything that determines them, computed by their owners.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import datasets
import platformdirs
from datasets import Dataset


def default_cache_dir() -> Path:
    """`$WHISPERTUNE_CACHE/features`, else `<user cache dir>/whispertune/features`."""
    root = os.environ.get("WHISPERTUNE_CACHE") or platformdirs.user_cache_dir("whispertune")
    return Path(root) / "features"


def store_dataset(result: Dataset, target: Path, marker: str, marker_text: str) -> Dataset:
    """Save `result` as the cache entry `target` and load it back (memory-mapped). The `marker` file, written
    last with `marker_text`, marks a complete entry; the entry appears at once (a rename) or not at all."""
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    result.save_to_disk(str(tmp))
    (tmp / marker).write_text(marker_text, encoding="utf-8")
    if target.exists():  # another process finished first; its result is the same
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, target)
    return datasets.load_from_disk(str(target))
