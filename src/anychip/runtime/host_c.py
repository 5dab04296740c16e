"""Small C routines for host steps that run on every batch, where numpy's per-call cost is
most of the work: the jagged layout of an embedding bag batch (frontend/embedding.py
`_Layout`) is a dozen numpy calls, ~10 us on ~1000 ids, and a training step or a serving
batch runs one per table. Built once per machine by the system C compiler (through the
cpu backend's compiler and disk cache); where there is none, or it fails, callers keep
their numpy code, which stays the definition of the result (tests compare the two).

>>> import numpy as np
>>> ids, off = np.array([4, 1, 1, 7, 0], np.int64), np.array([0, 2, 2, 5], np.int64)
>>> out = np.empty(2 * 8, np.int64)
>>> bag_layout(ids, off, last=True, rows=9, pad=None, out=out) in (0, None)
True
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import numpy as np

_SOURCE = r"""
#include <stdint.h>

/* The (2, size) layout of n ids in bags cut by offsets (n_off of them; with `last` the
   last one ends the last bag): row 0 the ids then zeros, row 1 each position's bag, nb
   (one past the bags) past the last bag's end and at ids equal to pad (when has_pad).
   0 when the input is valid; else nonzero and out is undefined (the caller's own code
   then finds and reports the error). */
int64_t anychip_bag_layout(const int64_t *ids, int64_t n, const int64_t *off,
                           int64_t n_off, int64_t last, int64_t rows, int64_t pad,
                           int64_t has_pad, int64_t size, int64_t *out) {
    int64_t nb = last ? n_off - 1 : n_off;
    if (nb < 0 || size < n) return 5;
    if (n_off > 0 && off[0] != 0) return 1;
    for (int64_t i = 1; i < n_off; i++)
        if (off[i] < off[i - 1]) return 2;
    if (n_off > 0 && off[n_off - 1] > n) return 3;
    for (int64_t i = 0; i < n; i++)
        if ((uint64_t)ids[i] >= (uint64_t)rows) return 4;
    int64_t *bag = out + size;
    for (int64_t i = 0; i < n; i++) out[i] = ids[i];
    for (int64_t i = n; i < size; i++) out[i] = 0;
    int64_t end = 0;
    for (int64_t b = 0; b < nb; b++) {
        int64_t stop = (b + 1 < n_off) ? off[b + 1] : n;
        for (int64_t p = off[b]; p < stop; p++) bag[p] = b;
        end = stop;
    }
    for (int64_t p = end; p < size; p++) bag[p] = nb;
    if (has_pad)
        for (int64_t i = 0; i < n; i++)
            if (ids[i] == pad) bag[i] = nb;
    return 0;
}
"""

_LOCK = threading.Lock()
_FN: list[Any] = []  # [the routine] once built, [None] where it cannot be


def _routine() -> Any:
    if _FN:
        return _FN[0]
    with _LOCK:
        if not _FN:
            fn = None
            try:
                from anychip.backends.cpu import compiler

                if compiler.find_compiler() is not None:
                    lib = compiler.build(_SOURCE, ["-O2"], "anychip_bag_layout")
                    fn = lib.anychip_bag_layout
                    fn.restype = ctypes.c_int64
                    fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
                    fn.argtypes += [ctypes.c_int64] * 6 + [ctypes.c_void_p]
            except Exception:  # no usable compiler or cache: numpy does the work
                fn = None
            _FN.append(fn)
    return _FN[0]


def bag_layout(
    ids: np.ndarray, off: np.ndarray, last: bool, rows: int, pad: int | None, out: np.ndarray
) -> int | None:
    """Fill `out` ((2 * size,) int64, contiguous) with the layout of contiguous int64 `ids`
    and `off` (see the C source above): 0 when done, nonzero when the input is invalid,
    None when there is no C routine here (the caller computes it in numpy)."""
    return bag_layout_at(
        ids.ctypes.data, ids.size, off.ctypes.data, off.size, last, rows, pad,
        out.ctypes.data, out.size // 2,
    )  # fmt: skip


def bag_layout_at(
    ids: int, n: int, off: int, n_off: int, last: bool, rows: int, pad: int | None,
    out: int, size: int,
) -> int | None:  # fmt: skip
    """`bag_layout` on host addresses: int64 ids (n) and offsets (n_off) in, the (2, size)
    layout out (a replayed host step writing straight into its buffer)."""
    fn = _routine()
    if fn is None:
        return None
    rc: int = fn(
        ids, n, off, n_off, int(last), rows, 0 if pad is None else pad, int(pad is not None),
        size, out,
    )  # fmt: skip
    return rc
