"""What the npu lowering knows of expressions: storage types, index analysis (affine
indices, static values), the IR ops' vector instructions and identities, statement walks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from anychip import dtypes
from anychip.dtypes import DType
from anychip.errors import CompileError
from anychip.ir.kernel import (
    Alu,
    Const,
    Expr,
    Let,
    Load,
    Loop,
    LoopKind,
    Stmt,
    Store,
    Update,
    Var,
    walk_exprs,
)
from anychip.ir.ops import Ops
from anychip.npu.isa import (
    DT,
    BinOp,
    RedOp,
    UnOp,
)


class NpuUnsupported(CompileError, NotImplementedError):
    """An op or a kernel shape the npu backend cannot run on the chip (never a fallback)."""


# ---- storage types ---------------------------------------------------------------------
_DT = {
    "float32": DT.F32,
    "float16": DT.F16,
    "bfloat16": DT.BF16,
    "float64": DT.F64,
    "int32": DT.I32,
    "int64": DT.I64,
    "bool": DT.BOOL,
    "int8": DT.I8,
    "uint8": DT.U8,
    "int16": DT.I16,
    "uint32": DT.U32,
    "uint64": DT.U64,
}


def _dt(d: DType) -> DT:
    """The chip's element type of an anychip dtype (memory and vector unit alike)."""
    got = _DT.get(d.name)
    if got is None:
        raise NpuUnsupported(f"npu: dtype {d.name} has no npu element type")
    return got


def _vk(dt: DT) -> DT:
    """The vector unit's type for values stored as `dt`: i8 is no vector type (only casts
    touch it), so int8 values compute in i16 and wrap back to 8 bits after each op."""
    return DT.I16 if dt == DT.I8 else dt


# ---- index analysis --------------------------------------------------------------------
Affine = tuple[int, dict[str, int]]


def _affine(e: Expr, lets: dict[str, Expr]) -> Affine | None:
    """`e` as c + sum(k_v * v) over loop variables, or None."""
    if isinstance(e, Const):
        return (int(e.value), {}) if isinstance(e.value, int | bool) else None
    if isinstance(e, Var):
        if e.name in lets:
            return _affine(lets[e.name], lets)
        return (0, {e.name: 1})
    if not isinstance(e, Alu):
        return None
    if e.op is Ops.NEG:
        a = _affine(e.srcs[0], lets)
        return None if a is None else (-a[0], {v: -k for v, k in a[1].items()})
    if e.op is Ops.ADD:
        a, b = _affine(e.srcs[0], lets), _affine(e.srcs[1], lets)
        if a is None or b is None:
            return None
        out = dict(a[1])
        for v, k in b[1].items():
            out[v] = out.get(v, 0) + k
        return a[0] + b[0], out
    if e.op is Ops.MUL:
        a, b = _affine(e.srcs[0], lets), _affine(e.srcs[1], lets)
        if a is None or b is None:
            return None
        if not a[1]:
            a, b = b, a
        if b[1]:
            return None
        return a[0] * b[0], {v: k * b[0] for v, k in a[1].items()}
    return None


def _static(e: Expr, loop_vars: set[str], lets: dict[str, Expr]) -> bool:
    """True when `e` depends on loop variables only (the compiler can tabulate it)."""
    for x in walk_exprs(e):
        if isinstance(x, Load):
            return False
        if isinstance(x, Var):
            if x.name in lets:
                if not _static(lets[x.name], loop_vars, lets):
                    return False
            elif x.name not in loop_vars:
                return False
        if isinstance(x, Const) and not isinstance(x.value, int | bool):
            return False
    return True


def _np_eval(e: Expr, env: dict[str, np.ndarray], lets: dict[str, Expr]) -> np.ndarray:
    """The value of a static integer/bool expression at every point (int64 arrays)."""
    if isinstance(e, Const):
        return np.asarray(int(e.value), np.int64)
    if isinstance(e, Var):
        return _np_eval(lets[e.name], env, lets) if e.name in lets else env[e.name]
    assert isinstance(e, Alu)
    s = [_np_eval(x, env, lets) for x in e.srcs]
    with np.errstate(all="ignore"):
        return np.asarray(_np_op(e, s), np.int64)


def _np_op(e: Alu, s: list[np.ndarray]) -> Any:
    op = e.op
    if op is Ops.ADD:
        return s[0] + s[1]
    if op is Ops.MUL:
        return s[0] * s[1]
    if op is Ops.NEG:
        return -s[0]
    if op is Ops.DIV:
        q = np.where(s[1] == 0, 0, np.abs(s[0]) // np.where(s[1] == 0, 1, np.abs(s[1])))
        return np.asarray(q * np.sign(s[0]) * np.sign(s[1]), np.int64)
    if op is Ops.MOD:
        d = np.where(s[1] == 0, 1, s[1])
        r = np.abs(s[0]) % np.abs(d)
        return np.where(s[1] == 0, 0, np.sign(s[0]) * r).astype(np.int64)
    if op is Ops.POW:  # integers: a negative exponent counts as 0; wraps as the vector op
        return np.power(s[0], np.maximum(s[1], 0))
    if op is Ops.MAX:
        return np.maximum(s[0], s[1])
    if op is Ops.MIN:
        return np.minimum(s[0], s[1])
    if op is Ops.CMPLT:
        return (s[0] < s[1]).astype(np.int64)
    if op is Ops.CMPEQ:
        return (s[0] == s[1]).astype(np.int64)
    if op is Ops.AND:
        return s[0] & s[1]
    if op is Ops.OR:
        return s[0] | s[1]
    if op is Ops.XOR:
        return s[0] ^ s[1]
    if op is Ops.NOT:
        return 1 - s[0] if e.dtype is dtypes.bool_ else ~s[0]
    if op is Ops.WHERE:
        return np.where(s[0] != 0, s[1], s[2])
    if op is Ops.CAST:
        return (s[0] != 0).astype(np.int64) if e.dtype is dtypes.bool_ else s[0]
    raise NpuUnsupported(f"npu: index op {op.name} has no static evaluation")


_UN = {
    Ops.NEG: UnOp.NEG,
    Ops.SQRT: UnOp.SQRT,
    Ops.EXP: UnOp.EXP,
    Ops.LOG: UnOp.LOG,
    Ops.SIN: UnOp.SIN,
    Ops.ERF: UnOp.ERF,
    Ops.FLOOR: UnOp.FLOOR,
    Ops.NOT: UnOp.NOT,
}
_BIN = {
    Ops.ADD: BinOp.ADD,
    Ops.MUL: BinOp.MUL,
    Ops.DIV: BinOp.DIV,
    Ops.MOD: BinOp.MOD,
    Ops.POW: BinOp.POW,
    Ops.MAX: BinOp.MAX,
    Ops.MIN: BinOp.MIN,
    Ops.AND: BinOp.AND,
    Ops.OR: BinOp.OR,
    Ops.XOR: BinOp.XOR,
}
_BOOL_BIN = {Ops.ADD: BinOp.OR, Ops.MUL: BinOp.AND}  # numpy's bool + and *


def max_form(e: Alu) -> tuple[Expr, float] | None:
    """(x, c) when `e` is `where(x < c | x == c, c, x)` (relu is `x <= 0 ? 0 : x`) with c
    a number: `max(x, c)`, one `vmaxs x c` instead of two compares, an `or` and a select.
    The same values: the vector max propagates NaN (x <= c is false there) and on a tie
    gives its second operand, c (so relu(-0.0) is +0.0, as the select gives). Floats with
    any finite c; integers with c = 0 (the immediate is exact)."""
    if e.op is not Ops.WHERE or e.dtype is dtypes.bool_:
        return None
    cond, c, x = e.srcs
    if not isinstance(c, Const) or not isinstance(cond, Alu) or cond.op is not Ops.OR:
        return None
    value = float(c.value)
    if not math.isfinite(value) or (not e.dtype.is_floating_point and value != 0):
        return None
    if value == 0 and math.copysign(1.0, value) < 0:
        return None  # -0.0: the max's tie would give -0.0 where x is +0.0
    ops = {s.op: s.srcs for s in cond.srcs if isinstance(s, Alu)}
    if set(ops) != {Ops.CMPLT, Ops.CMPEQ} or ops[Ops.CMPLT] != (x, c):
        return None
    return (x, value) if ops[Ops.CMPEQ] in ((x, c), (c, x)) else None


_RED = {Ops.SUM: RedOp.SUM, Ops.RMAX: RedOp.MAX, Ops.RMIN: RedOp.MIN, Ops.PROD: RedOp.PROD}
_LINE_FOLD = {  # a combining store's fold of many rows: (combine, on bool) -> reduction
    (Ops.ADD, False): RedOp.SUM,
    (Ops.MUL, False): RedOp.PROD,
    (Ops.MAX, False): RedOp.MAX,
    (Ops.MIN, False): RedOp.MIN,
    (Ops.ADD, True): RedOp.MAX,
    (Ops.MUL, True): RedOp.MIN,
    (Ops.MAX, True): RedOp.MAX,
    (Ops.MIN, True): RedOp.MIN,
}
_COMBINE = {Ops.SUM: BinOp.ADD, Ops.RMAX: BinOp.MAX, Ops.RMIN: BinOp.MIN, Ops.PROD: BinOp.MUL}


def _identity(op: Ops, dt: DT) -> float:
    """The starting value of an accumulator (as a `vdup` immediate)."""
    if op is Ops.SUM:
        return 0.0
    if op is Ops.PROD:
        return 1.0
    ends = {
        DT.I16: (-(2.0**15), 2.0**15 - 1),
        DT.I32: (-(2.0**31), 2.0**31 - 1),
        DT.I64: (-(2.0**63), 2.0**63),
        DT.U8: (0, 255),
        DT.U32: (0, 2.0**32 - 1),
        DT.U64: (0, 2.0**64),
        DT.BOOL: (0, 1),
    }
    lo, hi = ends.get(dt, (-math.inf, math.inf))  # i64: immediates saturate to the range
    return float(lo if op is Ops.RMAX else hi)


_PAR = (LoopKind.PARALLEL, LoopKind.VECTOR)


def sole_uses(body: tuple[Stmt, ...]) -> frozenset[Expr]:
    """The loaded and computed values of a plain kernel (loops and plain stores only) that
    one operation reads once, in the whole kernel: the vector op reading one may write its
    result over it (`CoreLowering.temp`), so a step holds fewer tiles. Expressions count
    as the lowering's memo does (equal ones are one value); relu's `vmaxs` reads only x."""
    stores = []
    for s in _all_stmts(body):
        if isinstance(s, Store) and s.combine is None:
            stores.append(s)
        elif not isinstance(s, Loop):
            return frozenset()  # Lets, accumulators, scans, sorts: values live longer
    uses: dict[Expr, int] = {}
    seen: set[Expr] = set()
    for st in stores:
        for root in (st.index, st.value, st.valid):
            if root is None:
                continue
            uses[root] = uses.get(root, 0) + 2  # a store's value, index or guard: kept
            stack = [root]
            while stack:
                x = stack.pop()
                if x in seen:
                    continue
                seen.add(x)
                kids: list[Expr] = []
                if isinstance(x, Alu):
                    mx = max_form(x)
                    kids = [mx[0]] if mx else list(dict.fromkeys(x.srcs))
                elif isinstance(x, Load):
                    kids = [x.index] + ([x.valid] if x.valid is not None else [])
                for k in kids:
                    uses[k] = uses.get(k, 0) + 1
                    stack.append(k)
    return frozenset(x for x, n in uses.items() if n == 1 and isinstance(x, Alu | Load))


def _all_stmts(body: tuple[Stmt, ...]) -> Iterator[Stmt]:
    for s in body:
        yield s
        if isinstance(s, Loop):
            yield from _all_stmts(s.body)


def _stmt_exprs(stmts: tuple[Stmt, ...] | list[Stmt]) -> list[Expr]:
    out: list[Expr] = []
    for s in stmts:
        if isinstance(s, Let | Update):
            out.append(s.value)
        elif isinstance(s, Store):
            out += [s.index, s.value] + ([s.valid] if s.valid is not None else [])
    return out


def _scanned(loop: Loop) -> set[str]:
    """The accumulators an innermost loop both updates and reads (a running value, as
    CUMSUM's scan): its tiles compute them with `vcumsum` instead of a reduction."""
    updated = {s.var for s in loop.body if isinstance(s, Update)}
    read = {x.name for e in _stmt_exprs(loop.body) for x in walk_exprs(e) if isinstance(x, Var)}
    return updated & read
