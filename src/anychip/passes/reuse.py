"""Row reuse: a costly value a row reduction computes is stored into the output row as it
goes, and the row's store loop reads it back instead of computing it again.

Softmax is the case it is for: `sum += exp(x[r] - max)` then `out[i] = exp(x[i] - max) / sum`
becomes `sum += e; out[r] = e` then `out[i] = out[i] / sum`: one exp per element, not two.
"""

from __future__ import annotations

from dataclasses import replace

from anychip import dtypes
from anychip.ir.kernel import (
    INDEX,
    Alu,
    Expr,
    KernelIR,
    Let,
    Load,
    Loop,
    LoopKind,
    SortRow,
    Stmt,
    Store,
    Update,
    Var,
    walk_exprs,
    walk_stmts,
)
from anychip.ir.ops import Ops

COSTLY = frozenset({Ops.EXP, Ops.LOG, Ops.SIN, Ops.ERF, Ops.POW, Ops.SQRT})
MAX_ROW_BYTES = 1 << 18  # the row is read back while it is still in cache (L2)


def reuse_rows(k: KernelIR) -> KernelIR:
    """`k` with costly reduction values shared with the row store that follows them.

    >>> from anychip.ir.kernel import *
    >>> from anychip import dtypes
    >>> from anychip.ir.ops import Ops
    >>> f32 = dtypes.float32
    >>> e = lambda v: Alu(Ops.EXP, (Load(1, Var(v, INDEX), f32),), f32)
    >>> body = (Acc("a", Ops.SUM, f32),
    ...     Loop("r", 8, (Update("a", e("r")),), LoopKind.REDUCE),
    ...     Loop("i", 8, (Store(0, Var("i", INDEX), alu(Ops.DIV, e("i"), Var("a", f32))),),
    ...          LoopKind.PARALLEL))
    >>> bufs = (BufDecl("out", f32, 8, BufRole.OUT), BufDecl("in0", f32, 8, BufRole.IN))
    >>> k = reuse_rows(KernelIR("k", KernelKind.ROW, bufs, body))
    >>> print(fmt(k.body[2].body[0].value))
    (b0[i] / a)
    """
    if k.contraction is not None or k.bufs[0].dtype in (dtypes.float16, dtypes.bfloat16):
        return k
    if any(isinstance(s, Store) and s.combine is not None for s in walk_stmts(k.body)):
        return k  # read-modify-write kernels (scatter) read the output: leave them alone
    return replace(k, body=_block(k, k.body))


def _block(k: KernelIR, body: tuple[Stmt, ...]) -> tuple[Stmt, ...]:
    out = [replace(s, body=_block(k, s.body)) if isinstance(s, Loop) else s for s in body]
    for j in range(len(out)):
        for i in range(j):
            s, r = out[j], out[i]
            store = _row_store(k, s)
            if store is None or not isinstance(s, Loop):
                break
            if isinstance(r, Loop) and r.kind is LoopKind.REDUCE and r.extent == s.extent:
                shared = _share(k, r, s, store)
                if shared is not None:
                    out[i], out[j] = shared
    return tuple(out)


def _row_store(k: KernelIR, s: Stmt) -> Store | None:
    """The store of a row loop `for i: out[base + i] = value`, else None."""
    if not isinstance(s, Loop) or s.kind not in (LoopKind.PARALLEL, LoopKind.VECTOR):
        return None
    if len(s.body) != 1 or not isinstance(s.body[0], Store):
        return None
    st = s.body[0]
    if st.buf != 0 or st.valid is not None or st.combine is not None:
        return None
    if s.extent * k.bufs[0].dtype.itemsize > MAX_ROW_BYTES:
        return None
    i = Var(s.var, INDEX)
    ix = st.index
    unit = ix == i or (
        isinstance(ix, Alu)
        and ix.op is Ops.ADD
        and i in ix.srcs
        and all(i not in walk_exprs(x) for x in ix.srcs if x != i)
    )
    return st if unit else None


def _share(k: KernelIR, r: Loop, s: Loop, st: Store) -> tuple[Loop, Loop] | None:
    """(reduce loop that also stores its value, store loop reading it) or None."""
    if not all(isinstance(u, Update | Store) for u in r.body):
        return None
    if any(isinstance(x, Load) and x.buf == 0 for u in r.body for x in _exprs(u)):
        return None
    if any(isinstance(u, Store) for u in r.body):
        return None  # already shares one value with this row
    for u in r.body:
        assert isinstance(u, Update)
        v = u.value
        if v.dtype is not k.bufs[0].dtype or not any(
            isinstance(x, Alu) and x.op in COSTLY for x in walk_exprs(v)
        ):
            continue
        there = substitute(v, r.var, Var(s.var, INDEX))
        if there not in walk_exprs(st.value):
            continue
        back = Load(0, st.index, v.dtype)
        new_store = replace(st, value=_replace_expr(st.value, there, back))
        here = Store(0, substitute(st.index, s.var, Var(r.var, INDEX)), v)
        return replace(r, body=(*r.body, here)), replace(s, body=(new_store,))
    return None


def _exprs(s: Stmt) -> list[Expr]:
    if isinstance(s, Update):
        return walk_exprs(s.value)
    if isinstance(s, Store):
        return walk_exprs(s.index) + walk_exprs(s.value)
    return []


def substitute(e: Expr, name: str, to: Expr) -> Expr:
    """`e` with loop variable `name` replaced by `to`."""
    return _Subst(name, to).expr(e)


def substitute_stmt(s: Stmt, name: str, to: Expr) -> Stmt:
    """Statement `s` (nested loops too) with loop variable `name` replaced by `to`."""
    return _Subst(name, to).stmt(s)


def substitute_block(body: tuple[Stmt, ...], name: str, to: Expr) -> tuple[Stmt, ...]:
    """`substitute_stmt` of each statement, shared sub-expressions rewritten once."""
    return _Subst(name, to).block(body)


class _Subst:
    """Statements with loop variable `name` read as `to` (shared sub-expressions
    rewritten once)."""

    def __init__(self, name: str, to: Expr) -> None:
        self.name, self.to = name, to
        self.memo: dict[int, tuple[Expr, Expr]] = {}

    def block(self, body: tuple[Stmt, ...]) -> tuple[Stmt, ...]:
        return tuple(self.stmt(s) for s in body)

    def stmt(self, s: Stmt) -> Stmt:
        if isinstance(s, Loop):
            return replace(s, body=self.block(s.body))
        if isinstance(s, Let | Update):
            return replace(s, value=self.expr(s.value))
        if isinstance(s, Store):
            valid = None if s.valid is None else self.expr(s.valid)
            return replace(s, index=self.expr(s.index), value=self.expr(s.value), valid=valid)
        if isinstance(s, SortRow):
            return replace(s, dst_base=self.expr(s.dst_base), src_base=self.expr(s.src_base))
        return s

    def expr(self, e: Expr) -> Expr:
        hit = self.memo.get(id(e))
        if hit is not None and hit[0] is e:
            return hit[1]
        out: Expr = e
        if isinstance(e, Var) and e.name == self.name:
            out = self.to
        elif isinstance(e, Alu):
            out = replace(e, srcs=tuple(self.expr(x) for x in e.srcs))
        elif isinstance(e, Load):
            valid = None if e.valid is None else self.expr(e.valid)
            out = replace(e, index=self.expr(e.index), valid=valid)
        self.memo[id(e)] = (e, out)
        return out


def _replace_expr(e: Expr, old: Expr, new: Expr) -> Expr:
    """`e` with every occurrence of the sub-expression `old` replaced by `new`."""
    if e == old:
        return new
    if isinstance(e, Alu):
        return replace(e, srcs=tuple(_replace_expr(x, old, new) for x in e.srcs))
    if isinstance(e, Load):
        valid = None if e.valid is None else _replace_expr(e.valid, old, new)
        return replace(e, index=_replace_expr(e.index, old, new), valid=valid)
    return e
