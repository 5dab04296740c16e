"""The event log (rec/log.py) on a real redis-server on a free local port and in-process:
entries come back in order, a reader keeps its position, MAXLEN trimming keeps the newest,
a blocked read wakes on an append, and the private redis-server is stopped and reaped."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from anychip.errors import ArgumentError
from anychip.rec.log import (
    EVENTS,
    Event,
    Log,
    MemoryLog,
    Reader,
    RedisServer,
    id_key,
    open_log,
    redis_available,
)  # fmt: skip

needs_redis = pytest.mark.skipif(
    not redis_available(), reason="needs Debian's redis-server (apt-get install redis-server)"
)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    if not redis_available():
        pytest.skip("needs Debian's redis-server (apt-get install redis-server)")
    with RedisServer() as server:
        yield server.url


@pytest.fixture(params=["memory", pytest.param("redis", marks=needs_redis)])
def log(request: pytest.FixtureRequest) -> Iterator[Log]:
    if request.param == "memory":
        yield MemoryLog()
        return
    url = request.getfixturevalue("redis_url")
    lg = open_log(url)
    stream = f"t:{request.node.name}"
    yield _Scoped(lg, stream)  # each test its own stream names on the shared server
    lg.close()


class _Scoped:
    """A log whose stream names get a per-test prefix (one server for the module)."""

    def __init__(self, log: Log, prefix: str) -> None:
        self.log, self.prefix = log, prefix

    def __getattr__(self, name: str) -> object:
        fn = getattr(self.log, name)

        def call(stream: str, *args: object, **kwargs: object) -> object:
            return fn(f"{self.prefix}:{stream}", *args, **kwargs)

        return call


def test_entries_come_back_in_order_with_increasing_ids(log: Log) -> None:
    ids = [log.add(EVENTS, {"n": i}) for i in range(50)]
    assert [id_key(i) for i in ids] == sorted(id_key(i) for i in ids)
    assert len(set(ids)) == 50
    got = log.range(EVENTS)
    assert [e[0] for e in got] == ids
    assert [int(f[b"n"]) for _, f in got] == list(range(50))
    assert log.length(EVENTS) == 50
    # read is exclusive of `after`
    assert [int(f[b"n"]) for _, f in log.read(EVENTS, ids[9], count=3)] == [10, 11, 12]


def test_a_reader_keeps_its_position(log: Log) -> None:
    for i in range(5):
        log.add(EVENTS, {"n": i})
    r = Reader(log, EVENTS)
    assert [int(f[b"n"]) for _, f in r.read(count=3)] == [0, 1, 2]
    assert [int(f[b"n"]) for _, f in r.read()] == [3, 4]
    assert r.read() == []
    log.add(EVENTS, {"n": 5})
    assert [int(f[b"n"]) for _, f in r.read()] == [5]
    tail = Reader(log, EVENTS, "$")  # only what comes after now
    assert tail.read() == []
    log.add(EVENTS, {"n": 6})
    assert [int(f[b"n"]) for _, f in tail.read()] == [6]


def test_maxlen_trimming_keeps_the_newest(log: Log) -> None:
    for i in range(1000):
        log.add(EVENTS, {"n": i}, maxlen=100)
    n = log.length(EVENTS)
    # Redis trims approximately (whole nodes of 100 entries): at least 100 stay, not all
    assert 100 <= n <= 300
    kept = [int(f[b"n"]) for _, f in log.range(EVENTS)]
    assert kept == list(range(1000 - n, 1000))


def test_a_blocked_read_wakes_on_an_append(log: Log) -> None:
    last = log.add(EVENTS, {"n": 0})
    timer = threading.Timer(0.2, lambda: log.add(EVENTS, {"n": 1}))
    timer.start()
    try:
        got = log.read(EVENTS, last, block_ms=5000)
    finally:
        timer.join()
    assert [int(f[b"n"]) for _, f in got] == [1]


def test_events_round_trip_through_the_log(log: Log) -> None:
    e = Event(12, 50, 1, 881250949, 1700000000.25, 4.0)
    log.add(EVENTS, e.fields())
    (_, fields), = log.range(EVENTS)  # fmt: skip
    assert Event.parse(fields) == e
    log.add(EVENTS, Event(1, 2, 0, 3).fields())
    assert Event.parse(log.range(EVENTS)[-1][1]).rating is None
    with pytest.raises(ArgumentError, match="malformed event"):
        Event.parse({b"user_id": b"x"})


@needs_redis
def test_the_private_redis_server_is_stopped_and_reaped() -> None:
    server = RedisServer()
    proc = server.proc
    assert proc is not None
    lg = open_log(server.url)
    lg.add("s", {"a": 1})
    assert lg.length("s") == 1
    lg.close()
    server.stop()
    assert proc.returncode is not None  # reaped
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=0.5).close()


def test_bad_urls_and_ids_are_refused() -> None:
    with pytest.raises(ArgumentError, match="not a Redis URL"):
        open_log("http://localhost:1")
    with pytest.raises(ArgumentError, match="not a stream entry id"):
        id_key("abc")
    assert id_key("17") == (17, 0) and id_key(b"5-3") == (5, 3)
