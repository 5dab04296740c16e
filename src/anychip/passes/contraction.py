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


def _dims(vars_: list[str], extents: dict[str, int], st: Strides) -> list[tuple[int, int]]:
    """`vars_` (outermost first) as (extent, stride) runs of one operand, neighbours
    merged where they fold into one stride: the loops an offset table walks."""
    out: list[tuple[int, int]] = []
    for x in vars_:
        s = st.get(x, 0)
        if out and out[-1][1] == s * extents[x]:
            out[-1] = (out[-1][0] * extents[x], s)
        else:
            out.append((extents[x], s))
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
    red_vars = [lp.var for lp in reds]
    # K: one stride for a; for b one stride or an offset table over several loops (an
    # implicit-GEMM convolution's K = C x kh x kw read from the padded input)
    k_dims = _dims(red_vars, ext, sb)
    ka = _fold(red_vars, ext, [sa])
    if ka is None:
        return None
    out_vars = [lp.var for lp in outs]
    # n: an output axis only b moves along; m: one only a moves along; the rest is batch
    n_cands = [x for x in out_vars if x in sb and x not in sa]
    m_cands = [x for x in out_vars if x in sa and x not in sb]
    nv = min(n_cands, key=lambda x: abs(so.get(x, 0)), default=None)
    mv = min(m_cands, key=lambda x: abs(so.get(x, 0)), default=None)
    n_vars = [nv] if nv is not None else []
    batch_vars = sorted(
        (x for x in out_vars if x not in (nv, mv)), key=lambda x: -abs(so.get(x, 0))
    )
    bs = _fold(batch_vars, ext, [sa, sb, so])
    if bs is None and len(n_cands) > 1 and len(k_dims) == 1:
        # all of b's own axes as columns through a table (a convolution's weight gradient:
        # columns C x kh x kw of the padded input's taps), when they fold in out
        n_vars = sorted(n_cands, key=lambda x: -abs(so.get(x, 0)))
        batch_vars = [x for x in batch_vars if x not in n_vars]
        bs = _fold(batch_vars, ext, [sa, sb, so])
    no = _fold(n_vars, ext, [so])
    if bs is None or no is None:
        return None
    n_dims = _dims(n_vars, ext, sb) if n_vars else [(1, 0)]
    batch = math.prod(ext[x] for x in batch_vars)
    m, n = ext.get(mv or "", 1), math.prod(ext[x] for x in n_vars)
    kext = math.prod(lp.extent for lp in reds)

    def st(s: Strides, x: str | None) -> int:
        return s.get(x, 0) if x is not None else 0

    a = Operand(la.buf, la.dtype, oa, (bs[0],), st(sa, mv), ka[0])
    b = Operand(lb.buf, lb.dtype, ob, (bs[1],), k_dims[-1][1], n_dims[-1][1])
    out = Operand(0, k.bufs[0].dtype, oo, (bs[2],), st(so, mv), no[0])
    kd = tuple(k_dims) if len(k_dims) > 1 else ()
    nd = tuple(n_dims) if len(n_dims) > 1 else ()
    if m > 1 and n > 1 and abs(out.rows) == 1 and abs(out.cols) != 1 and not kd + nd:
        # out is stored column-major (a weight gradient x.T @ g written as W's layout):
        # compute out.T = b.T @ a.T instead, so the GEMM writes rows of contiguous C
        return ContractionSpec((batch,), n, m, kext, _t(b), _t(a), _t(out), acc.dtype)
    return ContractionSpec((batch,), m, n, kext, a, b, out, acc.dtype, kd, nd)


def _t(op: Operand) -> Operand:
    """The transposed view of a matmul operand: rows and columns swap strides."""
    return replace(op, rows=op.cols, cols=op.rows)
