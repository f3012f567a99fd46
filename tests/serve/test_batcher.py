"""The request queue of `whispertune serve`: requests arriving within the wait share one call per decoding
setting (a language here), a request submitted alone gets its own call, each future gets its own result, and a
failing call fails only its own requests. The backend here is a plain function
(the real model is driven through the server in test_api.py), so the grouping itself can be checked exactly."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from whispertune.serve.batcher import Batcher


class Recorder:
    def __init__(self):
        self.calls: list[tuple[list[str], str | None]] = []
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, paths: list[Path], language: str | None) -> list[str]:
        self.entered.set()
        self.release.wait(10)  # hold the first call so that the rest queue up behind it
        self.calls.append(([p.name for p in paths], language))
        if language == "xx":
            raise RuntimeError("backend failed")
        return [f"{p.name}:{language}" for p in paths]


def test_requests_within_the_wait_share_a_call_per_language():
    run = Recorder()
    batcher = Batcher(run, max_batch=4, wait_seconds=0.05)
    try:
        first = batcher.submit(Path("a0"), "en")
        assert run.entered.wait(10)  # a0 is in the backend: the next six queue up behind it
        rest = [batcher.submit(Path(f"a{i}"), "en" if i % 2 else "mr") for i in range(1, 7)]
        run.release.set()
        assert first.result(10) == "a0:en"
        assert [f.result(10) for f in rest] == [f"a{i}:{'en' if i % 2 else 'mr'}" for i in range(1, 7)]
    finally:
        batcher.close()
    # then max_batch=4 of the six together, one call per language, then the last two
    assert run.calls == [(["a0"], "en"), (["a1", "a3"], "en"), (["a2", "a4"], "mr"), (["a5"], "en"), (["a6"], "mr")]
    assert (batcher.stats.requests, batcher.stats.calls, batcher.stats.largest_call) == (7, 5, 2)


def test_a_failing_call_fails_only_its_own_requests():
    run = Recorder()
    run.release.set()
    batcher = Batcher(run, max_batch=8, wait_seconds=0.05)
    try:
        bad, good = batcher.submit(Path("b"), "xx"), batcher.submit(Path("g"), "en")
        with pytest.raises(RuntimeError, match="backend failed"):
            bad.result(10)
        assert good.result(10) == "g:en"
    finally:
        batcher.close()


def test_a_cancelled_request_is_skipped_and_the_worker_goes_on():
    """A client that disconnects cancels its future (asyncio.wrap_future does): it is not transcribed, and setting
    the results of the others does not fail."""
    run = Recorder()
    batcher = Batcher(run, max_batch=8, wait_seconds=0.05)
    try:
        first = batcher.submit(Path("c0"), "en")
        assert run.entered.wait(10)
        gone, kept = batcher.submit(Path("gone"), "en"), batcher.submit(Path("kept"), "en")
        assert gone.cancel()
        run.release.set()
        assert (first.result(10), kept.result(10)) == ("c0:en", "kept:en")
        assert batcher.submit(Path("after"), "en").result(10) == "after:en"
    finally:
        batcher.close()
    assert run.calls == [(["c0"], "en"), (["kept"], "en"), (["after"], "en")]


def test_requests_alone_get_their_own_call():
    run = Recorder()
    batcher = Batcher(run, max_batch=8, wait_seconds=0.05)
    try:
        first = batcher.submit(Path("s0"), "en")
        assert run.entered.wait(10)
        rest = [batcher.submit(Path("s1"), "en", alone=True), batcher.submit(Path("s2"), "en", alone=True),
                batcher.submit(Path("s3"), "en"), batcher.submit(Path("s4"), "en")]
        run.release.set()
        assert [f.result(10) for f in [first, *rest]] == [f"s{i}:en" for i in range(5)]
    finally:
        batcher.close()
    assert run.calls == [(["s0"], "en"), (["s1"], "en"), (["s2"], "en"), (["s3", "s4"], "en")]
