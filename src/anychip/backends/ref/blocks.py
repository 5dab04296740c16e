"""Long numpy calls of the `ref` backend cut into blocks, so Ctrl-C is handled between them.

Python runs signal handlers only between calls into C, and one numpy call over 2^30
elements (or an einsum matrix product of 1024^3 multiply-adds, ~4 s) does not return
early. Elementwise primitives, reductions, cumsums and sorts (over the axes they do not
work along) and contractions whose work exceeds `REF_BLOCK` are evaluated block by block:
each block is the same numpy call on a slice, so the values are exactly those of one call.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np

REF_BLOCK = 1 << 24  # elements (or multiply-adds) per numpy call: ~10-100 ms each

Index = tuple[slice, ...]


def blocks(shape: tuple[int, ...], fixed: frozenset[int] = frozenset()) -> list[Index]:
    """Index tuples cutting `shape` into blocks of about REF_BLOCK elements, never cutting
    the axes in `fixed` (reduced axes): kept axes are taken one index at a time, in order,
    until the rest is small enough, then in ranges. One whole block when nothing can be cut.

    >>> blocks((4, 3), frozenset())
    [(slice(None, None, None), slice(None, None, None))]
    >>> len(blocks((64, 1 << 20))), len(blocks((3, 1 << 23, 4), frozenset({0})))
    (4, 7)
    """
    per_axis: list[list[slice]] = [[slice(None)] for _ in shape]
    size = math.prod(shape)
    for ax in (a for a in range(len(shape)) if a not in fixed):
        n = shape[ax]
        if size <= REF_BLOCK:
            break
        rest = size // n
        step = max(1, REF_BLOCK // rest) if rest else n
        per_axis[ax] = [slice(lo, min(lo + step, n)) for lo in range(0, n, step)]
        size = rest * min(step, n)
    return list(itertools.product(*per_axis))


def blockwise(
    fn: Callable[..., np.ndarray],
    arrays: list[np.ndarray],
    shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    fixed: frozenset[int] = frozenset(),
) -> np.ndarray:
    """fn(*arrays) (all of `shape`; the result of `out_shape`, equal but for size-1 reduced
    axes in `fixed`), computed a block at a time when it is long."""
    parts = blocks(shape, fixed)
    if len(parts) == 1:
        return fn(*arrays)
    out: np.ndarray | None = None
    for idx in parts:
        value = np.asarray(fn(*(a[idx] for a in arrays)))
        if out is None:
            out = np.empty(out_shape, value.dtype)
        out[idx] = value
    assert out is not None
    return out
