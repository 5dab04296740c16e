"""What a row kernel's group of rows shares between its inner loops: the tiles a later loop
would compute again (softmax's `exp(x - max)`, layer norm's `x - mean`), found here and
kept in the group's `ub` region by `CoreLowering` (`lower.py`), a CSE across the loops.
"""

from __future__ import annotations

from collections.abc import Callable

from anychip.backends.npu.lower_exprs import _PAR, _dt, _stmt_exprs, _vk
from anychip.backends.npu.lower_steps import KEEP_REGIONS, SLOTS, Frame, _has_loop
from anychip.ir.kernel import Alu, Expr, KernelIR, Load, Loop, Update, Var, walk_exprs
from anychip.npu.config import NpuConfig

COL = "_col"  # an inner loop's variable, renamed so that two loops' expressions compare


def group_loops(ir: KernelIR) -> list[Loop]:
    """A row kernel's inner loops: those of the body inside its parallel loops."""
    body = ir.body
    while len(body) == 1 and isinstance(body[0], Loop) and body[0].kind in _PAR:
        body = body[0].body
    return [s for s in body if isinstance(s, Loop) and not _has_loop(s.body)]


def row_slots(cfg: NpuConfig, elems: int, keep_bytes: int, loops: int, most: int) -> int:
    """The unified-buffer slots of a kernel's ring: SLOTS, or for a row kernel (one that
    keeps its groups in `ub`, `keep_bytes` a region) up to `most`. Its stores (a group's
    output rows) land while the vector unit works on the next two or three groups: their
    slot comes back that many steps later. At most (KEEP_REGIONS - 1) * loops + 1 (a
    group's loads wait for a slot too, `lower_steps._keep_loads`), and as many as hold a
    tile of `elems` float32 each (`lower_ir` falls back to SLOTS where a step does not
    fit them)."""
    if not keep_bytes:
        return SLOTS
    free = cfg.ub.size * 3 // 4 - max(0, KEEP_REGIONS - 2) * keep_bytes
    fits = free // (4 * elems + 1024)
    return max(SLOTS, min(most, (KEEP_REGIONS - 1) * loops + 1, fits))


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


class Reuse:
    """The values a row kernel's group keeps for its later loops (`plan_reuse`), and the
    key each is kept under while the group is lowered (`CoreLowering.reuse_key`)."""

    def __init__(
        self, loops: list[Loop], defs: dict[str, Expr], plain: Callable[[Load], bool]
    ) -> None:
        self.defs = defs
        self.keep = plan_reuse(loops, defs, plain) if len(loops) >= 2 else {}
        self.row_bytes = sum(self.keep.values())
        self._canon: dict[tuple[Expr, str], Expr] = {}

    def key(self, e: Expr, inner: tuple[str, int], f: Frame) -> tuple[object, ...] | None:
        """For `e` evaluated over frame `f` of the inner loop `inner` (its variable and
        extent): the key it is kept under, or None when no later loop reuses it."""
        if not self.keep:
            return None
        var, extent = inner
        c = self._canon.get((e, var))
        if c is None:
            c = self._canon[(e, var)] = canon(e, var, self.defs)
        if (c, extent) not in self.keep:
            return None
        return (c, extent, frame_key(f, var))


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
