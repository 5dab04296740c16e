"""The chip's memories as byte arrays, and strided accesses into them.

An `Access` is a box of elements at a base address with element strides; it gives numpy
views of the data and of the written-bytes map, its byte bounds, and its contiguous runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from anychip.npu.asm import describe
from anychip.npu.errors import OutOfBounds, UninitializedRead
from anychip.npu.isa import DT, Instr

Array = np.ndarray[Any, Any]
Who = tuple[int, int, Instr]  # (core, index, instruction): named lazily in faults


class Memory:
    """`size` bytes of one memory, with a map of which bytes have ever been written.

    Device memory grows its arrays on demand up to `size`, so a 32 GiB design costs only
    the bytes a program touches.

    >>> m = Memory("ub", 64)
    >>> m.data.size, bool(m.written.any())
    (64, False)
    """

    def __init__(self, name: str, size: int, grow: bool = False) -> None:
        self.name = name
        self.size = size
        n = min(size, 1 << 16) if grow else size
        self.data: Array = np.zeros(n, np.uint8)
        self.written: Array = np.zeros(n, np.bool_)
        self.grow = grow

    def ensure(self, top: int) -> None:
        """Makes the arrays hold bytes [0, top) (device memory only)."""
        if top <= self.data.size or not self.grow:
            return
        n = min(self.size, max(top, 2 * self.data.size))
        data, written = np.zeros(n, np.uint8), np.zeros(n, np.bool_)
        data[: self.data.size] = self.data
        written[: self.written.size] = self.written
        self.data, self.written = data, written


class Access:
    """Elements (i, j, l) < shape of `dt` at byte base + (i*s0 + j*s1 + l*s2) * itemsize.

    The simulator reuses one Access per distinct operand, so it remembers what cannot
    change: that its bounds were checked, that all its bytes were written (bytes never
    become unwritten), and its numpy views (until device memory grows and moves).

    >>> m = Memory("ub", 64)
    >>> a = Access(m, 8, (2, 3), (4, 1), DT.F32)
    >>> a.lo, a.hi, a.dense
    (8, 36, False)
    """

    def __init__(
        self,
        mem: Memory,
        base: int,
        shape: tuple[int, ...],
        strides: tuple[int, ...],
        dt: DT,
        key: Any = None,
    ) -> None:
        self.mem, self.base, self.shape, self.strides, self.dt = mem, base, shape, strides, dt
        self.key = key  # which memory, for the race detector: "dram" or (core, space)
        size = dt.itemsize
        low = high = 0  # element offsets of the first and last element (negative strides)
        for n, s in zip(shape, strides, strict=True):
            if s < 0:
                low += (n - 1) * s
            else:
                high += (n - 1) * s
        self.lo, self.hi = base + size * low, base + size * (high + 1)
        self.in_bounds = False
        self.all_written = False
        self._data: Array | None = None  # the memory array the cached views look into
        self._views: tuple[Array, Array] = (mem.data, mem.written)

    def check_bounds(self, who: Who, what: str) -> None:
        """Raises OutOfBounds unless every byte lies inside the memory."""
        if self.in_bounds:
            return
        if self.lo >= 0 and self.hi <= self.mem.size:
            self.mem.ensure(self.hi)
            self.in_bounds = True
            return
        where = describe(who)
        if self.mem.size == 0:
            raise OutOfBounds(
                f"npu: {what} of {self.mem.name}, which this design does not have (size 0)", where
            )
        bad = self.lo if self.lo < 0 else self.hi - 1
        raise OutOfBounds(
            f"npu: out-of-bounds {what} of {self.mem.name} at byte {bad} "
            f"(access covers [{self.lo}, {self.hi}), "
            f"{self.mem.name} holds {self.mem.size} bytes)",
            where,
        )

    def _view(self, arr: Array, dtype: Any, per_byte: bool) -> Array:
        size = self.dt.itemsize
        if per_byte:  # one entry per byte of each element: shape + (itemsize,)
            shape = (*self.shape, size)
            strides = (*(s * size * arr.itemsize for s in self.strides), arr.itemsize)
        else:
            shape, strides = self.shape, tuple(s * size for s in self.strides)
        return np.ndarray(
            shape, dtype=dtype, buffer=arr, offset=self.base * arr.itemsize, strides=strides
        )

    def _cached(self) -> tuple[Array, Array]:
        if self._data is not self.mem.data:  # first use, or device memory grew and moved
            self._views = (
                self._view(self.mem.data, self.dt.storage, per_byte=False),
                self._view(self.mem.written, np.bool_, per_byte=True),
            )
            self._data = self.mem.data
        return self._views

    def view(self) -> Array:
        """A writable numpy view of the elements (storage dtype)."""
        return self._cached()[0]

    def written_view(self) -> Array:
        """A writable view of the written map: shape + (itemsize,) booleans."""
        return self._cached()[1]

    def read(self, who: Who, what: str = "read") -> Array:
        """A copy of the elements; faults when out of bounds or any byte was never written."""
        self.check_bounds(who, what)
        data, w = self._cached()
        if not self.all_written:
            if not w.all():
                raise self._uninitialized(w, who, what)
            self.all_written = True
        return np.array(data)

    def _uninitialized(self, w: Array, who: Who, what: str) -> UninitializedRead:
        first = np.argwhere(~w)[0]
        size = self.dt.itemsize
        addr = (
            self.base
            + size * sum(int(i) * s for i, s in zip(first[:-1], self.strides, strict=True))
            + int(first[-1])
        )
        return UninitializedRead(
            f"npu: {what} of never-written {self.mem.name} memory at byte {addr} "
            f"(element {tuple(int(i) for i in first[:-1])} of a "
            f"{self.dt.name.lower()} box {self.shape})",
            describe(who),
        )

    def write(self, values: Array, who: Who, what: str = "write") -> None:
        """Stores `values` (broadcast to the box) and marks the bytes written."""
        self.check_bounds(who, what)
        data, w = self._cached()
        data[...] = values
        if not self.all_written:
            w[...] = True
            self.all_written = True

    @cached_property
    def dense(self) -> bool:
        """True when the access covers [lo, hi) exactly (C-contiguous, no gaps)."""
        expect = 1
        for n, s in zip(reversed(self.shape), reversed(self.strides), strict=True):
            if n > 1 and s != expect:
                return False
            expect *= n
        return True

    @cached_property
    def runs(self) -> tuple[Array, int]:
        """(starts, length): the byte intervals [start, start + length) the access touches."""
        size = self.dt.itemsize
        if self.dense:
            return np.array([self.lo], np.int64), self.hi - self.lo
        shape, strides = list(self.shape), list(self.strides)
        length = size
        if shape[-1] == 1 or strides[-1] == 1:  # rows are contiguous: one run per row
            length = size * shape[-1]
            shape[-1], strides[-1] = 1, 0
        offs = np.zeros(1, np.int64)
        for n, s in zip(shape, strides, strict=True):
            offs = (offs[:, None] + np.arange(n, dtype=np.int64) * s * size).ravel()
        return self.base + offs, length


@dataclass
class Rows:
    """Gathered rows: `count` runs of `length` bytes at arbitrary starts (for races only)."""

    key: Any
    starts: Array
    length: int
    lo: int = field(init=False)
    hi: int = field(init=False)
    dense: bool = False

    def __post_init__(self) -> None:
        self.lo = int(self.starts.min())
        self.hi = int(self.starts.max()) + self.length

    @property
    def runs(self) -> tuple[Array, int]:
        return self.starts, self.length


def runs_overlap(a: tuple[Array, int], b: tuple[Array, int]) -> int | None:
    """The first byte address two sets of runs share, or None.

    >>> runs_overlap((np.array([0, 100]), 10), (np.array([50, 105]), 4))
    105
    """
    sa = np.sort(a[0])
    sb, lb = b
    idx = np.searchsorted(sa, sb - a[1], side="right")  # first run of a ending after sb
    ok = idx < sa.size
    idx = np.minimum(idx, sa.size - 1)
    hit = ok & (sa[idx] < sb + lb)
    if not hit.any():
        return None
    k = int(np.argmax(hit))
    return int(max(sa[idx[k]], sb[k]))
