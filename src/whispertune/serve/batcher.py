"""Concurrent requests grouped into one model call.

Requests wait in a queue; one worker thread takes the first, then keeps collecting for `wait_seconds` (or until
`max_batch` requests are in hand) and hands them to the backend together, one call per decoding setting (the
language token, the prompt, timestamps and temperature are settings of a whole generate call): requests with
different settings are never decoded together. A request submitted `alone` (a sampled one: its seed must give
the same draws whatever else arrived with it) gets a call of its own. The backend batches their 30 s windows into generate calls, so eight
clients sending short clips at once cost one forward pass instead of eight. One thread owns the model: requests
never run the model concurrently, so nothing is shared between calls but the weights.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RunBatch = Callable[[list[Path], Any], list[Any]]  # (16 kHz wav files, decoding settings) -> one result each


@dataclass
class _Job:
    path: Path
    settings: Hashable
    alone: bool = False
    future: Future = field(default_factory=Future)


@dataclass
class BatchStats:
    requests: int = 0
    calls: int = 0  # backend calls (one per decoding setting per collected group)
    largest_call: int = 0  # the most requests answered by one call


class Batcher:
    def __init__(self, run: RunBatch, *, max_batch: int, wait_seconds: float):
        self._run = run
        self._max_batch = max_batch
        self._wait = wait_seconds
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self.stats = BatchStats()
        self._thread = threading.Thread(target=self._loop, name="whispertune-batcher", daemon=True)
        self._thread.start()

    def submit(self, path: Path, settings: Hashable, *, alone: bool = False) -> Future:
        """A future for the result of transcribing `path` (a 16 kHz mono file) with decoding `settings` (handed
        to the backend; requests with equal settings share calls unless `alone`)."""
        job = _Job(path, settings, alone)
        self._queue.put(job)
        return job.future

    def pending(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """`first` and what arrives within the wait, up to max_batch; and whether close() was called."""
        jobs, deadline = [first], time.monotonic() + self._wait
        while len(jobs) < self._max_batch:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
        return jobs, False

    def _loop(self) -> None:
        closed = False
        while not closed:
            first = self._queue.get()
            if first is None:
                return
            jobs, closed = self._collect(first)
            groups: dict[Hashable, list[_Job]] = {}
            for job in jobs:
                groups.setdefault((job.settings, id(job)) if job.alone else job.settings, []).append(job)
            for group in groups.values():
                self._answer(group, group[0].settings)

    def _answer(self, group: list[_Job], settings: Hashable) -> None:
        # a request whose client went away was cancelled (its upload is deleted): skipped; the others can no
        # longer be cancelled, so setting their results cannot fail and stop this thread
        group = [job for job in group if job.future.set_running_or_notify_cancel()]
        if not group:
            return
        try:
            results = self._run([job.path for job in group], settings)
        except Exception as exc:  # noqa: BLE001 - handed to each waiting request, which reports it
            for job in group:
                job.future.set_exception(exc)
            return
        self.stats.requests += len(group)
        self.stats.calls += 1
        self.stats.largest_call = max(self.stats.largest_call, len(group))
        for job, result in zip(group, results):
            job.future.set_result(result)
