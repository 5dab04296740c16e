"""Lowering: one scheduled kernel (a primitive graph over PARAM inputs) -> kernel IR.

Movement ops become index expressions (strides, offsets, validity for PAD, reversed
indices for FLIP, div/mod for reshapes), gathers become data-dependent loads, and each
reduction becomes an accumulator loop placed in the outermost loop it depends on, so a
softmax row computes its max and sum once per row, not once per element.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from anychip import dtypes
from anychip.dtypes import DType
from anychip.ir.kernel import (
    INDEX,
    Acc,
    Alu,
    BufDecl,
    BufRole,
    Const,
    Expr,
    KernelIR,
    KernelKind,
    Load,
    Loop,
    LoopKind,
    SortRow,
    Stmt,
    Store,
    Update,
    Var,
    alu,
    arg_name,
    const,
    walk_exprs,
)
from anychip.ir.ops import ELEMENTWISE, REDUCE, Node, Ops, toposort
from anychip.runtime.device import Kernel

Index = tuple[Expr, ...]
ZERO = const(0)


def lower(kernel: Kernel) -> KernelIR:
    """The kernel IR computing `kernel.ast` (bufs[0] is the output, bufs[1+i] PARAM i).

    >>> import anychip as ac
    >>> from anychip.passes.schedule import schedule
    >>> from anychip.runtime.realize import buffer_of
    >>> item = schedule([(ac.ones(3) * 2).node], buffer_of)[0]
    >>> lower(item.kernel).body[0].extent
    3
    """
    return _Lowerer(kernel).run()


def zero(dtype: DType) -> Const:
    return Const(False if dtype is dtypes.bool_ else 0 if dtype.is_int else 0.0, dtype)


def strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    out, acc = [], 1
    for s in reversed(shape):
        out.append(acc)
        acc *= s
    return tuple(reversed(out))


def flat(idx: Index, shape: tuple[int, ...]) -> Expr:
    """Row-major offset of `idx` in a contiguous array of `shape`."""
    terms: list[Expr] = []
    for i, st, s in zip(idx, strides(shape), shape):
        if s != 1 and not (isinstance(i, Const) and i.value == 0):
            terms.append(i if st == 1 else alu(Ops.MUL, i, const(st)))
    out: Expr = terms[0] if terms else ZERO
    for t in terms[1:]:
        out = alu(Ops.ADD, out, t)
    return out


def both(a: Expr | None, b: Expr) -> Expr:
    return b if a is None else alu(Ops.AND, a, b)


def in_range(i: Expr, lo: int, hi: int) -> Expr:
    """lo <= i < hi as a bool expression (i is never negative when lo is 0)."""
    cond: Expr | None = None
    if lo > 0:
        cond = alu(Ops.CMPLT, const(lo - 1), i, dtype=dtypes.bool_)
    return both(cond, alu(Ops.CMPLT, i, const(hi), dtype=dtypes.bool_))


class _Lowerer:
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        root = kernel.ast
        params = {n.arg: n for n in toposort([root]) if n.op is Ops.PARAM}
        self.bufs = [BufDecl("out", root.dtype, root.numel, BufRole.OUT)]
        for i in range(len(params)):
            self.bufs.append(BufDecl(f"in{i}", params[i].dtype, params[i].numel, BufRole.IN))
        self.vars: list[str] = []  # open loops, outermost first
        self.levels: list[list[Stmt]] = [[]]  # levels[d]: statements inside loop d-1
        self.var_level: dict[str, int] = {}  # where a name is bound: loop d -> d+1, acc -> level
        self.memo: dict[tuple[int, Index, Expr | None], Expr] = {}
        self.counts: dict[str, int] = {}
        args = {n.arg: n.dtype for n in toposort([root]) if n.op is Ops.ARG}
        self.scalars = tuple(args[i] for i in range(len(args)))
        for i in range(len(args)):
            self.var_level[arg_name(i)] = 0  # bound for the whole kernel

    def fresh(self, prefix: str) -> str:
        n = self.counts.get(prefix, 0)
        self.counts[prefix] = n + 1
        return f"{prefix}{n}"

    # --- loop nests ------------------------------------------------------------------
    def open_loop(self, prefix: str) -> Var:
        v = self.fresh(prefix)
        self.vars.append(v)
        self.levels.append([])
        self.var_level[v] = len(self.vars)
        return Var(v, INDEX)

    def close_loop(self, extent: int, kind: LoopKind) -> None:
        body = self.levels.pop()
        self.levels[-1].append(Loop(self.vars.pop(), extent, tuple(body), kind))

    def loops_over(self, shape: tuple[int, ...], kinds: dict[int, LoopKind]) -> list[Expr]:
        """Open one loop per non-1 axis of `shape` (in `kinds`' order), return the index."""
        idx: list[Expr] = [ZERO] * len(shape)
        for ax in kinds:
            if shape[ax] != 1:
                idx[ax] = self.open_loop("r" if kinds[ax] is LoopKind.REDUCE else "i")
        return idx

    def close_all(self, shape: tuple[int, ...], kinds: dict[int, LoopKind]) -> None:
        for ax in reversed(list(kinds)):
            if shape[ax] != 1:
                self.close_loop(shape[ax], kinds[ax])

    def level_of(self, exprs: list[Expr | None]) -> int:
        """The outermost level where every name these expressions use is bound."""
        lvl = 0
        for e in exprs:
            if e is not None:
                for x in walk_exprs(e):
                    if isinstance(x, Var):
                        lvl = max(lvl, self.var_level[x.name])
        return lvl

    # --- kernel shapes ---------------------------------------------------------------
    def run(self) -> KernelIR:
        root, kind = self.kernel.ast, self.kernel.kind
        if kind is KernelKind.SCATTER:
            self.scatter(root)
        elif kind is KernelKind.SCAN:
            self.scan(root)
        elif kind is KernelKind.SORT:
            self.sort(root)
        elif kind is KernelKind.REDUCE and middle_reduce(root) is not None:
            self.reduce_into_rows(root)
        else:
            self.pointwise(root, root)
        name = self.kernel.name
        alias = None if self.kernel.alias is None else 1 + self.kernel.alias
        body = tuple(self.levels[0])
        return KernelIR(name, kind, tuple(self.bufs), body, None, self.scalars, alias)

    def pointwise(self, root: Node, value_of: Node) -> None:
        """for each output element: out[idx] = value_of[idx]."""
        kinds = dict.fromkeys(range(len(root.shape)), LoopKind.PARALLEL)
        idx = tuple(self.loops_over(root.shape, kinds))
        self.levels[-1].append(Store(0, flat(idx, root.shape), self.value(value_of, idx, None)))
        self.close_all(root.shape, kinds)

    def reduce_into_rows(self, root: Node) -> None:
        """A reduction over middle axes, e.g. bags (B, L, D).sum(1): for b [parallel],
        for l [serial], for d [vector]: out[b, d] op= src[b, l, d]. The innermost loop runs
        over contiguous kept elements, and each output element still folds its values in
        order (the same result as one accumulator per element)."""
        red = middle_reduce(root)
        assert red is not None
        src, shape = red.srcs[0], red.srcs[0].shape
        first = min(a for a in red.arg if shape[a] != 1)
        outer = {a: LoopKind.PARALLEL for a in range(first) if shape[a] != 1}
        inner = [a for a in range(first, len(shape)) if a not in red.arg and shape[a] != 1]
        kinds = {a: LoopKind.VECTOR if a == inner[-1] else LoopKind.SERIAL for a in inner}
        idx = self.loops_over(shape, outer)
        combine = {Ops.SUM: Ops.ADD, Ops.PROD: Ops.MUL, Ops.RMAX: Ops.MAX, Ops.RMIN: Ops.MIN}
        for phase in ("init", "fold"):
            if phase == "fold":
                axes = {a: LoopKind.SERIAL for a in red.arg if shape[a] != 1}
                ridx = self.loops_over(shape, axes)
                idx = [ridx[a] if a in axes else e for a, e in enumerate(idx)]
            iidx = self.loops_over(shape, kinds)
            full = [iidx[a] if a in kinds else e for a, e in enumerate(idx)]
            out = flat(tuple(ZERO if a in red.arg else e for a, e in enumerate(full)), red.shape)
            if phase == "init":
                self.levels[-1].append(Store(0, out, identity(red.op, red.dtype)))
            else:
                value = self.value(src, tuple(full), None)
                self.levels[-1].append(Store(0, out, value, combine[red.op]))
            self.close_all(shape, kinds)
        self.close_all(shape, axes)
        self.close_all(shape, outer)

    def scatter(self, root: Node) -> None:
        base, index, src = root.srcs
        axis = root.arg
        given = self.kernel.alias
        while given is not None and base.op is Ops.RESHAPE:  # reshapes keep element order
            base = base.srcs[0]
        if not (base.op is Ops.PARAM and base.arg == given):
            self.pointwise(root, root.srcs[0])  # a donated base already holds it: no copy
        if axis != len(src.shape) - 1 and src.shape[-1] > 1:
            self.scatter_rows(root)
            return
        # parallel over the other axes: a source row only ever adds into its own row
        kinds = {a: LoopKind.PARALLEL for a in range(len(src.shape)) if a != axis}
        kinds[axis] = LoopKind.SERIAL
        sidx = list(self.loops_over(src.shape, kinds))
        target, guard = self.gathered(self.value(index, tuple(sidx), None), root.shape[axis])
        sidx_target = tuple(target if a == axis else e for a, e in enumerate(sidx))
        value = self.value(src, tuple(sidx), None)
        store = Store(0, flat(sidx_target, root.shape), value, Ops.ADD, guard)
        self.levels[-1].append(store)
        self.close_all(src.shape, kinds)

    def scatter_rows(self, root: Node) -> None:
        """Scatter-add of rows (an embedding gradient: src (N, D) into table rows), by
        cache lines (`line_loops`): columns split between threads keep it race-free, and
        each touch of a target row is a whole line of it."""
        _, index, src = root.srcs
        axis = root.arg

        def add_line(sidx: list[Expr], inside: Expr | None) -> None:
            at = self.value(index, tuple(sidx), inside)
            target, guard = self.gathered(at, root.shape[axis])
            sidx_target = tuple(target if a == axis else e for a, e in enumerate(sidx))
            value = self.value(src, tuple(sidx), inside)
            store = Store(0, flat(sidx_target, root.shape), value, Ops.ADD, both(inside, guard))
            self.levels[-1].append(store)

        self.line_loops(src.shape, axis, root.dtype, add_line)

    def line_loops(
        self,
        shape: tuple[int, ...],
        axis: int,
        dtype: DType,
        body: Callable[[list[Expr], Expr | None], None],
    ) -> None:
        """Walk `shape` along `axis` a whole cache line of the last axis at a time: for the
        other axes [parallel], for each line of the last axis [parallel], for each step
        along `axis` in order [serial], across the line [vector]. `body(idx, inside)`
        appends the statements at index idx; `inside` (None when lines fit the row) is
        false for the lanes of the last line past the row's end, which must do nothing."""
        last = len(shape) - 1
        width = max(1, 64 // dtype.itemsize)
        d = shape[last]
        kinds = {a: LoopKind.PARALLEL for a in range(last) if a != axis}
        idx = self.loops_over(shape, kinds)
        blocks = -(-d // width)
        blk = self.open_loop("i") if blocks > 1 else ZERO
        idx[axis] = self.open_loop("s") if shape[axis] != 1 else ZERO
        col = alu(Ops.ADD, alu(Ops.MUL, blk, const(width)), self.open_loop("i"))
        idx[last] = col
        body(idx, alu(Ops.CMPLT, col, const(d), dtype=dtypes.bool_) if d % width else None)
        self.close_loop(min(width, d), LoopKind.VECTOR)
        if shape[axis] != 1:
            self.close_loop(shape[axis], LoopKind.SERIAL)
        if blocks > 1:
            self.close_loop(blocks, LoopKind.PARALLEL)
        self.close_all(shape, kinds)

    def scan(self, root: Node) -> None:
        axis = root.arg
        last = len(root.shape) - 1
        halves = (dtypes.float16, dtypes.bfloat16)
        if axis != last and root.shape[last] > 1 and root.dtype not in halves:
            self.scan_rows(root)
            return
        kinds = {a: LoopKind.PARALLEL for a in range(len(root.shape)) if a != axis}
        idx = self.loops_over(root.shape, kinds)
        acc = self.fresh("acc")
        self.levels[-1].append(Acc(acc, Ops.SUM, root.dtype))
        idx[axis] = self.open_loop("s")
        self.levels[-1].append(Update(acc, self.value(root.srcs[0], tuple(idx), None)))
        self.levels[-1].append(Store(0, flat(tuple(idx), root.shape), Var(acc, root.dtype)))
        self.close_loop(root.shape[axis], LoopKind.SERIAL)
        self.close_all(root.shape, kinds)

    def scan_rows(self, root: Node) -> None:
        """A running sum down a non-innermost axis (x.cumsum(0) of a matrix), by cache lines
        (`line_loops`): out[r] = out[r - 1] + x[r] across the line. Rows are read and
        written whole, where one accumulator per column walked a column at a time; the
        sums are the same, in the same order. (Halves keep the accumulator path: they
        round once.)"""
        axis, shape = root.arg, root.shape

        def add_row(idx: list[Expr], inside: Expr | None) -> None:
            prev = list(idx)
            prev[axis] = alu(Ops.ADD, idx[axis], const(-1))
            first = alu(Ops.CMPLT, ZERO, idx[axis], dtype=dtypes.bool_)  # a row above
            above = Load(0, flat(tuple(prev), shape), root.dtype, both(inside, first))
            x = self.value(root.srcs[0], tuple(idx), inside)
            value = Alu(Ops.ADD, (above, x), root.dtype)
            self.levels[-1].append(Store(0, flat(tuple(idx), shape), value, None, inside))

        self.line_loops(shape, axis, root.dtype, add_row)

    def sort(self, root: Node) -> None:
        (src,) = root.srcs
        axis, descending = root.arg[0], root.arg[1]
        k = root.arg[2] if len(root.arg) == 3 else None  # top-k: root's axis has k, src's n
        assert src.op is Ops.PARAM, "the scheduler stores argsort's input"
        kinds = {a: LoopKind.PARALLEL for a in range(len(root.shape)) if a != axis}
        idx = tuple(self.loops_over(root.shape, kinds))
        dst, dst_st = flat(idx, root.shape), strides(root.shape)[axis]
        base, st, n = flat(idx, src.shape), strides(src.shape)[axis], src.shape[axis]
        row = SortRow(0, dst, dst_st, 1 + src.arg, base, st, n, descending, k)
        self.levels[-1].append(row)
        self.close_all(root.shape, kinds)

    # --- values ----------------------------------------------------------------------
    def value(self, n: Node, idx: Index, valid: Expr | None) -> Expr:
        """`n`'s value at index `idx` (one expression per axis of n.shape)."""
        key = (id(n), idx, valid)
        hit = self.memo.get(key)
        if hit is not None:
            return hit
        op = n.op
        v: Expr
        if op is Ops.PARAM:
            v = Load(1 + n.arg, flat(idx, n.shape), n.dtype, valid)
        elif op is Ops.CONST:
            v = Const(n.arg, n.dtype)
        elif op is Ops.ARG:
            v = Var(arg_name(n.arg), n.dtype)
        elif op in ELEMENTWISE:
            v = Alu(op, tuple(self.value(s, idx, valid) for s in n.srcs), n.dtype)
        elif op in REDUCE:
            v = self.reduce(n, idx, valid)
        elif op is Ops.PAD:
            v = self.pad(n, idx, valid)
        elif op is Ops.GATHER:
            v = self.gather(n, idx, valid)
        else:
            v = self.value(n.srcs[0], self.view(n, idx), valid)
        self.memo[key] = v
        return v

    def view(self, n: Node, idx: Index) -> Index:
        """The source index of movement op `n` at output index `idx` (PAD aside)."""
        src = n.srcs[0].shape
        if n.op is Ops.PERMUTE:
            out: list[Expr] = [ZERO] * len(src)
            for k, p in enumerate(n.arg):
                out[p] = idx[k]
            return tuple(out)
        if n.op is Ops.EXPAND:
            return tuple(ZERO if s == 1 else i for i, s in zip(idx, src))
        if n.op is Ops.SHRINK:
            return tuple(alu(Ops.ADD, i, const(a)) if a else i for i, (a, _) in zip(idx, n.arg))
        if n.op is Ops.FLIP:
            return tuple(
                alu(Ops.ADD, const(s - 1), alu(Ops.NEG, i)) if ax in n.arg else i
                for ax, (i, s) in enumerate(zip(idx, src))
            )
        assert n.op is Ops.RESHAPE, f"cannot lower {n}"
        return reshape_index(idx, n.shape, src)

    def pad(self, n: Node, idx: Index, valid: Expr | None) -> Expr:
        cond: Expr | None = None
        src_idx = list(idx)
        for ax, ((lo, hi), s) in enumerate(zip(n.arg, n.srcs[0].shape)):
            if lo or hi:
                c = in_range(idx[ax], lo, lo + s)
                cond = c if cond is None else both(cond, c)
                src_idx[ax] = alu(Ops.ADD, idx[ax], const(-lo)) if lo else idx[ax]
        if cond is None:
            return self.value(n.srcs[0], tuple(src_idx), valid)
        v = self.value(n.srcs[0], tuple(src_idx), both(valid, cond))
        return v if isinstance(v, Load) else Alu(Ops.WHERE, (cond, v, zero(n.dtype)), n.dtype)

    def gathered(self, i: Expr, size: int) -> tuple[Expr, Expr]:
        """A data-dependent index wrapped like Python's (negative counts from the end) and
        the condition that it is in range (out-of-range reads 0 and writes nothing)."""
        neg = alu(Ops.CMPLT, i, ZERO, dtype=dtypes.bool_)
        wrapped = Alu(Ops.WHERE, (neg, alu(Ops.ADD, i, const(size)), i), INDEX)
        low = alu(Ops.CMPLT, const(-1), wrapped, dtype=dtypes.bool_)
        return wrapped, both(low, alu(Ops.CMPLT, wrapped, const(size), dtype=dtypes.bool_))

    def gather(self, n: Node, idx: Index, valid: Expr | None) -> Expr:
        src, index = n.srcs
        at, guard = self.gathered(self.value(index, idx, valid), src.shape[n.arg])
        src_idx = tuple(at if a == n.arg else e for a, e in enumerate(idx))
        v = self.value(src, src_idx, both(valid, guard))
        return v if isinstance(v, Load) else Alu(Ops.WHERE, (guard, v, zero(n.dtype)), n.dtype)

    def reduce(self, n: Node, idx: Index, valid: Expr | None) -> Expr:
        """Emit an accumulator loop at the outermost level it can live at; return its var."""
        src = n.srcs[0]
        axes = [a for a in n.arg if src.shape[a] != 1]
        inner = [ZERO if a in n.arg else e for a, e in enumerate(idx)]
        if not axes:
            return self.value(src, tuple(inner), valid)
        lvl = self.level_of([*inner, valid])
        hidden_vars, hidden_levels = self.vars[lvl:], self.levels[lvl + 1 :]
        del self.vars[lvl:], self.levels[lvl + 1 :]
        acc = self.fresh("acc")
        self.levels[-1].append(Acc(acc, n.op, n.dtype))
        for a in axes:
            inner[a] = self.open_loop("r")
        self.levels[-1].append(Update(acc, self.value(src, tuple(inner), valid)))
        for a in reversed(axes):
            self.close_loop(src.shape[a], LoopKind.REDUCE)
        self.vars.extend(hidden_vars)
        self.levels.extend(hidden_levels)
        self.var_level[acc] = lvl
        return Var(acc, n.dtype)


def middle_reduce(root: Node) -> Node | None:
    """The reduction `root` is (or squeezes) when its reduced axes have kept axes both
    outside (to run in parallel) and inside (contiguous, to vectorise), else None."""
    red = root.srcs[0] if root.op is Ops.RESHAPE else root
    if red.op not in REDUCE or red.dtype in (dtypes.float16, dtypes.bfloat16, dtypes.bool_):
        return None
    if root is not red and [s for s in root.shape if s != 1] != [s for s in red.shape if s != 1]:
        return None
    shape = red.srcs[0].shape
    axes = [a for a in red.arg if shape[a] != 1]
    if not axes or any(n.op in REDUCE for n in toposort([red.srcs[0]])):
        return None  # a reduction inside (var's mean) would run per element: interchange it
    outer = math.prod(shape[: min(axes)])
    inner = math.prod(s for a, s in enumerate(shape) if a > min(axes) and a not in red.arg)
    return red if outer >= 2 and inner >= 8 else None


def identity(op: Ops, dtype: DType) -> Const:
    """The value a reduction `op` starts from."""
    if op is Ops.SUM:
        return zero(dtype)
    if op is Ops.PROD:
        return Const(1 if dtype.is_int else 1.0, dtype)
    big = math.inf if dtype.is_floating_point else None
    if big is None:
        info = np.iinfo(dtype.np)
        return Const(int(info.min if op is Ops.RMAX else info.max), dtype)
    return Const(-big if op is Ops.RMAX else big, dtype)


def reshape_index(idx: Index, shape: tuple[int, ...], src: tuple[int, ...]) -> Index:
    """Index into `src` of the element at `idx` of its reshape to `shape`: axes are matched
    in groups of equal size, so div/mod appear only where axes really split or merge."""
    out: list[Expr] = [ZERO] * len(src)
    if math.prod(src) == 0:
        return tuple(out)
    o = [a for a, s in enumerate(shape) if s != 1]
    s = [a for a, d in enumerate(src) if d != 1]
    i = j = 0
    while i < len(o):
        od, po = [o[i]], shape[o[i]]
        i += 1
        sd, ps = [], 1
        while True:
            while ps < po:
                sd.append(s[j])
                ps *= src[s[j]]
                j += 1
            if ps == po:
                break
            od.append(o[i])
            po *= shape[o[i]]
            i += 1
        pos = flat(tuple(idx[a] for a in od), tuple(shape[a] for a in od))
        inner = 1
        for a in reversed(sd):
            e = pos if inner == 1 else alu(Ops.DIV, pos, const(inner))
            out[a] = alu(Ops.MOD, e, const(src[a])) if a != sd[0] else e
            inner *= src[a]
    return tuple(out)
