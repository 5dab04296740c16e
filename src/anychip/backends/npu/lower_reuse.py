"""What a row kernel's group of rows shares between its inner loops: the tiles a later loop
would compute again (softmax's `exp(x - max)`, layer norm's `x - mean`), found here and
kept in the group's `ub` region by `CoreLowering` (`lower.py`), a CSE across the loops.
"""

from __future__ import annotations

from collections.abc import Callable

from anychip.backends.npu.lower_exprs import _dt, _stmt_exprs, _vk
from anychip.backends.npu.lower_steps import Frame
from anychip.ir.kernel import Alu, Expr, Load, Loop, Update, Var, walk_exprs

COL = "_col"  # an inner loop's variable, renamed so that two loops' expressions compare


def canon(e: Expr, var: str, defs: dict[str, Expr]) -> Expr:
    """`e` with every Let replaced by its definition and loop variable `var` named `COL`:
    the same value at the same points of two inner loops gives the same expression."""
    if isinstance(e, Var):
        d = defs.get(e.name)
        if d is not None:
            return canon(d, var, defs)
        return Var(COL, e.dtype) if e.name == var else e
    if isinstance(e, Alu):
        return Alu(e.op, tuple(canon(x, var, defs) for x in e.srcs), e.dtype)
    if isinstance(e, Load):
        valid = None if e.valid is None else canon(e.valid, var, defs)
        return Load(e.buf, canon(e.index, var, defs), e.dtype, valid)
    return e


def frame_key(f: Frame, var: str) -> tuple[object, ...]:
    """The points of frame `f` of the inner loop over `var`, with `var` named `COL`."""

    def named(d: dict[str, int]) -> tuple[tuple[str, int], ...]:
        return tuple(sorted((COL if k == var else k, v) for k, v in d.items()))

    return (f.rows, f.cols, named(f.base), named(f.rstep), named(f.cstep))


def plan_reuse(
    loops: list[Loop], defs: dict[str, Expr], plain: Callable[[Load], bool]
) -> dict[tuple[Expr, int], int]:
    """The values to keep: {(canonical expression, loop extent): bytes per row}. A value is
    kept where a later loop of `loops` (a group's inner loops, in order) uses it whole,
    not only inside another kept value, and an earlier one computes it. It must depend on
    the loop's variable and read memory only through `plain` loads (at places the
    compiler knows, of buffers the kernel does not write), and every accumulator it reads
    must be final before the first loop that computes it."""
    updated: dict[str, int] = {}  # accumulator -> the last loop updating it
    for i, lp in enumerate(loops):
        for s in lp.body:
            if isinstance(s, Update):
                updated[s.var] = i
    exprs = [[canon(e, lp.var, defs) for e in _stmt_exprs(lp.body)] for lp in loops]

    def eligible(x: Expr, i: int) -> bool:
        if not isinstance(x, Alu):
            return False
        names = set()
        loads = False
        for y in walk_exprs(x):
            if isinstance(y, Var):
                names.add(y.name)
            elif isinstance(y, Load):
                loads = True
                if not plain(y):
                    return False
        final = all(updated.get(n, -1) < i for n in names)
        return COL in names and loads and final

    where: dict[tuple[Expr, int], set[int]] = {}
    for i, (lp, es) in enumerate(zip(loops, exprs, strict=True)):
        for e in es:
            for x in walk_exprs(e):
                if eligible(x, i):
                    where.setdefault((x, lp.extent), set()).add(i)
    shared = {k: min(v) for k, v in where.items() if len(v) >= 2}
    keep: dict[tuple[Expr, int], int] = {}

    def visit(x: Expr, i: int, extent: int) -> None:
        first = shared.get((x, extent))
        if first is not None and first < i:
            size = _vk(_dt(x.dtype)).itemsize
            keep[(x, extent)] = extent * size
            return
        if isinstance(x, Alu):
            for y in x.srcs:
                visit(y, i, extent)

    for i, (lp, es) in enumerate(zip(loops, exprs, strict=True)):
        for e in es:
            visit(e, i, lp.extent)
    return keep
