"""The inference worker in a process of its own (`--inference process`, the default of
`anychip rec serve`): the HTTP event loop and the model never wait on each other's GIL.

The server process keeps HTTP, parsing, the bounded queue's count and the metrics;
`InferenceProcess` starts the worker (multiprocessing, spawn), which loads and captures
the model, batches and scores. Two channels join them, messages pickled:

- requests (a socket pair; each message its length and its pickle): the server sends
  `("q", id, user, items bytes (int64), timestamp, k, arrived)` from the event loop and
  `("x",)` to stop; the worker answers each batch with `("r", version, requests, rows,
  [(id, items, scores), ...])` (top-k, highest first) or `("f", [id, ...], message)` when
  it failed. The server's end is non-blocking: the event loop reads answers as they come
  (`add_reader`) and writes later what the socket does not take at once (`add_writer`),
  so it never blocks on a busy worker.
- control (a multiprocessing pipe, blocking): the worker's `("ready", ...)` or
  `("error", ...)` at start, then `("u", wire bytes)` (an update) and `("e", events)`
  (into the feature store), each answered by `("ok", version, swap seconds)`, `("stale",
  message, served version)`, `("bad", message, served version)` or `("error", message,
  served version)`; sent by one thread at a time (POST /update's thread pool, the
  follower).

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
import pickle
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
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
READ_BYTES = 1 << 16
HEADER = struct.Struct("<I")  # a message on the requests socket: its length, then its pickle
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
        self._sock, child_sock = socket.socketpair()
        self._ctl, child_ctl = ctx.Pipe()
        self.path = os.path.abspath(path)
        self._proc = ctx.Process(
            target=main, args=(child_sock, child_ctl, self.path, device, max_batch, max_wait),
            name="rec-serve-infer", daemon=True,
        )  # fmt: skip
        self._proc.start()
        child_sock.close()
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
        self._in, self._out = bytearray(), bytearray()  # bytes read and not yet parsed, to send
        self._writing = False  # waiting for the socket to take `_out`

    def _started(self) -> tuple[Any, ...]:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ctl.poll(0.1):
            if not self._proc.is_alive() or time.monotonic() > deadline:
                self._proc.kill()
                raise RuntimeError(f"rec serve: the inference process did not start (exit "
                                   f"{self._proc.exitcode})")  # fmt: skip
        msg: tuple[Any, ...] = self._ctl.recv()
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
        self._send(("q", rid, query.user, items, query.timestamp, k, time.monotonic()))
        self._jobs[rid] = fut
        return fut

    def start(self) -> None:
        """Read the worker's answers on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._sock.setblocking(False)
        self._loop.add_reader(self._sock.fileno(), self._read)

    def _send(self, msg: tuple[Any, ...]) -> None:
        """Queue `msg` and write what the socket takes now; the loop writes the rest when
        it can (`_flush`): the event loop never blocks on a busy worker."""
        self._out += _frame(msg)
        if not self._writing:
            self._flush()

    def _flush(self) -> None:
        try:
            del self._out[: self._sock.send(self._out)]
        except BlockingIOError:
            pass
        except OSError as e:
            self._stopped(RuntimeError(f"the inference process is unreachable: {e}"))
            return
        assert self._loop is not None
        if self._out and not self._writing:
            self._loop.add_writer(self._sock.fileno(), self._flush)
        elif not self._out and self._writing:
            self._loop.remove_writer(self._sock.fileno())
        self._writing = bool(self._out)

    def _read(self) -> None:
        try:
            data = self._sock.recv(READ_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the worker is gone: no request waits for it
            self._stopped(RuntimeError(f"the inference process exited ({self._proc.exitcode})"))
            return
        self._in += data
        for msg in _unframe(self._in):
            self._answer(msg)

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
            self._loop.remove_reader(self._sock.fileno())
            if self._writing:
                self._loop.remove_writer(self._sock.fileno())
        self._alive = self._writing = False
        for fut in self._jobs.values():
            _fail(fut, why)
        self._jobs.clear()

    def stop(self) -> None:
        """Stop the worker (answering what it holds first) and fail what is left."""
        if self._alive:
            if self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
                if self._writing:
                    self._loop.remove_writer(self._sock.fileno())
                self._writing = False
            self._sock.settimeout(STOP_TIMEOUT_S)
            try:
                self._sock.sendall(bytes(self._out) + _frame(("x",)))
                while data := self._sock.recv(READ_BYTES):  # its last answers, until it closes
                    self._in += data
                    for msg in _unframe(self._in):
                        self._answer(msg)
            except OSError:
                pass
            self._loop = None  # the reader is gone already
        self._stopped(Overloaded("server stopping"))
        self._proc.join(STOP_TIMEOUT_S)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._sock.close()
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
    sock: socket.socket, ctl: Connection, path: str, device: str, max_batch: int, max_wait: float
) -> None:
    """The worker: load and capture the model, then serve both pipes until told to stop
    (or the server is gone)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the server stops us
    try:
        model = ServedModel(path, device, max_batch)
        model.warmup()
    except Exception as e:
        ctl.send(("error", str(e) if isinstance(e, ArgumentError) else
                   f"rec serve: loading the model: {type(e).__name__}: {e}",
                   isinstance(e, ArgumentError)))  # fmt: skip
        return
    gc.collect()
    gc.freeze()  # the model and its captures live as long as the worker (main.run says why)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    ctl.send(("ready", model.version, model.classes, model.max_requests))
    threading.Thread(target=_control, args=(ctl, model), name="rec-serve-ctl", daemon=True).start()
    _serve(_Channel(sock), model, max_wait)


@dataclass
class _Pending:
    rid: int
    query: Query
    k: int
    arrived: float  # time.monotonic() in the server process (the same clock)


class _Channel:
    """The worker's end of the requests socket (blocking): framed messages in and out."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, bytearray()

    def receive(self, timeout: float | None) -> list[Any]:
        """The messages that arrived, waiting up to `timeout` seconds (None: until one
        does) if none has; EOFError when the server is gone."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        msgs: list[Any] = []
        while ready:
            data = self.sock.recv(READ_BYTES)
            if not data:
                raise EOFError
            self.buf += data
            msgs += _unframe(self.buf)
            ready, _, _ = select.select([self.sock], [], [], 0)
        return msgs

    def send(self, msg: tuple[Any, ...]) -> None:
        self.sock.sendall(_frame(msg))


def _frame(msg: tuple[Any, ...]) -> bytes:
    data = pickle.dumps(msg, pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


def _unframe(buf: bytearray) -> list[Any]:
    """The whole messages at the start of `buf`, removed from it."""
    out, at = [], 0
    while len(buf) - at >= HEADER.size:
        (n,) = HEADER.unpack_from(buf, at)
        if len(buf) - at - HEADER.size < n:
            break
        out.append(pickle.loads(buf[at + HEADER.size : at + HEADER.size + n]))
        at += HEADER.size + n
    del buf[:at]
    return out


def _serve(chan: _Channel, model: ServedModel, max_wait: float) -> None:
    """Batch and score what arrives on `chan` (batching.py's rules), until ("x",) or EOF."""
    pending: collections.deque[_Pending] = collections.deque()
    timeout: float | None = 0.0
    while True:
        try:
            msgs = chan.receive(timeout)
        except (EOFError, OSError):
            return
        for msg in msgs:
            if msg[0] == "x":
                return
            _, rid, user, items, stamp, k, arrived = msg
            query = Query(user, np.frombuffer(items, np.int64), stamp)
            pending.append(_Pending(rid, query, k, arrived))
        timeout = None
        if pending:
            sizes = [len(p.query.items) for p in pending]
            n, closed = take(sizes, model.max_batch, model.max_requests)
            left = pending[0].arrived + max_wait - time.monotonic()
            if closed or left <= 0:
                _score(chan, model, [pending.popleft() for _ in range(n)])
                timeout = 0.0  # what arrived meanwhile, before the next batch
                continue
            timeout = left


def _score(chan: _Channel, model: ServedModel, batch: list[_Pending]) -> None:
    try:
        version, probs = model.score([p.query for p in batch])
    except Exception as e:  # every request of the batch learns of it; the worker goes on
        traceback.print_exc()
        chan.send(("f", [p.rid for p in batch], f"{type(e).__name__}: {e}"))
        return
    results = [(p.rid, *top_k(p.query.items, pr, p.k)) for p, pr in zip(batch, probs)]
    chan.send(("r", version, len(batch), sum(len(p) for p in probs), results))


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
