"""Software prefetch of gathered rows: an embedding lookup or a row scatter reads (or
adds into) one table row per iteration of its outer loop, at an address that comes from
an index buffer, so the hardware prefetcher cannot guess it and each row's cache misses
stall the loop. Where the table is larger than the caches keep (`MIN_BYTES`), the C code
asks for the row `AHEAD` iterations on at the top of each iteration
(`__builtin_prefetch`, which never faults, so a row that a guard later skips costs
nothing but the hint).

The address is the row's first element: the inner loop's variable set to 0 and the outer
loop's to min(var + AHEAD, extent - 1) (the index buffer is read only where the loop
reads it), with the outer loop's `Let`s inlined. On `bench/dlrm.py`-shaped batches (three
20K x 16 tables, 1K ids of fresh random rows a call) the bag kernel took 10.0 us against
11.6 without (best of five alternating runs, the machine loaded); a table far larger than
the last-level cache gains more, each row then being a trip to memory.
"""

from __future__ import annotations

from anychip.ir.kernel import (
    INDEX,
    Alu,
    BufDecl,
    Expr,
    Let,
    Load,
    Loop,
    LoopKind,
    Store,
    Var,
    alu,
    const,
    walk_exprs,
)
from anychip.ir.ops import Ops
from anychip.passes.reuse import substitute

AHEAD = 8  # iterations: a row is a line or two, the loop body some tens of cycles
MIN_BYTES = 1 << 19  # tables smaller than this stay in the caches


def rows(loop: Loop, bufs: tuple[BufDecl, ...]) -> list[tuple[int, Expr, bool]]:
    """(buffer, first element's index AHEAD iterations on, written) of each large table
    whose rows the inner loops of `loop` read or add into at gathered addresses."""
    if loop.kind is LoopKind.VECTOR or loop.extent < 4 * AHEAD:
        return []
    lets: dict[str, Expr] = {}
    inner: list[Loop] = []
    for x in loop.body:
        if isinstance(x, Let):
            lets[x.var] = x.value
        elif isinstance(x, Loop) and not any(isinstance(y, Loop) for y in x.body):
            inner.append(x)
    ahead = alu(Ops.MIN, alu(Ops.ADD, Var(loop.var, INDEX), const(AHEAD)), const(loop.extent - 1))
    out: list[tuple[int, Expr, bool]] = []
    seen: set[tuple[int, Expr]] = set()
    for lp in inner:
        local = dict(lets)
        for st in lp.body:
            if isinstance(st, Let):
                local[st.var] = st.value
            for buf, index, write in _accesses(st):
                if bufs[buf].size * bufs[buf].dtype.itemsize < MIN_BYTES:
                    continue
                first = _inline(substitute(index, lp.var, const(0)), local)
                if not _gathered(first, loop.var):
                    continue
                at = substitute(first, loop.var, ahead)
                if (buf, at) not in seen:
                    seen.add((buf, at))
                    out.append((buf, at, write))
    return out


def _accesses(st: object) -> list[tuple[int, Expr, bool]]:
    """(buffer, index, written) of the loads in `st` and of its read-modify-write store."""
    found: list[tuple[int, Expr, bool]] = []
    exprs: list[Expr] = []
    if isinstance(st, Let):
        exprs.append(st.value)
    elif isinstance(st, Store):
        exprs.append(st.value)
        if st.combine is not None:
            found.append((st.buf, st.index, True))
    for e in exprs:
        for x in walk_exprs(e):
            if isinstance(x, Load):
                found.append((x.buf, x.index, False))
    return found


def _inline(e: Expr, lets: dict[str, Expr]) -> Expr:
    """`e` with the names of `lets` replaced by their values (recursively)."""
    if isinstance(e, Var) and e.name in lets:
        return _inline(lets[e.name], lets)
    if isinstance(e, Alu):
        return Alu(e.op, tuple(_inline(s, lets) for s in e.srcs), e.dtype)
    if isinstance(e, Load):
        valid = None if e.valid is None else _inline(e.valid, lets)
        return Load(e.buf, _inline(e.index, lets), e.dtype, valid)
    return e


def _gathered(e: Expr, var: str) -> bool:
    """Whether `e` reads memory at an index that follows loop variable `var`."""
    for x in walk_exprs(e):
        if isinstance(x, Load) and any(
            isinstance(v, Var) and v.name == var for v in walk_exprs(x.index)
        ):
            return True
    return False
