"""Saving and restoring a DynamicEmbedding: its state-dict entries (used rows only, with
their ids and row numbers) and how a load rebuilds the id index and the free rows.

Rows keep their row numbers across a save and load, so an optimizer's per-row state
(saved by `optimizer.state_dict()`, capacity rows long) lines up with the table again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from anychip.errors import ShapeError
from anychip.frontend.tensor import Tensor, no_grad
from anychip.optim.rowstate import log_length, restore_log_length
from anychip.rec.index import IdIndex, SlotPool

if TYPE_CHECKING:
    from anychip.rec.table import DynamicEmbedding

STATE_KEYS = (
    "ids",  # (n,) int64: admitted ids
    "rows",  # (n, dim): their rows' values
    "row_index",  # (n,) int64: their row numbers in the weight
    "last_seen",  # (n,) int64: the clock at each id's last sighting
    "changed",  # (n,) int64: the version each row last changed at (for delta)
    "pending_ids",  # (m,) int64: ids seen but not yet admitted
    "counts",  # (m,) int64: their sightings so far
    "pending_last_seen",  # (m,) int64
    "evicted_ids",  # (k,) int64: the eviction log, for delta ...
    "evicted_versions",  # (k,) int64: ... with the version of each eviction
    "meta",  # (4,) int64: version, step, capacity, optimizer-reset log length
)


def _host(t: Any) -> np.ndarray:
    return t.numpy() if isinstance(t, Tensor) else np.asarray(t)


def save_state(table: DynamicEmbedding) -> dict[str, Tensor]:
    """The table's state-dict entries, named as STATE_KEYS."""
    rows = np.flatnonzero(table._used)
    values = table.weight.detach()[Tensor(rows, device=table.weight.device)]
    p_ids, p_counts, p_last = table._pending.state()
    log = table._evicted
    ev_ids = np.concatenate([ids for _, ids in log]) if log else np.zeros(0, np.int64)
    ev_v = np.concatenate([np.full(ids.size, v, np.int64) for v, ids in log]) if log else ev_ids
    meta = [table.version, table.step, table.capacity, log_length(table.weight)]
    host = {
        "ids": table._index.ids_of[rows],
        "row_index": rows.astype(np.int64),
        "last_seen": table._last_seen[rows],
        "changed": table._changed[rows],
        "pending_ids": p_ids,
        "counts": p_counts,
        "pending_last_seen": p_last,
        "evicted_ids": ev_ids,
        "evicted_versions": ev_v,
        "meta": np.array(meta, np.int64),
    }
    out = {k: Tensor(np.ascontiguousarray(v, np.int64)) for k, v in host.items()}
    out["rows"] = values
    return {k: out[k] for k in STATE_KEYS}


def load_state(table: DynamicEmbedding, state: dict[str, Any]) -> None:
    """Rebuild the table from `save_state`'s entries: rows back at their row numbers,
    the id index, free rows (fresh from init), pending counts and the eviction log."""
    get = {k: _host(state[k]) for k in STATE_KEYS if k != "rows" and k in state}
    version, step, capacity, resets = (int(x) for x in get["meta"])
    ids, where = get["ids"].astype(np.int64), get["row_index"].astype(np.int64)
    values = state["rows"]
    values = values if isinstance(values, Tensor) else Tensor(values)
    if values.shape != (ids.size, table.dim) or where.shape != ids.shape:
        raise ShapeError(
            f"DynamicEmbedding.load_state_dict: rows of shape {values.shape}, ids "
            f"{ids.shape} and row_index {where.shape} do not fit a table of dim {table.dim}"
        )
    capacity = max(capacity, int(where.max()) + 1 if where.size else 1)
    w = table.weight
    with no_grad():
        fresh = table._fresh(capacity, w.dtype, w.device)
        fresh.index_copy_(0, Tensor(where, device=w.device), values.to(w.device, w.dtype))
        w.data = fresh
        w.grad = None
    w.realize()
    table.version, table.step = version, step
    table._index = IdIndex(capacity)
    table._index.insert(ids, where)
    table._used = np.zeros(capacity, np.bool_)
    table._last_seen = np.zeros(capacity, np.int64)
    table._changed = np.zeros(capacity, np.int64)
    table._used[where] = True
    table._last_seen[where], table._changed[where] = get["last_seen"], get["changed"]
    table._hot = np.zeros(0, np.int64)
    table._pool = SlotPool(capacity, table._pool.growth)
    table._pool.top = capacity  # every row not in use is free (and freshly drawn)
    table._pool.give_back(np.flatnonzero(~table._used)[::-1])
    table._pending.restore(get["pending_ids"], get["counts"], get["pending_last_seen"])
    ev_ids, ev_v = get["evicted_ids"], get["evicted_versions"]
    table._evicted = [(int(v), ev_ids[ev_v == v]) for v in np.unique(ev_v)]
    restore_log_length(w, resets)
