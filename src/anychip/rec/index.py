"""The host-side id index of anychip.rec's tables: an open-addressing hash map from any
int64 id to an int32 slot number, probed and filled a whole batch at a time in numpy.

Linear probing over a power-of-two array of slots. Each round of a lookup reads the slot of
every still-unresolved id at once (one gather), so a batch costs a few vectorised rounds,
never a Python step per id. A slot is free when its value is EMPTY, and was freed by a
delete when it is DELETED (a tombstone: lookups probe past it, inserts reuse it); the map
rehashes into a fresh array when live entries plus tombstones pass the load limit.
Keys need no sentinel value: the value array says whether a slot holds a key, so every
int64 is a valid id.
"""

from __future__ import annotations

import numpy as np

EMPTY = -1
DELETED = -2
_MAX_LOAD = 0.5  # live + tombstones per slot: linear probing stays at ~1.5 probes per hit
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the high bits of k * 2^64/phi


class IdIndex:
    """id (int64) -> value (int32 >= 0), for batches of ids.

    >>> import numpy as np
    >>> ix = IdIndex()
    >>> ix.insert(np.array([7, -3, 2**62]), np.array([0, 1, 2]))
    >>> ix.lookup(np.array([2**62, 5, 7])).tolist()
    [2, -1, 0]
    """

    def __init__(self, capacity: int = 1024) -> None:
        self._alloc(max(16, 1 << max(capacity - 1, 1).bit_length()))
        self.size = 0  # live keys

    def _alloc(self, n_slots: int) -> None:
        self.keys = np.zeros(n_slots, np.int64)
        self.vals = np.full(n_slots, EMPTY, np.int32)
        self.shift = np.uint64(64 - (n_slots.bit_length() - 1))
        self.mask = n_slots - 1
        self.tombs = 0

    def __len__(self) -> int:
        return self.size

    @property
    def nbytes(self) -> int:
        return int(self.keys.nbytes + self.vals.nbytes)

    def _home(self, ids: np.ndarray) -> np.ndarray:
        """Each id's first slot: the top bits of (id ^ id >> 29) * 2^64/phi (the xor mixes
        high bits into ids that differ only there, such as multiples of 2^32)."""
        u = ids.view(np.uint64)
        return (((u ^ (u >> np.uint64(29))) * _GOLDEN) >> self.shift).astype(np.int64)

    def _find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The slot holding each id and its value, both -1 where absent: all ids probe
        together, one round per step of the longest probe sequence, each round only over
        the ids still unresolved (after the first round, a few percent of them)."""
        slot = self._home(ids)
        v = self.vals[slot]
        hit = (self.keys[slot] == ids) & (v >= 0)
        found = np.where(hit, slot, -1)
        value = np.where(hit, v, -1)
        todo = np.flatnonzero((v != EMPTY) & ~hit)  # another key or a tombstone: probe on
        slot, want = slot[todo], ids[todo]
        while todo.size:
            slot = (slot + 1) & self.mask
            v = self.vals[slot]
            hit = (self.keys[slot] == want) & (v >= 0)
            found[todo[hit]], value[todo[hit]] = slot[hit], v[hit]
            go_on = (v != EMPTY) & ~hit
            todo, want, slot = todo[go_on], want[go_on], slot[go_on]
        return found, value.astype(np.int64, copy=False)

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """The value of each id (int64 array, any length), -1 where the id is absent."""
        return self._find(np.ascontiguousarray(ids, np.int64).reshape(-1))[1]

    def insert(self, ids: np.ndarray, values: np.ndarray) -> None:
        """Add ids that are absent from the map and distinct from each other."""
        ids = np.ascontiguousarray(ids, np.int64).reshape(-1)
        values = np.asarray(values, np.int32).reshape(-1)
        if self.size + self.tombs + ids.size > _MAX_LOAD * (self.mask + 1):
            self._rehash(self.size + ids.size)
        self._place(ids, values)
        self.size += ids.size

    def _place(self, ids: np.ndarray, values: np.ndarray) -> None:
        """Insert by probing rounds: every id still without a slot tries its current slot;
        where several try one free slot the last write wins and the others probe on."""
        slot = self._home(ids)
        while ids.size:
            free = self.vals[slot] < 0
            cand = slot[free]
            self.keys[cand] = ids[free]  # duplicates in cand: one write lands
            won = np.zeros(ids.size, np.bool_)
            won[free] = self.keys[cand] == ids[free]  # ids are distinct: one winner a slot
            taken = slot[won]
            self.tombs -= int(np.count_nonzero(self.vals[taken] == DELETED))
            self.vals[taken] = values[won]
            ids, values, slot = ids[~won], values[~won], (slot[~won] + 1) & self.mask

    def delete(self, ids: np.ndarray) -> np.ndarray:
        """Remove ids (absent ones are skipped); returns the values they had (-1 if absent)."""
        ids = np.ascontiguousarray(ids, np.int64).reshape(-1)
        slot, out = self._find(ids)
        slot = np.unique(slot[slot >= 0])
        self.vals[slot] = DELETED
        self.tombs += slot.size
        self.size -= slot.size
        return out

    def set_values(self, ids: np.ndarray, values: np.ndarray) -> None:
        """Change the values of ids that are present."""
        slot = self._find(np.ascontiguousarray(ids, np.int64).reshape(-1))[0]
        keep = slot >= 0
        self.vals[slot[keep]] = np.asarray(values, np.int32).reshape(-1)[keep]

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """Every live (id, value), in slot order."""
        live = self.vals >= 0
        return self.keys[live].copy(), self.vals[live].astype(np.int64)

    def _rehash(self, need: int) -> None:
        """Move the live entries to a fresh array (no tombstones) of the smallest power of two
        that holds `need` within the load limit."""
        ids, values = self.items()
        n = 16
        while need > _MAX_LOAD * n:
            n *= 2
        self._alloc(n)
        self._place(ids, values.astype(np.int32))


class SlotPool:
    """Numbers 0, 1, 2, ... handed out and taken back in batches: freed numbers first (a
    stack), then ones never used; `capacity` grows geometrically (by `growth`) when both
    run out, so the arrays an owner keeps per number are reallocated O(log n) times.

    >>> pool = SlotPool(4)
    >>> pool.take(3).tolist(), pool.capacity
    ([0, 1, 2], 4)
    >>> pool.give_back(np.array([1])); pool.take(3).tolist(), pool.capacity
    ([1, 3, 4], 5)
    """

    def __init__(self, capacity: int, growth: float = 1.25) -> None:
        self.capacity = capacity
        self.growth = growth
        self.top = 0  # numbers >= top were never handed out
        self.free = np.zeros(0, np.int64)

    def take(self, n: int) -> np.ndarray:
        reuse = min(n, self.free.size)
        out = self.free[self.free.size - reuse :]
        self.free = self.free[: self.free.size - reuse]
        fresh = np.arange(self.top, self.top + n - reuse, dtype=np.int64)
        self.top += fresh.size
        if self.top > self.capacity:
            self.capacity = max(self.top, int(self.capacity * self.growth))
        return np.concatenate([out, fresh]) if reuse else fresh

    def give_back(self, numbers: np.ndarray) -> None:
        self.free = np.concatenate([self.free, np.asarray(numbers, np.int64).reshape(-1)])

    @property
    def nbytes(self) -> int:
        return int(self.free.nbytes)
