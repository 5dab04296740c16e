"""The arithmetic of the chip's units, bit for bit: how each dtype rounds, accumulates, converts.

All functions take and return numpy arrays in storage form (bf16 as uint16 bit patterns) and
work on whole tiles at once; `npu/simulator.py` calls them, and `docs/npu-isa.md` states them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from anychip.dtypes import bf16_to_f32, f32_to_bf16
from anychip.npu.isa import DT, BinOp, CastMode, CmpOp, RedOp, UnOp

Array = np.ndarray[Any, Any]
_INT_RANGE = {DT.I32: (-(2**31), 2**31 - 1), DT.I8: (-128, 127), DT.I64: (-(2**63), 2**63 - 1),
              DT.U8: (0, 255), DT.I16: (-(2**15), 2**15 - 1), DT.U32: (0, 2**32 - 1),
              DT.U64: (0, 2**64 - 1)}  # fmt: skip
# The ops each kind of element type defines (vector_ok); the rest are illegal on it.
_BIN_FLOAT = {BinOp.ADD, BinOp.SUB, BinOp.MUL, BinOp.DIV, BinOp.MAX, BinOp.MIN, BinOp.POW,
              BinOp.MOD}  # fmt: skip
_BIN_INT = _BIN_FLOAT | {BinOp.AND, BinOp.OR, BinOp.XOR, BinOp.SHL, BinOp.SHR}
_BIN_BOOL = {BinOp.AND, BinOp.OR, BinOp.XOR, BinOp.MAX, BinOp.MIN}
_UN_INT = {UnOp.RELU, UnOp.NEG, UnOp.ABS, UnOp.COPY, UnOp.NOT, UnOp.SIGN}
_UN_BOOL = {UnOp.NOT, UnOp.COPY}
_UN_FLOAT = set(UnOp) - {UnOp.NOT}
_RED_BOOL = {RedOp.MAX, RedOp.MIN}
_INTS = frozenset(_INT_RANGE)
# Kept for callers of version 1: the i32 ops.
INT_BINOPS = tuple(sorted(_BIN_INT))
INT_UNOPS = tuple(sorted(_UN_INT))


def vector_ok(op: BinOp | UnOp | RedOp, dt: DT) -> bool:
    """Whether the vector unit defines `op` on element type `dt`.

    >>> vector_ok(BinOp.AND, DT.F32), vector_ok(BinOp.AND, DT.BOOL), vector_ok(UnOp.SIN, DT.I32)
    (False, True, False)
    """
    table: set[Any]
    if isinstance(op, BinOp):
        table = _BIN_BOOL if dt == DT.BOOL else _BIN_INT if dt.is_int else _BIN_FLOAT
    elif isinstance(op, UnOp):
        table = _UN_BOOL if dt == DT.BOOL else _UN_INT if dt.is_int else _UN_FLOAT
    else:
        table = _RED_BOOL if dt == DT.BOOL else set(RedOp)
    return op in table


def to_f64(x: Array, dt: DT) -> Array:
    """float64 values of storage `x`: exact for every type but i64 beyond 2^53."""
    if dt == DT.BF16:
        return bf16_to_f32(x).astype(np.float64)
    return x.astype(np.float64)


def to_f32(x: Array, dt: DT) -> Array:
    """float32 values; exact for f32, f16, bf16, i8, bool (ints round to nearest even)."""
    if dt == DT.BF16:
        return bf16_to_f32(x)
    return x.astype(np.float32)


def from_f32(x: Array, dt: DT) -> Array:
    """float32 values rounded to nearest even into `dt` storage (ints: saturate, NaN -> 0;
    bool: nonzero -> 1)."""
    if dt in (DT.F32, DT.F64):
        return x.astype(dt.storage)
    if dt == DT.F16:
        return x.astype(np.float16)
    if dt == DT.BF16:
        return f32_to_bf16(x)
    if dt == DT.BOOL:
        return np.asarray(x != 0, np.uint8)
    return _to_int(x.astype(np.float64), dt)


def from_f64(x: Array, dt: DT) -> Array:
    """float64 values rounded into `dt`: f64 as is; other floats to float32 (nearest even),
    then to `dt` (nearest even); ints to nearest (half to even), saturating."""
    if dt in _INT_RANGE:
        return _to_int(x, dt)
    if dt == DT.F64:
        return np.asarray(x, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return from_f32(x.astype(np.float32), dt)


def _to_int(x: Array, dt: DT, trunc: bool = False) -> Array:
    """Float64 values to integers: rounded (half to even) or truncated toward zero, NaN to 0,
    saturating (2^63 is above every float64 below it, so i64's top is set apart)."""
    lo, hi = _INT_RANGE[dt]
    r = np.nan_to_num(np.asarray(x, np.float64), nan=0.0, posinf=np.inf, neginf=-np.inf)
    r = np.asarray(np.trunc(r) if trunc else np.rint(r))
    if dt not in (DT.I64, DT.U64):
        return np.asarray(np.clip(r, lo, hi).astype(np.int64).astype(dt.storage))
    big, small = r >= float(hi), r < float(lo)  # float(hi) is 2^63 or 2^64: above the range
    with np.errstate(invalid="ignore"):
        out = np.where(big | small, 0.0, r).astype(dt.storage)
    out[big], out[small] = hi, lo
    return np.asarray(out)


def _saturate(a: Array, dst: DT) -> Array:
    """Integers to integer type `dst`, saturating (any source type, u64 included)."""
    lo, hi = _INT_RANGE[dst]
    if a.dtype == np.uint64:  # every value >= 0: only the top can saturate
        return np.minimum(a, np.uint64(hi)).astype(dst.storage)
    x = a.astype(np.int64)  # every other integer type fits int64
    if dst == DT.U64:
        return np.maximum(x, 0).astype(np.uint64)
    return np.clip(x, lo, hi).astype(dst.storage)


def immediate(value: float, dt: DT) -> Array:
    """A float immediate as a 0-d array of `dt` (rounded like any float64 value)."""
    return from_f64(np.array(value, np.float64), dt)


def _int_binop(op: BinOp, dt: DT, a: Array, b: Array) -> Array:
    """Integer a op b: wrapping, division truncating (x / 0 = 0, x % 0 = 0, as the
    primitives), shifts by the count modulo the width (SHR fills with the sign)."""
    x, y = a.astype(dt.storage), b.astype(dt.storage)
    bits = 8 * dt.itemsize
    with np.errstate(all="ignore"):
        if op in (BinOp.DIV, BinOp.MOD):
            safe = np.where(y == 0, 1, y).astype(dt.storage)
            r = np.fmod(x, safe)
            if op == BinOp.DIV:  # (x - x % y) / y is exact; MIN / -1 wraps to MIN
                r = (x - r) // safe
            return np.asarray(np.where(y == 0, 0, r), dtype=dt.storage)
        if op == BinOp.POW:
            return np.asarray(np.power(x, np.maximum(y, 0)), dtype=dt.storage)
        if op in (BinOp.SHL, BinOp.SHR):
            n = (y.astype(np.int64) % bits).astype(dt.storage)
            return np.asarray(np.left_shift(x, n) if op == BinOp.SHL else np.right_shift(x, n))
        fn: Any = {BinOp.ADD: np.add, BinOp.SUB: np.subtract, BinOp.MUL: np.multiply,
                   BinOp.MAX: np.maximum, BinOp.MIN: np.minimum, BinOp.AND: np.bitwise_and,
                   BinOp.OR: np.bitwise_or, BinOp.XOR: np.bitwise_xor}[op]  # fmt: skip
        return np.asarray(fn(x, y), dtype=dt.storage)


def binop(op: BinOp, dt: DT, a: Array, b: Array) -> Array:
    """Elementwise a op b. Floats: + - * / max min in float32 (f64: in float64), rounded
    once to dt (for + - * / the correctly rounded result); pow and mod in float64 from the
    exact inputs, rounded as `from_f64`. Integers: see `_int_binop`. bool: logical."""
    if dt in _INTS:
        return _int_binop(op, dt, a, b)
    if dt == DT.BOOL:
        x, y = a != 0, b != 0
        fn: Any = {BinOp.AND: np.logical_and, BinOp.OR: np.logical_or, BinOp.MAX: np.logical_or,
                   BinOp.XOR: np.logical_xor, BinOp.MIN: np.logical_and}[op]  # fmt: skip
        return np.asarray(fn(x, y), np.uint8)
    r: Any
    with np.errstate(all="ignore"):
        if op in (BinOp.POW, BinOp.MOD):
            x64, y64 = to_f64(a, dt), to_f64(b, dt)
            r = np.power(x64, y64) if op == BinOp.POW else np.fmod(x64, y64)
            return from_f64(np.asarray(r, np.float64), dt)
        x, y = (a, b) if dt == DT.F64 else (to_f32(a, dt), to_f32(b, dt))
        if op == BinOp.ADD:
            r = x + y
        elif op == BinOp.SUB:
            r = x - y
        elif op == BinOp.MUL:
            r = x * y
        elif op == BinOp.DIV:
            r = x / y
        elif op == BinOp.MAX:
            r = np.maximum(x, y)
        else:
            r = np.minimum(x, y)
    if dt == DT.F64:
        return np.asarray(r, np.float64)
    return from_f32(np.asarray(r, np.float32), dt)


_CMP = {CmpOp.EQ: np.equal, CmpOp.NE: np.not_equal, CmpOp.LT: np.less,
        CmpOp.LE: np.less_equal, CmpOp.GT: np.greater, CmpOp.GE: np.greater_equal}  # fmt: skip


def iota(dt: DT, start: int, row_step: int, col_step: int, shape: tuple[int, int]) -> Array:
    """start + i*row_step + j*col_step over `shape`, exact in int64 (wrapping), converted
    to dt: integers keep the low bits, floats round to nearest even, bool is value != 0."""
    rows, cols = shape
    with np.errstate(over="ignore"):
        i = np.arange(rows, dtype=np.int64)[:, None] * np.int64(row_step)
        v = np.int64(start) + i + np.arange(cols, dtype=np.int64)[None, :] * np.int64(col_step)
    if dt.is_int:
        return v.astype(dt.storage)
    if dt == DT.BOOL:
        return np.asarray(v != 0, np.uint8)
    if dt == DT.F64:
        return v.astype(np.float64)
    return from_f32(v.astype(np.float32), dt)  # int64 to f32 rounds once


def compare(op: CmpOp, dt: DT, a: Array, b: Array) -> Array:
    """A bool mask (uint8 0/1) of a op b on the exact values; NaN is unequal to everything
    (so only `ne` is true for it)."""
    if dt == DT.BF16:
        a, b = bf16_to_f32(a), bf16_to_f32(b)
    fn: Any = _CMP[op]
    with np.errstate(invalid="ignore"):
        return np.asarray(fn(a, b), np.uint8)


def select(mask: Array, a: Array, b: Array) -> Array:
    """a where mask is nonzero, else b: the bits, unchanged."""
    return np.asarray(np.where(mask != 0, a, b))


def _gelu(x: Array) -> Array:
    # the tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))


_ERF = np.frompyfunc(math.erf, 1, 1)


def _erf(x: Array) -> Array:
    """math.erf per element (libm's erf, within an ulp of float64)."""
    return np.asarray(_ERF(x), np.float64) if x.size else np.asarray(x, np.float64)


_F64: dict[UnOp, Any] = {
    UnOp.EXP: np.exp,
    UnOp.LOG: np.log,
    UnOp.TANH: np.tanh,
    UnOp.SIGMOID: lambda x: 1.0 / (1.0 + np.exp(-x)),
    UnOp.GELU: _gelu,
    UnOp.RSQRT: lambda x: 1.0 / np.sqrt(x),
    UnOp.SQRT: np.sqrt,
    UnOp.RECIP: lambda x: 1.0 / x,
    UnOp.RELU: lambda x: np.maximum(x, 0.0),
    UnOp.NEG: np.negative,
    UnOp.ABS: np.abs,
    UnOp.COPY: lambda x: x,
    UnOp.SIN: np.sin,
    UnOp.COS: np.cos,
    UnOp.ERF: _erf,
    UnOp.FLOOR: np.floor,
    UnOp.CEIL: np.ceil,
    UnOp.ROUND: np.rint,
    UnOp.TRUNC: np.trunc,
    UnOp.SIGN: np.sign,
    UnOp.LOG1P: np.log1p,
    UnOp.EXPM1: np.expm1,
}


def _int_unop(op: UnOp, dt: DT, a: Array) -> Array:
    x = a.astype(dt.storage)
    with np.errstate(over="ignore"):
        fn: Any = {UnOp.RELU: lambda v: np.maximum(v, 0), UnOp.NEG: np.negative,
                   UnOp.NOT: np.invert, UnOp.SIGN: np.sign, UnOp.ABS: np.abs,
                   UnOp.COPY: np.copy}[op]  # fmt: skip
        return np.asarray(fn(x), dt.storage)


def unop(op: UnOp, dt: DT, a: Array) -> Array:
    """Elementwise f(a): floats computed in float64 from the exact inputs, rounded as
    `from_f64`. Integers: relu, neg, abs (wrap), not (bitwise), sign, copy. bool: not, copy."""
    if dt.is_int:
        return _int_unop(op, dt, a)
    if dt == DT.BOOL:
        return (a == 0).astype(np.uint8) if op == UnOp.NOT else a.copy()
    if op == UnOp.COPY:
        return a.copy()
    with np.errstate(all="ignore"):
        r = _F64[op](to_f64(a, dt))
    return from_f64(np.asarray(r, np.float64), dt)


def reduce(op: RedOp, dt: DT, a: Array, axis: int) -> Array:
    """Sum, max, min or product along `axis`, keeping it as size 1. Float sums and products
    are taken in float64 and rounded once (as `from_f64`); f64 sums are exact sums rounded
    once (math.fsum), f64 products multiply in order. Integer sums and products wrap;
    max and min are exact (NaN propagates); bool: max is any, min is all."""
    if dt.is_int or dt == DT.BOOL:
        if op == RedOp.MAX:
            return np.asarray(a.max(axis=axis, keepdims=True))
        if op == RedOp.MIN:
            return np.asarray(a.min(axis=axis, keepdims=True))
        fn = np.sum if op == RedOp.SUM else np.prod
        with np.errstate(over="ignore"):
            s = fn(a.astype(np.int64), axis=axis, keepdims=True)  # wraps modulo 2^64
        return np.asarray(s, dtype=dt.storage)  # int64 -> int32 wraps modulo 2^32
    if op in (RedOp.MAX, RedOp.MIN):
        x = a if dt == DT.F64 else to_f32(a, dt)
        r = x.max(axis=axis, keepdims=True) if op == RedOp.MAX else x.min(axis=axis, keepdims=True)
        return from_f32(r, dt) if dt != DT.F64 else np.asarray(r)
    x64 = to_f64(a, dt)
    with np.errstate(all="ignore"):
        if op == RedOp.PROD:
            return from_f64(np.prod(x64, axis=axis, keepdims=True), dt)
        if dt == DT.F64:
            lines = np.moveaxis(x64, axis, -1).reshape(-1, x64.shape[axis])
            sums = np.array([_fsum(line) for line in lines], np.float64)
            return sums.reshape([1 if d == axis else n for d, n in enumerate(x64.shape)])
        return from_f64(x64.sum(axis=axis, keepdims=True), dt)


def _fsum(line: Array) -> float:
    """The exactly rounded sum (IEEE infinities and NaN as a plain sum gives them)."""
    if not np.isfinite(line).all():
        return float(line.sum())
    try:
        return math.fsum(line.tolist())
    except OverflowError:
        return float(np.sign(line.sum()) * np.inf)


def cumsum(dt: DT, a: Array, axis: int) -> Array:
    """Inclusive prefix sums along `axis`. f32/f16/bf16: running sums in float64 (exact
    for the first 2^29 f32 terms of one binade, and far below f32's rounding otherwise),
    each prefix rounded as `from_f64`; f64: compensated (Neumaier) running sums, each prefix
    rounded once; integers wrap."""
    if dt.is_int:
        with np.errstate(over="ignore"):
            return np.asarray(np.cumsum(a.astype(np.int64), axis=axis), dt.storage)
    if dt != DT.F64:
        with np.errstate(all="ignore"):
            return from_f64(np.cumsum(to_f64(a, dt), axis=axis), dt)
    x = np.moveaxis(a.astype(np.float64), axis, 0)  # (n, lines)
    out = np.empty_like(x)
    s = np.zeros(x.shape[1:], np.float64)
    c = np.zeros_like(s)
    with np.errstate(all="ignore"):
        for i in range(x.shape[0]):
            t = s + x[i]
            big = np.abs(s) >= np.abs(x[i])
            c += np.where(big, (s - t) + x[i], (x[i] - t) + s)
            s = t
            out[i] = np.where(np.isfinite(s), s + c, s)
    return np.moveaxis(out, 0, axis)


def argsort(dt: DT, a: Array, descending: int) -> Array:
    """Each row's stable sort order (int32): ascending puts NaN last, descending puts NaN
    first and keeps ties in their original order; -0.0 and 0.0 tie."""
    x = bf16_to_f32(a) if dt == DT.BF16 else a
    n = x.shape[1]
    if not descending:
        return np.asarray(np.argsort(x, axis=1, kind="stable"), np.int32)
    # stable descending: sort the reversed rows ascending, then reverse back
    rev = np.argsort(x[:, ::-1], axis=1, kind="stable")[:, ::-1]
    return np.asarray(n - 1 - rev, np.int32)


def cast(src: DT, dst: DT, a: Array, mode: CastMode = CastMode.ROUND) -> Array:
    """Convert. ROUND (`vcast`): the exact value rounded once to nearest even into dst
    (16-bit floats through float32); to ints: half to even, saturating, NaN -> 0; integer
    to integer saturates. TRUNC (`vcastt`): floats to ints toward zero (saturating, NaN ->
    0), integers to integers wrap (keep the low bits); other pairs as ROUND. To bool:
    nonzero (NaN too) is 1; from bool: 0 or 1."""
    if src == dst:
        return a.copy()
    if dst == DT.BOOL:
        x = bf16_to_f32(a) if src == DT.BF16 else a
        return np.asarray(x != 0, np.uint8)
    if src == DT.BOOL:
        return from_f64(a.astype(np.float64), dst)
    if not src.is_float and not dst.is_float:
        if mode == CastMode.TRUNC:
            return a.astype(dst.storage)  # numpy's integer casts wrap
        return _saturate(a, dst)
    if not src.is_float:  # integer to float: one rounding (i64 to f32 directly, not via f64)
        if dst in (DT.F32, DT.F64):
            return a.astype(dst.storage)
        return from_f32(a.astype(np.float32), dst)
    if not dst.is_float:
        return _to_int(to_f64(a, src), dst, trunc=mode == CastMode.TRUNC)
    return from_f64(to_f64(a, src), dst)


# ---- the matrix unit ---------------------------------------------------------------------
# Bits a hardware step keeps below the leading bit of its largest product. A truncated
# product is an integer below 2^52 units (exact in float64); 2048 of them sum exactly in int64.
ALIGN_BITS = 52
MAX_STEP = 2048


# per matrix input type: (exponent field shift, offset: the ulp of field f' = max(f, 1) is
# 2^(f' - offset), bit-pattern view, magnitude mask)
_ULP = {DT.F16: (10, 25, np.uint16, 0x7FFF), DT.BF16: (7, 134, np.uint16, 0x7FFF),
        DT.F32: (23, 150, np.uint32, 0x7FFFFFFF)}  # fmt: skip


def _min_ulp(x: Array, dt: DT, axis: int) -> Array:
    """Per line of x along `axis`: the exponent of the smallest ulp among its nonzero
    elements, so every element of the line is a multiple of 2^that. Magnitudes order like
    their bit patterns, so the smallest nonzero pattern has the smallest exponent field."""
    shift, offset, view, mask = _ULP[dt]
    mag = x.view(view) & view(mask)
    lo = (mag - view(1)).min(axis=axis) + view(1)  # zeros wrap to the top
    return np.asarray(np.maximum(lo >> view(shift), 1).astype(np.int64) - offset)


def aligned_sums(prods: Array) -> Array:
    """The step sums of `prods` (N, c) exact float64 products, as the matrix unit forms them:
    each product truncated (toward zero) to a multiple of 2^(E - ALIGN_BITS), where
    2^(E-1) <= max |product| < 2^E, then added exactly. Returned as float64 values that
    round to the exactly rounded f32 sum (rounded to odd, when not exact, from the int64
    sum); non-finite rows follow IEEE."""
    top = np.abs(prods).max(axis=1)
    _, e = np.frexp(top)
    with np.errstate(invalid="ignore", over="ignore"):
        q = np.trunc(prods * np.ldexp(1.0, ALIGN_BITS - e)[:, None])  # integers below 2^52
        total = np.nan_to_num(q).astype(np.int64).sum(axis=1)  # exact
        near = total.astype(np.float64)  # rounded to nearest; made odd when not exact, so
        off = total - near.astype(np.int64)  # that one more rounding (to f32) is exact
        fix = (off != 0) & ((near.view(np.int64) & 1) == 0)
        near[fix] = np.nextafter(near[fix], np.where(off[fix] > 0, np.inf, -np.inf))
        s = np.ldexp(near, e - ALIGN_BITS)
        if np.isfinite(top).all():
            return np.asarray(s)
        raw = prods.sum(axis=1)
    return np.asarray(np.where(np.isfinite(raw), s, raw))


def step_sums(dt: DT, a: Array, b: Array, step: int) -> Array:
    """(B, steps, m, n) float32 step sums of a batch of products a (B, m, k) @ b (B, k, n):
    k cut into steps of `step` (at most MAX_STEP), each step's sum aligned and exact
    (`aligned_sums`), rounded once to f32; a zero sum is +0.

    Where no product can be truncated every partial sum is an exact float64 multiple of the
    smallest unit, so one BLAS call gives the exact step sums whatever its blocking, order
    or threads; the few (step, row, column) triples beyond that bound are summed by
    `aligned_sums` explicitly."""
    nb, m, k = a.shape
    n = b.shape[2]
    step = min(step, MAX_STEP)
    steps = -(-k // step)
    if steps > 1:
        pad = steps * step - k
        if pad:  # a short last step: zero products change no sum
            a = np.concatenate([a, np.zeros((nb, m, pad), a.dtype)], axis=2)
            b = np.concatenate([b, np.zeros((nb, pad, n), b.dtype)], axis=1)
        a = a.reshape(nb, m, steps, step).transpose(0, 2, 1, 3).reshape(nb * steps, m, step)
        b = b.reshape(nb * steps, step, n)
    a64, b64 = to_f64(a, dt), to_f64(b, dt)
    with np.errstate(over="ignore", invalid="ignore"):  # infinities and NaNs as IEEE says
        sums: Array = np.matmul(a64, b64)  # (nb * steps, m, n)
        # The products of row i and column j are multiples of u = 2^(ulp_i + ulp_j), and the
        # largest is at most the sum of |products| (M, from BLAS, within 2^-40). While
        # M <= 2^51 u no product is truncated (the grid 2^(E-52) <= 2M / 2^52 <= u) and every
        # partial sum is an exact multiple of u below 2^53 u: BLAS's sums are exact in any
        # order, so only the (step, i, j) beyond that bound are summed explicitly.
        bound = np.matmul(np.abs(a64), np.abs(b64)) * (1 + 2.0**-40)
        rows = np.ldexp(1.0, -(ALIGN_BITS - 1) - _min_ulp(a, dt, 2))  # (T, m)
        cols = np.ldexp(1.0, _min_ulp(b, dt, 1))  # (T, n)
        beyond = bound * rows[:, :, None] > cols[:, None, :]
        if beyond.any():
            where = _round_beyond(sums, bound, beyond, a.shape[2])
            _fix_truncated(sums, a64, b64, where)
        return (sums + 0.0).astype(np.float32).reshape(nb, steps, m, n)


def _round_beyond(sums: Array, bound: Array, beyond: Array, c: int) -> tuple[Array, ...]:
    """Rounds to f32, in `sums`, the triples `beyond` whose f32 step sum BLAS's sum already
    decides, and returns the others (step, row, column) to be summed explicitly.

    With S the exact sum of a step's c products and P >= sum |products| (`bound`), BLAS's
    sum is within c 2^-52 P of S, and the aligned sum T (each product truncated below
    2^(E - 52) <= 2^-51 max |product|) within c 2^-51 P: both within c 2^-50 P. Where
    BLAS's sum +- c 2^-49 P (the f64 additions' own rounding inside the doubled margin)
    round to the same f32 bits, T rounds to them too: rounding is monotonic. Few triples
    lie that near a rounding boundary (or a zero), so few are summed one by one."""
    st, i, j = np.nonzero(beyond)
    s, err = sums[st, i, j], bound[st, i, j] * (c * 2.0**-49)
    lo, hi = (s - err).astype(np.float32), (s + err).astype(np.float32)
    sure = (lo.view(np.uint32) == hi.view(np.uint32)) & np.isfinite(s) & np.isfinite(err)
    sums[st[sure], i[sure], j[sure]] = lo[sure]
    keep = ~sure
    return st[keep], i[keep], j[keep]


def _fix_truncated(sums: Array, a64: Array, b64: Array, where: tuple[Array, ...]) -> None:
    """Sums the (step, row, column) triples `where` explicitly (`aligned_sums`)."""
    st, i, j = where
    bt = np.ascontiguousarray(b64.transpose(0, 2, 1))  # (steps, n, c)
    for lo in range(0, st.size, 1 << 14):  # bounded memory: 2^14 x c products at a time
        sl = slice(lo, lo + (1 << 14))
        prods = a64[st[sl], i[sl]] * bt[st[sl], j[sl]]
        sums[st[sl], i[sl], j[sl]] = aligned_sums(prods)


def accumulate(acc: Array | None, sums: Array) -> Array:
    """The f32 accumulator after adding `sums` (T, m, n) f32 in order, each addition
    rounded to f32; `acc` None starts from +0."""
    out = np.array(sums[0] if acc is None else acc, dtype=np.float32)
    # sequential f32 adds, in order, in place: np.add.accumulate along the first axis is
    # some 50 times slower (it walks the (m, n) planes element by element)
    with np.errstate(over="ignore", invalid="ignore"):
        for s in sums[1:] if acc is None else sums:
            np.add(out, s, out=out, dtype=np.float32)
    return out


def matmul(dt: DT, a: Array, b: Array, acc: Array | None, step: int = 16) -> Array:
    """acc + a @ b for one matrix instruction: a (m, k), b (k, n) in dt storage.

    Floats, bit for bit: k is cut into hardware steps of `step` (the design's matrix_k)
    products from the instruction's first k on. Each product is exact; a step's products
    are aligned to its largest (`aligned_sums`) and added exactly, the step sum is rounded
    once to f32, and the steps are added to the f32 accumulator in k order, each addition
    rounded to f32 (nearest even). The result depends on nothing else: not on m, n, BLAS
    or its threads, nor on the order of k within a step. int8: the exact integer sum, added
    to the int32 accumulator modulo 2^32.

    >>> x = to_storage([[2.0**15, 2.0**-24, -(2.0**15)]], DT.F16)
    >>> y = to_storage([[2.0**15], [2.0**-24], [2.0**15]], DT.F16)
    >>> float(matmul(DT.F16, x, y, None)[0, 0])  # 2^30 + 2^-48 - 2^30: 2^-48 is below 2^-21
    0.0
    """
    if dt == DT.I8:  # |products| <= 2^14: float64 sums are exact integers up to 2^39 terms
        s = (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
        if acc is not None:
            s += acc.astype(np.int64)
        return s.astype(np.int32)  # wraps modulo 2^32
    return accumulate(acc, step_sums(dt, a[None], b[None], step)[0])


_BITS = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def to_register(value: Any, dt: DT) -> int:
    """What `sld` puts in a 64-bit register: integers and bool by value, floats as their
    bit pattern (zero-extended; f64's as a signed 64-bit integer).

    >>> to_register(np.float32(1.0), DT.F32), to_register(np.int8(-3), DT.I8)
    (1065353216, -3)
    """
    if not dt.is_float:
        v = int(value)
        return v - (1 << 64) if v >= 1 << 63 else v  # a u64 above 2^63 wraps like its bits
    bits = int(np.asarray(value, dt.storage).view(_BITS[dt.itemsize]))
    return bits - (1 << 64) if bits >= 1 << 63 else bits


def from_register(value: int, dt: DT) -> Array:
    """What `sst` writes: the register's low `itemsize` bytes as `dt` (bool: nonzero is 1).

    >>> float(from_register(1065353216, DT.F32)), int(from_register(300, DT.I8))
    (1.0, 44)
    """
    if dt == DT.BOOL:
        return np.array(value != 0, np.uint8)
    low = np.array(value & ((1 << (8 * dt.itemsize)) - 1), np.uint64)
    if dt.is_float:
        return low.astype(_BITS[dt.itemsize]).view(dt.storage)
    return low.astype(dt.storage)


def to_storage(x: Any, dt: DT) -> Array:
    """Host values rounded once (nearest even) into `dt` storage; ints saturate.

    >>> to_storage([1.0, 1e6], DT.F16).tolist()
    [1.0, inf]
    """
    arr = np.asarray(x)
    if dt == DT.BF16:
        return f32_to_bf16(arr.astype(np.float32))
    if dt == DT.BOOL:
        return np.asarray(arr != 0, np.uint8)
    if dt in _INT_RANGE and arr.dtype.kind in "iub":
        return _saturate(arr if arr.dtype.kind != "b" else arr.astype(np.int64), dt)
    if dt in _INT_RANGE:
        return _to_int(arr.astype(np.float64), dt)
    with np.errstate(over="ignore"):
        return arr.astype(dt.storage)


def to_values(x: Array, dt: DT) -> Array:
    """Storage back to plain numpy values: bf16 as float32, the rest as stored."""
    return bf16_to_f32(x) if dt == DT.BF16 else x
