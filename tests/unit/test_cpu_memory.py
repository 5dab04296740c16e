"""The cpu backend's host memory: aligned buffers, recycled only once nothing refers to them."""

from __future__ import annotations

import gc
import resource

import numpy as np
import pytest

import anychip as ac
from anychip.backends.cpu import memory

pytestmark = pytest.mark.skipif("cpu" not in ac.devices(), reason="no cpu backend")


def test_buffers_are_aligned_and_sized() -> None:
    for size, dt in ((0, np.float32), (1, np.float64), (1000, np.float16), (17, np.int8)):
        m = memory.Memory(size, np.dtype(dt))
        assert m.ptr % memory.ALIGN == 0
        assert m.array.dtype == dt and m.array.size == max(size, 1)
        assert m.ptr == m.array.ctypes.data


def test_a_freed_block_is_reused_and_a_live_one_never() -> None:
    pool = memory.POOL
    a = memory.Memory(4096, np.dtype(np.float32))
    b = memory.Memory(4096, np.dtype(np.float32))
    assert a.ptr != b.ptr  # both alive: distinct memory
    ptr = a.ptr
    del a
    gc.collect()
    c = memory.Memory(4096, np.dtype(np.float32))
    assert c.ptr == ptr and c.ptr != b.ptr
    assert pool.held >= 0


def test_the_pool_keeps_at_most_its_limit() -> None:
    pool = memory.Pool(limit=1024)
    small, big = pool.take(512), pool.take(4096)
    pool.give(*big)  # over the limit: left to numpy
    pool.give(*small)
    assert pool.held == 512 and pool.take(4096)[0] is not big[0] and pool.take(512)[0] is small[0]
    assert pool.held == 0


def test_a_repeated_step_does_not_fault_in_fresh_pages() -> None:
    # eight 1 MiB results alive at once, then all dropped (as a replayed plan does): glibc
    # hands the freed heap top back to the OS, so without recycling every repetition
    # faults in ~2048 fresh pages
    x = ac.randn(512, 512, device="cpu").realize()

    def step() -> None:
        ys = [(x * float(i)).realize() for i in range(1, 9)]
        del ys

    step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 5 * 8 * 256 // 8  # far below one fault per fresh 4 KiB page
