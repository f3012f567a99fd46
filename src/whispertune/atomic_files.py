"""How every artifact appears: written under a temporary name beside its target, fsynced, renamed into place.

A crash or a full disk leaves either the old file (or directory) or the new one, never half of one. Run
directories, evaluation outputs, transcripts and exports all go through these two functions.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write `path`'s content to; renamed to `path` when the block ends without error.

    For writers that take a file name (matplotlib's `savefig`, ...): the temporary name does not end like
    `path`, so tell the writer the format explicitly.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_file_atomically(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, fsync it, rename it into place. On failure (a full or
    read-only disk) the temporary file is removed and the OSError names `path`, the file the user asked for."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


@contextmanager
def _staging(target: Path) -> Iterator[Path]:
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_dir_atomically(target: Path, write: Callable[[Path], None]) -> Path:
    """Run `write(staging_dir)`, fsync what it wrote, then put it at `target` by renames.

    A directory cannot replace a non-empty one in a single rename, so an existing `target` is first renamed
    aside and removed only after the new one is in place: at every moment one complete copy exists.
    """
    with _staging(target) as staging:
        write(staging)
        for path in staging.rglob("*"):
            if path.is_file():
                with open(path, "rb") as fh:
                    os.fsync(fh.fileno())
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    return target
