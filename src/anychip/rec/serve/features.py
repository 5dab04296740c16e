"""A served request's features from the model directory's feature store, as one padded
batch of fixed shapes: the candidates of several requests side by side, padded to a
batch size class, each sparse key padded to a fixed number of ids, so every batch of one
class runs the same replayed kernels.

The behaviour features (recent and liked items, user and item rates) start at the store's
snapshot and, with `observe`, follow the events stream (rec.history.State), so a request
reads what its user and item did up to it, as the trainer's features do.

Unknown users and items (ids outside the store) read row 0 of the store and of the id
tables: the store's row 0 is no one (MovieLens ids start at 1), so it holds what a user or
item with no past has: no side features, empty histories, zero behaviour statistics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from anychip.errors import ArgumentError
from anychip.rec import history, movielens
from anychip.rec.features import HISTORY_FEATURES
from anychip.rec.log import Event


@dataclass(frozen=True)
class Query:
    """One request: score `items` (n,) for `user` at unix time `timestamp`."""

    user: int
    items: np.ndarray
    timestamp: int


REQUESTS = 16  # the most requests one batch holds: user-side keys have REQUESTS + 1 bags
# keys that depend on the request only (its user and time), not on the candidate
USER_SIDE = frozenset({"user_id", *movielens.USER_FEATURES, "hour", "weekday", *HISTORY_FEATURES})


@dataclass(frozen=True)
class Padded:
    """A batch of `rows` real rows padded to `size` rows, as a variable batch: per key,
    `values` holds that key's ids (a fixed count per size) and `lengths` its bag lengths,
    key-major as a KeyedJaggedTensor takes them; `strides` the bags of each key (`size`
    for a candidate's keys, REQUESTS + 1 for a request's: one bag per request) and
    `inverse` (keys, size) the bag each row reads; `dense` (size, dense_in)."""

    values: np.ndarray
    lengths: np.ndarray
    strides: list[int]
    inverse: np.ndarray
    dense: np.ndarray
    rows: int
    size: int


def _bags(values: np.ndarray, offsets: np.ndarray) -> movielens.Jagged:
    return movielens.Jagged(np.asarray(values, np.int64), np.asarray(offsets, np.int64))


class ServingFeatures:
    """The feature store of a saved model (rec.store.load's second result) and the batch
    layout of its model: `batch(queries, size)` -> Padded."""

    def __init__(self, store: dict[str, Any]) -> None:
        cfg = store["config"]
        self.keys: tuple[str, ...] = tuple(cfg["sparse_features"])
        self.dense_in = int(cfg["dense_in"])
        self.history = bool(cfg["history"])
        self.id_rows = {k: int(v) for k, v in cfg["id_rows"].items()}
        self.users = {k: np.asarray(store[f"user_{k}"], np.int64) for k in movielens.USER_FEATURES}
        self.num_users = len(self.users["age"])
        self.year = np.asarray(store["item_year"], np.int64)
        self.num_items = len(self.year)
        self.genres = _bags(store["item_genres_values"], store["item_genres_offsets"])
        self.behaviour = _behaviour(store) if self.history else None
        unknown = set(self.keys) - {*movielens.FEATURES, *HISTORY_FEATURES}
        if unknown:
            raise ArgumentError(f"rec serve: the model reads features {sorted(unknown)} "
                                "this server does not know")  # fmt: skip
        # the most ids a row can hold per key: every batch of `size` rows gets size * width
        # ids of each key (the last padding row holds the filler), so its shapes are fixed
        widths = dict.fromkeys(self.keys, 1)
        widths["genres"] = max(1, int(self.genres.lengths.max(initial=0)))
        if self.behaviour is not None:
            widths.update(dict.fromkeys(HISTORY_FEATURES, self.behaviour.k))
        self.widths = widths

    def observe(self, events: list[Event]) -> None:
        """Count events of the stream (in log order) in the behaviour features, so a
        request reads what its user and item did up to it, as the trainer's features do."""
        if self.behaviour is not None:
            self.behaviour.observe([(e.user_id, e.item_id, e.stars, e.timestamp) for e in events])

    def known_users(self, users: np.ndarray) -> np.ndarray:
        """Raw user ids with those outside the store (cold start) as 0."""
        return np.where((users > 0) & (users < self.num_users), users, 0)

    def known_items(self, items: np.ndarray) -> np.ndarray:
        return np.where((items > 0) & (items < self.num_items), items, 0)

    def empty(self, size: int) -> Padded:
        """A batch of `size` rows of the cold-start user and item (a warm-up batch)."""
        return self.batch([Query(0, np.zeros(size - 1, np.int64), 0)], size)

    def batch(self, queries: list[Query], size: int) -> Padded:
        """The queries' candidates as rows 0..n-1 of a batch of `size` rows (n < size: the
        last row is always padding, holding each candidate key's filler ids). A request's
        keys (USER_SIDE: its user's features and history, its time) are laid out once per
        request, not once per candidate: bag q of such a key is request q's, the last of
        its REQUESTS + 1 bags holds the filler, and `inverse` sends each row to its
        request's bag (padding rows to the filler)."""
        counts = [len(q.items) for q in queries]
        n, nq = sum(counts), len(queries)
        if n >= size or nq > REQUESTS:
            raise ArgumentError(f"rec serve: {n} rows of {nq} requests do not fit a batch of "
                                f"{size} rows (one kept for padding) and {REQUESTS} "
                                "requests")  # fmt: skip
        raw_items = np.concatenate([q.items for q in queries]).astype(np.int64)
        req_stamps = np.array([q.timestamp for q in queries], np.int64)
        users = self.known_users(np.array([q.user for q in queries], np.int64))
        i = self.known_items(raw_items)
        per = np.repeat(np.arange(nq), counts)  # each row's request
        feats: dict[str, movielens.Jagged] = {
            "user_id": _single(users % self.id_rows["user_id"]),
            "item_id": _single(i % self.id_rows["item_id"]),
            "genres": self.genres.take(i),
            "year": _single(self.year[i]),
        }
        for k in movielens.USER_FEATURES:
            feats[k] = _single(self.users[k][users])
        hour, weekday = movielens.time_features(req_stamps)
        feats["hour"], feats["weekday"] = _single(hour), _single(weekday)
        dense = np.zeros((size, self.dense_in), np.float32)
        if self.behaviour is not None:
            bags, user_dense, dense[:n, 3:] = self.behaviour.read(users, i, int(req_stamps.max()))
            dense[:n, :3] = user_dense[per]
            for k, j in bags.items():
                feats[k] = movielens.Jagged(j.values % self.id_rows["item_id"], j.offsets)
        values, lengths, strides = [], [], []
        inverse = np.empty((len(self.keys), size), np.int64)
        for at, k in enumerate(self.keys):
            j, bags_of = feats[k], (REQUESTS + 1 if k in USER_SIDE else size)
            fill = bags_of * self.widths[k] - len(j.values)  # ids of the last (filler) bag
            lens = np.zeros(bags_of, np.int64)
            lens[: len(j.lengths)] = j.lengths
            lens[-1] = fill
            values += [j.values, np.zeros(fill, np.int64)]
            lengths.append(lens)
            strides.append(bags_of)
            if k in USER_SIDE:
                inverse[at, :n], inverse[at, n:] = per, bags_of - 1
            else:
                inverse[at] = np.arange(size)
        return Padded(
            np.concatenate(values), np.concatenate(lengths), strides, inverse, dense, n, size
        )


def _behaviour(store: dict[str, Any]) -> history.State:
    """The store's behaviour state, to follow the events from. A store saved before the
    raw sums were kept holds only their dense features: the sums are recovered from them."""

    def bags(k: str) -> movielens.Jagged:
        return _bags(store[f"user_{k}_values"], store[f"user_{k}_offsets"])

    user_sums = store.get("user_sums")
    item_sums = store.get("item_sums")
    snap = history.Snapshot(
        bags("recent_items"), bags("recent_liked"), store["user_dense"], store["item_dense"],
        history.sums_of(store["user_dense"]) if user_sums is None else user_sums,
        history.sums_of(store["item_dense"]) if item_sums is None else item_sums,
    )  # fmt: skip
    return history.State(snap, int(store["config"].get("history_k", history.K)))


def _single(ids: np.ndarray) -> movielens.Jagged:
    return movielens.Jagged(ids.astype(np.int64), np.arange(len(ids) + 1, dtype=np.int64))


def now() -> int:
    """The unix time of a request that names none (its hour and weekday features)."""
    return int(time.time())
