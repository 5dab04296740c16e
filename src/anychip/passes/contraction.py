"""Recognise a lowered CONTRACTION kernel as a (batched) matmul over strided views and
attach its ContractionSpec, so targets with a matmul generator use it instead of loops.

The loop body stays as the generic fallback; no spec is attached when the access pattern
is not three strided views (a guarded load, a batch that will not fold into one stride).
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


def _operand(e: Expr) -> tuple[Load, Strides, int] | None:
    """A load (possibly widened by a cast) as (load, var -> stride, offset)."""
    if isinstance(e, Alu) and e.op is Ops.CAST:
        e = e.srcs[0]
    if not isinstance(e, Load) or e.valid is not None or not e.dtype.is_floating_point:
        return None
    aff = affine(e.index)
    if aff is None:
        return None
    return e, aff[0], aff[1]


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
    ok = acc.op is Ops.SUM and upd.var == acc.var and store.value == Var(acc.var, acc.dtype)
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


def _dims(vars_: list[str], extents: dict[str, int], ops: list[Strides]) -> list[tuple[int, ...]]:
    """`vars_` (outermost first) as (extent, stride per operand) runs, neighbours merged
    where every operand folds them into one stride: the loops an offset table walks."""
    out: list[tuple[int, ...]] = []
    for x in vars_:
        strides = tuple(st.get(x, 0) for st in ops)
        if out and all(p == s * extents[x] for p, s in zip(out[-1][1:], strides, strict=True)):
            out[-1] = (out[-1][0] * extents[x], *strides)
        else:
            out.append((extents[x], *strides))
    return out


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
    pa, pb, po = _operand(v.srcs[0]), _operand(v.srcs[1]), affine(store.index)
    if pa is None or pb is None or po is None or pa[0].dtype is not pb[0].dtype:
        return None
    (la, sa, oa), (lb, sb, ob), (so, oo) = pa, pb, po
    ext = {lp.var: lp.extent for lp in outs + reds}
    # K: one stride per operand, or an offset table over several loops (implicit GEMM)
    k_dims = _dims([lp.var for lp in reds], ext, [sa, sb])
    kk = list(k_dims[-1][1:])
    out_vars = [lp.var for lp in outs]
    # n: an output axis only b moves along; m: one only a moves along; the rest is batch
    n_cands = [x for x in out_vars if x in sb and x not in sa]
    m_cands = [x for x in out_vars if x in sa and x not in sb]
    nv = min(n_cands, key=lambda x: abs(so.get(x, 0)), default=None)
    mv = min(m_cands, key=lambda x: abs(so.get(x, 0)), default=None)
    m_vars = [mv] if mv is not None else []
    batch_vars = sorted(
        (x for x in out_vars if x not in (nv, mv)), key=lambda x: -abs(so.get(x, 0))
    )
    bs = _fold(batch_vars, ext, [sa, sb, so])
    if bs is None and len(m_cands) > 1:
        # all of a's own axes as rows through a table (a convolution's weight gradient:
        # rows C x kh x kw of the padded input), when they fold in out
        m_vars = sorted(m_cands, key=lambda x: -abs(so.get(x, 0)))
        batch_vars = [x for x in batch_vars if x not in m_vars]
        bs = _fold(batch_vars, ext, [sa, sb, so])
        if _fold(m_vars, ext, [so]) is None:
            return None
    if bs is None:
        return None
    m_dims = [(e, s) for e, s in _dims(m_vars, ext, [sa])] if m_vars else [(1, 0)]
    batch = math.prod(ext[x] for x in batch_vars)
    m, n = math.prod(ext[x] for x in m_vars), ext.get(nv or "", 1)
    kext = math.prod(lp.extent for lp in reds)

    def st(s: Strides, x: str | None) -> int:
        return s.get(x, 0) if x is not None else 0

    mo = _fold(m_vars, ext, [so]) or [0]
    a = Operand(la.buf, la.dtype, oa, (bs[0],), m_dims[-1][1], kk[0])
    b = Operand(lb.buf, lb.dtype, ob, (bs[1],), kk[1], st(sb, nv))
    out = Operand(0, k.bufs[0].dtype, oo, (bs[2],), mo[0], st(so, nv))
    kd = tuple((e, s_a, s_b) for e, s_a, s_b in k_dims) if len(k_dims) > 1 else ()
    md = tuple(m_dims) if len(m_dims) > 1 else ()
    if m > 1 and n > 1 and abs(out.rows) == 1 and abs(out.cols) != 1 and not md:
        # out is stored column-major (a weight gradient x.T @ g written as W's layout):
        # compute out.T = b.T @ a.T instead, so the GEMM writes rows of contiguous C
        kd = tuple((e, s_b, s_a) for e, s_a, s_b in kd)
        return ContractionSpec((batch,), n, m, kext, _t(b), _t(a), _t(out), acc.dtype, kd)
    return ContractionSpec((batch,), m, n, kext, a, b, out, acc.dtype, kd, md)


def _t(op: Operand) -> Operand:
    """The transposed view of a matmul operand: rows and columns swap strides."""
    return replace(op, rows=op.cols, cols=op.rows)
