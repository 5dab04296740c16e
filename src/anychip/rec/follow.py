"""`anychip rec train --follow`: train online from the event log and publish model updates.

A `Follower` reads `anychip:rec:events` in order; it predicts the events it reads at
once (what the model knew before: the online protocol's progressive validation) and
trains on them in whole batches, or on what is pending before it publishes. Every
`sync_every` seconds it builds an update (rec.wire): the dense parameters and the
embedding rows changed since the last version (the rows the trained batches touched in
plain tables, `DynamicEmbedding.delta` in dynamic ones), XADDs it to
`anychip:rec:updates` and then POSTs it to the server (`Publisher`). Tables train with
`SparseAdam` (only touched rows move), so the touched rows are exactly the rows that
changed and a server that applies every update holds the trainer's parameters.

>>> f = Follower(model, OnlineFeatures(ml, past=80_000), log, publisher)  # doctest: +SKIP
>>> f.run(max_events=1_000)                                                # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from anychip import optim
from anychip.errors import ArgumentError
from anychip.nn.module import Module
from anychip.rec import wire
from anychip.rec.collection import EmbeddingBagCollection
from anychip.rec.features import Batch, MovieLensFeatures
from anychip.rec.history import K as HISTORY_K
from anychip.rec.log import EVENTS, UPDATES, Event, Log, Reader, id_key
from anychip.rec.movielens import MovieLens
from anychip.rec.table import DynamicEmbedding
from anychip.rec.train import Trainer

TOKEN_ENV = "ANYCHIP_REC_TOKEN"


class OnlineFeatures:
    """MovieLens features of events as they arrive: the dataset's side features and the
    behaviour features (rec.history) of each event from the events before it. Holds the
    growing stream (the first `past` dataset events, then each appended event) and
    computes a batch from the past events of its users and items only (all a behaviour
    feature reads), so its rows equal `MovieLensFeatures` over the whole stream."""

    def __init__(
        self,
        ml: MovieLens,
        past: int,
        history: bool = True,
        id_rows: dict[str, int] | None = None,
        k: int = HISTORY_K,
    ) -> None:
        self.side, self.history, self.k = ml.side, history, k
        self.id_rows = dict(id_rows) if id_rows is not None else {
            "user_id": ml.num_users, "item_id": ml.num_items,
        }  # fmt: skip
        n = int(past)
        cap = max(1024, 2 * n)
        self._cols: dict[str, np.ndarray] = {
            "user": np.zeros(cap, np.int64), "item": np.zeros(cap, np.int64),
            "rating": np.zeros(cap, np.float32), "timestamp": np.zeros(cap, np.int64),
        }  # fmt: skip
        for name in self._cols:
            self._cols[name][:n] = getattr(ml, name)[:n]
        self.n = n
        probe = MovieLensFeatures(ml.first(min(max(n, 1), len(ml))), history, k)
        self.keys, self.dense_names, self.dense_in = probe.keys, probe.dense_names, probe.dense_in
        self.last_batch: Batch | None = None

    def append(self, events: list[Event]) -> np.ndarray:
        """Add events (in log order) to the stream; returns their rows."""
        m = len(events)
        if self.n + m > len(self._cols["user"]):
            cap = 2 * (self.n + m)
            for name, col in self._cols.items():
                grown = np.zeros(cap, col.dtype)
                grown[: self.n] = col[: self.n]
                self._cols[name] = grown
        rows = np.arange(self.n, self.n + m)
        for name, values in (
            ("user", [e.user_id for e in events]),
            ("item", [e.item_id for e in events]),
            ("rating", [e.stars for e in events]),
            ("timestamp", [e.timestamp for e in events]),
        ):
            self._cols[name][rows] = values
        self.n += m
        return rows

    def column(self, name: str) -> np.ndarray:
        out: np.ndarray = self._cols[name][: self.n]
        return out

    def batch(self, rows: np.ndarray, pad_to: int | None = None) -> Batch:
        """Events `rows` of the stream as a Batch (as MovieLensFeatures.batch)."""
        rows = np.asarray(rows, np.int64)
        end = int(rows.max()) + 1 if len(rows) else 0
        user, item = self.column("user")[:end], self.column("item")[:end]
        users = self.side.users["age"]
        if len(rows) and (
            user[rows].max() >= len(users) or item[rows].max() >= len(self.side.year)
        ):
            raise ArgumentError(
                f"rec.follow: an event names user {int(user[rows].max())} or item "
                f"{int(item[rows].max())}, beyond the dataset's {len(users) - 1} users and "
                f"{len(self.side.year) - 1} items (its side features)"
            )
        keep = np.isin(user, user[rows]) | np.isin(item, item[rows])
        keep[rows] = True
        sub = np.flatnonzero(keep)  # in stream order
        ml = MovieLens(
            user[sub], item[sub], self.column("rating")[sub],
            self.column("timestamp")[sub], self.side,
        )  # fmt: skip
        f = MovieLensFeatures(ml, self.history, self.k)
        f.id_rows = self.id_rows
        b = f.batch(np.searchsorted(sub, rows), pad_to)
        self.last_batch = b
        return b


# --- publishing ------------------------------------------------------------------------
class Conflict(Exception):
    """The server refused an update with 409: it is at `version`."""

    def __init__(self, version: int, message: str) -> None:
        super().__init__(message)
        self.version = version


class Unreachable(Exception):
    """The POST did not complete (connection refused, reset, timed out)."""


def read_token(path: str | None) -> str | None:
    """The shared update token: the content of `path` (stripped), else $ANYCHIP_REC_TOKEN."""
    if path is not None:
        try:
            with open(path) as f:
                token = f.read().strip()
        except OSError as e:
            raise ArgumentError(f"rec: cannot read the token file {path!r} ({e})") from None
        if not token:
            raise ArgumentError(f"rec: the token file {path!r} is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


class Publisher:
    """POSTs updates to a server's /update: wire bytes, `Authorization: Bearer <token>`.
    Returns the server's version; 409 raises `Conflict`, a transport failure
    `Unreachable`, any other refusal (401, 400, ...) `ArgumentError` with the reply."""

    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        import httpx

        self.url = url.rstrip("/") + "/update"
        self.headers = {"Content-Type": "application/octet-stream"}
        if token is not None:
            self.headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(timeout=timeout)

    def post(self, update: wire.Update) -> int:
        import httpx

        body = wire.encode(update)
        try:
            r = self._client.post(self.url, content=body, headers=self.headers)
        except httpx.TransportError as e:
            raise Unreachable(f"POST {self.url}: {type(e).__name__}: {e}") from None
        reply = _json(r)
        if r.status_code == 200:
            return int(reply.get("version", update.version))
        if r.status_code == 409:
            return_version = int(reply.get("version", -1))
            raise Conflict(return_version, str(reply.get("error", r.text)))
        raise ArgumentError(
            f"rec.follow: POST {self.url} of {update.kind} version {update.version} "
            f"({len(body)} bytes) was refused with {r.status_code}: {reply.get('error', r.text)}"
        )

    def close(self) -> None:
        self._client.close()


def _json(r: Any) -> dict[str, Any]:
    try:
        out = r.json()
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


# --- what changed: the rows of an update --------------------------------------------
@dataclass
class _Table:
    name: str  # the state key without ".weight" (rec.wire's table name)
    module: Module
    features: tuple[str, ...]
    dynamic: DynamicEmbedding | None = None
    since: int = 0  # a dynamic table's version at the last update
    touched: set[int] = field(default_factory=set)


def _tables(model: Module) -> list[_Table]:
    out = []
    for path, mod in model.named_modules():
        if not isinstance(mod, EmbeddingBagCollection):
            continue
        for cfg in mod.embedding_bag_configs():
            table = mod.embedding_bags[cfg.name]
            name = f"{path}.embedding_bags.{cfg.name}" if path else f"embedding_bags.{cfg.name}"
            dyn = getattr(table, "table", None)
            if isinstance(dyn, DynamicEmbedding):
                out.append(_Table(f"{name}.table", table, tuple(cfg.feature_names), dyn))
            else:
                out.append(_Table(name, table, tuple(cfg.feature_names)))
    return out


class Changes:
    """The rows of `model`'s tables that changed since the last update, and the updates."""

    def __init__(self, model: Module) -> None:
        self.model = model
        self.tables = _tables(model)
        names = {t.name for t in self.tables}
        self.dense_keys = [
            k for k in model.state_dict() if not any(k.startswith(n + ".") for n in names)
        ]
        self._by_feature = {f: t for t in self.tables for f in t.features}

    def touch(self, b: Batch) -> None:
        """Record the rows a training batch reads (plain tables)."""
        for f, j in b.sparse.items():
            t = self._by_feature.get(f)
            if t is not None and t.dynamic is None:
                t.touched.update(np.unique(j.values).tolist())

    def update(self, kind: str, version: int, base: int, info: dict[str, str]) -> wire.Update:
        """A "delta" (rows changed since the last update) or a "full" update; either way
        the dense parameters whole, and the change records start again from here."""
        state = self.model.state_dict()
        dense = {k: state[k].numpy().copy() for k in self.dense_keys}
        tables = {}
        for t in self.tables:
            if t.dynamic is not None:
                d = t.dynamic.delta(-1 if kind == "full" else t.since)
                tables[t.name] = wire.TableRows(d.ids, d.rows, d.evicted)
                t.since = d.version
                continue
            w = state[f"{t.name}.weight"].numpy()
            ids = np.arange(len(w)) if kind == "full" else np.array(sorted(t.touched), np.int64)
            tables[t.name] = wire.TableRows(ids.astype(np.int64), w[ids].copy())
            t.touched.clear()
        return wire.Update(version, base, kind, dense, tables, info)


def optimizers(model: Module, lr: float) -> list[optim.Optimizer]:
    """SparseAdam on the tables (untouched rows keep their values), Adam on the rest."""
    changes = Changes(model)
    table_params = [t.module.weight for t in changes.tables if t.dynamic is None]
    table_params += [t.dynamic.weight for t in changes.tables if t.dynamic is not None]
    ids = {id(p) for p in table_params}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [optim.SparseAdam(table_params, lr=lr), optim.Adam(rest, lr=lr)]


# --- the follow loop ------------------------------------------------------------------
@dataclass
class Stats:
    events: int = 0
    updates: int = 0
    full: int = 0
    conflicts: int = 0
    via_log: int = 0  # POSTs answered 409 because the server had the update from the log
    failed_posts: int = 0
    probs: list[float] = field(default_factory=list)  # predicted before training on each
    labels: list[float] = field(default_factory=list)


class Follower:
    """Trains `model` online on the events of `log` and publishes updates (module doc)."""

    def __init__(
        self,
        model: Module,
        features: OnlineFeatures,
        log: Log,
        publisher: Publisher | None = None,
        *,
        lr: float = 1e-3,
        batch_size: int = 256,
        device: Any = None,
        version: int = 0,
        sync_every: float = 10.0,
        full_every: int = 20,
        position: str = "0",
        clock: Callable[[], float] = time.monotonic,
        say: Callable[[str], None] | None = None,
    ) -> None:
        if sync_every <= 0 or full_every < 1:
            raise ArgumentError(
                f"rec.follow: sync_every {sync_every} must be > 0 and full_every {full_every} >= 1"
            )
        self.model, self.features, self.log, self.publisher = model, features, log, publisher
        self.trainer = Trainer(model, lambda m: optimizers(m, lr), features, batch_size, device)  # type: ignore[arg-type]
        self.changes = Changes(model)
        self.reader = Reader(log, EVENTS, position)
        self.version = max(version, _last_version(log))
        self.sync_every, self.full_every, self.clock = sync_every, full_every, clock
        self.say = say or (lambda s: print(s, file=sys.stderr, flush=True))
        self.stats = Stats()
        self.events_upto = ""  # id of the last event trained on
        self._upto_read = ""  # id of the last event read (predicted, maybe not trained on)
        self._pending = np.zeros(0, np.int64)  # rows read and not yet trained on
        self._since_full = 0
        self._last_sync = clock()
        self._dirty = False

    def step(self, block_ms: int = 100) -> int:
        """Read up to a batch of events (waiting up to `block_ms` for the first) and
        predict them; train once a whole batch is pending. Returns how many were read."""
        entries = self.reader.read(self.trainer.batch_size, block_ms)
        if not entries:
            return 0
        events = [Event.parse(f) for _, f in entries]
        rows = self.features.append(events)
        self.stats.probs += self.trainer.predict(rows).tolist()
        self.stats.labels += [float(e.label) for e in events]
        self._pending = np.concatenate([self._pending, rows])
        self._upto_read = entries[-1][0]
        self.stats.events += len(events)
        self._dirty = True
        if len(self._pending) >= self.trainer.batch_size:
            self.train()
        return len(events)

    def train(self) -> None:
        """Train on the pending events, a batch at a time. Events wait for a whole batch
        (or for the next publish): a step on the few events that arrive between two reads
        moves every parameter by Adam's full step on a noisy gradient, and a model trained
        so serves worse a sync period later than one trained as part 1 trains (batches of
        `batch_size`; docs/rec-serving.md, "Why served scores were lower")."""
        size = self.trainer.batch_size
        for i in range(0, len(self._pending), size):
            self.trainer.fit(self._pending[i : i + size])
            assert self.features.last_batch is not None
            self.changes.touch(self.features.last_batch)
        self._pending = np.zeros(0, np.int64)
        self.events_upto = self._upto_read

    def publish(self, kind: str = "delta") -> wire.Update:
        """Build the next update, XADD it to the updates stream, then POST it; on 409 send
        a "full" update at a version above the server's, unless the server is at this
        update's version already (it read it from the log first)."""
        self.train()  # an update holds every event read so far
        if self._since_full + 1 >= self.full_every:
            kind = "full"
        update = self._next(kind)
        self._send(update)
        conflict = self._post(update)
        # 409 at this very version: the server already applied it from the log (it was
        # XADDed first); at any other, the server cannot apply the delta: send it all
        if conflict is not None and conflict != update.version and update.kind == "delta":
            full = self._next("full", at_least=conflict + 1)
            self._send(full)
            self._post(full)
            update = full
        self._last_sync, self._dirty = self.clock(), False
        return update

    def _next(self, kind: str, at_least: int = 0) -> wire.Update:
        version = max(self.version + 1, at_least)
        info = {"events_upto": self.events_upto, "published_at": repr(time.time())}
        base = -1 if kind == "full" else self.version
        update = self.changes.update(kind, version, base, info)
        self.version = version
        self._since_full = 0 if kind == "full" else self._since_full + 1
        self.stats.updates += 1
        self.stats.full += kind == "full"
        return update

    def _send(self, update: wire.Update) -> None:
        """XADD first: a server that misses the POST still finds the update in the log."""
        fields = {"version": update.version, "kind": update.kind, "data": wire.encode(update)}
        self.log.add(UPDATES, fields, maxlen=max(100, 4 * self.full_every))

    def _post(self, update: wire.Update) -> int | None:
        """POST `update`; returns the server's version if it answered 409, else None. An
        unreachable server is reported and skipped (it catches up from the log)."""
        if self.publisher is None:
            return None
        try:
            self.publisher.post(update)
        except Conflict as c:
            if c.version == update.version:
                self.stats.via_log += 1
            else:
                self.stats.conflicts += 1
                self.say(f"rec.follow: server at version {c.version} refused {update.kind} "
                         f"{update.version} ({c})")  # fmt: skip
            return c.version
        except Unreachable as e:
            self.stats.failed_posts += 1
            self.say(f"rec.follow: {e}; the server can catch up from {UPDATES}")
        return None

    def run(
        self,
        max_events: int | None = None,
        idle_exit: float | None = None,
        max_seconds: float | None = None,
    ) -> Stats:
        """Follow the log: publish a full update first, then train and publish every
        `sync_every` seconds; stop after `max_events`, `idle_exit` seconds without an
        event, or `max_seconds`, with a last update if anything is unpublished."""
        self.publish("full")
        start = last_event = self.clock()
        while True:
            if max_events is not None and self.stats.events >= max_events:
                break
            n = self.step()
            now = self.clock()
            if n:
                last_event = now
            if self._dirty and now - self._last_sync >= self.sync_every:
                self.publish()
            if idle_exit is not None and now - last_event >= idle_exit:
                break
            if max_seconds is not None and now - start >= max_seconds:
                break
        if self._dirty:
            self.publish()
        return self.stats


def _last_version(log: Log) -> int:
    """The newest version in the updates stream (0 when it is empty), so a restarted
    trainer goes on above it."""
    entries = log.range(UPDATES)
    if not entries:
        return 0
    last = max(entries, key=lambda e: id_key(e[0]))[1]
    return int(last.get(b"version", b"0"))


# --- `anychip rec train --follow` --------------------------------------------------------
def from_snapshot(path: str, device: Any = None) -> tuple[Module, dict[str, Any], int]:
    """(model, config, version) of a model directory (rec.store); version 0 unless the
    config names one."""
    from anychip.rec import store

    model, feature_store = store.load(path, device)
    config = feature_store["config"]
    return model, config, int(config.get("version", 0))


def from_dataset(
    model_name: str, ml: MovieLens, settings: Any, device: Any = None, progress: Any = None
) -> tuple[Module, Any]:
    """`model_name` after the static training of part 1's protocols (epochs on the fit
    period, early stopping on the validation period, then one pass over it): the model as
    it stands at the start of the test period. Returns (model, trainer)."""
    from anychip.rec import protocol, train

    features = MovieLensFeatures(ml, settings.history, hash_fraction=settings.hash_fraction)
    model = train.build(model_name, features, settings, device)
    trainer = train.Trainer(
        model, train.adam(settings.lr), features, settings.run.batch_size, device
    )
    kwargs = {} if progress is None else {"progress": progress}
    protocol.train_static(trainer, ml.label, settings.run, **kwargs)
    return model, trainer


def save_start(path: str, model_name: str, trainer: Any, ml: MovieLens, settings: Any) -> None:
    """Write the model of the start of the test period with the feature store of the
    train period (what a server starts from: nothing of the test period in it)."""
    from types import SimpleNamespace

    from anychip.rec import protocol, store

    n = len(protocol.split(len(ml)).train)
    past = MovieLensFeatures(ml.first(n), settings.history, hash_fraction=settings.hash_fraction)
    store.save(path, model_name, SimpleNamespace(model=trainer.model, features=past), settings)


def main(args: Any) -> int:
    """`anychip rec train --follow URL ...` (rec/cli.py's arguments)."""
    from anychip.rec import metrics, models, protocol
    from anychip.rec.log import open_log
    from anychip.rec.train import Settings, load_dataset

    log = open_log(args.follow)
    ml = load_dataset(args.dataset, args.path)
    if args.limit is not None:
        ml = ml.first(args.limit)
    n_train = len(protocol.split(len(ml)).train)
    say = print
    if os.path.isdir(args.model):
        model, config, version = from_snapshot(args.model, args.device)
        history, id_rows = bool(config["history"]), dict(config["id_rows"])
        say(f"rec train --follow: {config['model']} from {args.model} (version {version})")
    elif args.model in models.MODELS:
        cfg = protocol.Config(batch_size=args.batch_size, max_epochs=args.epochs, seed=args.seed)
        settings = Settings(
            dim=args.dim, lr=args.lr, history=not args.no_history, seed=args.seed, run=cfg
        )
        say(f"rec train --follow: {args.model} trained on {args.dataset}'s train period first")
        model, trainer = from_dataset(args.model, ml, settings, args.device)
        history, id_rows, version = settings.history, dict(trainer.features.id_rows), 0
        if args.save:
            save_start(args.save, args.model, trainer, ml, settings)
            say(f"saved the starting model (version 0) to {args.save}")
    else:
        raise ArgumentError(
            f"rec train --follow: --model {args.model!r} is neither a saved model directory "
            f"nor one of {models.MODELS}"
        )
    publisher = Publisher(args.publish, read_token(args.token_file)) if args.publish else None
    follower = Follower(
        model, OnlineFeatures(ml, n_train, history, id_rows), log, publisher,
        lr=args.lr, batch_size=args.batch_size, device=args.device, version=version,
        sync_every=args.sync_every, full_every=args.full_every, say=say,
    )  # fmt: skip
    say(
        f"following {args.follow}; publishing {'to ' + args.publish if publisher else 'to the log'}"
    )
    stats = follower.run(args.max_events, args.idle_exit, args.max_seconds)
    y = np.asarray(stats.labels)
    auc = metrics.auc(stats.probs, y) if 0 < y.sum() < len(y) else float("nan")
    say(f"events {stats.events}, updates {stats.updates} ({stats.full} full), conflicts "
        f"{stats.conflicts}, applied from the log first {stats.via_log}, failed posts "
        f"{stats.failed_posts}, version {follower.version}, online AUC {auc:.4f}")  # fmt: skip
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump({"events": stats.events, "updates": stats.updates, "full": stats.full,
                       "conflicts": stats.conflicts, "via_log": stats.via_log,
                       "failed_posts": stats.failed_posts,
                       "version": follower.version, "online_auc": auc}, f, indent=2)  # fmt: skip
    if publisher is not None:
        publisher.close()
    log.close()
    return 0
