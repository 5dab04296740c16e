"""The inference worker in a process of its own (`--inference process`, the default of
`anychip rec serve`): the HTTP event loop and the model never wait on each other's GIL.

The server process keeps HTTP, parsing, the bounded queue's count and the metrics;
`InferenceProcess` starts the worker (multiprocessing, spawn), which loads and captures
the model, batches and scores. Two pipes join them, messages pickled:

- requests: the server sends `("q", id, user, items bytes (int64), timestamp, k, arrived)`
  from the event loop and `("x",)` to stop; the worker answers each batch with
  `("r", version, requests, rows, [(id, items, scores), ...])` (top-k, highest first) or
  `("f", [id, ...], message)` when it failed. The event loop reads them as they come
  (`add_reader`): it never blocks on the worker.
- control: `("u", wire bytes)` (an update) and `("e", events)` (into the feature store),
  each answered by `("ok", version, swap seconds)`, `("stale", message, served version)`,
  `("bad", message, served version)` or `("error", message, served version)`; sent by one
  thread at a time (POST /update's thread pool, the follower).

In the worker, one thread batches and scores (`_serve`: the same batches as the thread
worker, batching.take) and another applies what comes on the control pipe, so an update
is prepared beside the batches and swapped in between two (ServedModel.apply).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import multiprocessing
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from anychip.errors import ArgumentError
from anychip.rec.log import Event
from anychip.rec.serve.batching import Overloaded, Result, _done_all, _fail, take, top_k
from anychip.rec.serve.features import Query
from anychip.rec.serve.metrics import Metrics
from anychip.rec.serve.model import ServedModel, StaleUpdate

START_TIMEOUT_S = 600  # loading and capturing every batch class (compiling on a cold cache)
STOP_TIMEOUT_S = 10
SWITCH_INTERVAL_S = 0.0005  # the worker's two threads: an update's prepare and the batches


class InferenceProcess:
    """The worker process, seen from the server: the model's `version`, `max_batch`,
    `classes`, `path` and `last_swap_s`, `apply_bytes` and `observe` (as ServedModel's),
    and the queue (`submit`, `depth`, `start`, `stop`, as Batcher's)."""

    def __init__(
        self, path: str, device: str, max_batch: int, max_wait: float, queue: int,
        metrics: Metrics,
    ) -> None:  # fmt: skip
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked threads
        self._conn, child_conn = ctx.Pipe()
        self._ctl, child_ctl = ctx.Pipe()
        self.path = os.path.abspath(path)
        self._proc = ctx.Process(
            target=main, args=(child_conn, child_ctl, self.path, device, max_batch, max_wait),
            name="rec-serve-infer", daemon=True,
        )  # fmt: skip
        self._proc.start()
        child_conn.close()
        child_ctl.close()
        self.metrics, self.capacity, self.max_batch = metrics, queue, max_batch
        self.pid = self._proc.pid
        ready = self._started()
        self.version, self.classes, self.max_requests = ready[1], ready[2], ready[3]
        self.last_swap_s = 0.0
        self._jobs: dict[int, asyncio.Future[Result]] = {}
        self._next_id = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ctl_lock = threading.Lock()
        self._alive = True

    def _started(self) -> tuple[Any, ...]:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._conn.poll(0.1):
            if not self._proc.is_alive() or time.monotonic() > deadline:
                self._proc.kill()
                raise RuntimeError(f"rec serve: the inference process did not start (exit "
                                   f"{self._proc.exitcode})")  # fmt: skip
        msg: tuple[Any, ...] = self._conn.recv()
        if msg[0] == "error":
            self._proc.join(STOP_TIMEOUT_S)
            raise (ArgumentError if msg[2] else RuntimeError)(msg[1])
        return msg

    # --- the queue (on the event loop) ---
    def depth(self) -> int:
        """Requests sent to the worker and not answered yet (queued or in a batch)."""
        return len(self._jobs)

    def alive(self) -> bool:
        """Whether the worker process is there to score."""
        return self._alive and self._proc.is_alive()

    def submit(self, query: Query, k: int) -> asyncio.Future[Result]:
        """Send `query` to the worker (on the event loop; never waits for it); its future
        gets (version, its k most probable candidates, their probabilities)."""
        if not self._alive:
            raise RuntimeError("the inference process has stopped")
        if len(self._jobs) >= self.capacity:
            raise Overloaded(f"{len(self._jobs)} requests queued (capacity {self.capacity})")
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        rid = self._next_id
        self._next_id += 1
        items = np.ascontiguousarray(query.items, np.int64).tobytes()
        self._conn.send(("q", rid, query.user, items, query.timestamp, k, time.monotonic()))
        self._jobs[rid] = fut
        return fut

    def start(self) -> None:
        """Read the worker's answers on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._conn.fileno(), self._read)

    def _read(self) -> None:
        try:
            while self._conn.poll(0):
                self._answer(self._conn.recv())
        except (EOFError, OSError):  # the worker is gone: no request waits for it
            self._stopped(RuntimeError(f"the inference process exited ({self._proc.exitcode})"))

    def _answer(self, msg: tuple[Any, ...]) -> None:
        if msg[0] == "r":
            _, version, requests, rows, results = msg
            self.metrics.batch(requests, rows)
            self.version = max(self.version, version)
            _done_all([(self._jobs.pop(rid), (version, items, scores))
                       for rid, items, scores in results])  # fmt: skip
        elif msg[0] == "f":
            for rid in msg[1]:
                _fail(self._jobs.pop(rid), RuntimeError(msg[2]))

    def _stopped(self, why: BaseException) -> None:
        if self._loop is not None and self._alive:
            self._loop.remove_reader(self._conn.fileno())
        self._alive = False
        for fut in self._jobs.values():
            _fail(fut, why)
        self._jobs.clear()

    def stop(self) -> None:
        """Stop the worker (answering what it holds first) and fail what is left."""
        if self._alive:
            try:
                self._conn.send(("x",))
                while self._conn.poll(STOP_TIMEOUT_S):  # its last answers, until it closes
                    self._answer(self._conn.recv())
            except (EOFError, OSError):
                pass
        self._stopped(Overloaded("server stopping"))
        self._proc.join(STOP_TIMEOUT_S)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._conn.close()
        self._ctl.close()

    # --- the model (any thread) ---
    def _call(self, msg: tuple[Any, ...]) -> tuple[Any, ...]:
        with self._ctl_lock:
            try:
                self._ctl.send(msg)
                reply: tuple[Any, ...] = self._ctl.recv()
            except (EOFError, OSError):
                raise ArgumentError("rec serve: the inference process has stopped") from None
        if reply[0] == "stale":
            raise StaleUpdate(reply[1], reply[2])
        if reply[0] == "bad":
            raise ArgumentError(reply[1])
        if reply[0] == "error":
            raise RuntimeError(reply[1])
        return reply

    def apply_bytes(self, data: bytes) -> int:
        """Apply an update's wire bytes in the worker; its new version (as
        ServedModel.apply: StaleUpdate or ArgumentError and nothing changes)."""
        _, version, swap_s = self._call(("u", data))
        self.version, self.last_swap_s = max(self.version, version), swap_s
        return int(version)

    def observe(self, events: list[Event]) -> None:
        """Count `events` in the worker's feature store (ServingFeatures.observe)."""
        self._call(("e", events))


# --- the worker process ---
def main(
    conn: Connection, ctl: Connection, path: str, device: str, max_batch: int, max_wait: float
) -> None:
    """The worker: load and capture the model, then serve both pipes until told to stop
    (or the server is gone)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the server stops us
    try:
        model = ServedModel(path, device, max_batch)
        model.warmup()
    except Exception as e:
        conn.send(("error", str(e) if isinstance(e, ArgumentError) else
                   f"rec serve: loading the model: {type(e).__name__}: {e}",
                   isinstance(e, ArgumentError)))  # fmt: skip
        return
    gc.collect()
    gc.freeze()  # the model and its captures live as long as the worker (main.run says why)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    conn.send(("ready", model.version, model.classes, model.max_requests))
    threading.Thread(target=_control, args=(ctl, model), name="rec-serve-ctl", daemon=True).start()
    _serve(conn, model, max_wait)


@dataclass
class _Pending:
    rid: int
    query: Query
    k: int
    arrived: float  # time.monotonic() in the server process (the same clock)


def _serve(conn: Connection, model: ServedModel, max_wait: float) -> None:
    """Batch and score what arrives on `conn` (batching.py's rules), until ("x",) or EOF."""
    pending: collections.deque[_Pending] = collections.deque()
    while True:
        try:
            while conn.poll(0):  # everything that arrived, first
                msg = conn.recv()
                if msg[0] == "x":
                    return
                _, rid, user, items, stamp, k, arrived = msg
                pending.append(_Pending(rid, Query(user, np.frombuffer(items, np.int64), stamp),
                                        k, arrived))  # fmt: skip
        except (EOFError, OSError):
            return
        timeout = None
        if pending:
            sizes = [len(p.query.items) for p in pending]
            n, closed = take(sizes, model.max_batch, model.max_requests)
            left = pending[0].arrived + max_wait - time.monotonic()
            if closed or left <= 0:
                _score(conn, model, [pending.popleft() for _ in range(n)])
                continue
            timeout = left
        try:
            conn.poll(timeout)
        except (EOFError, OSError):
            return


def _score(conn: Connection, model: ServedModel, batch: list[_Pending]) -> None:
    try:
        version, probs = model.score([p.query for p in batch])
    except Exception as e:  # every request of the batch learns of it; the worker goes on
        conn.send(("f", [p.rid for p in batch], f"{type(e).__name__}: {e}"))
        return
    results = [(p.rid, *top_k(p.query.items, pr, p.k)) for p, pr in zip(batch, probs)]
    conn.send(("r", version, len(batch), sum(len(p) for p in probs), results))


def _control(ctl: Connection, model: ServedModel) -> None:
    """Apply updates and events as the control pipe brings them, answering each."""
    while True:
        try:
            msg = ctl.recv()
        except (EOFError, OSError):
            return
        try:
            if msg[0] == "u":
                version = model.apply_bytes(msg[1])
                reply: tuple[Any, ...] = ("ok", version, model.last_swap_s)
            else:
                model.features.observe(msg[1])
                reply = ("ok", model.version, 0.0)
        except StaleUpdate as e:
            reply = ("stale", str(e), e.version)
        except ArgumentError as e:
            reply = ("bad", str(e), model.version)
        except Exception as e:  # a bug: the server answers 500, the worker goes on
            reply = ("error", f"{type(e).__name__}: {e}", model.version)
        ctl.send(reply)
