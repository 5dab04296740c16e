"""Recognise a lowered CONTRACTION kernel as a (batched) matmul over strided views and
attach its ContractionSpec, so targets with a matmul generator use it instead of loops.

The loop body stays as the generic fallback; no spec is attached when the access pattern
is not three strided views (a batch that will not fold into one stride, a guard other
than B's zero padding: bounds on an output index plus a reduced one, a convolution's).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

from anychip import dtypes
from anychip.ir.kernel import (
    Acc,
    Alu,
    ContractionSpec,
    Expr,
    KernelIR,
    KernelKind,
    Load,
    Loop,
    LoopKind,
    Operand,
    Stmt,
    Store,
    Update,
    Var,
)
from anychip.ir.ops import Ops
from anychip.passes.simplify import affine

Strides = dict[str, int]
# Dot products (M or N is 1) longer than this keep their loops: the blocksum pass makes
# those sums accurate, where a GEMV's vector chains would add K / 32 terms each in a row.
LONG_DOT = 8192


def attach_contraction(k: KernelIR) -> KernelIR:
    """`k` with `contraction` set when it is a matmul of strided views (else unchanged).

    >>> import anychip as ac
    >>> from anychip.passes.pipeline import lower_kernel
    >>> from anychip.runtime.realize import plan
    >>> a, b = ac.ones(4, 8).realize(), ac.ones(8, 3).realize()
    >>> ir = lower_kernel(plan([(a @ b).node])[0].kernel)
    >>> c = ir.contraction; (c.batch, c.m, c.n, c.k)
    ((1,), 4, 3, 8)
    """
    if k.kind is not KernelKind.CONTRACTION:
        return k
    spec = _spec(k)
    if spec is None or (min(spec.m, spec.n) == 1 and spec.k > LONG_DOT):
        return k
    return replace(k, contraction=spec)


def _load(e: Expr) -> Expr:
    return e.srcs[0] if isinstance(e, Alu) and e.op is Ops.CAST else e


def _operand(e: Expr, guarded: bool = False) -> tuple[Load, Strides, int] | None:
    """A load (possibly widened by a cast) as (load, var -> stride, offset); a guarded one
    only where `guarded` allows (its guard is then `_guard`'s to read)."""
    e = _load(e)
    if not isinstance(e, Load) or not e.dtype.is_floating_point:
        return None
    if e.valid is not None and not guarded:
        return None
    aff = affine(e.index)
    if aff is None:
        return None
    return e, aff[0], aff[1]


def _guard(valid: Expr | None) -> dict[frozenset[str], list[int | None]] | None:
    """A load's guard, an AND of comparisons `a < b` of affine indices, as {vars: [lo, hi]}:
    lo <= the sum of those vars < hi (None: no bound that side); None when some comparison
    is not of that form (a sum of variables, each coefficient 1, against a constant)."""
    out: dict[frozenset[str], list[int | None]] = {}
    todo = [] if valid is None else [valid]
    while todo:
        e = todo.pop()
        if isinstance(e, Alu) and e.op is Ops.AND:
            todo.extend(e.srcs)
            continue
        if not (isinstance(e, Alu) and e.op is Ops.CMPLT):
            return None
        lhs, rhs = affine(e.srcs[0]), affine(e.srcs[1])
        if lhs is None or rhs is None:
            return None
        # a < b: sum(terms) + c > 0 with terms = b - a
        terms = dict(rhs[0])
        for x, k in lhs[0].items():
            terms[x] = terms.get(x, 0) - k
        terms = {x: k for x, k in terms.items() if k}
        c = rhs[1] - lhs[1]
        signs = set(terms.values())
        if not terms or signs not in ({1}, {-1}):
            return None
        bound = out.setdefault(frozenset(terms), [None, None])
        if signs == {1}:  # sum >= 1 - c
            lo = 1 - c
            bound[0] = lo if bound[0] is None else max(bound[0], lo)
        else:  # sum < c
            bound[1] = c if bound[1] is None else min(bound[1], c)
    return out


def _nest(body: tuple[Stmt, ...]) -> tuple[list[Loop], list[Loop], Acc, Update, Store] | None:
    """Match `for outs: acc; for reds: acc <- a*b; out[...] = acc`."""
    outs: list[Loop] = []
    while len(body) == 1 and isinstance(body[0], Loop) and body[0].kind is LoopKind.PARALLEL:
        outs.append(body[0])
        body = body[0].body
    if len(body) != 3:
        return None
    acc, red, store = body
    if not isinstance(acc, Acc) or not isinstance(store, Store):
        return None
    reds: list[Loop] = []
    inner: tuple[Stmt, ...] = (red,)
    while len(inner) == 1 and isinstance(inner[0], Loop) and inner[0].kind is LoopKind.REDUCE:
        reds.append(inner[0])
        inner = inner[0].body
    if not reds or len(inner) != 1 or not isinstance(inner[0], Update):
        return None
    upd = inner[0]
    value = store.value  # the sum, or the sum rounded to the output's float dtype
    if isinstance(value, Alu) and value.op is Ops.CAST and value.dtype.is_floating_point:
        value = value.srcs[0]
    ok = acc.op is Ops.SUM and upd.var == acc.var and value == Var(acc.var, acc.dtype)
    if not ok or store.combine is not None or store.valid is not None or store.buf != 0:
        return None
    return outs, reds, acc, upd, store


def _fold(vars_: list[str], extents: dict[str, int], ops: list[Strides]) -> list[int] | None:
    """One stride per operand for `vars_` (outermost first) walked as one index."""
    if not vars_:
        return [0] * len(ops)
    for outer, inner in itertools.pairwise(vars_):
        for st in ops:
            if st.get(outer, 0) != st.get(inner, 0) * extents[inner]:
                return None
    return [st.get(vars_[-1], 0) for st in ops]


def _dims(
    vars_: list[str], extents: dict[str, int], st: Strides, keep: frozenset[str] = frozenset()
) -> tuple[list[tuple[int, int]], dict[str, int]]:
    """`vars_` (outermost first) as (extent, stride) runs of one operand, neighbours
    merged where they fold into one stride (except the loops in `keep`, which a guard
    names): the loops an offset table walks, and each variable's run."""
    out: list[tuple[int, int]] = []
    where: dict[str, int] = {}
    prev = ""
    for x in vars_:
        s = st.get(x, 0)
        if out and out[-1][1] == s * extents[x] and not {x, prev} & keep:
            out[-1] = (out[-1][0] * extents[x], s)
        else:
            out.append((extents[x], s))
        where[x], prev = len(out) - 1, x
    return out, where


def _spec(k: KernelIR) -> ContractionSpec | None:
    nest = _nest(k.body)
    if nest is None:
        return None
    outs, reds, acc, upd, store = nest
    v = upd.value
    if not (
        isinstance(v, Alu) and v.op is Ops.MUL and acc.dtype in (dtypes.float32, dtypes.float64)
    ):
        return None
    va, vb = v.srcs
    first = _load(va)
    if isinstance(first, Load) and first.valid is not None:
        va, vb = vb, va  # the guarded operand (a padded input) is B
    pa, pb, po = _operand(va), _operand(vb, guarded=True), affine(store.index)
    if pa is None or pb is None or po is None or pa[0].dtype is not pb[0].dtype:
        return None
    (la, sa, oa), (lb, sb, ob), (so, oo) = pa, pb, po
    ext = {lp.var: lp.extent for lp in outs + reds}
    red_vars = [lp.var for lp in reds]
    out_vars = [lp.var for lp in outs]
    guard = _guard(lb.valid)
    if guard is None:
        return None
    # B's zero padding: each bound on one reduced index plus one output index only b moves
    # along (a convolution's input row y + i, column x + j; the reduced one alone where
    # the output has one row), those loops kept apart
    bounds: list[tuple[str, str, int, int]] = []
    for vs, (lo, hi) in guard.items():
        kv = [x for x in vs if x in red_vars]
        nv_ = [x for x in vs if x in out_vars and x in sb and x not in sa]
        if len(kv) != 1 or len(nv_) > 1 or len(vs) != 1 + len(nv_):
            return None
        top = sum(ext[x] - 1 for x in vs) + 1  # above the largest sum: no bound
        bounds.append((kv[0], "".join(nv_), 0 if lo is None else lo, top if hi is None else hi))
    keep = frozenset(x for b in bounds for x in b[:2] if x)
    # K: one stride for a; for b one stride or an offset table over several loops (an
    # implicit-GEMM convolution's K = C x kh x kw read from the padded input)
    k_dims, k_at = _dims(red_vars, ext, sb, keep)
    ka = _fold(red_vars, ext, [sa])
    if ka is None:
        return None
    # n: an output axis only b moves along; m: one only a moves along; the rest is batch
    n_cands = [x for x in out_vars if x in sb and x not in sa]
    m_cands = [x for x in out_vars if x in sa and x not in sb]
    nv = min(n_cands, key=lambda x: abs(so.get(x, 0)), default=None)
    mv = min(m_cands, key=lambda x: abs(so.get(x, 0)), default=None)
    n_vars = [nv] if nv is not None else []
    if bounds:  # N: the guarded output loops (rows and columns of a convolution's output)
        guarded = {b[1] for b in bounds if b[1]} | set(n_vars)
        n_vars = sorted(guarded, key=lambda x: -abs(so.get(x, 0)))
    batch_vars = sorted(
        (x for x in out_vars if x not in (*n_vars, mv)), key=lambda x: -abs(so.get(x, 0))
    )
    bs = _fold(batch_vars, ext, [sa, sb, so])
    if bs is None and len(n_cands) > 1 and len(k_dims) > 1 and not bounds:
        # K through a table and no padding (a convolution without): N the output's rows
        # and columns, b's two innermost loops
        n_vars = sorted(n_cands, key=lambda x: abs(so.get(x, 0)))[1::-1]
        batch_vars = [x for x in batch_vars if x not in n_vars]
        bs = _fold(batch_vars, ext, [sa, sb, so])
    elif bs is None and len(n_cands) > 1 and len(k_dims) == 1:
        # all of b's own axes as columns through a table (a convolution's weight gradient:
        # columns C x kh x kw of the padded input's taps), when they fold in out
        n_vars = sorted(n_cands, key=lambda x: -abs(so.get(x, 0)))
        batch_vars = [x for x in batch_vars if x not in n_vars]
        bs = _fold(batch_vars, ext, [sa, sb, so])
    no = _fold(n_vars, ext, [so])
    if bs is None or no is None:
        return None
    n_dims, n_at = _dims(n_vars, ext, sb, keep) if n_vars else ([(1, 0)], {})
    if bounds and len(n_dims) > 2:
        return None  # the GEMM's packing walks N as rows of columns, no deeper
    batch = math.prod(ext[x] for x in batch_vars)
    m, n = ext.get(mv or "", 1), math.prod(ext[x] for x in n_vars)
    kext = math.prod(lp.extent for lp in reds)

    def st(s: Strides, x: str | None) -> int:
        return s.get(x, 0) if x is not None else 0

    a = Operand(la.buf, la.dtype, oa, (bs[0],), st(sa, mv), ka[0])
    b = Operand(lb.buf, lb.dtype, ob, (bs[1],), k_dims[-1][1], n_dims[-1][1])
    out = Operand(0, k.bufs[0].dtype, oo, (bs[2],), st(so, mv), no[0])
    kd = tuple(k_dims) if len(k_dims) > 1 or bounds else ()
    nd = tuple(n_dims) if len(n_dims) > 1 or bounds else ()
    bb = tuple((k_at[kv], n_at.get(nv_, -1), lo, hi) for kv, nv_, lo, hi in bounds)
    if m > 1 and n > 1 and abs(out.rows) == 1 and abs(out.cols) != 1 and not kd + nd:
        # out is stored column-major (a weight gradient x.T @ g written as W's layout):
        # compute out.T = b.T @ a.T instead, so the GEMM writes rows of contiguous C
        return ContractionSpec((batch,), n, m, kext, _t(b), _t(a), _t(out), acc.dtype)
    return ContractionSpec((batch,), m, n, kext, a, b, out, acc.dtype, kd, nd, bb)


def _t(op: Operand) -> Operand:
    """The transposed view of a matmul operand: rows and columns swap strides."""
    return replace(op, rows=op.cols, cols=op.rows)
