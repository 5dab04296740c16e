"""Simplify index math: fold constants, normalise sums, and remove div/mod that loop
ranges prove redundant, so views of views cost what a plain strided access costs.

Integer sums are put in a canonical linear form (sorted terms, one constant), which both
makes rules like (x//c)*c + x%c -> x easy and keeps generated code stable for snapshots.
"""

from __future__ import annotations

from dataclasses import replace

from anychip import dtypes
from anychip.ir.kernel import (
    INDEX,
    Alu,
    Const,
    Expr,
    KernelIR,
    Let,
    Load,
    Loop,
    Ranges,
    SortRow,
    Stmt,
    Store,
    Update,
    Var,
    alu,
    bounds,
    const,
    fmt,
)
from anychip.ir.ops import Ops

Linear = tuple[dict[Expr, int], int]  # terms -> coefficient, constant


def simplify(k: KernelIR) -> KernelIR:
    """`k` with every expression simplified under its loops' ranges."""
    return replace(k, body=_Simplifier().block(k.body, {}))


def simplify_expr(e: Expr, ranges: Ranges) -> Expr:
    """One expression simplified, knowing each loop variable's range.

    >>> from anychip.ir.kernel import Var, INDEX, fmt, alu, const
    >>> from anychip.ir.ops import Ops
    >>> i = Var("i", INDEX)
    >>> q = alu(Ops.MUL, alu(Ops.DIV, i, const(4)), const(4))
    >>> e = alu(Ops.ADD, q, alu(Ops.MOD, i, const(4)))
    >>> fmt(simplify_expr(e, {"i": (0, 15)}))
    'i'
    """
    return _Simplifier().expr(e, ranges)


def affine(e: Expr) -> tuple[dict[str, int], int] | None:
    """{var: coefficient}, constant if `e` is an affine function of variables, else None."""
    terms, c = linear(e)
    out: dict[str, int] = {}
    for t, k in terms.items():
        if not isinstance(t, Var):
            return None
        out[t.name] = k
    return out, c


def linear(e: Expr) -> Linear:
    """`e` as sum(coefficient * term) + constant, looking through ADD, MUL by a constant
    and NEG of int64 values."""
    if isinstance(e, Const) and e.dtype is INDEX:
        return {}, int(e.value)
    if isinstance(e, Alu) and e.dtype is INDEX:
        if e.op is Ops.ADD:
            (ta, ca), (tb, cb) = linear(e.srcs[0]), linear(e.srcs[1])
            for t, k in tb.items():
                ta[t] = ta.get(t, 0) + k
            return {t: k for t, k in ta.items() if k}, ca + cb
        if e.op is Ops.NEG:
            tn, cn = linear(e.srcs[0])
            return {x: -k for x, k in tn.items()}, -cn
        if e.op is Ops.MUL:
            for a, b in ((e.srcs[0], e.srcs[1]), (e.srcs[1], e.srcs[0])):
                if isinstance(b, Const):
                    tm, cm = linear(a)
                    f = int(b.value)
                    return ({x: k * f for x, k in tm.items() if k * f}, cm * f)
    return {e: 1}, 0


def build(terms: dict[Expr, int], c: int) -> Expr:
    """The expression of a linear form, terms in a stable order."""
    out: Expr | None = None
    for t in sorted(terms, key=fmt):
        k = terms[t]
        term = t if k == 1 else alu(Ops.MUL, t, const(k))
        out = term if out is None else alu(Ops.ADD, out, term)
    if out is None:
        return const(c)
    return alu(Ops.ADD, out, const(c)) if c else out


def _div_by(x: Expr, c: int) -> Expr:
    """x // c in the canonical form `_divmod` gives it: (y // a) // c is y // (a*c)."""
    if isinstance(x, Alu) and x.op is Ops.DIV and isinstance(x.srcs[1], Const):
        return alu(Ops.DIV, x.srcs[0], const(int(x.srcs[1].value) * c))
    return alu(Ops.DIV, x, const(c))


def _merge_divmod(terms: dict[Expr, int]) -> dict[Expr, int]:
    """(x // c) * c*k + (x % c) * k -> x * k, repeated while it applies, so a flat index
    split into several axes and joined again (a reshape of a reshape) comes back whole:
    (i//9)*9 + ((i//3)%3)*3 + i%3 -> (i//3)*3 + i%3 -> i."""
    changed = True
    while changed:
        changed = False
        for t in list(terms):
            if isinstance(t, Alu) and t.op is Ops.MOD and isinstance(t.srcs[1], Const):
                x, c = t.srcs[0], int(t.srcs[1].value)
                d = _div_by(x, c)
                k = terms.get(t, 0)
                if k and c and terms.get(d, 0) == k * c:  # x % 0 has no x // 0 partner
                    del terms[t], terms[d]
                    terms[x] = terms.get(x, 0) + k
                    changed = True
    return {t: k for t, k in terms.items() if k}


class _Simplifier:
    def __init__(self) -> None:
        self.memo: dict[int, tuple[Expr, Expr]] = {}

    def block(self, body: tuple[Stmt, ...], ranges: Ranges) -> tuple[Stmt, ...]:
        out: list[Stmt] = []
        for s in body:
            if isinstance(s, Loop):
                inner = {**ranges, s.var: (0, max(s.extent - 1, 0))}
                out.append(replace(s, body=self.block(s.body, inner)))
            elif isinstance(s, Let | Update):
                out.append(replace(s, value=self.expr(s.value, ranges)))
            elif isinstance(s, Store):
                valid = self.expr(s.valid, ranges) if s.valid is not None else None
                if isinstance(valid, Const) and valid.value is False:
                    continue
                if isinstance(valid, Const):
                    valid = None
                index, value = self.expr(s.index, ranges), self.expr(s.value, ranges)
                out.append(replace(s, index=index, value=value, valid=valid))
            elif isinstance(s, SortRow):
                dst, src = self.expr(s.dst_base, ranges), self.expr(s.src_base, ranges)
                out.append(replace(s, dst_base=dst, src_base=src))
            else:
                out.append(s)
        return tuple(out)

    def expr(self, e: Expr, ranges: Ranges) -> Expr:
        hit = self.memo.get(id(e))
        if hit is not None and hit[0] is e:
            return hit[1]
        out = self._expr(e, ranges)
        self.memo[id(e)] = (e, out)
        return out

    def _expr(self, e: Expr, ranges: Ranges) -> Expr:
        if isinstance(e, Const | Var):
            return e
        if isinstance(e, Load):
            valid = self.expr(e.valid, ranges) if e.valid is not None else None
            if isinstance(valid, Const):
                if not valid.value:
                    return Const(False if e.dtype is dtypes.bool_ else 0, e.dtype)
                valid = None
            return Load(e.buf, self.expr(e.index, ranges), e.dtype, valid)
        srcs = tuple(self.expr(s, ranges) for s in e.srcs)
        return self._alu(Alu(e.op, srcs, e.dtype), ranges)

    def _alu(self, e: Alu, ranges: Ranges) -> Expr:
        op, srcs = e.op, e.srcs
        folded = _fold(e)
        if folded is not None:
            return folded
        if op is Ops.WHERE and isinstance(srcs[0], Const):
            return srcs[1] if srcs[0].value else srcs[2]
        if op in (Ops.AND, Ops.OR) and e.dtype is dtypes.bool_:
            for a, b in ((srcs[0], srcs[1]), (srcs[1], srcs[0])):
                if isinstance(a, Const):
                    return b if bool(a.value) == (op is Ops.AND) else a
        if op is Ops.CMPLT and srcs[0].dtype is INDEX:
            ra, rb = bounds(srcs[0], ranges), bounds(srcs[1], ranges)
            if ra and rb and ra[1] < rb[0]:
                return Const(True, dtypes.bool_)
            if ra and rb and ra[0] >= rb[1]:
                return Const(False, dtypes.bool_)
        if e.dtype is not INDEX:
            return e
        if op in (Ops.ADD, Ops.MUL, Ops.NEG):
            terms, c = linear(e)
            return build(_merge_divmod(terms), c)
        if op in (Ops.DIV, Ops.MOD) and isinstance(srcs[1], Const) and srcs[1].value > 0:
            return self._divmod(e, int(srcs[1].value), ranges)
        return e

    def _divmod(self, e: Alu, c: int, ranges: Ranges) -> Expr:
        x = e.srcs[0]
        if c == 1:
            return x if e.op is Ops.DIV else const(0)
        xb = bounds(x, ranges)
        if xb is None or xb[0] < 0:
            return e
        if xb[1] < c:
            return const(0) if e.op is Ops.DIV else x
        if isinstance(x, Alu) and x.op is e.op and isinstance(x.srcs[1], Const):
            inner = int(x.srcs[1].value)
            if e.op is Ops.DIV:  # (y // a) // b -> y // (a*b)
                return self._alu(alu(Ops.DIV, x.srcs[0], const(inner * c)), ranges)
            if inner % c == 0:  # (y % (b*k)) % b -> y % b
                return self._alu(alu(Ops.MOD, x.srcs[0], const(c)), ranges)
        terms, k = linear(x)
        exact = _residue_divmod(e.op, terms, k, c, ranges)
        if exact is not None:
            return self._alu(exact, ranges) if isinstance(exact, Alu) else exact
        whole = {t: v // c for t, v in terms.items() if v % c == 0}
        rest = {t: v for t, v in terms.items() if v % c}
        rest_expr = build(rest, k % c)
        rb = bounds(rest_expr, ranges)
        if (not whole and k // c == 0) or rb is None or rb[0] < 0:
            return e
        if e.op is Ops.MOD:
            return self._alu(alu(Ops.MOD, rest_expr, const(c)), ranges) if rest else const(k % c)
        q = build(whole, k // c)
        return self._alu(
            alu(Ops.ADD, q, self._alu(alu(Ops.DIV, rest_expr, const(c)), ranges)), ranges
        )


def _residue_divmod(op: Ops, terms: dict[Expr, int], k: int, c: int, ranges: Ranges) -> Expr | None:
    """x // c and x % c for x = sum(v*t) + k >= 0 when the residues r = sum((v % c)*t) +
    k % c stay within [0, c): then x = c*q + r exactly, q = sum((v // c)*t) + k // c.
    This is what makes a sliding window affine: the window trick (copies laid end to end,
    re-read with longer rows) reads (i + 9*j) % 8 with i + j < 8, which is i + j."""
    if not any(v % c != v for v in terms.values()):
        return None  # no coefficient to reduce: the general rules already saw this form
    r = build({t: v % c for t, v in terms.items() if v % c}, k % c)
    rb = bounds(r, ranges)
    if rb is None or rb[0] < 0 or rb[1] >= c:
        return None
    return r if op is Ops.MOD else build({t: v // c for t, v in terms.items() if v // c}, k // c)


def _fold(e: Alu) -> Expr | None:
    """Evaluate integer and boolean ops on constants, with C semantics."""
    if not all(isinstance(s, Const) for s in e.srcs) or e.dtype.is_floating_point:
        return None
    if any(s.dtype.is_floating_point for s in e.srcs):
        return None
    v = [s.value for s in e.srcs]  # type: ignore[union-attr]
    op = e.op
    r: object
    if op is Ops.ADD:
        r = v[0] + v[1]
    elif op is Ops.MUL:
        r = v[0] * v[1]
    elif op is Ops.NEG:
        r = -v[0]
    elif op in (Ops.DIV, Ops.MOD) and v[1] != 0:
        q = abs(v[0]) // abs(v[1]) * (1 if (v[0] < 0) == (v[1] < 0) else -1)
        r = q if op is Ops.DIV else v[0] - q * v[1]
    elif op is Ops.CMPLT:
        r = v[0] < v[1]
    elif op is Ops.CMPEQ:
        r = v[0] == v[1]
    elif op is Ops.WHERE:
        r = v[1] if v[0] else v[2]
    elif op is Ops.AND and e.dtype is dtypes.bool_:
        r = bool(v[0]) and bool(v[1])
    elif op is Ops.OR and e.dtype is dtypes.bool_:
        r = bool(v[0]) or bool(v[1])
    elif op is Ops.NOT and e.dtype is dtypes.bool_:
        r = not v[0]
    else:
        return None
    if e.dtype is INDEX and isinstance(r, int) and not isinstance(r, bool):
        return const(r)
    if e.dtype is dtypes.bool_:
        return Const(bool(r), dtypes.bool_)
    return None
