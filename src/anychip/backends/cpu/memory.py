"""Host memory for the `cpu` backend: 64-byte aligned numpy buffers, recycled through a pool.

A training step frees and allocates the same sizes every iteration; fresh pages from the
OS cost a page fault and a zeroing each (measured ~1 ms per MLP step under `anychip.jit`,
~950 faults), so freed buffers wait in a pool keyed by byte size until the next request.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from anychip.dtypes import DType
from anychip.errors import OutOfMemoryError

ALIGN = 64  # bytes: a cache line, and the widest vector load (AVX-512)


def _limit() -> int:
    """Bytes the pool may hold: ANYCHIP_CPU_POOL_MB (default 1024; 0 turns pooling off)."""
    try:
        return int(os.environ.get("ANYCHIP_CPU_POOL_MB", "1024")) << 20
    except ValueError:
        return 1024 << 20


class Pool:
    """Free blocks by byte size: 64-byte aligned uint8 views, each with its address. `take`
    reuses one or allocates; `give` keeps one while the pool holds at most `limit` bytes
    (else the block is left to numpy to free).

    >>> p = Pool(1 << 20)
    >>> block, ptr = p.take(256)
    >>> ptr % ALIGN, p.give(block, ptr), p.take(256)[0] is block
    (0, None, True)
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.free: dict[int, list[tuple[np.ndarray, int]]] = {}
        # threads take and give at once; reentrant because `give` runs from __del__, which
        # the garbage collector may call inside `take` on the same thread
        self.lock = threading.RLock()

    def take(self, nbytes: int) -> tuple[np.ndarray, int]:
        with self.lock:
            blocks = self.free.get(nbytes)
            if blocks:
                self.held -= nbytes
                return blocks.pop()
        try:
            raw = np.empty(nbytes + ALIGN, dtype=np.uint8)
        except MemoryError:
            self.clear()  # pooled blocks are the first memory to give back; try once more
            try:
                raw = np.empty(nbytes + ALIGN, dtype=np.uint8)
            except MemoryError:
                raise OutOfMemoryError(
                    f"cpu: cannot allocate {nbytes} bytes of host memory"
                ) from None
        base = raw.ctypes.data
        skip = -base % ALIGN
        # the aligned bytes as a view (it keeps `raw` alive): reading it needs no ctypes
        return raw[skip : skip + nbytes], base + skip

    def give(self, block: np.ndarray, ptr: int) -> None:
        nbytes = block.size
        with self.lock:
            if self.held + nbytes <= self.limit:
                self.free.setdefault(nbytes, []).append((block, ptr))
                self.held += nbytes

    def clear(self) -> None:
        with self.lock:
            self.free.clear()
            self.held = 0


POOL = Pool(_limit())


class Memory:
    """A host buffer of `size` elements of `dtype` at address `ptr` (read once, so a launch
    costs no numpy calls); `array` views it. Its block goes back to the pool when the last
    reference to the Memory is dropped.

    >>> m = Memory(3, np.dtype(np.float32))
    >>> m.array.shape, m.ptr % ALIGN
    ((3,), 0)
    """

    # stream: the cpu stream whose sequence last used the memory (backends/cpu/stream.py)
    __slots__ = ("_raw", "dtype", "ptr", "size", "stream")

    def __init__(self, size: int, dtype: np.dtype[np.generic]) -> None:
        self.stream: Any = None
        # at least one element, so the address is valid even for empty tensors
        self.size, self.dtype = max(size, 1), dtype
        self._raw, self.ptr = POOL.take(-(-self.size * dtype.itemsize // ALIGN) * ALIGN)

    @property
    def array(self) -> np.ndarray:
        return self._raw[: self.size * self.dtype.itemsize].view(self.dtype)

    def __del__(self, give: Any = POOL.give) -> None:  # bound early: safe at exit too
        raw = getattr(self, "_raw", None)  # unset when the allocation itself failed
        if raw is not None:
            give(raw, self.ptr)


_NP: dict[DType, np.dtype[np.generic]] = {}  # numpy's dtype of each DType, made once


def allocate(size: int, dtype: DType) -> Memory:
    np_dtype = _NP.get(dtype)
    if np_dtype is None:
        np_dtype = _NP[dtype] = np.dtype(dtype.np)
    return Memory(size, np_dtype)
