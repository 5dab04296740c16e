"""Model updates (anychip.rec.wire) made ready aside and swapped into a served model.

`prepare(model, update)` checks every name, shape and id of an update against the model
and builds the new value of each parameter it touches as a fresh tensor, reading the
served values but changing nothing; `Prepared.swap()` then rebinds those parameters to
their new values, which takes microseconds, so the caller holds the inference lock only
for the swap. A DynamicEmbedding's rows are written in place by `swap` (its id index
lives on the host; `DynamicEmbedding.apply_delta`), in time proportional to the rows the
update names. Anything wrong raises `ArgumentError` before anything changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from anychip.errors import ArgumentError
from anychip.frontend.tensor import Tensor, no_grad
from anychip.nn.module import Module
from anychip.rec import wire
from anychip.rec.table import DynamicEmbedding, TableDelta


@dataclass
class Prepared:
    """An update ready to swap in: new values per tensor, and DynamicEmbedding deltas."""

    version: int
    values: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # (served, new)
    dynamic: list[tuple[DynamicEmbedding, TableDelta]] = field(default_factory=list)

    def swap(self) -> None:
        """Make the served model hold the update (call under the inference lock)."""
        with no_grad():
            for served, new in self.values:
                served.data = new
        for table, delta in self.dynamic:
            table.apply_delta(delta)

    @property
    def grows(self) -> bool:
        """Whether swapping may change a tensor's shape (a DynamicEmbedding that grows),
        after which each batch class must be captured again."""
        return any(_needs_rows(t, d) for t, d in self.dynamic)


def _needs_rows(table: DynamicEmbedding, delta: TableDelta) -> bool:
    new = int(np.count_nonzero(table.rows_of(delta.ids) < 0))
    return new > table._rows_free()


def prepare(model: Module, update: wire.Update) -> Prepared:
    """The update's new values for `model`, checked; the model is not changed."""
    tensors: dict[str, Tensor] = dict(model.named_parameters())
    tensors.update(dict(model.named_buffers()))
    modules = dict(model.named_modules())
    out = Prepared(update.version)
    with no_grad():
        for key, value in update.dense.items():
            served = tensors.get(key)
            if served is None:
                raise ArgumentError(f"rec serve update: the model has no parameter {key!r}")
            _check_like(f"parameter {key!r}", value, served)
            out.values.append((served, _fresh(value, served)))
        for name, rows in update.tables.items():
            mod = modules.get(name)
            if isinstance(mod, DynamicEmbedding):
                out.dynamic.append((mod, _dynamic_delta(name, mod, rows, update.kind)))
                continue
            served = tensors.get(f"{name}.weight")
            if served is None:
                raise ArgumentError(f"rec serve update: the model has no table {name!r}")
            out.values.append((served, _table_rows(name, served, rows)))
    return out


def _fresh(value: np.ndarray, like: Tensor) -> Tensor:
    return Tensor(np.array(value, like.dtype.np), device=like.device).realize()


def _check_like(what: str, value: np.ndarray, like: Tensor) -> None:
    if tuple(value.shape) != tuple(like.shape) or value.dtype.kind not in "fiu":
        raise ArgumentError(
            f"rec serve update: {what} is {value.dtype} {tuple(value.shape)}, the model's "
            f"is {like.dtype.name} {tuple(like.shape)}"
        )


def _table_rows(name: str, served: Tensor, rows: wire.TableRows) -> Tensor:
    """A plain table's new weight: the served one with rows `rows.ids` replaced."""
    n, dim = served.shape
    ids, values = np.asarray(rows.ids, np.int64), rows.values
    if values.shape != (len(ids), dim):
        raise ArgumentError(f"rec serve update: table {name!r} rows are {values.shape}, "
                            f"expected ({len(ids)}, {dim})")  # fmt: skip
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        raise ArgumentError(
            f"rec serve update: table {name!r} has {n} rows; the update names rows "
            f"{ids.min()}..{ids.max()}"
        )
    if rows.evicted.size:
        raise ArgumentError(f"rec serve update: table {name!r} is a plain table; it has no "
                            "ids to evict")  # fmt: skip
    weight = served.numpy().copy()
    weight[ids] = values
    return Tensor(weight, device=served.device).realize()


def _dynamic_delta(
    name: str, table: DynamicEmbedding, rows: wire.TableRows, kind: str
) -> TableDelta:
    ids, values = np.asarray(rows.ids, np.int64), np.asarray(rows.values, np.float32)
    if values.shape != (len(ids), table.dim) or np.unique(ids).size != ids.size:
        raise ArgumentError(
            f"rec serve update: table {name!r} needs distinct ids with rows of "
            f"({len(ids)}, {table.dim}), got ids {ids.shape} and rows {values.shape}"
        )
    evicted = np.asarray(rows.evicted, np.int64)
    if kind == "full":  # a snapshot: the ids it does not name leave the table
        held = table._index.ids_of[np.flatnonzero(table._used)]
        evicted = np.union1d(evicted, np.setdiff1d(held, ids))
    return TableDelta(ids, values, evicted, table.version)
