"""The trainer side of live sync (rec/follow.py): features of arriving events equal part 1's
features of the whole stream; the updates a follower publishes, applied in order to a copy
of the initial model, reproduce its parameters exactly; a delta holds exactly the rows of
the ids in its events; and the publisher speaks the protocol to a minimal HTTP endpoint
(wire bytes, bearer token, 409 -> a full update, 401 -> an error, a dead server -> the log)."""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from anychip.cli import main
from anychip.errors import ArgumentError
from anychip.frontend.tensor import Tensor
from anychip.rec import load_movielens, movielens, protocol, store, wire
from anychip.rec.features import MovieLensFeatures
from anychip.rec.follow import Follower, OnlineFeatures, Publisher, read_token
from anychip.rec.log import (
    EVENTS,
    UPDATES,
    Event,
    MemoryLog,
    RedisServer,
    id_key,
    open_log,
    redis_available,
)  # fmt: skip
from anychip.rec.table import DynamicEmbedding
from anychip.rec.train import Settings, build

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("recbole") is None, reason="needs `pip install --no-deps recbole`"
)
PAST, N = 2000, 2600  # events the model starts from; events in all
SMALL = {"dcn": {"num_cross_layers": 1, "deep_mlp": (8,)}}


@pytest.fixture(scope="module")
def ml() -> movielens.MovieLens:
    return load_movielens().first(N)


def _settings(**kw: Any) -> Settings:
    return Settings(dim=4, hparams=SMALL["dcn"], **kw)


def _events(ml: movielens.MovieLens, rows: range) -> list[Event]:
    return [
        Event(int(ml.user[i]), int(ml.item[i]), int(ml.label[i]), int(ml.timestamp[i]),
              0.0, float(ml.rating[i]))
        for i in rows
    ]  # fmt: skip


def _log_with(events: list[Event]) -> MemoryLog:
    log = MemoryLog()
    for e in events:
        log.add(EVENTS, e.fields())
    return log


def _follower(
    ml: movielens.MovieLens,
    log: MemoryLog,
    history: bool = True,
    dynamic: bool = False,
    batch_size: int = 64,
    **kw: Any,
) -> Follower:
    s = _settings(history=history, dynamic=dynamic)
    model = build("dcn", MovieLensFeatures(ml.first(PAST), history), s, "ref")
    feats = OnlineFeatures(ml, PAST, history)
    return Follower(model, feats, log, None, batch_size=batch_size, device="ref",
                    say=lambda s: None, **kw)  # fmt: skip


def _updates(log: MemoryLog) -> list[wire.Update]:
    return [wire.decode(f[b"data"]) for _, f in log.range(UPDATES)]


def test_features_of_arriving_events_equal_the_whole_streams(ml: movielens.MovieLens) -> None:
    whole = MovieLensFeatures(ml)  # part 1's features: computed once over all events
    online = OnlineFeatures(ml, PAST)
    rows = online.append(_events(ml, range(PAST, PAST + 150)))
    online.append(_events(ml, range(PAST + 150, PAST + 300)))
    for part in (rows, np.arange(PAST + 150, PAST + 300)):
        got, want = online.batch(part, pad_to=320), whole.batch(part, pad_to=320)
        assert got.sparse.keys() == want.sparse.keys()
        for k in want.sparse:
            np.testing.assert_array_equal(got.sparse[k].values, want.sparse[k].values)
            np.testing.assert_array_equal(got.sparse[k].offsets, want.sparse[k].offsets)
        np.testing.assert_array_equal(got.dense, want.dense)
        np.testing.assert_array_equal(got.labels, want.labels)


def test_updates_applied_to_the_initial_model_reproduce_the_trainer(
    ml: movielens.MovieLens,
) -> None:
    log = _log_with(_events(ml, range(PAST, N)))
    f = _follower(ml, log, full_every=100)
    initial = {k: v.numpy().copy() for k, v in f.model.state_dict().items()}
    f.publish("full")
    for _ in range(3):  # three deltas of 1-3 batches each
        for _ in range(2):
            f.step(block_ms=0)
        f.publish()
    while f.step(block_ms=0):
        pass
    f.publish()
    ups = _updates(log)
    assert [u.kind for u in ups] == ["full"] + ["delta"] * 4
    assert [u.version for u in ups] == [1, 2, 3, 4, 5]
    assert [u.base_version for u in ups[1:]] == [1, 2, 3, 4]
    assert ups[-1].info["events_upto"] == log.range(EVENTS)[-1][0]
    # apply by hand, in numpy: rows replace rows, dense values replace dense values
    state = {k: v.copy() for k, v in initial.items()}
    for u in ups[1:]:  # the deltas only: the full update is the initial model itself
        for key, value in u.dense.items():
            state[key] = value
        for name, t in u.tables.items():
            state[f"{name}.weight"][t.ids] = t.values
    trained = {k: v.numpy() for k, v in f.model.state_dict().items()}
    assert sum(not np.array_equal(trained[k], initial[k]) for k in trained) > 5  # it learned
    for k in trained:
        np.testing.assert_array_equal(state[k], trained[k], err_msg=k)
    # independently: a second model loaded with the applied state predicts as the trainer
    copy = build("dcn", MovieLensFeatures(ml.first(PAST)), _settings(seed=7), "ref")
    copy.load_state_dict({k: Tensor(v, device="ref") for k, v in state.items()})
    rows = np.arange(PAST, PAST + 64)
    want = f.trainer.predict(rows)
    f.trainer.model = copy
    np.testing.assert_array_equal(f.trainer.predict(rows), want)


def test_events_wait_for_a_whole_batch_or_the_next_publish(ml: movielens.MovieLens) -> None:
    """A read of fewer events than a batch is predicted at once but trained on only with
    the next ones (a whole batch) or before the next update, which then holds them."""
    events = _events(ml, range(PAST, PAST + 100))
    log = MemoryLog()
    f = _follower(ml, log, batch_size=64, full_every=100)
    before = {k: v.numpy().copy() for k, v in f.model.state_dict().items()}

    def unchanged() -> bool:
        state = f.model.state_dict()
        return all(np.array_equal(state[k].numpy(), v) for k, v in before.items())

    ids = [log.add(EVENTS, e.fields()) for e in events[:10]]
    assert f.step(block_ms=0) == 10
    assert len(f.stats.probs) == 10 and unchanged()  # predicted, not trained on
    ids += [log.add(EVENTS, e.fields()) for e in events[10:]]
    assert f.step(block_ms=0) == 64  # 74 pending, a whole batch: all trained on (64, 10)
    assert not unchanged()
    update = f.publish()
    assert update.info["events_upto"] == ids[73]
    assert f.step(block_ms=0) == 26
    kept = {k: v.numpy().copy() for k, v in f.model.state_dict().items()}
    assert f.publish().info["events_upto"] == ids[-1]  # trained on the 26 first
    assert any(not np.array_equal(v.numpy(), kept[k]) for k, v in f.model.state_dict().items())


def test_a_delta_holds_exactly_the_rows_of_its_events(ml: movielens.MovieLens) -> None:
    events = _events(ml, range(PAST, PAST + 300))
    log = _log_with(events)
    f = _follower(ml, log, history=False, full_every=100)  # no history: ids are the events'
    f.publish("full")
    f.step(block_ms=0)
    f.step(block_ms=0)
    f.publish()
    f.step(block_ms=0)
    f.publish()
    ups = _updates(log)[1:]
    ids = [e[0] for e in log.range(EVENTS)]
    start = 0
    for u in ups:
        end = ids.index(u.info["events_upto"]) + 1
        batch = events[start:end]
        users = sorted({e.user_id for e in batch})
        items = sorted({e.item_id for e in batch})
        ages = sorted({int(ml.side.users["age"][e.user_id]) for e in batch})
        hours = sorted({(e.timestamp % 86400) // 3600 for e in batch})
        assert u.tables["ebc.embedding_bags.user_id"].ids.tolist() == users
        assert u.tables["ebc.embedding_bags.item_id"].ids.tolist() == items
        assert u.tables["ebc.embedding_bags.age"].ids.tolist() == ages
        assert u.tables["ebc.embedding_bags.hour"].ids.tolist() == hours
        start = end
    assert start == 192  # 3 batches of 64


def test_dynamic_tables_publish_their_delta(ml: movielens.MovieLens) -> None:
    log = _log_with(_events(ml, range(PAST, PAST + 256)))
    f = _follower(ml, log, history=False, dynamic=True, full_every=100)
    f.publish("full")
    for _ in range(2):
        f.step(block_ms=0)
        f.publish()
    served: dict[str, dict[int, np.ndarray]] = {}
    for u in _updates(log):
        for name, t in u.tables.items():
            if name.endswith(".table"):
                rows = served.setdefault(name, {})
                for i, v in zip(t.ids.tolist(), t.values):
                    rows[i] = v
                for i in t.evicted.tolist():
                    rows.pop(i, None)
    assert set(served) == {"ebc.embedding_bags.user_id.table", "ebc.embedding_bags.item_id.table"}
    for name, rows in served.items():
        table = f.model.get_submodule(name)
        assert isinstance(table, DynamicEmbedding)
        ids = np.array(sorted(rows), np.int64)
        assert len(ids) == len(table)  # every admitted id, nothing else
        w = table.weight.numpy()[table.rows_of(ids)]
        np.testing.assert_array_equal(np.stack([rows[i] for i in ids.tolist()]), w)


# --- the publisher against a minimal endpoint ------------------------------------------
class _Endpoint(BaseHTTPRequestHandler):
    """POST /update as the protocol states it: the token, the wire bytes, the versions."""

    token = "s3cret"
    version = 0
    received: list[wire.Update] = []
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        cls = type(self)
        if self.path != "/update" or self.headers["Content-Type"] != "application/octet-stream":
            return self._reply(404, {"error": "not found"})
        if self.headers.get("Authorization") != f"Bearer {cls.token}":
            return self._reply(401, {"error": "bad token"})
        try:
            u = wire.decode(body)
        except ArgumentError as e:
            return self._reply(400, {"error": str(e)})
        with cls.lock:
            if u.version <= cls.version or (u.kind == "delta" and u.base_version != cls.version):
                return self._reply(409, {"error": "version", "version": cls.version})
            cls.received.append(u)
            cls.version = u.version
            return self._reply(200, {"version": u.version})

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def endpoint() -> Iterator[str]:
    _Endpoint.version, _Endpoint.received = 0, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_the_publisher_posts_wire_bytes_and_falls_back_to_full(
    ml: movielens.MovieLens, endpoint: str
) -> None:
    log = _log_with(_events(ml, range(PAST, PAST + 256)))
    f = _follower(ml, log, full_every=100, batch_size=32)
    f.publisher = Publisher(endpoint, "s3cret")
    f.publish("full")
    f.step(block_ms=0)
    f.publish()
    assert [(u.kind, u.version) for u in _Endpoint.received] == [("full", 1), ("delta", 2)]
    _Endpoint.version = 9  # another trainer moved the server on: the next delta is refused
    f.step(block_ms=0)
    up = f.publish()
    assert (up.kind, up.version) == ("full", 10) and f.stats.conflicts == 1
    assert _Endpoint.received[-1].kind == "full" and _Endpoint.version == 10
    # every update, also the refused delta, went to the log before its POST
    assert [(u.kind, u.version) for u in _updates(log)] == [
        ("full", 1), ("delta", 2), ("delta", 3), ("full", 10),
    ]  # fmt: skip
    got = _Endpoint.received[-1]
    state = f.model.state_dict()
    for name, t in got.tables.items():
        np.testing.assert_array_equal(t.values, state[f"{name}.weight"].numpy())
    # the server read the next delta from the log before its POST came: 409 at its own
    # version, which needs no full update
    f.step(block_ms=0)
    _Endpoint.version = f.version + 1
    up = f.publish()
    assert (up.kind, up.version) == ("delta", 11) and f.stats.via_log == 1
    assert f.stats.conflicts == 1 and _Endpoint.received[-1].version == 10


def test_a_wrong_token_is_an_error_and_a_dead_server_is_skipped(
    ml: movielens.MovieLens, endpoint: str
) -> None:
    log = _log_with(_events(ml, range(PAST, PAST + 64)))
    f = _follower(ml, log)
    f.publisher = Publisher(endpoint, "wrong")
    with pytest.raises(ArgumentError, match="refused with 401: bad token"):
        f.publish("full")
    assert _Endpoint.received == []
    f.publisher = Publisher("http://127.0.0.1:9", "s3cret")  # nothing listens on port 9
    f.step(block_ms=0)
    f.publish()
    assert f.stats.failed_posts == 1 and len(_updates(log)) == 2  # still in the log


def test_the_token_comes_from_a_file_or_the_environment(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANYCHIP_REC_TOKEN", "from-env")
    assert read_token(None) == "from-env"
    path = tmp_path / "token"
    path.write_text("  from-file\n")
    assert read_token(str(path)) == "from-file"
    path.write_text("\n")
    with pytest.raises(ArgumentError, match="is empty"):
        read_token(str(path))
    with pytest.raises(ArgumentError, match="cannot read the token file"):
        read_token(str(tmp_path / "missing"))


def test_follower_run_stops_when_idle_and_publishes_the_rest(ml: movielens.MovieLens) -> None:
    log = _log_with(_events(ml, range(PAST, PAST + 100)))
    ticks = iter(range(10_000))
    f = _follower(ml, log, sync_every=1e9, clock=lambda: float(next(ticks)))
    stats = f.run(idle_exit=3)
    assert stats.events == 100 and len(stats.probs) == 100
    ups = _updates(log)
    assert [u.kind for u in ups] == ["full", "delta"]
    assert ups[-1].info["events_upto"] == log.range(EVENTS)[-1][0]
    assert id_key(ups[-1].info["events_upto"]) == (100, 0)
    assert all(0 < p < 1 for p in stats.probs)


@pytest.mark.skipif(not redis_available(), reason="needs Debian's redis-server")
def test_cli_follows_redis_and_publishes_to_the_server(
    ml: movielens.MovieLens, endpoint: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    n_train = len(protocol.split(N).train)  # 2080: the test period follows
    with RedisServer() as redis:
        log = open_log(redis.url)
        for e in _events(ml, range(n_train, N)):
            log.add(EVENTS, e.fields())
        # --limit: the stream is the first N events; it trains on their train period first
        code = main([
            "rec", "train", "--follow", redis.url, "--publish", endpoint, "--model", "dcn",
            "--limit", str(N), "--epochs", "1", "--dim", "4", "--device", "ref",
            "--save", str(tmp_path / "start"), "--idle-exit", "1", "--token-file", str(token),
            "--json", str(tmp_path / "follow.json"),
        ])  # fmt: skip
        assert code == 0
        ups = [wire.decode(f[b"data"]) for _, f in log.range(UPDATES)]
        last_event = log.range(EVENTS)[-1][0]
        log.close()
    out = json.loads((tmp_path / "follow.json").read_text())
    assert out["events"] == N - n_train == 520
    assert [(u.kind, u.version) for u in _Endpoint.received] == [(u.kind, u.version) for u in ups]
    assert ups[0].kind == "full" and ups[-1].info["events_upto"] == last_event
    # the starting model on disk is the full update's: what a server starts from
    model, feature_store = store.load(str(tmp_path / "start"), "ref")
    state = model.state_dict()
    for name, t in ups[0].tables.items():
        np.testing.assert_array_equal(t.values, state[f"{name}.weight"].numpy())
    # its feature store holds the train period only (nothing of the events to come)
    seen = np.diff(feature_store["user_recent_items_offsets"])
    user = int(ml.user[PAST + 5])
    assert seen[user] == min(20, int((ml.user[:n_train] == user).sum()))
    assert "online AUC" in capsys.readouterr().out
