"""How an assembled cache directory appears: built once, by one process, while the others wait (every rank of a
torchrun launch resolves `embedded:` names at the same time); by a rename, never over a complete copy."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

from whispertune.pretrained.embedded import MARKER, _build_once, _publish, _tmp_sibling


def _staged(final: Path, text: str) -> Path:
    tmp = _tmp_sibling(final)
    (tmp / "model.bin").write_text(text)
    return tmp


def test_a_published_copy_is_kept_and_the_later_one_is_not_moved_in(tmp_path):
    final = tmp_path / "models" / "base"
    first = _staged(final, "first")
    _publish(first, final)
    second = _staged(final, "second")
    _publish(second, final)
    assert (final / "model.bin").read_text() == "first" and (final / MARKER).is_file()
    assert second.is_dir() and not first.exists()  # the caller removes what was not moved in


def test_a_leftover_without_a_marker_is_replaced(tmp_path):
    final = tmp_path / "models" / "base"
    final.mkdir(parents=True)
    (final / "model.bin").write_text("half written")
    _publish(_staged(final, "complete"), final)
    assert (final / "model.bin").read_text() == "complete" and (final / MARKER).is_file()


def _build_slowly(tmp: Path) -> None:
    with open(tmp.parent / "builds.log", "a") as log:
        log.write(f"{os.getpid()}\n")
    time.sleep(0.5)  # long enough that every other process asks while this build runs
    (tmp / "model.bin").write_text(f"built by {os.getpid()}")


def _resolve(final: str, seen: mp.Queue) -> None:
    seen.put((_build_once(Path(final), _build_slowly) / "model.bin").read_text())


def test_processes_asking_at_once_wait_for_one_build(tmp_path):
    final = tmp_path / "models" / "base"
    ctx = mp.get_context("fork")
    seen = ctx.Queue()
    procs = [ctx.Process(target=_resolve, args=(str(final), seen)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    builders = (final.parent / "builds.log").read_text().split()
    assert len(builders) == 1
    assert {seen.get(timeout=5) for _ in range(4)} == {f"built by {builders[0]}"}
    assert sorted(x.name for x in final.parent.iterdir() if x.name.startswith(".base.tmp")) == []
