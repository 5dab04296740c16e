"""Host memory for the `cpu` backend: 64-byte aligned numpy buffers, recycled through a pool.

A training step frees and allocates the same sizes every iteration; fresh pages from the
OS cost a page fault and a zeroing each (measured ~1 ms per MLP step under `anychip.jit`,
~950 faults), so freed buffers wait in a pool keyed by byte size until the next request.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from anychip.dtypes import DType

ALIGN = 64  # bytes: a cache line, and the widest vector load (AVX-512)


def _limit() -> int:
    """Bytes the pool may hold: ANYCHIP_CPU_POOL_MB (default 1024; 0 turns pooling off)."""
    try:
        return int(os.environ.get("ANYCHIP_CPU_POOL_MB", "1024")) << 20
    except ValueError:
        return 1024 << 20


class Pool:
    """Free raw blocks by byte size. `take` reuses one or allocates; `give` keeps one while
    the pool holds at most `limit` bytes (else the block is left to numpy to free).

    >>> p = Pool(1 << 20)
    >>> a = p.take(256)
    >>> p.give(a); p.take(256) is a
    True
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.free: dict[int, list[np.ndarray]] = {}

    def take(self, nbytes: int) -> np.ndarray:
        blocks = self.free.get(nbytes)
        if blocks:
            self.held -= nbytes
            return blocks.pop()
        return np.empty(nbytes + ALIGN, dtype=np.uint8)

    def give(self, raw: np.ndarray) -> None:
        nbytes = raw.size - ALIGN
        if self.held + nbytes <= self.limit:
            self.free.setdefault(nbytes, []).append(raw)
            self.held += nbytes

    def clear(self) -> None:
        self.free.clear()
        self.held = 0


POOL = Pool(_limit())


class Memory:
    """A host buffer of `size` elements, its address read once (so a launch costs no numpy
    calls); its block goes back to the pool when the last reference to it is dropped.

    >>> m = Memory(3, np.dtype(np.float32))
    >>> m.array.shape, m.ptr % ALIGN
    ((3,), 0)
    """

    __slots__ = ("_raw", "array", "ptr")

    def __init__(self, size: int, dtype: np.dtype[np.generic]) -> None:
        # at least one element, so the address is valid even for empty tensors
        nbytes = -(-max(size, 1) * dtype.itemsize // ALIGN) * ALIGN
        raw = POOL.take(nbytes)
        start = -raw.ctypes.data % ALIGN
        self._raw = raw
        self.array = raw[start : start + nbytes].view(dtype)[: max(size, 1)]
        self.ptr: int = self.array.ctypes.data

    def __del__(self, give: Any = POOL.give) -> None:  # bound early: safe at exit too
        give(self._raw)


def allocate(size: int, dtype: DType) -> Memory:
    return Memory(size, np.dtype(dtype.np))
