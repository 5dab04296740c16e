"""Dynamic batching: requests wait in a bounded queue for one inference worker, which
scores several at once: a thread of the server (`Batcher`, `--inference thread`) or a
process of its own (remote.py, `--inference process`); both take batches with `take`.

The worker takes the oldest request, then others while their candidates fit `max_batch`
rows and the batch holds at most `max_requests` requests (features.REQUESTS: a request's
user-side features take one bag of a fixed count); it waits for more at most `max_wait`
seconds after the oldest request arrived (a request that already waited that long,
behind a busy worker, goes with whatever is queued). A full queue refuses new requests
at once (`Overloaded`: the server answers 503), so the wait of an admitted request stays
bounded. Results go back to the event
loop by `call_soon_threadsafe`; the loop never waits on the worker.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from anychip.rec.serve.features import Query
from anychip.rec.serve.metrics import Metrics
from anychip.rec.serve.model import ServedModel


class Overloaded(Exception):
    """The queue is full: the request is refused (HTTP 503)."""


Result = tuple[int, list[int], list[float]]  # (version, the top-k items, their scores)


@dataclass
class _Job:
    query: Query
    k: int
    future: asyncio.Future[Result]
    loop: asyncio.AbstractEventLoop
    arrived: float


def top_k(items: np.ndarray, probs: np.ndarray, k: int) -> tuple[list[int], list[float]]:
    """The k most probable items, highest first (ties: the earlier candidate first)."""
    order = np.argsort(-probs, kind="stable")[:k]
    return items[order].tolist(), probs[order].astype(float).tolist()


def take(sizes: list[int], max_batch: int, max_requests: int) -> tuple[int, bool]:
    """Of queued requests with `sizes` candidates (oldest first, at least one), how many
    the next batch takes (the oldest, then those that fit behind it), and whether the
    batch is closed (the next does not fit, or it holds `max_requests`): then it need not
    wait for more."""
    n, rows = 1, sizes[0]
    while n < len(sizes):
        if rows + sizes[n] > max_batch or n == max_requests:
            return n, True
        rows += sizes[n]
        n += 1
    return n, n == max_requests


class Batcher:
    """The bounded queue and its worker thread (`start`, `stop`)."""

    def __init__(
        self,
        model: ServedModel,
        metrics: Metrics,
        max_wait: float = 0.001,
        queue: int = 128,
    ) -> None:
        self.model, self.metrics = model, metrics
        self.max_batch, self.max_wait, self.capacity = model.max_batch, max_wait, queue
        self.max_requests = model.max_requests
        self._jobs: collections.deque[_Job] = collections.deque()
        self._cond = threading.Condition()
        self._running = False
        self._thread: threading.Thread | None = None

    def depth(self) -> int:
        return len(self._jobs)

    def alive(self) -> bool:
        """Whether the worker can score (a thread never dies: a failed batch fails alone)."""
        return True

    def submit(self, query: Query, k: int) -> asyncio.Future[Result]:
        """Queue `query` (called on the event loop; never blocks); its future gets
        (version, its k most probable candidates, their probabilities)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Result] = loop.create_future()
        with self._cond:
            if len(self._jobs) >= self.capacity or not self._running:
                raise Overloaded(f"{len(self._jobs)} requests queued (capacity {self.capacity})")
            self._jobs.append(_Job(query, k, fut, loop, time.perf_counter()))
            self._cond.notify()
        return fut

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._work, name="rec-serve-infer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._running = False
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        for job in self._jobs:  # never left waiting
            job.loop.call_soon_threadsafe(_fail, job.future, Overloaded("server stopping"))
        self._jobs.clear()

    def _take(self) -> list[_Job] | None:
        """The next batch: the oldest job and those that fit behind it (see the module
        docstring); None when stopping."""
        with self._cond:
            while not self._jobs:
                if not self._running:
                    return None
                self._cond.wait()
            first = self._jobs.popleft()
            jobs, rows = [first], len(first.query.items)
            deadline = first.arrived + self.max_wait
            while self._running:
                if self._jobs:
                    n = len(self._jobs[0].query.items)
                    if rows + n > self.max_batch or len(jobs) == self.max_requests:
                        break
                    jobs.append(self._jobs.popleft())
                    rows += n
                    continue
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)
            return jobs

    def _work(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            try:
                version, probs = self.model.score([j.query for j in jobs])
            except Exception as e:  # every waiting request learns of it; the worker goes on
                for j in jobs:
                    j.loop.call_soon_threadsafe(_fail, j.future, e)
                continue
            self.metrics.batch(len(jobs), sum(len(p) for p in probs))
            done = [(j.future, (version, *top_k(j.query.items, p, j.k)))
                    for j, p in zip(jobs, probs)]  # fmt: skip
            jobs[0].loop.call_soon_threadsafe(_done_all, done)  # the one loop, woken once


def _done_all(results: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for fut, value in results:
        if not fut.done():  # the request may have been cancelled (client gone)
            fut.set_result(value)


def _fail(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
