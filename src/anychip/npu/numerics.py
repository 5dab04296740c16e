"""The arithmetic of the chip's units, bit for bit: how each dtype rounds, accumulates, converts.

All functions take and return numpy arrays in storage form (bf16 as uint16 bit patterns) and
work on whole tiles at once; `npu/simulator.py` calls them, and `docs/npu-isa.md` states them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from anychip.dtypes import bf16_to_f32, f32_to_bf16
from anychip.npu.isa import DT, BinOp, RedOp, UnOp

Array = np.ndarray[Any, Any]
_INT_RANGE = {DT.I32: (-(2**31), 2**31 - 1), DT.I8: (-128, 127)}
# Ops an integer vector instruction may use; the rest need floating point.
INT_BINOPS = (BinOp.ADD, BinOp.SUB, BinOp.MUL, BinOp.MAX, BinOp.MIN)
INT_UNOPS = (UnOp.RELU, UnOp.NEG, UnOp.ABS, UnOp.COPY)


def to_f64(x: Array, dt: DT) -> Array:
    """Exact float64 values of storage `x` (every dtype of the chip fits float64 exactly)."""
    if dt == DT.BF16:
        return bf16_to_f32(x).astype(np.float64)
    return x.astype(np.float64)


def to_f32(x: Array, dt: DT) -> Array:
    """float32 values; exact for f32, f16, bf16, i8 (i32 rounds to nearest even above 2^24)."""
    if dt == DT.BF16:
        return bf16_to_f32(x)
    return x.astype(np.float32)


def from_f32(x: Array, dt: DT) -> Array:
    """float32 values rounded to nearest even into `dt` storage (ints: saturate, NaN -> 0)."""
    if dt == DT.F32:
        return x.astype(np.float32)
    if dt == DT.F16:
        return x.astype(np.float16)
    if dt == DT.BF16:
        return f32_to_bf16(x)
    return _to_int(x.astype(np.float64), dt)


def from_f64(x: Array, dt: DT) -> Array:
    """float64 values rounded to float32 (nearest even), then to `dt` (nearest even)."""
    if dt in _INT_RANGE:
        return _to_int(x, dt)
    with np.errstate(over="ignore", invalid="ignore"):
        return from_f32(x.astype(np.float32), dt)


def _to_int(x: Array, dt: DT) -> Array:
    lo, hi = _INT_RANGE[dt]
    r = np.rint(np.nan_to_num(x, nan=0.0, posinf=hi, neginf=lo))
    return np.asarray(np.clip(r, lo, hi), dtype=dt.storage)


def immediate(value: float, dt: DT) -> Array:
    """A float immediate as a 0-d array of `dt` (rounded like any float64 value)."""
    return from_f64(np.array(value, np.float64), dt)


def binop(op: BinOp, dt: DT, a: Array, b: Array) -> Array:
    """Elementwise a op b. Floats: computed in float32, rounded once to dt (for + - * / this
    is the correctly rounded result). i32: + - * wrap modulo 2^32."""
    if dt == DT.I32:
        x, y = a.astype(np.int32), b.astype(np.int32)
        fn: Any = {BinOp.ADD: np.add, BinOp.SUB: np.subtract, BinOp.MUL: np.multiply,
              BinOp.MAX: np.maximum, BinOp.MIN: np.minimum}[op]  # fmt: skip
        with np.errstate(over="ignore"):
            return np.asarray(fn(x, y), dtype=np.int32)
    x, y = to_f32(a, dt), to_f32(b, dt)
    r: Any
    with np.errstate(all="ignore"):
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
    return from_f32(np.asarray(r, np.float32), dt)


def _gelu(x: Array) -> Array:
    # the tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))


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
}


def unop(op: UnOp, dt: DT, a: Array) -> Array:
    """Elementwise f(a): computed in float64 from the exact inputs, rounded as `from_f64`.
    i32 allows relu, neg, abs, copy (exact, neg wraps)."""
    if dt == DT.I32:
        x = a.astype(np.int32)
        with np.errstate(over="ignore"):
            if op == UnOp.RELU:
                return np.maximum(x, 0)
            if op == UnOp.NEG:
                return np.negative(x)
            return np.abs(x) if op == UnOp.ABS else x.copy()
    if op == UnOp.COPY:
        return a.copy()
    with np.errstate(all="ignore"):
        r = _F64[op](to_f64(a, dt))
    return from_f64(np.asarray(r, np.float64), dt)


def reduce(op: RedOp, dt: DT, a: Array, axis: int) -> Array:
    """Sum or max along `axis`, keeping it as size 1. Float sums are taken in float64 and
    rounded once (as `from_f64`), so the result does not depend on summation order within
    float64's precision; i32 sums wrap modulo 2^32."""
    if dt == DT.I32:
        if op == RedOp.MAX:
            return np.asarray(a.max(axis=axis, keepdims=True))
        s = a.astype(np.int64).sum(axis=axis, keepdims=True)
        return np.asarray(s, dtype=np.int32)  # numpy's int64 -> int32 conversion wraps modulo 2^32
    if op == RedOp.MAX:
        return from_f32(to_f32(a, dt).max(axis=axis, keepdims=True), dt)
    return from_f64(to_f64(a, dt).sum(axis=axis, keepdims=True), dt)


def cast(src: DT, dst: DT, a: Array) -> Array:
    """Convert: exact value in float64 (ints as int64), rounded once to nearest even into dst;
    to ints: NaN -> 0, saturating; i32 -> bf16/f16 rounds via float32."""
    if src == dst:
        return a.copy()
    if not src.is_float and not dst.is_float:
        lo, hi = _INT_RANGE[dst]
        return np.clip(a.astype(np.int64), lo, hi).astype(dst.storage)
    return from_f64(to_f64(a, src), dst)


# ---- the matrix unit ---------------------------------------------------------------------
# Bits a hardware step keeps below the leading bit of its largest product. A truncated
# product is an integer below 2^52 units (exact in float64); 2048 of them sum exactly in int64.
ALIGN_BITS = 52
MAX_STEP = 2048


# per matrix input type: (exponent field shift, offset: the ulp of field f' = max(f, 1) is
# 2^(f' - offset))
_ULP = {DT.F16: (10, 25), DT.BF16: (7, 134)}


def _min_ulp(x: Array, dt: DT, axis: int) -> Array:
    """Per line of x along `axis`: the exponent of the smallest ulp among its nonzero
    elements, so every element of the line is a multiple of 2^that. Magnitudes order like
    their bit patterns, so the smallest nonzero pattern has the smallest exponent field."""
    shift, offset = _ULP[dt]
    mag = x.view(np.uint16) & 0x7FFF
    lo = (mag - np.uint16(1)).min(axis=axis) + np.uint16(1)  # zeros wrap to the top
    return np.asarray(np.maximum(lo >> shift, 1).astype(np.int64) - offset)


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
            _fix_truncated(sums, a64, b64, np.nonzero(beyond))
        return (sums + 0.0).astype(np.float32).reshape(nb, steps, m, n)


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
    if acc is None:
        if sums.shape[0] == 1:
            return np.array(sums[0])
        seq = sums
    else:
        seq = np.concatenate([acc.astype(np.float32)[None], sums])
    with np.errstate(over="ignore", invalid="ignore"):  # sequential f32 adds, in order
        return np.asarray(np.add.accumulate(seq, axis=0, dtype=np.float32)[-1])


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


def to_storage(x: Any, dt: DT) -> Array:
    """Host values rounded once (nearest even) into `dt` storage; ints saturate.

    >>> to_storage([1.0, 1e6], DT.F16).tolist()
    [1.0, inf]
    """
    arr = np.asarray(x)
    if dt == DT.BF16:
        return f32_to_bf16(arr.astype(np.float32))
    if dt in _INT_RANGE:
        return _to_int(arr.astype(np.float64), dt)
    with np.errstate(over="ignore"):
        return arr.astype(dt.storage)


def to_values(x: Array, dt: DT) -> Array:
    """Storage back to plain numpy values: bf16 as float32, the rest as stored."""
    return bf16_to_f32(x) if dt == DT.BF16 else x
