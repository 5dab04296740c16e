"""Per-row optimizer state for tables whose rows grow and are recycled.

A table that grows (its parameter's first dimension gets larger, `param.data = bigger`) or
hands a freed row to a new id (anychip.rec's DynamicEmbedding evicting and admitting ids)
must not leave the new row with the old row's optimizer state (an Adagrad sum, Adam
moments). The table says so with `reset_rows(param, rows)`; an optimizer that keeps
per-row state calls `sync_row_state(state, param, names)` before it updates `param`, which
pads the named state tensors with zero rows up to the parameter's rows and zeroes the rows
reset since that optimizer last looked.

The log lives beside the parameter (dropped when the parameter dies), one entry per
`reset_rows` call, so several optimizers may follow one table. Tables call it per eviction
sweep, not per step, so the log stays short.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np

from anychip.frontend.creation import cat
from anychip.frontend.tensor import Tensor

_LOCK = threading.Lock()
# keyed by id(): a Tensor's == is elementwise, so it can't key a WeakKeyDictionary; a
# finalizer drops the entry with the parameter
_LOGS: dict[int, list[np.ndarray]] = {}
_SEEN_KEY = "_rows_reset_seen"


def reset_rows(param: Tensor, rows: Any) -> None:
    """Record that `rows` (indices along dim 0) of `param` start afresh: every optimizer
    following `param` zeroes its per-row state there before its next update."""
    idx = np.asarray(rows, np.int64).reshape(-1)
    if idx.size == 0:
        return
    with _LOCK:
        _log(param).append(idx.copy())


def _log(param: Tensor) -> list[np.ndarray]:
    """param's log, made on first use (hold _LOCK)."""
    if id(param) not in _LOGS:
        _LOGS[id(param)] = []
        weakref.finalize(param, _LOGS.pop, id(param), None)
    return _LOGS[id(param)]


def log_length(param: Tensor) -> int:
    """How many `reset_rows` calls `param`'s log holds (a table saves it in checkpoints)."""
    with _LOCK:
        return len(_LOGS.get(id(param), []))


def restore_log_length(param: Tensor, n: int) -> None:
    """Pad `param`'s log with empty entries up to `n`: a table restored from a checkpoint
    calls it so that optimizer state restored beside it (which counts the saving process's
    entries as seen) still sees the resets that come after."""
    with _LOCK:
        log = _log(param)
        log += [np.zeros(0, np.int64)] * max(0, n - len(log))


def resets_since(param: Tensor, seen: int) -> tuple[np.ndarray, int]:
    """The unique rows reset after the first `seen` log entries, and the log's length."""
    with _LOCK:
        log = _LOGS.get(id(param), [])
        new = log[seen:]
        n = len(log)
    if not new:
        return np.zeros(0, np.int64), n
    return np.unique(np.concatenate(new)), n


def sync_row_state(state: dict[str, Any], param: Tensor, names: tuple[str, ...]) -> None:
    """Bring the per-row tensors `state[name]` in line with `param`: grown by zero rows to
    `param.shape[0]`, and zero at every row reset since this state last synced."""
    rows = param.shape[0] if param.ndim else 1
    rows_reset, n = resets_since(param, int(state.get(_SEEN_KEY, 0)))
    for name in names:
        t = state.get(name)
        if not isinstance(t, Tensor) or t.ndim == 0:
            continue
        if t.shape[0] < rows:
            pad = t.new_zeros(rows - t.shape[0], *t.shape[1:])
            t = cat([t, pad], 0)
        if rows_reset.size:
            keep = np.ones(t.shape[0], np.bool_)
            keep[rows_reset[rows_reset < t.shape[0]]] = False
            mask = Tensor(keep, device=t.device).reshape((-1,) + (1,) * (t.ndim - 1))
            t = t.where(mask, t.new_zeros(()))
        state[name] = t
    state[_SEEN_KEY] = n


def follow_rows(state: dict[str, Any], param: Tensor) -> None:
    """`sync_row_state` over every per-row tensor of an optimizer's state for `param` (each
    with a first dimension of at most param's rows: (rows, ...) like Adam's moments, or
    (rows,) like RowWiseAdagrad's sums), with nothing to do for a parameter that has never
    grown nor reset rows. Optimizer.step calls it for each parameter it updates."""
    if not param.ndim:
        return
    rows = param.shape[0]
    names = tuple(
        k for k, v in state.items() if isinstance(v, Tensor) and v.ndim and v.shape[0] <= rows
    )
    if id(param) not in _LOGS and all(state[k].shape[0] == rows for k in names):
        return
    sync_row_state(state, param, names)
