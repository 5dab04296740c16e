"""The message log between the replayer, the trainer and the server: Redis Streams, or an
in-process queue with the same interface when no `--redis URL` is given.

Two streams (docs/rec-serving.md, "Sync protocol"): `anychip:rec:events` (one entry per
user event, fields user_id, item_id, label, timestamp, sent_at and optionally rating) and
`anychip:rec:updates` (one entry per model update: version, kind, data = rec.wire bytes).
Readers keep their own position (the id of the last entry they read), as with XREAD.

>>> log = open_log(None)                       # in-process
>>> first = log.add(EVENTS, {"user_id": b"1"})
>>> [fields[b"user_id"] for _, fields in log.read(EVENTS, "0")]
[b'1']
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from anychip.errors import ArgumentError
from anychip.rec.movielens import THRESHOLD

EVENTS = "anychip:rec:events"
UPDATES = "anychip:rec:updates"
DISLIKE_RATING = 2.0  # rating counted for a label-0 event that carries none (a like: THRESHOLD)
Fields = dict[bytes, bytes]
Entry = tuple[str, Fields]  # (entry id, fields)


class Log(Protocol):
    """What both logs do. Ids are strings that `id_key` orders; `after` is exclusive."""

    def add(self, stream: str, fields: Mapping[str, Any], maxlen: int | None = None) -> str: ...
    def read(
        self, stream: str, after: str, count: int | None = None, block_ms: int | None = None
    ) -> list[Entry]: ...
    def range(self, stream: str, start: str = "-", end: str = "+") -> list[Entry]: ...
    def length(self, stream: str) -> int: ...
    def close(self) -> None: ...


def id_key(entry_id: str | bytes) -> tuple[int, int]:
    """An entry id as a sortable pair: Redis's "ms-seq", or an in-process number "n"."""
    s = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    head, _, tail = s.partition("-")
    try:
        return int(head), int(tail or 0)
    except ValueError:
        raise ArgumentError(f"rec.log: {s!r} is not a stream entry id") from None


def _encode(fields: Mapping[str, Any]) -> Fields:
    out = {}
    for k, v in fields.items():
        out[k.encode()] = v if isinstance(v, bytes) else str(v).encode()
    return out


class MemoryLog:
    """Streams in this process: a list of entries per stream, numbered 1, 2, ... (ids are
    never reused, also after trimming); `read` with `block_ms` waits on a condition."""

    def __init__(self) -> None:
        self._streams: dict[str, list[Entry]] = {}
        self._next: dict[str, int] = {}
        self._cond = threading.Condition()

    def add(self, stream: str, fields: Mapping[str, Any], maxlen: int | None = None) -> str:
        with self._cond:
            n = self._next.get(stream, 1)
            self._next[stream] = n + 1
            entries = self._streams.setdefault(stream, [])
            entries.append((str(n), _encode(fields)))
            if maxlen is not None and len(entries) > maxlen:
                del entries[: len(entries) - maxlen]
            self._cond.notify_all()
            return str(n)

    def _after(self, stream: str, after: str, count: int | None) -> list[Entry]:
        key = id_key(after) if after not in ("0", "-") else (0, 0)
        out = [e for e in self._streams.get(stream, []) if id_key(e[0]) > key]
        return out[:count] if count is not None else out

    def read(
        self, stream: str, after: str, count: int | None = None, block_ms: int | None = None
    ) -> list[Entry]:
        with self._cond:
            out = self._after(stream, after, count)
            if out or not block_ms:
                return out
            self._cond.wait_for(lambda: bool(self._after(stream, after, 1)), block_ms / 1000)
            return self._after(stream, after, count)

    def range(self, stream: str, start: str = "-", end: str = "+") -> list[Entry]:
        lo = (-1, -1) if start == "-" else id_key(start)
        hi = None if end == "+" else id_key(end)
        with self._cond:
            entries = list(self._streams.get(stream, []))
        return [e for e in entries if lo <= id_key(e[0]) and (hi is None or id_key(e[0]) <= hi)]

    def length(self, stream: str) -> int:
        with self._cond:
            return len(self._streams.get(stream, []))

    def close(self) -> None:
        return None


class RedisLog:
    """Redis Streams through redis-py: XADD (with `MAXLEN ~ n` trimming), XREAD (BLOCK),
    XRANGE, XLEN. Values come back as bytes."""

    def __init__(self, url: str) -> None:
        import redis

        self.url = url
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=5)
        try:
            self._redis.ping()
        except redis.exceptions.ConnectionError as e:
            raise ArgumentError(f"rec.log: cannot reach Redis at {url} ({e})") from None

    def add(self, stream: str, fields: Mapping[str, Any], maxlen: int | None = None) -> str:
        entry = self._redis.xadd(stream, _encode(fields), maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
        return _text(entry)

    def read(
        self, stream: str, after: str, count: int | None = None, block_ms: int | None = None
    ) -> list[Entry]:
        reply: Any = self._redis.xread({stream: after}, count=count, block=block_ms or None)
        out: list[Entry] = []
        for _, entries in reply or []:
            out += [(_text(i), dict(f)) for i, f in entries]
        return out

    def range(self, stream: str, start: str = "-", end: str = "+") -> list[Entry]:
        reply: Any = self._redis.xrange(stream, start, end)
        return [(_text(i), dict(f)) for i, f in reply]

    def length(self, stream: str) -> int:
        return int(self._redis.xlen(stream))

    def close(self) -> None:
        self._redis.close()


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def open_log(url: str | None) -> Log:
    """A `RedisLog` on `url` (redis://HOST:PORT[/DB]), or a new `MemoryLog` when None."""
    if url is None:
        return MemoryLog()
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ArgumentError(f"rec.log: {url!r} is not a Redis URL (redis://HOST:PORT)")
    return RedisLog(url)


# --- events ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    """One user event; `sent_at` is the unix time it entered the log; `rating` (optional)
    feeds the trainer's mean-rating features (MovieLens has it)."""

    user_id: int
    item_id: int
    label: int
    timestamp: int
    sent_at: float = 0.0
    rating: float | None = None

    @property
    def stars(self) -> float:
        """The rating the behaviour features count: `rating`, else THRESHOLD for a like
        and DISLIKE_RATING for a dislike."""
        if self.rating is not None:
            return float(self.rating)
        return THRESHOLD if self.label else DISLIKE_RATING

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "user_id": self.user_id, "item_id": self.item_id, "label": self.label,
            "timestamp": self.timestamp, "sent_at": repr(float(self.sent_at)),
        }  # fmt: skip
        if self.rating is not None:
            out["rating"] = repr(float(self.rating))
        return out

    @staticmethod
    def parse(fields: Fields) -> Event:
        try:
            rating = fields.get(b"rating")
            return Event(
                int(fields[b"user_id"]), int(fields[b"item_id"]), int(fields[b"label"]),
                int(fields[b"timestamp"]), float(fields.get(b"sent_at", b"0")),
                None if rating is None else float(rating),
            )  # fmt: skip
        except (KeyError, ValueError) as e:
            raise ArgumentError(f"rec.log: malformed event {fields!r} ({e})") from None


class Reader:
    """Reads one stream in order from `position` (exclusive; "0" from the start, "$" only
    what is added after the first read) and keeps the position of the last entry read."""

    def __init__(self, log: Log, stream: str, position: str = "0") -> None:
        self.log, self.stream = log, stream
        if position == "$":
            tail = log.range(stream)
            position = tail[-1][0] if tail else "0"
        self.position = position

    def read(self, count: int | None = None, block_ms: int | None = None) -> list[Entry]:
        out = self.log.read(self.stream, self.position, count, block_ms)
        if out:
            self.position = out[-1][0]
        return out


# --- a private redis-server -------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """`redis-server` on a free local port with nothing persisted (--save "", --appendonly
    no, a temp dir), for tests and the demo; `stop()` (also at exit) kills and reaps it.

    >>> with RedisServer() as r:          # doctest: +SKIP
    ...     log = open_log(r.url)
    """

    def __init__(self, binary: str | None = None, timeout: float = 10.0) -> None:
        path = binary or shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.isfile(path):
            raise ArgumentError(
                "rec.log.RedisServer: redis-server not found (apt-get install redis-server)"
            )
        self.dir = tempfile.mkdtemp(prefix="anychip-redis-")
        self.port = free_port()
        cmd = [
            path, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", self.dir, "--daemonize", "no",
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        atexit.register(self.stop)
        self._wait(timeout)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise ArgumentError(f"rec.log.RedisServer: redis-server did not start on {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def redis_available() -> bool:
    return shutil.which("redis-server") is not None or os.path.isfile("/usr/bin/redis-server")
