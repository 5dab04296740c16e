"""`anychip rec replay` (rec/replay.py) against a minimal /predict endpoint: events go to the
log in time order on the accelerated clock, each scored just before; the report's AUC is
sklearn's on the recorded scores; freshness is checked against hand-made timelines."""

from __future__ import annotations

import importlib.util
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from anychip.cli import main
from anychip.errors import ArgumentError
from anychip.rec import load_movielens, movielens, protocol, wire
from anychip.rec.log import (
    EVENTS,
    UPDATES,
    Event,
    MemoryLog,
    RedisServer,
    open_log,
    redis_available,
)  # fmt: skip
from anychip.rec.replay import Plan, Replayer, freshness, period_rows, report

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("recbole") is None, reason="needs `pip install --no-deps recbole`"
)


def _score(user: int, item: int) -> float:
    return ((user * 31 + item * 17) % 97) / 97.0


class _Predict(BaseHTTPRequestHandler):
    """POST /predict: scores by a fixed formula, at the version the test sets."""

    version = 3
    requests: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        items = sorted(body["candidates"], key=lambda i: -_score(body["user_id"], i))
        items = items[: body.get("k", 10)]
        scores = [_score(body["user_id"], i) for i in items]
        reply = {"version": type(self).version, "items": items, "scores": scores}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def server() -> Iterator[str]:
    _Predict.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Predict)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture(scope="module")
def ml() -> movielens.MovieLens:
    return load_movielens()


class _Clock:
    """A fake clock that only `sleep` moves (the HTTP round trips take no time)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_replay_scores_each_event_before_it_enters_the_log(
    ml: movielens.MovieLens, server: str, tmp_path: Path
) -> None:
    rows = period_rows(ml, "test")
    assert rows[0] == len(protocol.split(len(ml)).train) and len(rows) == 20_000
    log, path = MemoryLog(), tmp_path / "replay.jsonl"
    v3 = wire.Update(3, -1, "full", info={"events_upto": "0"})
    log.add(UPDATES, {"version": 3, "kind": "full", "data": wire.encode(v3)})
    with open(path, "w") as out:
        r = Replayer(ml, log, server, out, Plan(speed=1e9, candidates=20, limit=300,
                                                probe_every=0))  # fmt: skip
        assert r.run(rows) == 300
        r.close()
    entries = log.range(EVENTS)
    sent = [Event.parse(f) for _, f in entries]
    assert [(e.user_id, e.item_id, e.timestamp) for e in sent] == [
        (int(ml.user[i]), int(ml.item[i]), int(ml.timestamp[i])) for i in rows[:300]
    ]
    assert [e.rating for e in sent] == [float(ml.rating[i]) for i in rows[:300]]
    for req, e in zip(_Predict.requests, sent):
        assert req["user_id"] == e.user_id and req["candidates"][0] == e.item_id
        assert len(set(req["candidates"])) == 20
        assert req["context"] == {"timestamp": e.timestamp}
    records = [json.loads(line) for line in path.read_text().splitlines()]
    events = [x for x in records if x["type"] == "event"]
    assert [x["score"] for x in events] == [_score(e.user_id, e.item_id) for e in sent]
    assert [x["id"] for x in events] == [i for i, _ in entries]
    assert all(x["answered"] <= x["sent_at"] for x in events)  # asked before it was logged
    from sklearn.metrics import roc_auc_score

    summary = report(str(path))
    want = roc_auc_score([x["label"] for x in events], [x["score"] for x in events])
    assert summary["auc"] == pytest.approx(want, abs=1e-12)
    assert summary["events"] == summary["scored"] == 300
    assert (summary["versions_seen"], summary["first_version"], summary["last_version"]) == (
        1,
        3,
        3,
    )
    assert summary["freshness_measured"] == 0  # version 3 learned none of these events


def test_the_clock_runs_at_speed_and_max_seconds_bounds_the_run(
    ml: movielens.MovieLens, server: str
) -> None:
    rows = period_rows(ml, "test")[:400]
    clock, out = _Clock(), io.StringIO()
    plan = Plan(speed=600.0, candidates=5, max_seconds=120.0, probe_every=2.0)
    r = Replayer(ml, MemoryLog(), server, out, plan, clock=clock, sleep=clock.sleep)
    sent = r.run(rows)
    r.close()
    offsets = (ml.timestamp[rows] - ml.timestamp[rows[0]]) / 600.0
    assert sent == int((offsets <= 120.0).sum()) and 0 < sent < 400
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    asked = [x["asked"] - 1000.0 for x in records if x["type"] == "event"]
    np.testing.assert_allclose(asked, offsets[:sent], atol=1e-9)  # on schedule
    probes = [x["at"] - 1000.0 for x in records if x["type"] == "probe"]
    gaps = np.diff(offsets[:sent])
    assert len(probes) == int(sum(np.ceil(g / 2.0) - 1 for g in gaps if g > 0))


def test_freshness_of_hand_made_timelines() -> None:
    events = [("1", 10.0), ("2", 11.0), ("3", 12.0), ("4", 20.0)]
    responses = [(10.5, 0), (13.0, 1), (12.5, 1), (15.0, 2), (16.0, 1)]  # any order
    learned = {1: "1", 2: "3"}  # version 1 learned event 1; version 2 up to event 3
    got = freshness(events, responses, learned)
    np.testing.assert_allclose(got[:3], [2.5, 4.0, 3.0])
    assert np.isnan(got[3])  # no served version learned event 4
    # Redis ids order by (ms, seq); versions unknown to `learned` learned nothing
    got = freshness([("5-1", 0.0), ("5-2", 0.0), ("6-0", 1.0)],
                    [(1.0, 7), (2.0, 8), (3.0, 9)], {8: "5-2", 9: "6-0"})  # fmt: skip
    np.testing.assert_allclose(got, [2.0, 2.0, 2.0])
    assert freshness([], [], {}).size == 0


def test_report_refuses_records_without_scores(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"type": "probe", "version": 1, "at": 0.0}) + "\n")
    with pytest.raises(ArgumentError, match="no served scores"):
        report(str(path))
    path.write_text("{not json\n")
    with pytest.raises(ArgumentError, match="line 1: not JSON"):
        report(str(path))
    with pytest.raises(ArgumentError, match="cannot read"):
        report(str(tmp_path / "missing.jsonl"))


@pytest.mark.skipif(not redis_available(), reason="needs Debian's redis-server")
def test_cli_replays_into_redis_and_reports(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "replay.jsonl")
    with RedisServer() as redis:
        assert main(["rec", "replay", "--dataset", "ml-100k", "--from", "test", "--speed", "1e9",
                     "--redis", redis.url, "--url", server, "--candidates", "10",
                     "--limit", "120", "--probe-every", "0", "--out", path]) == 0  # fmt: skip
        log = open_log(redis.url)
        assert log.length(EVENTS) == 120
        log.close()
    assert main(["rec", "replay", "--report", path]) == 0
    text = capsys.readouterr().out
    summary = report(path)
    assert f"{summary['auc']:.4f}" in text and "freshness_p99_s" in text
    assert main(["rec", "replay", "--url", server]) != 0
    assert "give --redis URL and --url SERVER" in capsys.readouterr().err
