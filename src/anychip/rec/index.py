"""The host-side id index of anychip.rec's tables: a map between any int64 id and a dense
number (a row), probed and filled a whole batch at a time in numpy.

Open addressing with linear probing over a power-of-two array of slots. A slot holds a
number (int32), or EMPTY, or DELETED (a tombstone left by a delete: lookups probe past it,
inserts reuse it); the id of number v is `ids_of[v]`, so a slot costs 4 bytes and the ids
are stored once, per number, where the table needs them anyway (row -> id). Each round of
a lookup reads the slot of every still-unresolved id at once, so a batch costs a few
vectorised rounds, never a Python step per id. The slots are rebuilt, larger, when live
entries plus tombstones pass the load limit. Every int64 is a valid id: the slot says
whether it is taken, no id value is reserved as a marker.
"""

from __future__ import annotations

import numpy as np

EMPTY = -1
DELETED = -2
# live + tombstones per slot before a rebuild (~2 probes per hit on average), which
# brings the load to 0.5 or less
_MAX_LOAD = 0.7
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the high bits of k * 2^64/phi


class IdIndex:
    """id (int64) <-> number (int >= 0, below 2^31), for batches of ids.

    >>> import numpy as np
    >>> ix = IdIndex()
    >>> ix.insert(np.array([7, -3, 2**62]), np.array([0, 1, 2]))
    >>> ix.lookup(np.array([2**62, 5, 7])).tolist()
    [2, -1, 0]
    >>> int(ix.ids_of[1])
    -3
    """

    def __init__(self, capacity: int = 1024) -> None:
        self._alloc(_slots_for(capacity))
        self.size = 0  # live ids
        self.ids_of = np.zeros(max(capacity, 1), np.int64)  # number -> id (stale if freed)

    def _alloc(self, n_slots: int) -> None:
        self.slots = np.full(n_slots, EMPTY, np.int32)
        self.shift = np.uint64(64 - (n_slots.bit_length() - 1))
        self.mask = n_slots - 1
        self.tombs = 0

    def __len__(self) -> int:
        return self.size

    @property
    def nbytes(self) -> int:
        return int(self.slots.nbytes + self.ids_of.nbytes)

    def reserve(self, n: int) -> None:
        """Room in ids_of for numbers below n (a table calls it when it grows)."""
        if n > self.ids_of.size:
            self.ids_of = np.concatenate([self.ids_of, np.zeros(n - self.ids_of.size, np.int64)])

    def _home(self, ids: np.ndarray) -> np.ndarray:
        """Each id's first slot: the top bits of (id ^ id >> 29) * 2^64/phi (the xor mixes
        high bits into ids that differ only there, such as multiples of 2^32)."""
        u = ids.view(np.uint64)
        return (((u ^ (u >> np.uint64(29))) * _GOLDEN) >> self.shift).astype(np.int64)

    def _probe(self, slot: np.ndarray, want: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each slot's number and whether it holds `want`."""
        v = np.take(self.slots, slot)
        # mode="clip" reads ids_of[0] for EMPTY and DELETED slots, which v >= 0 masks
        return v, (np.take(self.ids_of, v, mode="clip") == want) & (v >= 0)

    def _find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The slot holding each id and its number, both -1 where absent: all ids probe
        together, one round per step of the longest probe sequence, each round only over
        the ids still unresolved (after the first round, a small part of them)."""
        slot = self._home(ids)
        v, hit = self._probe(slot, ids)
        found = np.where(hit, slot, -1)
        value = np.where(hit, v, -1)
        todo = np.flatnonzero((v != EMPTY) & ~hit)  # another id or a tombstone: probe on
        slot, want = slot[todo], ids[todo]
        while todo.size:
            slot = (slot + 1) & self.mask
            v, hit = self._probe(slot, want)
            found[todo[hit]], value[todo[hit]] = slot[hit], v[hit]
            go_on = (v != EMPTY) & ~hit
            todo, want, slot = todo[go_on], want[go_on], slot[go_on]
        return found, value.astype(np.int64, copy=False)

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """The number of each id (int64 array, any length), -1 where the id is absent."""
        return self._find(np.ascontiguousarray(ids, np.int64).reshape(-1))[1]

    def insert(self, ids: np.ndarray, numbers: np.ndarray) -> None:
        """Add ids absent from the map and distinct from each other, with distinct
        numbers not in use."""
        ids = np.ascontiguousarray(ids, np.int64).reshape(-1)
        numbers = np.asarray(numbers, np.int64).reshape(-1)
        if numbers.size and numbers.max() >= self.ids_of.size:
            self.reserve(max(int(numbers.max()) + 1, self.ids_of.size * 9 // 8))
        self.ids_of[numbers] = ids
        if self.size + self.tombs + ids.size > _MAX_LOAD * (self.mask + 1):
            self._rehash(self.size + ids.size)
        self._place(ids, numbers.astype(np.int32))
        self.size += ids.size

    def _place(self, ids: np.ndarray, numbers: np.ndarray) -> None:
        """Insert by probing rounds: every id still without a slot tries its current slot;
        where several try one free slot the last write wins and the others probe on."""
        slot = self._home(ids)
        while ids.size:
            free = self.slots[slot] < 0
            cand = slot[free]
            was_tomb = self.slots[cand] == DELETED
            self.slots[cand] = numbers[free]  # duplicates in cand: one write lands
            won = np.zeros(ids.size, np.bool_)
            won[free] = self.slots[cand] == numbers[free]  # distinct numbers: one winner
            self.tombs -= int(np.count_nonzero(was_tomb & won[free]))
            ids, numbers, slot = ids[~won], numbers[~won], (slot[~won] + 1) & self.mask

    def delete(self, ids: np.ndarray) -> np.ndarray:
        """Remove ids (absent ones are skipped); returns their numbers (-1 if absent)."""
        ids = np.ascontiguousarray(ids, np.int64).reshape(-1)
        slot, out = self._find(ids)
        slot = np.unique(slot[slot >= 0])
        self.slots[slot] = DELETED
        self.tombs += slot.size
        self.size -= slot.size
        return out

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """Every live (id, number), in slot order."""
        numbers = self.slots[self.slots >= 0].astype(np.int64)
        return self.ids_of[numbers], numbers

    def _rehash(self, need: int) -> None:
        """Move the live entries to fresh slots (no tombstones), with room for `need`."""
        ids, numbers = self.items()
        self._alloc(_slots_for(need))
        self._place(ids, numbers.astype(np.int32))


def _slots_for(n: int) -> int:
    """The power of two of slots that n ids fill to half or less (a rebuild at the load
    limit doubles the slots)."""
    slots = 16
    while n > slots // 2:
        slots *= 2
    return slots


def ladder(n: int) -> int:
    """n rounded up to a multiple of 2^(bits - 5): 16 to 32 sizes per doubling, the same
    in every run, so the kernels of a table that grew to a size are compiled once (disk
    cache) and sizes are at most 1/16 above n.

    >>> ladder(31), ladder(33), ladder(1000), ladder(1 << 20)
    (31, 34, 1024, 1048576)
    """
    step = 1 << max(0, n.bit_length() - 5)
    return -(-n // step) * step


class SlotPool:
    """Numbers 0, 1, 2, ... handed out and taken back in batches: freed numbers first (a
    stack), then ones never used; `capacity` grows geometrically (by `growth`, then up to
    the next `ladder` size) when both run out, so the arrays an owner keeps per number
    are reallocated O(log n) times.

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
            self.capacity = ladder(max(self.top, int(self.capacity * self.growth)))
        return np.concatenate([out, fresh]) if reuse else fresh

    def give_back(self, numbers: np.ndarray) -> None:
        self.free = np.concatenate([self.free, np.asarray(numbers, np.int64).reshape(-1)])

    @property
    def nbytes(self) -> int:
        return int(self.free.nbytes)
