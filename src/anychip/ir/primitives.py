"""Each primitive's rules side by side: shape/dtype inference, numpy reference, gradient.

`infer(srcs, arg) -> (shape, dtype)` checks what the frontend promised (same shapes and
dtypes for elementwise ops, and so on); `ref(arg, *arrays)` is the oracle's semantics;
`vjp(g, out, srcs, arg)` returns one cotangent Tensor (or None) per source, written with
Tensor methods so the gradient graph is itself made of primitives.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from anychip import dtypes
from anychip.dtypes import DType
from anychip.ir.ops import BINARY, MOVEMENT, REDUCE, UNARY, Node, Ops

Shape = tuple[int, ...]
Infer = Callable[[tuple[Node, ...], Any], tuple[Shape, DType]]
Ref = Callable[..., Any]
Vjp = Callable[..., tuple[Any, ...]]


@dataclass(frozen=True)
class Rule:
    infer: Infer
    ref: Ref
    vjp: Vjp | None  # None: not differentiable (integer or boolean results)


RULES: dict[Ops, Rule] = {}


def _rule(op: Ops, infer: Infer, ref: Ref, vjp: Vjp | None) -> None:
    RULES[op] = Rule(infer, ref, vjp)


def _same(srcs: tuple[Node, ...], arg: Any) -> tuple[Shape, DType]:
    a = srcs[0]
    for s in srcs[1:]:
        assert s.shape == a.shape and s.dtype is a.dtype, f"mismatched sources {srcs}"
    return a.shape, a.dtype


def _to_bool(srcs: tuple[Node, ...], arg: Any) -> tuple[Shape, DType]:
    return _same(srcs, arg)[0], dtypes.bool_


def _erf(x: np.ndarray) -> Any:
    # numpy has no erf; math.erf is correctly rounded in float64, vectorised per element.
    f = np.frompyfunc(math.erf, 1, 1)
    return np.asarray(f(x.astype(np.float64)), dtype=np.float64).astype(x.dtype)


def _int_div(a: np.ndarray, b: np.ndarray) -> Any:
    if a.dtype.kind == "f":
        return np.true_divide(a, b)
    safe = np.where(b == 0, 1, b).astype(a.dtype)
    q = np.floor_divide(a, safe)
    fix = (np.remainder(a, safe) != 0) & ((a < 0) != (safe < 0))
    return np.where(b == 0, 0, q + fix.astype(a.dtype)).astype(a.dtype)


def _int_mod(a: np.ndarray, b: np.ndarray) -> Any:
    if a.dtype.kind == "f":
        return np.fmod(a, b)
    safe = np.where(b == 0, 1, b).astype(a.dtype)
    return np.where(b == 0, 0, np.fmod(a, safe)).astype(a.dtype)


def _pow(a: np.ndarray, b: np.ndarray) -> Any:
    if a.dtype.kind in "iu":
        return np.power(a, np.maximum(b, 0)).astype(a.dtype)  # negative powers: torch errors
    return np.power(a, b)


def _cast(arg: DType, x: np.ndarray) -> Any:
    target = np.float32 if arg is dtypes.bfloat16 else arg.np
    if x.dtype.kind == "f" and arg.kind in "iu":
        x = np.trunc(x)
    return x.astype(target)


# --- unary ----------------------------------------------------------------------------
_rule(Ops.NEG, _same, lambda arg, x: np.negative(x), lambda g, out, s, arg: (-g,))
_rule(Ops.SQRT, _same, lambda arg, x: np.sqrt(x), lambda g, out, s, arg: (g / (out * 2),))
_rule(Ops.EXP, _same, lambda arg, x: np.exp(x), lambda g, out, s, arg: (g * out,))
_rule(Ops.LOG, _same, lambda arg, x: np.log(x), lambda g, out, s, arg: (g / s[0],))
_rule(Ops.SIN, _same, lambda arg, x: np.sin(x), lambda g, out, s, arg: (g * s[0].cos(),))
_rule(
    Ops.ERF,
    _same,
    lambda arg, x: _erf(x),
    lambda g, out, s, arg: (g * (-(s[0] * s[0])).exp() * (2 / math.sqrt(math.pi)),),
)
_rule(Ops.FLOOR, _same, lambda arg, x: np.floor(x), lambda g, out, s, arg: (g * 0,))
_rule(
    Ops.NOT, _same, lambda arg, x: np.logical_not(x) if x.dtype == np.bool_ else np.invert(x), None
)
_rule(
    Ops.CAST,
    lambda srcs, arg: (srcs[0].shape, arg),
    _cast,
    lambda g, out, s, arg: (g.to(s[0].dtype) if s[0].dtype.is_floating_point else None,),
)


# --- binary ---------------------------------------------------------------------------
def _max_vjp(g: Any, out: Any, s: Any, arg: Any) -> tuple[Any, ...]:
    a, b = s
    # ties split the gradient in half, as torch.maximum does
    wa = (a == out).to(g.dtype) * 0.5 + (b != out).to(g.dtype) * 0.5
    return g * wa, g * (1 - wa)


def _pow_vjp(g: Any, out: Any, s: Any, arg: Any) -> tuple[Any, ...]:
    a, b = s
    ga = g * b * a.pow(b - 1)
    ga = (b == 0)._select(0, ga)
    # d/db a^b = a^b log a: at a = 0 that is 0 for b >= 0 and -inf for b < 0 (inf * -inf),
    # as torch gives; only the b >= 0 side is masked
    gb = g * out * a.log()
    gb = ((a == 0) & (b >= 0))._select(0, gb)
    return ga, gb


_rule(Ops.ADD, _same, lambda arg, a, b: np.add(a, b), lambda g, out, s, arg: (g, g))
_rule(
    Ops.MUL, _same, lambda arg, a, b: np.multiply(a, b), lambda g, out, s, arg: (g * s[1], g * s[0])
)
_rule(
    Ops.DIV,
    _same,
    lambda arg, a, b: _int_div(a, b),
    lambda g, out, s, arg: (g / s[1], -g * out / s[1]),
)
_rule(
    Ops.MOD,
    _same,
    lambda arg, a, b: _int_mod(a, b),
    lambda g, out, s, arg: (g, -g * (s[0] / s[1]).trunc()),
)
_rule(Ops.POW, _same, lambda arg, a, b: _pow(a, b), _pow_vjp)
_rule(Ops.MAX, _same, lambda arg, a, b: np.maximum(a, b), _max_vjp)
_rule(Ops.MIN, _same, lambda arg, a, b: np.minimum(a, b), _max_vjp)
_rule(Ops.CMPLT, _to_bool, lambda arg, a, b: np.less(a, b), None)
_rule(Ops.CMPEQ, _to_bool, lambda arg, a, b: np.equal(a, b), None)
_rule(Ops.AND, _same, lambda arg, a, b: np.bitwise_and(a, b), None)
_rule(Ops.OR, _same, lambda arg, a, b: np.bitwise_or(a, b), None)
_rule(Ops.XOR, _same, lambda arg, a, b: np.bitwise_xor(a, b), None)


def _where_infer(srcs: tuple[Node, ...], arg: Any) -> tuple[Shape, DType]:
    c, a, b = srcs
    assert c.dtype is dtypes.bool_ and c.shape == a.shape, f"bad where {srcs}"
    return _same((a, b), arg)


_rule(
    Ops.WHERE,
    _where_infer,
    lambda arg, c, a, b: np.where(c, a, b),
    lambda g, out, s, arg: (None, s[0]._select(g, 0), s[0]._select(0, g)),
)


# --- reductions -----------------------------------------------------------------------
def _reduce_infer(srcs: tuple[Node, ...], arg: tuple[int, ...]) -> tuple[Shape, DType]:
    x = srcs[0]
    shape = list(x.shape)
    for a in arg:
        assert 0 <= a < len(shape), f"bad reduce axes {arg} for {x}"
        shape[a] = 1
    return tuple(shape), x.dtype


def _extreme_vjp(g: Any, out: Any, s: Any, arg: Any) -> tuple[Any, ...]:
    # ties share the gradient evenly, as torch.amax does
    mask = (s[0] == out.expand(s[0].shape)).to(g.dtype)
    return (mask * (g / mask._reduce(Ops.SUM, arg)).expand(s[0].shape),)


def _prod_vjp(g: Any, out: Any, s: Any, arg: Any) -> tuple[Any, ...]:
    # d prod / d x_i = product of the others, computed without dividing by zero
    x = s[0]
    is0 = x == 0
    zeros = is0.to(x.dtype)._reduce(Ops.SUM, arg).expand(x.shape)
    p_nonzero = is0._select(1, x)._reduce(Ops.PROD, arg).expand(x.shape)
    full = out.expand(x.shape)
    others = (zeros == 0)._select(
        full / is0._select(1, x), (is0 & (zeros == 1))._select(p_nonzero, 0)
    )
    return (g.expand(x.shape) * others,)


def _ref_reduce(fn: Callable[..., np.ndarray]) -> Ref:
    # float16 accumulates in float32 and rounds once; integers stay in their own dtype
    def ref(arg: tuple[int, ...], x: np.ndarray) -> np.ndarray:
        acc = np.float32 if x.dtype == np.float16 else x.dtype
        return np.asarray(fn(x, axis=arg, keepdims=True, dtype=acc)).astype(x.dtype)

    return ref


SUM_BLOCK = 128  # float64 sums: terms added in a row before partials are summed again


def ref_sum(arg: tuple[int, ...], x: np.ndarray) -> np.ndarray:
    """SUM as accurately as pairwise summation along every axis, strided ones included
    (numpy's pairwise summation covers only a contiguous axis: a column sum of 10^7 float32
    rows was 7% off). Narrower floats accumulate in float64 and round once; float64 sums
    blocks of SUM_BLOCK along each axis, then the block sums again (a SUM_BLOCK-ary tree).
    Host memory: the output and, for float64, 1/SUM_BLOCK of the input."""
    if x.dtype.kind != "f":
        return np.asarray(np.sum(x, axis=arg, keepdims=True, dtype=x.dtype))
    if x.dtype.itemsize < 8:  # numpy casts in small buffers: no float64 copy of x
        return np.asarray(np.sum(x, axis=arg, keepdims=True, dtype=np.float64)).astype(x.dtype)
    for a in arg:
        while x.shape[a] > SUM_BLOCK:
            x = np.add.reduceat(x, np.arange(0, x.shape[a], SUM_BLOCK), axis=a)
    return np.asarray(np.sum(x, axis=arg, keepdims=True))


_rule(Ops.SUM, _reduce_infer, ref_sum, lambda g, out, s, arg: (g.expand(s[0].shape),))
_rule(Ops.RMAX, _reduce_infer, lambda arg, x: np.max(x, axis=arg, keepdims=True), _extreme_vjp)
_rule(Ops.RMIN, _reduce_infer, lambda arg, x: np.min(x, axis=arg, keepdims=True), _extreme_vjp)
_rule(Ops.PROD, _reduce_infer, _ref_reduce(np.prod), _prod_vjp)


def _ref_cumsum(arg: int, x: np.ndarray) -> np.ndarray:
    """Running sums: float32 and halves accumulate in float64 (numpy's are serial in the
    input's dtype: 2**25 ones would stop at 2**24), rounding each value once."""
    acc = np.float64 if x.dtype.kind == "f" else x.dtype
    return np.cumsum(x, axis=arg, dtype=acc).astype(x.dtype)


_rule(
    Ops.CUMSUM,
    lambda srcs, arg: (srcs[0].shape, srcs[0].dtype),
    _ref_cumsum,
    lambda g, out, s, arg: (g.flip(arg)._cumsum(arg).flip(arg),),
)


# --- movement -------------------------------------------------------------------------
def _reshape_infer(srcs: tuple[Node, ...], arg: Shape) -> tuple[Shape, DType]:
    x = srcs[0]
    assert math.prod(arg) == math.prod(x.shape), f"bad reshape {x} -> {arg}"
    return tuple(arg), x.dtype


def _permute_infer(srcs: tuple[Node, ...], arg: Shape) -> tuple[Shape, DType]:
    shape = srcs[0].shape
    assert sorted(arg) == list(range(len(shape))), f"bad permute {arg}"
    return tuple(map(shape.__getitem__, arg)), srcs[0].dtype


def _expand_infer(srcs: tuple[Node, ...], arg: Shape) -> tuple[Shape, DType]:
    x = srcs[0]
    assert len(arg) == len(x.shape), arg
    for s, t in zip(x.shape, arg):
        assert s == t or s == 1, arg
    return tuple(arg), x.dtype


# The inference rules run for every op an eager program builds: plain loops, no generators.
def _pad_infer(srcs: tuple[Node, ...], arg: Any) -> tuple[Shape, DType]:
    x = srcs[0]
    assert len(arg) == len(x.shape), arg
    shape = []
    for s, (lo, hi) in zip(x.shape, arg):
        assert lo >= 0 and hi >= 0, arg
        shape.append(s + lo + hi)
    return tuple(shape), x.dtype


def _shrink_infer(srcs: tuple[Node, ...], arg: Any) -> tuple[Shape, DType]:
    x = srcs[0]
    assert len(arg) == len(x.shape), arg
    shape = []
    for (a, b), s in zip(arg, x.shape):
        assert 0 <= a <= b <= s, arg
        shape.append(b - a)
    return tuple(shape), x.dtype


def _expand_vjp(g: Any, out: Any, s: Any, arg: Any) -> tuple[Any, ...]:
    axes = tuple(i for i, (a, b) in enumerate(zip(s[0].shape, arg)) if a != b)
    return (g._reduce(Ops.SUM, axes) if axes else g,)


def _shrink_vjp(g: Any, out: Any, s: Any, arg: Any) -> tuple[Any, ...]:
    pads = tuple((a, n - b) for (a, b), n in zip(arg, s[0].shape))
    return (g._prim(Ops.PAD, arg=pads),)


def _pad_vjp(g: Any, out: Any, s: Any, arg: Any) -> tuple[Any, ...]:
    box = tuple((lo, lo + n) for (lo, _), n in zip(arg, s[0].shape))
    return (g._prim(Ops.SHRINK, arg=box),)


_rule(
    Ops.RESHAPE,
    _reshape_infer,
    lambda arg, x: x.reshape(arg),
    lambda g, out, s, arg: (g._prim(Ops.RESHAPE, arg=s[0].shape),),
)
_rule(
    Ops.PERMUTE,
    _permute_infer,
    lambda arg, x: np.transpose(x, arg),
    # the inverse permutation, in Python: np.argsort of a tuple costs ~10 us (an array made)
    lambda g, out, s, arg: (
        g._prim(Ops.PERMUTE, arg=tuple(sorted(range(len(arg)), key=arg.__getitem__))),
    ),
)
_rule(Ops.EXPAND, _expand_infer, lambda arg, x: np.broadcast_to(x, arg), _expand_vjp)
_rule(Ops.PAD, _pad_infer, lambda arg, x: np.pad(x, arg), _pad_vjp)
_rule(Ops.SHRINK, _shrink_infer, lambda arg, x: x[tuple(slice(a, b) for a, b in arg)], _shrink_vjp)
_rule(
    Ops.FLIP,
    lambda srcs, arg: (srcs[0].shape, srcs[0].dtype),
    lambda arg, x: np.flip(x, arg),
    lambda g, out, s, arg: (g._prim(Ops.FLIP, arg=arg),),
)


# --- data-dependent -------------------------------------------------------------------
def _gather_infer(srcs: tuple[Node, ...], arg: int) -> tuple[Shape, DType]:
    src, idx = srcs
    assert idx.dtype is dtypes.int64 and len(idx.shape) == len(src.shape), srcs
    for i, (a, b) in enumerate(zip(src.shape, idx.shape)):
        assert i == arg or a == b, srcs
    return idx.shape, src.dtype


def _scatter_infer(srcs: tuple[Node, ...], arg: int) -> tuple[Shape, DType]:
    base, idx, src = srcs
    assert idx.shape == src.shape and src.dtype is base.dtype, srcs
    _gather_infer((base, idx), arg)
    return base.shape, base.dtype


def _ref_scatter_add(arg: int, base: np.ndarray, idx: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Negative ids count from the end; ids still out of range add nothing (as compiled
    kernels guard them)."""
    out = base.copy()
    n = base.shape[arg]
    at = np.where(idx < 0, idx + n, idx)
    inside = (at >= 0) & (at < n)
    grids: list[Any] = list(np.indices(idx.shape, sparse=True))
    grids[arg] = np.where(inside, at, 0)
    src = src[tuple(slice(0, d) for d in idx.shape)]  # idx's window of src takes part
    np.add.at(out, tuple(grids), np.where(inside, src, np.zeros((), src.dtype)))
    return out


def _ref_gather(arg: int, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Negative ids count from the end; ids still out of range read 0 (as compiled kernels
    guard them: the frontend checks ids, sometimes after the gather has run)."""
    n = x.shape[arg]
    at = np.where(idx < 0, idx + n, idx)
    inside = (at >= 0) & (at < n)
    if n == 0:  # nothing to read: every id is out of range
        return np.zeros(idx.shape, x.dtype)
    out = np.take_along_axis(x, np.where(inside, at, 0), axis=arg)
    return np.where(inside, out, np.zeros((), x.dtype))


_rule(
    Ops.GATHER,
    _gather_infer,
    _ref_gather,
    lambda g, out, s, arg: (s[0].zeros_like()._prim(Ops.SCATTER_ADD, s[1], g, arg=arg), None),
)
_rule(
    Ops.SCATTER_ADD,
    _scatter_infer,
    _ref_scatter_add,
    lambda g, out, s, arg: (g, None, g._prim(Ops.GATHER, s[1], arg=arg)),
)


def _argsort_infer(srcs: tuple[Node, ...], arg: Any) -> tuple[Shape, DType]:
    # arg: (axis, descending) or (axis, descending, k): the first k positions of the order
    shape = srcs[0].shape
    axis = arg[0]
    assert 0 <= axis < len(shape), f"bad argsort axis {axis} for {shape}"
    if len(arg) == 2:
        return shape, dtypes.int64
    k = arg[2]
    assert 0 <= k <= shape[axis], f"bad argsort k={k} for axis {axis} of {shape}"
    return (*shape[:axis], k, *shape[axis + 1 :]), dtypes.int64


def _ref_argsort(arg: tuple[Any, ...], x: np.ndarray) -> Any:
    axis, descending = arg[0], arg[1]
    if not descending:
        out = np.argsort(x, axis=axis, kind="stable").astype(np.int64)
    else:
        # stable descending order, exact for every dtype: sort the reversed array ascending
        # and reverse back (ties keep their order; NaN, last ascending, comes first, as torch)
        rev = np.argsort(np.flip(x, axis), axis=axis, kind="stable")
        out = np.asarray(x.shape[axis] - 1 - np.flip(rev, axis), dtype=np.int64)
    if len(arg) == 3:  # top-k: only the first k positions along the axis
        out = np.take(out, np.arange(arg[2]), axis=axis)
    return out


_rule(Ops.ARGSORT, _argsort_infer, _ref_argsort, None)
_rule(
    Ops.COPY,
    lambda srcs, arg: (srcs[0].shape, srcs[0].dtype),
    lambda arg, x: x,
    lambda g, out, s, arg: (g.to(s[0].device),),
)

assert set(RULES) == UNARY | BINARY | REDUCE | MOVEMENT | {
    Ops.WHERE,
    Ops.CUMSUM,
    Ops.GATHER,
    Ops.SCATTER_ADD,
    Ops.ARGSORT,
    Ops.COPY,
}
