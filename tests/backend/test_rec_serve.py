"""`anychip rec serve`: a real server on a free local port, a real HTTP client, scores
checked against the saved model's own eager forward (tests/backend/rec_serving.py)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from rec_serving import (
    free_port,
    has_redis,
    load_model,
    redis_server,
    reference,
    serving,
    wait_for,
)

import anychip as ac
from anychip.cli import main
from anychip.rec import wire
from anychip.rec.serve.follow import UPDATES
from anychip.rec.serve.process import InferenceProcess

TS = 881250949  # a MovieLens timestamp: 1997-12-04 15:55:49 UTC
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("rec_serve") / "deepfm"
    args = ["rec", "train", "--model", "deepfm", "--protocol", "static", "--limit", "1500",
            "--epochs", "1", "--device", "cpu", "--dim", "8", "--save", str(out)]  # fmt: skip
    assert main(args) == 0
    return str(out)


MODES = ["thread", "process"]  # the inference worker: a thread of the server, or a process


@pytest.fixture(scope="module", params=MODES)
def served(model_dir: str, request: pytest.FixtureRequest) -> Any:
    with serving(model_dir, max_batch=64, token=TOKEN, inference=request.param) as s:
        yield s


class WorkerHold:
    """The inference worker blocked until `release`: its lock held (a thread) or its
    process stopped (SIGSTOP, then SIGCONT)."""

    def __init__(self, server: Any) -> None:
        self.server, self.held = server, True
        if isinstance(server.model, InferenceProcess):
            os.kill(server.model.pid, signal.SIGSTOP)
        else:
            server.model.lock.acquire()

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if isinstance(self.server.model, InferenceProcess):
            os.kill(self.server.model.pid, signal.SIGCONT)
        else:
            self.server.model.lock.release()


def predict(url: str, body: Any, **kw: Any) -> httpx.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}/predict", content=data, timeout=10, **kw)


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name}")


def test_scores_are_the_models_own_predictions_top_k_first(model_dir: str, served: Any) -> None:
    _, url = served
    model, fs = load_model(model_dir)
    items = [1, 50, 172, 7, 300, 12, 99, 181]
    r = predict(url, {"user_id": 12, "candidates": items, "k": 5, "context": {"timestamp": TS}})
    assert r.status_code == 200, r.text
    got = r.json()
    want = reference(model, fs, 12, items, TS)
    order = np.argsort(-want, kind="stable")[:5]
    assert got["version"] == 0
    assert got["items"] == [items[i] for i in order]
    np.testing.assert_allclose(got["scores"], want[order], rtol=1e-5, atol=1e-6)
    assert got["scores"] == sorted(got["scores"], reverse=True)


def test_cold_start_users_and_items_are_served(model_dir: str, served: Any) -> None:
    _, url = served
    model, fs = load_model(model_dir)
    items = [10**12, 3, -4, 5000]  # unknown, known, negative, past the last item
    r = predict(url, {"user_id": 10**15, "candidates": items, "context": {"timestamp": TS}})
    assert r.status_code == 200, r.text
    want = reference(model, fs, 10**15, items, TS)
    by_item = dict(zip(r.json()["items"], r.json()["scores"]))
    assert sorted(by_item) == sorted(items)
    np.testing.assert_allclose([by_item[i] for i in items], want, rtol=1e-5, atol=1e-6)


def test_concurrent_requests_are_batched_and_each_gets_its_own_scores(
    model_dir: str, served: Any
) -> None:
    _, url = served
    model, fs = load_model(model_dir)
    rng = np.random.default_rng(1)
    reqs = [(int(rng.integers(1, 943)), rng.choice(1682, 20, replace=False) + 1) for _ in range(12)]
    rows_before = metric(url, "anychip_rec_batch_rows_sum")

    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=10) as c:
            return await asyncio.gather(*(
                c.post("/predict", json={"user_id": u, "candidates": items.tolist(),
                                         "context": {"timestamp": TS}})
                for u, items in reqs
            ))  # fmt: skip

    for (u, items), r in zip(reqs, asyncio.run(go())):
        assert r.status_code == 200, r.text
        want = reference(model, fs, u, items.tolist(), TS)
        got = dict(zip(r.json()["items"], r.json()["scores"]))
        np.testing.assert_allclose([got[int(i)] for i in items], want, rtol=1e-5, atol=1e-6)
    assert metric(url, "anychip_rec_batch_rows_sum") - rows_before == 12 * 20


BAD = [
    (b"{not json", 400, "not JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b"[" * 60000, 400, "not JSON"),
    ({"candidates": [1]}, 400, "user_id"),
    ({"user_id": 1}, 400, "candidates"),
    ({"user_id": "7", "candidates": [1]}, 400, "user_id"),
    ({"user_id": True, "candidates": [1]}, 400, "user_id"),
    ({"user_id": 1, "candidates": [1, "2"]}, 400, "candidate"),
    ({"user_id": 1, "candidates": [1.5]}, 400, "candidate"),
    ({"user_id": 1, "candidates": [[1]]}, 400, "candidate"),
    ({"user_id": 1, "candidates": []}, 400, "non-empty"),
    ({"user_id": 1, "candidates": 5}, 400, "candidates"),
    ({"user_id": 2**63, "candidates": [1]}, 400, "int64"),
    ({"user_id": 1, "candidates": [1], "k": 0}, 400, "k must"),
    ({"user_id": 1, "candidates": [1], "k": "3"}, 400, "k must"),
    ({"user_id": 1, "candidates": [1], "context": [1]}, 400, "context"),
    ({"user_id": 1, "candidates": [1], "context": {"timestamp": "now"}}, 400, "timestamp"),
    ({"user_id": 1, "candidates": [1], "extra": 1}, 400, "unknown fields"),
    ({"user_id": 1, "candidates": list(range(1, 66))}, 413, "cap of 64"),
    (b'{"user_id": 1, "candidates": [' + b"1, " * 40000 + b"1]}", 413, "exceeds"),
]


@pytest.mark.parametrize(("body", "status", "words"), BAD)
def test_bad_requests_get_a_message_and_never_reach_the_model(
    served: Any, body: Any, status: int, words: str
) -> None:
    _, url = served
    batches = metric(url, "anychip_rec_batch_rows_count")
    r = predict(url, body)
    assert r.status_code == status
    assert words in r.json()["error"]
    assert metric(url, "anychip_rec_batch_rows_count") == batches


@pytest.mark.parametrize("mode", MODES)
def test_a_full_queue_sheds_load_with_503_and_retry_after(model_dir: str, mode: str) -> None:
    body = {"user_id": 1, "candidates": list(range(1, 61))}  # 60 rows: one request a batch
    with serving(model_dir, max_batch=64, queue=3, inference=mode) as (server, url):
        hold = WorkerHold(server)  # the worker blocks on its first batch (a thread) or at once
        try:

            async def burst() -> list[httpx.Response]:
                async with httpx.AsyncClient(base_url=url, timeout=10) as c:
                    tasks = [asyncio.create_task(c.post("/predict", json=body)) for _ in range(9)]
                    for _ in range(500):  # until the refusals are in (at least 9 - 5)
                        await asyncio.sleep(0.01)
                        if sum(t.done() for t in tasks) >= 4:
                            break
                    await asyncio.sleep(0.2)  # and any refusal still on its way
                    done = {t for t in tasks if t.done()}
                    refused = [t.result() for t in done]
                    hold.release()
                    await asyncio.gather(*tasks)
                    return refused + [t.result() for t in tasks if t not in done]

            results = asyncio.run(burst())
        finally:
            hold.release()
        refused = [r for r in results if r.status_code == 503]
        ok = [r for r in results if r.status_code == 200]
        assert len(refused) + len(ok) == 9
        assert 9 - 1 - 3 - 1 <= len(refused) <= 9 - 3  # the worker holds 1 (or 2), queue 3
        assert all(r.headers["retry-after"] == "1" and "overloaded" in r.json()["error"]
                   for r in refused)  # fmt: skip
        assert metric(url, 'anychip_rec_errors_total{kind="overloaded"}') == len(refused)
        assert metric(url, "anychip_rec_queue_depth") == 0
        assert httpx.post(f"{url}/predict", json=body).status_code == 200  # recovered


def test_metrics_and_healthz(served: Any) -> None:
    _, url = served
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok", "version": 0}
    text = httpx.get(f"{url}/metrics").text
    for name in ("requests_total", "request_latency_seconds_bucket", "model_version",
                 "queue_depth", "batch_rows_bucket", "batch_requests_bucket"):  # fmt: skip
        assert f"anychip_rec_{name}" in text
    assert predict(url, {"user_id": 1, "candidates": [2]}).status_code == 200
    assert metric(url, "anychip_rec_requests_total") >= 1


# --- updates ------------------------------------------------------------------------
def encoded_update(model: Any, version: int, base: int, kind: str = "delta") -> wire.Update:
    """An update after which every score is sigmoid(L(version)): tables and weights zero,
    two biases adding to L (a delta changes only the biases, so a server that applied half
    of one would give another score)."""
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    a, b = float(version), logit_of(version) - float(version)
    dense = {"head.bias": np.array([a], np.float32), "dense_linear.bias": np.array([b], np.float32)}
    tables: dict[str, wire.TableRows] = {}
    if kind == "full":
        for key, v in state.items():
            if key.endswith(".weight") and "embedding_bags." in key:
                ids = np.arange(v.shape[0])
                tables[key[: -len(".weight")]] = wire.TableRows(ids, np.zeros_like(v))
            elif key not in dense:
                dense[key] = np.zeros_like(v)
    return wire.Update(version, base, kind, dense, tables, {"events_upto": str(version)})


def logit_of(version: int) -> float:
    return (version - 10) / 8


def expect(version: int) -> float:
    return float(1 / (1 + np.exp(-logit_of(version))))


def post_update(url: str, update: wire.Update | bytes, token: str | None = TOKEN) -> httpx.Response:
    data = update if isinstance(update, bytes) else wire.encode(update)
    headers = {"content-type": "application/octet-stream"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return httpx.post(f"{url}/update", content=data, headers=headers, timeout=30)


@pytest.mark.parametrize("mode", MODES)
def test_updates_need_the_token_and_follow_versions(model_dir: str, mode: str) -> None:
    model, _ = load_model(model_dir)
    req = {"user_id": 3, "candidates": [1, 2, 3], "context": {"timestamp": TS}}
    with serving(model_dir, max_batch=32, token=TOKEN, inference=mode) as (server, url):
        before = predict(url, req).json()
        full = encoded_update(model, 4, -1, "full")
        for token in (None, "wrong", TOKEN + "x"):
            r = post_update(url, full, token)
            assert r.status_code == 401 and "unauthorized" in r.json()["error"]
        assert predict(url, req).json() == before  # nothing changed
        assert post_update(url, b"garbage").status_code == 400
        data = wire.encode(full)
        for cut in (len(data) // 2, len(data) - 1):  # a publisher killed mid-POST
            assert post_update(url, data[:cut]).status_code == 400
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:  # gone mid-body
            sock.sendall(
                f"POST /update HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}"
                f"\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                + data[:100]
            )
        time.sleep(0.2)
        assert predict(url, req).json() == before
        r = post_update(url, full)
        assert r.status_code == 200 and r.json() == {"version": 4}
        got = predict(url, req).json()
        assert got["version"] == 4
        np.testing.assert_allclose(got["scores"], [expect(4)] * 3, rtol=1e-6)
        # stale (not newer), gapped (base is not the served version): 409, nothing changes
        for stale in (encoded_update(model, 4, 3), encoded_update(model, 3, 2, "full"),
                      encoded_update(model, 6, 5)):  # fmt: skip
            r = post_update(url, stale)
            assert r.status_code == 409 and r.json()["version"] == 4, r.text
        assert predict(url, req).json() == got
        assert post_update(url, encoded_update(model, 5, 4)).json() == {"version": 5}
        # rows of a plain table: the served scores are the model's with those rows
        row = np.ones((1, 1), np.float32)
        upd = wire.Update(6, 5, "delta", tables={
            "linear.embedding_bags.item_id": wire.TableRows(np.array([2]), row)})  # fmt: skip
        assert post_update(url, upd).status_code == 200
        got = predict(url, req).json()
        ref, fs = load_model(model_dir)
        state = {k: v.numpy() for k, v in model.state_dict().items()}
        state.update(encoded_update(model, 4, -1, "full").dense)
        state.update({f"{k}.weight": np.zeros_like(state[f"{k}.weight"])
                      for k in encoded_update(model, 4, -1, "full").tables})  # fmt: skip
        state.update(encoded_update(model, 5, 4).dense)
        state["linear.embedding_bags.item_id.weight"][2] = 1.0
        ref.load_state_dict({k: ac.tensor(v, device="cpu") for k, v in state.items()})
        want = reference(ref, fs, 3, [1, 2, 3], TS)
        assert got["version"] == 6 and got["items"][0] == 2
        by_item = dict(zip(got["items"], got["scores"]))
        np.testing.assert_allclose([by_item[i] for i in (1, 2, 3)], want, rtol=1e-5)
        assert server.metrics.updates["post"] == 3
        # an update that does not fit the model: 400, nothing changes
        bad = wire.Update(7, 6, "delta", dense={"head.bias": np.zeros(3, np.float32)})
        assert post_update(url, bad).status_code == 400
        bad = wire.Update(7, 6, "delta", dense={"nope": np.zeros(1, np.float32)})
        assert post_update(url, bad).status_code == 400
        assert httpx.get(f"{url}/healthz").json()["version"] == 6
        assert metric(url, "anychip_rec_update_swap_seconds_count") == 3  # applied ones only
        assert 0 < metric(url, "anychip_rec_update_swap_seconds_sum") < 3


@pytest.mark.parametrize("mode", MODES)
def test_no_response_mixes_two_versions(model_dir: str, mode: str) -> None:
    model, _ = load_model(model_dir)
    kw = {"max_batch": 64, "token": TOKEN, "max_wait_ms": 0.5, "inference": mode}
    with serving(model_dir, **kw) as (_, url):
        assert post_update(url, encoded_update(model, 1, -1, "full")).status_code == 200
        stop = threading.Event()
        seen: list[list[tuple[int, list[float]]]] = [[] for _ in range(3)]

        failures: list[BaseException] = []

        def client(out: list[tuple[int, list[float]]]) -> None:
            rng = np.random.default_rng(len(out))
            try:
                with httpx.Client(base_url=url, timeout=10) as c:
                    while not stop.is_set():
                        items = (rng.choice(1682, 15, replace=False) + 1).tolist()
                        r = c.post("/predict", json={"user_id": int(rng.integers(1, 943)),
                                                     "candidates": items})  # fmt: skip
                        assert r.status_code == 200, r.text
                        out.append((r.json()["version"], r.json()["scores"]))
            except BaseException as e:  # seen by the test's thread below
                failures.append(e)

        threads = [threading.Thread(target=client, args=(s,)) for s in seen]
        for t in threads:
            t.start()
        try:
            for v in range(2, 22):
                assert post_update(url, encoded_update(model, v, v - 1)).status_code == 200
        finally:
            stop.set()
            for t in threads:
                t.join()
    assert not failures, failures
    versions = set()
    for responses in seen:
        assert responses, "a client got no answer"
        got = [v for v, _ in responses]
        assert got == sorted(got)  # versions only grow
        for v, scores in responses:
            versions.add(v)
            np.testing.assert_allclose(scores, [expect(v)] * len(scores), rtol=1e-5)
    assert len(versions) > 2  # requests did run during the updates


@pytest.mark.parametrize("client", ["raw", "httpx"])
def test_loadtest_reports_latency_from_scheduled_times(
    served: Any, tmp_path: Path, client: str
) -> None:
    _, url = served
    out = tmp_path / "lt.json"
    args = ["rec", "loadtest", "--url", url, "--qps", "100", "--duration", "1",
            "--candidates", "20", "--json", str(out), "--client", client]  # fmt: skip
    assert main(args) == 0
    fig = json.loads(out.read_text())
    assert {"p50_ms", "p90_ms", "p99_ms", "p999_ms", "qps", "errors"} <= fig.keys()
    assert fig["errors"] == {} and fig["ok"] == fig["requests"] > 50
    assert 0 < fig["p50_ms"] <= fig["p90_ms"] <= fig["p99_ms"] <= fig["p999_ms"]
    assert fig["versions"] == {"0": fig["ok"]}


@pytest.mark.skipif(not has_redis(), reason="needs /usr/bin/redis-server")
@pytest.mark.parametrize("mode", MODES)
def test_a_server_catches_up_from_the_log_and_follows_it(model_dir: str, mode: str) -> None:
    import redis

    model, _ = load_model(model_dir)
    log = [
        encoded_update(model, 2, -1, "full"),  # older than the newest full: skipped
        encoded_update(model, 3, 2),
        encoded_update(model, 5, -1, "full"),
        encoded_update(model, 6, 5),
        encoded_update(model, 7, 6),
        encoded_update(model, 9, 8),  # a gap: refused, the server stays at 7
    ]
    req = {"user_id": 3, "candidates": [1, 2]}
    with redis_server() as url_redis:
        r = redis.Redis.from_url(url_redis)
        for u in log:
            r.xadd(UPDATES, {"version": u.version, "kind": u.kind, "data": wire.encode(u)})
        kw = {"max_batch": 32, "token": TOKEN, "redis": url_redis, "inference": mode}
        with serving(model_dir, **kw) as (server, url):
            assert server.metrics.updates["redis"] == 3  # 5 (full), 6, 7
            got = predict(url, req).json()
            assert got["version"] == 7
            np.testing.assert_allclose(got["scores"], [expect(7)] * 2, rtol=1e-6)
            # the follower applies what the trainer adds; the same update POSTed is stale
            late = encoded_update(model, 8, 7)
            r.xadd(UPDATES, {"version": 8, "kind": "delta", "data": wire.encode(late)})
            deadline = time.monotonic() + 10
            while httpx.get(f"{url}/healthz").json()["version"] != 8:
                assert time.monotonic() < deadline, "the follower did not apply version 8"
                time.sleep(0.05)
            assert post_update(url, late).status_code == 409
            np.testing.assert_allclose(predict(url, req).json()["scores"], [expect(8)] * 2)
        r.close()


def test_the_cli_serves_with_a_token_file_and_stops_on_sigterm(
    model_dir: str, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    port = free_port()
    cmd = [sys.executable, "-m", "anychip", "rec", "serve", "--model", model_dir, "--port",
           str(port), "--token-file", str(token), "--max-batch", "16"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(url, proc)
        r = predict(url, {"user_id": 1, "candidates": [4, 5]})
        assert r.status_code == 200 and r.json()["version"] == 0
        model, _ = load_model(model_dir)
        assert post_update(url, encoded_update(model, 1, 0)).json() == {"version": 1}
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out
        assert b"batch classes [17]" in out and b"stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_requests_only_replay_the_captures_made_at_start(served: Any) -> None:
    server, url = served
    if isinstance(server.model, InferenceProcess):
        pytest.skip("the captures are in the worker process (checked with the thread worker)")
    scorer = server.model._score
    assert len(scorer.captures) == len(server.model.classes) == 3  # 17, 33, 65 rows
    calls: list[Any] = []
    capture = scorer._capture

    def counted(*args: Any, **kw: Any) -> Any:
        calls.append(args[0])
        return capture(*args, **kw)

    scorer._capture = counted  # type: ignore[method-assign]
    try:
        rng = np.random.default_rng(2)
        for n in (1, 16, 17, 33, 40, 64):  # every class; users with long, short, no history
            for user in (1, 13, 405, 10**9):
                items = (rng.choice(1682, n, replace=False) + 1).tolist()
                assert predict(url, {"user_id": user, "candidates": items}).status_code == 200
    finally:
        del scorer._capture
    assert calls == []


def test_an_oversized_chunked_body_is_refused_without_reading_it_all(served: Any) -> None:
    _, url = served

    def chunks() -> Any:
        yield b'{"user_id": 1, "candidates": ['
        for _ in range(1000):  # 1 MB in all, no content-length
            yield b"1, " * 341 + b"\n"
        yield b"1]}"

    r = httpx.post(f"{url}/predict", content=chunks(), timeout=10)
    assert r.status_code == 413 and "exceeds" in r.json()["error"]
    assert predict(url, {"user_id": 1, "candidates": [2]}).status_code == 200


def test_a_dead_inference_process_fails_requests_instead_of_hanging(model_dir: str) -> None:
    with serving(model_dir, max_batch=16, inference="process") as (server, url):
        assert predict(url, {"user_id": 1, "candidates": [2, 3]}).status_code == 200
        os.kill(server.model.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while True:  # the event loop sees the pipe close: every later request gets a 500
            r = predict(url, {"user_id": 1, "candidates": [2, 3]})
            if r.status_code == 500 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert r.status_code == 500 and "inference process" in r.json()["error"]
        health = httpx.get(f"{url}/healthz")
        assert health.status_code == 503 and health.json()["status"] == "down"
