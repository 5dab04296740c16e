"""The trainer against the real prediction server (`anychip rec serve`) and a real
redis-server, both on free local ports: the server follows the trainer's versions, and a
POST cut short or a trainer killed with SIGKILL mid-publish leaves it on its last
complete version, serving the same scores."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from anychip.rec import load_movielens, protocol, store, wire
from anychip.rec.follow import from_dataset, save_start
from anychip.rec.log import EVENTS, UPDATES, Event, RedisServer, free_port, open_log
from anychip.rec.train import Settings

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("recbole") is None, reason="needs `pip install --no-deps recbole`"
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("anychip.rec.serve") is None,
        reason="needs the prediction server (anychip.rec.serve)",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("redis") is None or not os.path.exists("/usr/bin/redis-server"),
        reason="needs Debian's redis-server and redis-py",
    ),
]
httpx = pytest.importorskip("httpx")
N = 2600
SRC = str(Path(__file__).resolve().parents[2] / "src")
REQUEST = {"user_id": 12, "candidates": [1, 50, 172, 300, 7], "k": 5,
           "context": {"timestamp": 881250949}}  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("sync")
    ml = load_movielens().first(N)
    s = Settings(dim=4, hparams={"num_cross_layers": 1, "deep_mlp": (8,)},
                 run=protocol.Config(max_epochs=1))  # fmt: skip
    _, trainer = from_dataset("dcn", ml, s, "ref")
    save_start(str(tmp / "start"), "dcn", trainer, ml, s)
    (tmp / "token").write_text("t0ken\n")
    yield {"ml": ml, "dir": str(tmp / "start"), "token": str(tmp / "token"), "tmp": tmp}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC}


@pytest.fixture
def stack(setup: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A redis-server and `anychip rec serve` from the starting model."""
    with RedisServer() as redis:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "anychip", "rec", "serve", "--model", setup["dir"],
             "--port", str(port), "--device", "ref", "--redis", redis.url,
             "--token-file", setup["token"]], env=_env(),
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                assert server.poll() is None, "the server exited"
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.3)
            yield {**setup, "url": url, "redis": redis.url}
        finally:
            server.terminate()
            server.wait(timeout=30)


def _predict(url: str) -> dict[str, Any]:
    r = httpx.post(url + "/predict", json=REQUEST, timeout=30)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _fill(redis_url: str, ml: Any) -> None:
    log = open_log(redis_url)
    for i in range(len(protocol.split(N).train), N):
        e = Event(int(ml.user[i]), int(ml.item[i]), int(ml.label[i]), int(ml.timestamp[i]),
                  time.time(), float(ml.rating[i]))  # fmt: skip
        log.add(EVENTS, e.fields())
    log.close()


def _trainer(stack: dict[str, Any], *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "anychip", "rec", "train", "--follow", stack["redis"],
         "--publish", stack["url"], "--model", stack["dir"], "--limit", str(N),
         "--device", "ref", "--token-file", stack["token"], "--batch-size", "32", *extra],
        env=_env(),
    )  # fmt: skip


def test_a_cut_post_body_changes_nothing(stack: dict[str, Any]) -> None:
    before = _predict(stack["url"])
    assert before["version"] == 0
    body = wire.encode(wire.Update(1, -1, "full", dense={"head.bias": np.ones(1, np.float32)}))
    host, port = stack["url"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(
            b"POST /update HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            b"Authorization: Bearer t0ken\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
    time.sleep(0.5)
    after = _predict(stack["url"])
    assert after == before  # same version, same items and scores


def test_the_server_follows_and_survives_a_killed_trainer(stack: dict[str, Any]) -> None:
    _fill(stack["redis"], stack["ml"])
    before = _predict(stack["url"])
    proc = _trainer(stack, "--sync-every", "0.05", "--idle-exit", "60")
    log = open_log(stack["redis"])
    deadline = time.monotonic() + 120
    while log.length(UPDATES) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # most likely mid-training or mid-publish
    proc.wait()
    published = {int(f[b"version"]) for _, f in log.range(UPDATES)}
    time.sleep(1.0)
    served = _predict(stack["url"])
    assert served["version"] in published | {0}
    assert served["version"] >= 1  # it got at least the first full update
    assert served["scores"] != before["scores"]
    again = _predict(stack["url"])
    assert again == served  # a stable, complete version
    # a new trainer goes on above the log's newest version; the server follows it
    proc = _trainer(stack, "--sync-every", "0.5", "--idle-exit", "2")
    assert proc.wait(timeout=300) == 0
    newest = max(int(f[b"version"]) for _, f in log.range(UPDATES))
    assert newest > max(published)
    deadline = time.monotonic() + 30
    while _predict(stack["url"])["version"] != newest and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _predict(stack["url"])["version"] == newest
    log.close()


def test_the_servers_features_follow_the_events(setup: dict[str, Any]) -> None:
    """After the test period's first events enter the log, the server scores the next
    ones as the saved model does with the stream's own features (MovieLensFeatures over
    the whole stream); a server without the log keeps the train period's features."""
    from anychip.rec.features import MovieLensFeatures
    from anychip.rec.serve.features import Query
    from anychip.rec.serve.main import build
    from anychip.rec.train import Trainer

    ml = setup["ml"]
    first = len(protocol.split(N).train)
    cut = first + 200
    while ml.timestamp[cut] == ml.timestamp[cut - 1]:
        cut += 1  # the queries are of a second after every event sent
    rows = np.flatnonzero(ml.timestamp == ml.timestamp[cut])
    with RedisServer() as redis:
        log = open_log(redis.url)
        for i in range(first, cut):
            log.add(
                EVENTS,
                Event(
                    int(ml.user[i]),
                    int(ml.item[i]),
                    int(ml.label[i]),
                    int(ml.timestamp[i]),
                    0.0,
                    float(ml.rating[i]),
                ).fields(),
            )
        server, follower = build(setup["dir"], device="ref", max_batch=16, redis=redis.url)
        frozen, _ = build(setup["dir"], device="ref", max_batch=16)
        assert follower is not None
        try:
            assert follower.observed == cut - first  # read at start (catch-up)
            # one more, as they arrive; it is of a later day than the queries, which the
            # server then does not count for them
            later = Event(int(ml.user[cut]), int(ml.item[cut]), 1, int(ml.timestamp[cut]) + 86400)
            log.add(EVENTS, later.fields())
            deadline = time.monotonic() + 30
            while follower.observed < cut - first + 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert follower.observed == cut - first + 1
            got = [
                server.model.score(
                    [Query(int(ml.user[r]), ml.item[r : r + 1], int(ml.timestamp[r]))]
                )[1][0][0]
                for r in rows
            ]
            old = frozen.model.features.batch(
                [Query(int(ml.user[r]), ml.item[r : r + 1], int(ml.timestamp[r])) for r in rows],
                len(rows) + 1,
            ).dense[: len(rows)]  # fmt: skip
        finally:
            follower.stop()
            log.close()
    model, _ = store.load(setup["dir"], "ref")
    stream = MovieLensFeatures(ml)
    want = Trainer(model, lambda m: [], stream, 64, "ref").predict(rows)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(old, stream.batch(rows).dense)  # frozen: the train period's
