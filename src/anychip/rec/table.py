"""`DynamicEmbedding`: a collisionless embedding table that grows as new ids arrive.

Every admitted 64-bit id gets a row of its own (no modulo hashing): the host keeps an
id -> row index (`rec/index.py`, vectorised numpy), the rows live in one Parameter on the
table's device. Ids are admitted after `admit_after` sightings, rows unseen for `ttl` are
evicted and recycled, and a version counter tells serving which rows changed
(docs/rec-table.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from anychip import dtypes
from anychip.errors import ArgumentError, DTypeError, IndexDTypeError, ShapeError
from anychip.frontend.creation import cat, zeros
from anychip.frontend.tensor import Tensor, no_grad
from anychip.ir.ops import Node, Ops
from anychip.nn import functional as F, init as nn_init
from anychip.nn.module import Module, Parameter
from anychip.optim.rowstate import reset_rows
from anychip.rec import table_state
from anychip.rec.index import IdIndex, SlotPool
from anychip.runtime import dispatch

InitFn = Callable[[Tensor], Any]
# capacity grows by 1/16 (then to a ladder size) when rows run out: the rows are copied
# about 17 times in all as a table grows, and at most ~1/16 of them sit unused
GROWTH = 1.0625


def default_init(rows: Tensor) -> Tensor:
    """The rows a new id starts from: N(0, 0.01^2), small as CTR models want."""
    return nn_init.normal_(rows, 0.0, 0.01)


@dataclass(frozen=True)
class TableDelta:
    """What changed in a table since a version: `ids` (n,) added or changed, `rows` (n, dim)
    their current values, `evicted` (m,) ids removed and not since readmitted, and the
    table's `version` to ask from next time."""

    ids: np.ndarray
    rows: np.ndarray
    evicted: np.ndarray
    version: int


class DynamicEmbedding(Module):
    """Rows for raw int64 ids, one per admitted id, on `device`: `table(ids)` maps ids of
    any shape to (*ids.shape, dim); ids not (yet) admitted read zeros and get no gradient.

    In training mode every call counts each id's sightings (admitting it at the
    `admit_after`-th) and stamps the rows it read with the clock: the training-call count,
    or `now=` if given. `evict(now)` frees rows last seen before `now - ttl`, in that unit.

    >>> import anychip as ac
    >>> table = ac.rec.DynamicEmbedding(4, admit_after=2)
    >>> table(ac.tensor([7, 2**62])).abs().sum().item()  # seen once: zeros, no rows yet
    0.0
    >>> out = table(ac.tensor([7, 7, -5]))  # 7 reaches 2 sightings
    >>> len(table), out.shape, bool(out[0].abs().sum().item() > 0)
    (1, (3, 4), True)
    """

    def __init__(
        self,
        dim: int,
        *,
        admit_after: int = 1,
        ttl: float | None = None,
        init: InitFn | None = None,
        device: Any = None,
        dtype: Any = None,
        capacity: int = 1024,
        sparse: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(dim, int) or dim <= 0:
            raise ArgumentError(f"DynamicEmbedding: dim must be a positive int, got {dim!r}")
        if not isinstance(admit_after, int) or admit_after < 1:
            raise ArgumentError(f"DynamicEmbedding: admit_after must be >= 1, got {admit_after}")
        if ttl is not None and not ttl > 0:
            raise ArgumentError(f"DynamicEmbedding: ttl must be positive or None, got {ttl}")
        self.dim, self.admit_after, self.ttl = dim, admit_after, ttl
        self.init: InitFn = init if init is not None else default_init
        self.sparse = sparse
        self.version = 0  # bumped by each training call and each eviction
        self.step = 0  # training calls so far: the clock when no `now=` is given
        capacity = max(int(capacity), 1)
        self._index = IdIndex(capacity)
        self._pool = SlotPool(capacity, GROWTH)
        # per row (capacity,): whether in use, last sighting, version of last change (its
        # id is self._index.ids_of[row])
        self._used = np.zeros(capacity, np.bool_)
        self._last_seen = np.zeros(capacity, np.int64)
        self._changed = np.zeros(capacity, np.int64)
        self._hot = np.zeros(0, np.int64)  # rows the latest training call read
        self._evicted: list[tuple[int, np.ndarray]] = []  # (version, ids) per sweep
        self._pending = _Pending()  # counts of ids not yet admitted
        like = zeros(0, dim, dtype=dtype, device=device)  # resolves dtype and device names
        self.weight = Parameter(self._fresh(capacity, like.dtype, like.device))
        self.weight.realize()

    # --- sizes ---------------------------------------------------------------------
    def __len__(self) -> int:
        """Admitted ids (each holds one row)."""
        return len(self._index)

    @property
    def capacity(self) -> int:
        """Rows allocated on the device (admitted, free and never used)."""
        return int(self.weight.shape[0])

    def memory_bytes(self) -> int:
        """Bytes the table holds: rows on the device (all `capacity`) plus the host's id
        index, per-row records and admission counts. Optimizer state is the optimizer's."""
        host = sum(a.nbytes for a in (self._used, self._last_seen, self._changed))
        rows = self.capacity * self.dim * self.weight.dtype.itemsize
        return int(rows + host + self._index.nbytes + self._pool.nbytes + self._pending.nbytes)

    @property
    def bytes_per_row(self) -> float:
        """memory_bytes() per admitted id (free rows and the index included)."""
        return self.memory_bytes() / max(len(self), 1)

    # --- lookups -------------------------------------------------------------------
    def forward(self, ids: Any, now: int | None = None) -> Tensor:
        """Rows of `ids` (int64 Tensor or array, any shape): (*ids.shape, dim); zeros for
        ids not admitted."""
        rows = self._rows("DynamicEmbedding", ids, now)
        out = F.embedding(rows.clamp(min=0), self.weight, sparse=self.sparse)
        # not-admitted ids (-1) read zeros and their gradient goes nowhere; masked always,
        # so the kernels do not depend on the ids' values (anychip.jit replays them)
        return out.where((rows >= 0).unsqueeze(-1), 0.0)

    def bag(
        self,
        input: Any,
        offsets: Any = None,
        mode: str = "mean",
        per_sample_weights: Tensor | None = None,
        include_last_offset: bool = False,
        now: int | None = None,
    ) -> Tensor:
        """Pooled rows per bag, as F.embedding_bag over this table's rows: 2-d `input`
        (B, L) is B bags, 1-d `input` is split at `offsets`; -> (B, dim). An id not
        admitted counts as a zero row (in a mean's count too)."""
        rows = self._rows("DynamicEmbedding.bag", input, now)
        if self.training and self.admit_after == 1:  # every id has a row: pool the table
            return F.embedding_bag(
                rows,
                self.weight,
                offsets,
                mode=mode,
                sparse=self.sparse,
                per_sample_weights=per_sample_weights,
                include_last_offset=include_last_offset,
            )
        # ids may lack rows: pool the looked-up rows (N, dim), zeros for missing ids, by
        # their positions, so every mode sees zero vectors there
        flat = rows.reshape(-1)
        looked = F.embedding(flat.clamp(min=0), self.weight, sparse=self.sparse)
        looked = looked.where((flat >= 0).unsqueeze(-1), 0.0)
        pos = Tensor(np.arange(flat.shape[0]).reshape(rows.shape), device=self.weight.device)
        return F.embedding_bag(
            pos,
            looked,
            offsets,
            mode=mode,
            per_sample_weights=per_sample_weights,
            include_last_offset=include_last_offset,
        )

    def rows_of(self, ids: Any) -> np.ndarray:
        """The row number of each id (ids' shape; -1 if not admitted), without counting a
        sighting."""
        flat, shape = _as_ids("DynamicEmbedding.rows_of", ids)
        return self._index.lookup(flat).reshape(shape)

    def _rows(self, op: str, ids: Any, now: int | None) -> Tensor:
        """Row numbers of ids (int64, ids' shape, -1 if not admitted) on the weight's
        device. For Tensor ids the mapping is a host step (`dispatch.host_call`), so an
        `anychip.jit` replay maps (counts, admits) each new batch of ids again."""
        dev = self.weight.device
        if not isinstance(ids, Tensor):
            rows, shape = self._map(op, ids, now)
            return Tensor(rows.reshape(shape), device=dev)
        _check_dtype(op, ids.dtype, ids.shape, ids.device)
        flat = ids.reshape(-1).realize()
        buf = dispatch.host_call(_IdMap(self, now), [flat.node.arg], dev, dtypes.int64)
        node = Node(Ops.BUFFER, dtypes.int64, flat.shape, dev, (), buf)
        return Tensor._from_node(node).reshape(ids.shape)

    def _map(self, op: str, ids: Any, now: int | None) -> tuple[np.ndarray, tuple[int, ...]]:
        """Row numbers (N,) of the flattened ids and their shape; in training mode this
        is a sighting: counted, admitted, stamped."""
        flat, shape = _as_ids(op, ids)
        return self._map_flat(flat, now), shape

    def _map_flat(self, flat: np.ndarray, now: int | None) -> np.ndarray:
        if not self.training:
            return self._index.lookup(flat)
        self.step += 1
        clock = self.step if now is None else int(now)
        rows = self._index.lookup(flat)
        miss = rows < 0
        if miss.any():
            rows[miss] = self._admit(flat[miss], clock)
        self.version += 1
        seen = rows[rows >= 0]
        self._last_seen[seen] = clock
        # the rows the previous call read were changed by the optimizer step since, and
        # this call's rows will be by the next one: every delta sends the latter (`_hot`)
        self._changed[self._hot] = self.version
        self._changed[seen] = self.version
        self._hot = seen
        return rows

    def _admit(self, missing: np.ndarray, clock: int) -> np.ndarray:
        """Rows for ids not in the table: the ids reaching `admit_after` sightings get
        new rows; the others stay pending (-1)."""
        uniq, where, counts = np.unique(missing, return_inverse=True, return_counts=True)
        admit = np.ones(uniq.size, np.bool_)
        if self.admit_after > 1:
            admit = self._pending.count(uniq, counts, clock) >= self.admit_after
            self._pending.drop(uniq[admit])
        new_ids = uniq[admit]
        out = np.full(uniq.size, -1, np.int64)
        if new_ids.size:
            rows = self._take_rows(new_ids.size)
            self._index.insert(new_ids, rows)
            self._used[rows] = True
            out[admit] = rows
        return out[where.reshape(-1)]

    def _new_rows_needed(self, flat: np.ndarray) -> int:
        """How many rows a training call on `flat` ids would admit (changes nothing)."""
        missing = flat[self._index.lookup(flat) < 0]
        if self.admit_after == 1 or missing.size == 0:
            return int(np.unique(missing).size)
        uniq, counts = np.unique(missing, return_counts=True)
        return int(np.count_nonzero(self._pending.total(uniq, counts) >= self.admit_after))

    def _rows_free(self) -> int:
        """Rows a new id can take without the table growing."""
        return int(self._pool.free.size + self.capacity - self._pool.top)

    def _take_rows(self, n: int) -> np.ndarray:
        rows = self._pool.take(n)
        if self._pool.capacity > self.capacity:
            self._grow(self._pool.capacity)
        return rows

    def _grow(self, capacity: int) -> None:
        """More rows: new ones drawn from `init` below the old ones (one copy of the
        table per geometric growth step); host records grow alike, optimizers pad their
        state when they next step (optim.rowstate)."""
        old = self.capacity
        extra = capacity - old
        w = self.weight
        with no_grad():
            w.data = cat([w.detach(), self._fresh(extra, w.dtype, w.device)], 0)
            if w.grad is not None:  # a gradient from before the growth: zero for new rows
                w.grad = _grown_grad(w.grad, old, capacity)
        w.realize()
        self._index.reserve(capacity)
        for name in ("_used", "_last_seen", "_changed"):
            a = getattr(self, name)
            setattr(self, name, np.concatenate([a, np.zeros(extra, a.dtype)]))

    def _fresh(self, n: int, dtype: Any, device: str) -> Tensor:
        """n new rows from `init`: it fills the zeros it is given in place (as nn.init's
        functions) or returns the rows (a Tensor or array of that shape)."""
        rows = zeros(n, self.dim, dtype=dtype, device=device)
        with no_grad():
            made = self.init(rows)
        if made is not None and made is not rows:
            made = made if isinstance(made, Tensor) else Tensor(np.asarray(made))
            rows = made.detach().to(device, dtype)
        if rows.shape != (n, self.dim):
            raise ShapeError(
                f"DynamicEmbedding: init gave rows of shape {rows.shape}, wanted {(n, self.dim)}"
            )
        return rows

    # --- eviction ------------------------------------------------------------------
    def evict(self, now: int | None = None) -> int:
        """Free the rows of ids last seen before `now - ttl` (`now`: the clock of the
        training calls, by default their count) and forget pending ids as old; returns
        how many rows were freed. Freed rows are re-drawn from `init` and their optimizer
        state is zeroed (optim.rowstate) before they serve another id."""
        if self.ttl is None:
            raise ArgumentError("DynamicEmbedding.evict: the table was built with ttl=None")
        now = self.step if now is None else int(now)
        limit = now - self.ttl
        self._pending.expire(limit)
        rows = np.flatnonzero(self._used & (self._last_seen < limit))
        if rows.size == 0:
            return 0
        ids = self._index.ids_of[rows]
        self._index.delete(ids)
        self._used[rows] = False
        self._pool.give_back(rows)
        self.version += 1
        self._evicted.append((self.version, ids))
        w = self.weight
        with no_grad():
            w.index_copy_(
                0, Tensor(rows, device=w.device), self._fresh(rows.size, w.dtype, w.device)
            )
        w.realize()
        reset_rows(w, rows)
        return int(rows.size)

    # --- serving sync --------------------------------------------------------------
    def delta(self, since_version: int) -> TableDelta:
        """The rows added or changed after `since_version` (and those the latest training
        call read, which its optimizer step may change after this delta) and the ids
        evicted since then and not readmitted; pass the returned `version` next time."""
        changed = self._changed > since_version
        changed[self._hot] = True  # their optimizer step may come after this delta
        rows = np.flatnonzero(self._used & changed)
        gone = [ids for v, ids in self._evicted if v > since_version]
        evicted = np.unique(np.concatenate(gone)) if gone else np.zeros(0, np.int64)
        evicted = evicted[self._index.lookup(evicted) < 0]
        values = F.embedding(Tensor(rows, device=self.weight.device), self.weight.detach())
        ids = self._index.ids_of[rows]
        return TableDelta(ids, values.numpy(), evicted, self.version)

    def apply_delta(self, delta: TableDelta) -> None:
        """Make this table hold what `delta` says (a server applying a trainer's delta):
        `delta.evicted` ids leave, each of `delta.ids` gets row `delta.rows[i]` (admitted
        now if absent, with no sighting counted). The table may grow."""
        ids = np.asarray(delta.ids, np.int64).reshape(-1)
        values = np.asarray(delta.rows, np.float32)
        if values.shape != (ids.size, self.dim) or np.unique(ids).size != ids.size:
            raise ShapeError(
                f"DynamicEmbedding.apply_delta: ids {ids.shape} must be distinct with rows "
                f"of shape ({ids.size}, {self.dim}), got {values.shape}"
            )
        gone = np.asarray(delta.evicted, np.int64).reshape(-1)
        gone = np.unique(gone[self._index.lookup(gone) >= 0])
        if gone.size:
            freed = self._index.delete(gone)
            self._used[freed] = False
            self._pool.give_back(freed)
        rows = self._index.lookup(ids)
        new = rows < 0
        if new.any():
            rows[new] = self._take_rows(int(new.sum()))
            self._index.insert(ids[new], rows[new])
            self._used[rows[new]] = True
        self.version += 1
        self._changed[rows] = self.version
        if ids.size:
            w = self.weight
            with no_grad():
                w.index_copy_(0, Tensor(rows, device=w.device), Tensor(values, device=w.device))
            w.realize()

    def forget_evictions(self, upto_version: int) -> None:
        """Drop the eviction records at or before `upto_version` (every consumer of
        `delta` has passed it), so the log stays short in a long run."""
        self._evicted = [(v, ids) for v, ids in self._evicted if v > upto_version]

    # --- saving (rec/table_state.py; see nn.Module's _own_state hooks) --------------
    def _own_state_keys(self) -> tuple[str, ...]:
        return table_state.STATE_KEYS

    def _own_state(self) -> dict[str, Tensor]:
        return table_state.save_state(self)

    def _load_own_state(self, state: dict[str, Any]) -> None:
        table_state.load_state(self, state)

    def extra_repr(self) -> str:
        return (
            f"{self.dim}, rows={len(self)}, capacity={self.capacity}, "
            f"admit_after={self.admit_after}, ttl={self.ttl}"
        )


class _IdMap:
    """The host step of one lookup: flat ids -> row numbers, counting them in training mode.
    A jit replay runs it again on the replay's ids; where those need the table to grow, it
    refuses before changing anything (dispatch.GuardFailed), and the jitted function runs
    again in Python, which grows the table (a new shape, so a new capture)."""

    def __init__(self, table: DynamicEmbedding, now: int | None) -> None:
        self.table, self.now, self.calls = table, now, 0

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        self.calls += 1
        flat = ids.astype(np.int64, copy=False).reshape(-1)
        t = self.table
        if self.calls > 1 and t.training and t._new_rows_needed(flat) > t._rows_free():
            raise dispatch.GuardFailed("DynamicEmbedding: this batch makes the table grow")
        return t._map_flat(flat, self.now)


class _Pending:
    """Sighting counts and last sightings of ids not yet admitted (id -> slot -> count)."""

    def __init__(self) -> None:
        self.index = IdIndex(16)
        self.pool = SlotPool(16, growth=2.0)
        self.counts = np.zeros(16, np.int64)
        self.last = np.zeros(16, np.int64)

    @property
    def nbytes(self) -> int:
        return self.index.nbytes + self.pool.nbytes + self.counts.nbytes + self.last.nbytes

    def count(self, ids: np.ndarray, counts: np.ndarray, clock: int) -> np.ndarray:
        """Add `counts` sightings to distinct `ids`; their totals."""
        slot = self.index.lookup(ids)
        new = slot < 0
        if new.any():
            fresh = self.pool.take(int(new.sum()))
            if self.pool.capacity > self.counts.size:
                extra = self.pool.capacity - self.counts.size
                for name in ("counts", "last"):
                    setattr(
                        self, name, np.concatenate([getattr(self, name), np.zeros(extra, np.int64)])
                    )
            self.index.insert(ids[new], fresh)
            slot[new] = fresh
            self.counts[fresh] = 0
        self.counts[slot] += counts
        self.last[slot] = clock
        out: np.ndarray = self.counts[slot]
        return out

    def total(self, ids: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """What `count` would return, without counting."""
        slot = self.index.lookup(ids)
        known = slot >= 0
        out = counts.copy()
        out[known] += self.counts[slot[known]]
        return out

    def drop(self, ids: np.ndarray) -> None:
        slot = self.index.delete(ids)
        self.pool.give_back(slot[slot >= 0])

    def expire(self, limit: float) -> None:
        live = self.index.items()[1]
        old = live[self.last[live] < limit]
        if old.size:
            self.drop(self.index.ids_of[old])

    def state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, counts, last sightings) of every pending id."""
        slot = self.index.items()[1]
        ids = self.index.ids_of[slot]
        return ids, self.counts[slot].copy(), self.last[slot].copy()

    def restore(self, ids: np.ndarray, counts: np.ndarray, last: np.ndarray) -> None:
        self.__init__()  # type: ignore[misc]
        if ids.size:
            self.count(ids, counts, 0)
            self.last[self.index.lookup(ids)] = last


def _grown_grad(g: Tensor, old: int, capacity: int) -> Tensor:
    """A gradient of `old` rows as one of `capacity` rows (zero in the new ones)."""
    if not getattr(g, "is_sparse", False):
        return cat([g, g.new_zeros(capacity - old, *g.shape[1:])], 0)
    # row-sparse (frontend/sparse.py): its unused slots hold row id `old`, out of range
    # until now; they move to `capacity` so they stay out of range
    idx, vals = g._parts()  # type: ignore[attr-defined]
    return type(g)((idx >= old)._select(capacity, idx), vals, (capacity, *g.shape[1:]))  # type: ignore[call-arg]


_INT_IDS = (dtypes.int64, dtypes.int32, dtypes.int16, dtypes.int8, dtypes.uint8)


def _check_dtype(op: str, dtype: Any, shape: tuple[int, ...], device: str) -> None:
    if dtype not in _INT_IDS:
        raise IndexDTypeError(
            f"{op}: ids must be integers (int64), got shape {shape}, dtype {dtype.name}, "
            f"device {device}"
        )


def _as_ids(op: str, ids: Any) -> tuple[np.ndarray, tuple[int, ...]]:
    """ids (a Tensor, array or list of integers) as a flat int64 array, and their shape."""
    if isinstance(ids, Tensor):
        _check_dtype(op, ids.dtype, ids.shape, ids.device)
        arr = ids.numpy()
    else:
        arr = np.asarray(ids)
        if arr.size == 0 and arr.dtype.kind == "f":
            arr = arr.astype(np.int64)
        if arr.dtype.kind not in "iu":
            raise IndexDTypeError(
                f"{op}: ids must be integers (int64), got shape {arr.shape}, dtype {arr.dtype}"
                ", device host"
            )
        if arr.dtype == np.uint64:
            raise DTypeError(f"{op}: uint64 ids may not fit int64; pass them as int64 bits")
    return np.ascontiguousarray(arr, np.int64).reshape(-1), tuple(arr.shape)
