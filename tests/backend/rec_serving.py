"""Helpers of the serving tests: a real server on a free local port (uvicorn in a thread of
the test process, or `anychip rec serve` in a subprocess), a real redis-server, and the
scores a saved model gives for a request, computed without the server's code."""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import uvicorn

import anychip as ac
from anychip.rec import store
from anychip.rec.jagged import KeyedJaggedTensor
from anychip.rec.serve.app import Server, make_app
from anychip.rec.serve.main import build

REDIS = "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(model_dir: str, **kw: Any) -> Iterator[tuple[Server, str]]:
    """A server for `model_dir` (kw as rec.serve.main.build takes them) listening on a
    free port, in a thread; yields it and its URL, and stops it after."""
    server, follower = build(model_dir, **kw)
    port = free_port()
    config = uvicorn.Config(make_app(server), host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on")  # fmt: skip
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)
        if follower is not None:
            follower.stop()


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A redis-server of its own on a free port (no disk); yields its URL."""
    port = free_port()
    proc = subprocess.Popen(
        [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert proc.poll() is None and time.monotonic() < deadline, "redis did not start"
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def has_redis() -> bool:
    return os.path.exists(REDIS) and shutil.which(REDIS) is not None


def wait_for(url: str, proc: subprocess.Popen[Any] | None = None, timeout: float = 60) -> None:
    """Poll `url`/healthz until it answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


# --- the scores a saved model gives, computed here ---------------------------------------
def _bag(values: np.ndarray, offsets: np.ndarray, row: int) -> list[int]:
    return [int(v) for v in values[offsets[row] : offsets[row + 1]]]


def reference(
    model: Any, fs: dict[str, Any], user: int, items: list[int], timestamp: int
) -> np.ndarray:
    """Probabilities of `items` for `user`: features looked up in the store `fs` row by
    row in plain Python (ids outside the store read row 0), the model's eager forward on
    an unpadded batch, then a numpy sigmoid."""
    cfg = fs["config"]
    keys = cfg["sparse_features"]
    n_users, n_items = len(fs["user_age"]), len(fs["item_year"])
    u = user if 0 < user < n_users else 0
    when = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    bags: dict[str, list[list[int]]] = {k: [] for k in keys}
    dense = []
    for item in items:
        i = item if 0 < item < n_items else 0
        row = {
            "user_id": [u], "item_id": [i], "age": [int(fs["user_age"][u])],
            "gender": [int(fs["user_gender"][u])], "occupation": [int(fs["user_occupation"][u])],
            "zip": [int(fs["user_zip"][u])],
            "genres": _bag(fs["item_genres_values"], fs["item_genres_offsets"], i),
            "year": [int(fs["item_year"][i])], "hour": [when.hour], "weekday": [when.weekday()],
        }  # fmt: skip
        if cfg["history"]:
            for k in ("recent_items", "recent_liked"):
                row[k] = _bag(fs[f"user_{k}_values"], fs[f"user_{k}_offsets"], u)
            dense.append(np.concatenate([fs["user_dense"][u], fs["item_dense"][i]]))
        for k in keys:
            bags[k].append(row[k])
    values = [v for k in keys for b in bags[k] for v in b]
    lengths = [len(b) for k in keys for b in bags[k]]
    kjt = KeyedJaggedTensor(keys, np.array(values, np.int64), np.array(lengths), device="cpu")
    d = ac.tensor(np.array(dense, np.float32), device="cpu") if cfg["dense_in"] else None
    with ac.no_grad():
        logits = model(d, kjt).numpy().astype(np.float64)
    return np.asarray(1 / (1 + np.exp(-logits)))


def load_model(model_dir: str) -> tuple[Any, dict[str, Any]]:
    model, fs = store.load(model_dir, "cpu")
    model.eval()
    return model, fs
