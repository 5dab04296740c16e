"""The MovieLens feature set as framework-neutral numpy batches, and the tables it needs.

`MovieLensFeatures(ml, history=True)` precomputes every event's features once (side
features joined by id, time of day and week, and with `history` the behaviour features of
`anychip.rec.history`); `batch(rows, pad_to)` cuts events `rows` into a `Batch` padded with
zero-weight rows to a fixed size, so a compiled training step sees one shape.

>>> from anychip.rec import load_movielens         # doctest: +SKIP
>>> f = MovieLensFeatures(load_movielens())         # doctest: +SKIP
>>> f.batch(np.arange(4), pad_to=8).dense.shape     # doctest: +SKIP
(8, 6)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anychip.errors import ArgumentError
from anychip.rec import history, movielens
from anychip.rec.movielens import Jagged, MovieLens

# Features read from the shared item table besides the candidate item itself.
HISTORY_FEATURES = ("recent_items", "recent_liked")


@dataclass(frozen=True)
class Table:
    """A framework-neutral table spec: `rows` x `dim`, read by `features`, `pooling`."""

    name: str
    rows: int
    features: tuple[str, ...]
    pooling: str = "sum"


@dataclass(frozen=True)
class Batch:
    dense: np.ndarray  # (B, D) float32
    sparse: dict[str, Jagged]  # feature -> B bags of int64 ids
    labels: np.ndarray  # (B,) float32
    weights: np.ndarray  # (B,) float32: 1 for events, 0 for padding rows
    users: np.ndarray  # (B,) int64 raw user ids (0 for padding)

    @property
    def size(self) -> int:
        return len(self.labels)

    def lengths(self, keys: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(values, lengths) of `keys` key-major, as a KeyedJaggedTensor takes them."""
        values = np.concatenate([self.sparse[k].values for k in keys])
        lengths = np.concatenate([self.sparse[k].lengths for k in keys])
        return values, lengths


class MovieLensFeatures:
    """Every event's features, precomputed; see the module docstring."""

    def __init__(
        self,
        ml: MovieLens,
        history_features: bool = True,
        k: int = history.K,
        hash_fraction: float | None = None,
    ) -> None:
        self.ml = ml
        self.history = history_features
        self.k = k  # items in the recent and liked bags
        # hashed id tables: `hash_fraction` of the rows, read at id % rows (collisions)
        self.id_rows = {"user_id": ml.num_users, "item_id": ml.num_items}
        if hash_fraction is not None:
            if not 0 < hash_fraction <= 1:
                raise ArgumentError(
                    f"MovieLensFeatures: hash_fraction must be in (0, 1], got {hash_fraction}"
                )
            self.id_rows = {k: max(1, int(n * hash_fraction)) for k, n in self.id_rows.items()}
        self._sparse = ml.features()
        if history_features:
            b = history.behaviour(ml.user, ml.item, ml.rating, ml.timestamp, k=k)
            self._sparse["recent_items"], self._sparse["recent_liked"] = (
                b.recent_items,
                b.recent_liked,
            )
            self._dense = b.dense
        else:
            self._dense = np.zeros((len(ml), 0), np.float32)  # no dense features

    @property
    def keys(self) -> tuple[str, ...]:
        """Sparse feature names, in KeyedJaggedTensor order."""
        return movielens.FEATURES + (HISTORY_FEATURES if self.history else ())

    @property
    def dense_names(self) -> tuple[str, ...]:
        return history.DENSE_NAMES if self.history else ()

    @property
    def dense_in(self) -> int:
        return int(self._dense.shape[1])

    def tables(self) -> list[Table]:
        """One table per feature; the item table also serves the history bags (pooled by
        mean, so a long history weighs as much as a short one). The id tables have a row
        per id, or with `hash_fraction` that fraction of rows, read at id % rows."""
        item_features = ("item_id", *HISTORY_FEATURES) if self.history else ("item_id",)
        out = [
            Table("user_id", self.id_rows["user_id"], ("user_id",)),
            Table("item_id", self.id_rows["item_id"], item_features, "mean"),
        ]
        for name in (*movielens.USER_FEATURES, *movielens.ITEM_FEATURES, "hour", "weekday"):
            out.append(Table(name, movielens.SIDE_CARDINALITY[name], (name,)))
        return out

    def batch(self, rows: np.ndarray, pad_to: int | None = None) -> Batch:
        """Events `rows` as a Batch, padded with zero-weight empty rows to `pad_to` rows."""
        rows = np.asarray(rows, np.int64)
        n = len(rows)
        size = n if pad_to is None else pad_to
        if size < n:
            raise ArgumentError(f"MovieLensFeatures.batch: {n} rows do not fit pad_to={size}")
        pad = size - n
        sparse = {}
        for k in self.keys:
            j = self._sparse[k].take(rows)
            table = "item_id" if k in HISTORY_FEATURES else k
            if table in self.id_rows:
                j = Jagged(j.values % self.id_rows[table], j.offsets)
            offsets = np.concatenate([j.offsets, np.full(pad, j.offsets[-1], np.int64)])
            sparse[k] = Jagged(j.values, offsets)  # padding rows: empty bags
        dense = np.zeros((size, self.dense_in), np.float32)
        dense[:n] = self._dense[rows]
        labels = np.zeros(size, np.float32)
        labels[:n] = self.ml.label[rows]
        weights = np.zeros(size, np.float32)
        weights[:n] = 1.0
        users = np.zeros(size, np.int64)
        users[:n] = self.ml.user[rows]
        return Batch(dense, sparse, labels, weights, users)
