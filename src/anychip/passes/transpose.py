"""Pass: tile elementwise kernels that read through a transposed view, so the strided
reads of a tile reuse the cache lines they bring in (x.T.contiguous(): 12 -> ~2 ms at 2048²).

The two innermost loops (a, b) of an elementwise nest become tile loops and a small square
of `for a' [serial]: for b' [vector]`: the store still writes contiguous rows of the tile,
and the column of the source each row reads touches the same TILE cache lines as the
previous row, which are still in L1.
"""

from __future__ import annotations

from dataclasses import replace

from anychip.ir.kernel import (
    INDEX,
    KernelIR,
    Load,
    Loop,
    LoopKind,
    Stmt,
    Store,
    Var,
    alu,
    const,
    walk_exprs,
)
from anychip.ir.ops import Ops
from anychip.passes.interchange import coefficient
from anychip.passes.reuse import substitute_stmt
from anychip.passes.simplify import simplify

TILES = (16, 8)  # tile sides tried, largest first: 16 float32 = one AVX-512 vector
MIN_STRIDE = 16  # a read this far apart between neighbours along b: its own cache line


def tile_transposes(k: KernelIR) -> KernelIR:
    """`k` with each elementwise nest reading a transposed view tiled.

    >>> from anychip.ir.kernel import *
    >>> from anychip.ir.ops import Ops
    >>> from anychip import dtypes
    >>> f32, i, j = dtypes.float32, Var("i", INDEX), Var("j", INDEX)
    >>> at = lambda r, c: alu(Ops.ADD, alu(Ops.MUL, r, const(64)), c)
    >>> body = (Loop("i", 64, (Loop("j", 64, (Store(0, at(i, j), Load(1, at(j, i), f32)),),
    ...     LoopKind.PARALLEL),), LoopKind.PARALLEL),)
    >>> bufs = (BufDecl("out", f32, 4096, BufRole.OUT), BufDecl("x", f32, 4096, BufRole.IN))
    >>> text = render_ir(tile_transposes(KernelIR("k", KernelKind.ELEMENTWISE, bufs, body)))
    >>> for line in text.splitlines()[3:7]:
    ...     print(line.strip())
    for ti in 0..4 [parallel]:
    for tj in 0..4 [parallel]:
    for i in 0..16 [serial]:
    for j in 0..16 [vector]:
    """
    if k.contraction is not None:
        return k
    body = tuple(_tile(_reorder(s)) for s in k.body)
    return simplify(replace(k, body=body)) if body != k.body else k


def _reorder(s: Stmt) -> Stmt:
    """A nest of parallel loops whose transposed read is contiguous along a loop further out
    than the second innermost ((64, 256, 256).permute(2, 0, 1)): that loop moved to second
    innermost, so `_tile` pairs it with the innermost (parallel loops reorder freely)."""
    nest: list[Loop] = []
    cur: Stmt = s
    while isinstance(cur, Loop) and cur.kind is LoopKind.PARALLEL:
        nest.append(cur)
        if len(cur.body) != 1 or not isinstance(cur.body[0], Loop):
            break
        cur = cur.body[0]
    inner = nest[-1] if nest else None
    if inner is None or len(nest) < 3 or any(isinstance(x, Loop) for x in inner.body):
        return s
    if not all(isinstance(x, Store) and x.combine is None for x in inner.body):
        return s
    b = inner.var
    stores = [x for x in inner.body if isinstance(x, Store)]
    if any(coefficient(x.index, b) != 1 for x in stores):
        return s
    for ld in (e for x in stores for e in walk_exprs(x.value) if isinstance(e, Load)):
        if abs(coefficient(ld.index, b) or 0) < MIN_STRIDE:
            continue
        if coefficient(ld.index, nest[-2].var) == 1:
            return s  # already next to the innermost loop
        movers = [lp for lp in nest[:-2] if coefficient(ld.index, lp.var) == 1]
        if movers:
            order = [lp for lp in nest[:-1] if lp is not movers[0]] + [movers[0]]
            out: Stmt = inner
            for lp in reversed(order):
                out = Loop(lp.var, lp.extent, (out,), lp.kind)
            return out
    return s


def _tile(s: Stmt) -> Stmt:
    if not isinstance(s, Loop) or s.kind is not LoopKind.PARALLEL:
        return s
    inner = s.body[0] if len(s.body) == 1 else None
    if not isinstance(inner, Loop) or inner.kind is not LoopKind.PARALLEL:
        return s
    if isinstance(inner.body[0], Loop) if len(inner.body) == 1 else False:
        return replace(s, body=(_tile(inner),))  # not the two innermost loops yet
    side = _side(s, inner)
    if side is None:
        return s
    a, b = s.var, inner.var
    ta, tb = Var(f"t{a}", INDEX), Var(f"t{b}", INDEX)
    body = inner.body
    for var, tile in ((a, ta), (b, tb)):
        at = alu(Ops.ADD, alu(Ops.MUL, tile, const(side)), Var(var, INDEX))
        body = tuple(substitute_stmt(x, var, at) for x in body)
    square = Loop(a, side, (Loop(b, side, body, LoopKind.VECTOR),), LoopKind.SERIAL)
    tiles_b = Loop(tb.name, inner.extent // side, (square,), LoopKind.PARALLEL)
    return Loop(ta.name, s.extent // side, (tiles_b,), LoopKind.PARALLEL)


def _side(outer: Loop, inner: Loop) -> int | None:
    """The tile side for loops (a, b) holding only plain stores, contiguous along b, with a
    load contiguous along a and far apart along b (a transposed read); else None."""
    if not all(isinstance(x, Store) and x.combine is None for x in inner.body):
        return None
    a, b = outer.var, inner.var
    stores = [x for x in inner.body if isinstance(x, Store)]
    if any(coefficient(x.index, b) != 1 for x in stores):
        return None
    loads = [e for x in stores for e in walk_exprs(x.value) if isinstance(e, Load)]
    transposed = any(
        coefficient(ld.index, a) == 1 and abs(coefficient(ld.index, b) or 0) >= MIN_STRIDE
        for ld in loads
    )
    if not transposed:
        return None
    return next((t for t in TILES if outer.extent % t == 0 and inner.extent % t == 0), None)
