"""Subscripts: `x[index]` and `x[index] = value` with PyTorch's rules, built from primitives.

Basic indices (ints, slices, None, Ellipsis) become SHRINK/PAD/RESHAPE; integer tensors and
boolean masks become one GATHER over the indexed dims, flattened together into one axis.
"""

from __future__ import annotations

import math
import operator
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from anychip import dtypes
from anychip.errors import DTypeError, IndexDTypeError, IndexOutOfRange, ShapeError, describe
from anychip.frontend import views
from anychip.frontend.elementwise import broadcast_shapes
from anychip.ir.ops import Node, Ops

if TYPE_CHECKING:
    from anychip.frontend.tensor import Tensor


@dataclass(frozen=True)
class _Dim:
    """How a basic index reads one source dim: `length` elements from `start` by `step`."""

    start: int
    step: int
    length: int  # an int index reads 1 element and its dim is then dropped by a reshape


@dataclass(frozen=True)
class _Adv:
    """An advanced index on dim `pos` of the basic-indexed tensor, of size n there."""

    pos: int
    idx: Tensor  # int64, values in [-n, n) (checked already)
    repeats: bool  # may hold one position twice (integer tensors; masks never do)


@dataclass(frozen=True)
class _Mask:
    mask: Tensor  # bool, covers mask.ndim source dims


@dataclass(frozen=True)
class _Bool:
    value: bool  # x[True] / x[False]: a new axis of size 1, then all or none of it


@dataclass(frozen=True)
class _Plan:
    dims: tuple[_Dim, ...]  # one per source dim
    shape: tuple[int, ...]  # the tensor's shape after the basic indices
    adv: tuple[_Adv, ...]


# indices made from host data keep their host copy, so checking them costs no read-back
_HOST_VALUES: weakref.WeakKeyDictionary[Node, np.ndarray] = weakref.WeakKeyDictionary()


# --- index bounds, positions, gathers: shared with indexing.py and embedding.py ---------
def index_range(idx: Tensor) -> tuple[int, int]:
    """(min, max) of a non-empty integer tensor, reduced on the device: two numbers are
    read back, not the whole index (indices made from host data are read on the host)."""
    host = _HOST_VALUES.get(idx.node)
    if host is not None:
        return int(host.min()), int(host.max())
    flat = idx.realize().reshape(-1)  # realised once, so its graph is not computed twice
    both = flat.amin().reshape(1)._pad_zero([(0, 1)]) + flat.amax().reshape(1)._pad_zero([(1, 0)])
    mn, mx = (int(v) for v in both.numpy())
    return mn, mx


def check_range(idx: Tensor, lo: int, hi: int, message: Callable[[int], str]) -> None:
    """Raise IndexOutOfRange(message(bad_value)) unless every value of idx is in [lo, hi),
    as torch checks its indices too (an unchecked gather would read outside the buffer)."""
    flag = range_flag(idx, lo, hi, message)
    if flag is not None:
        raise_if(flag, idx, lo, hi, message)


def range_flag(idx: Tensor, lo: int, hi: int, message: Callable[[int], str]) -> Tensor | None:
    """A lazy bool: some value of idx is outside [lo, hi). Indices made from host data are
    checked here and now instead (None; so is an empty idx). Realise the flag with the
    result that uses idx (one schedule, one read back), then call `raise_if`."""
    if idx.numel() == 0:
        return None
    if idx.node in _HOST_VALUES:
        _raise_bad(idx, lo, hi, message)
        return None
    # one flag read back: the same value for every valid index, so a jitted function
    # whose indices change from call to call (an embedding lookup) still replays
    flat = idx.realize().reshape(-1)
    return ((flat < lo) | (flat >= hi)).any()


def raise_if(flag: Tensor, idx: Tensor, lo: int, hi: int, message: Callable[[int], str]) -> None:
    """`range_flag`'s verdict: raise IndexOutOfRange naming a bad value if it is set."""
    if bool(flag.item()):
        _raise_bad(idx, lo, hi, message)


def _raise_bad(idx: Tensor, lo: int, hi: int, message: Callable[[int], str]) -> None:
    mn, mx = index_range(idx)
    if mn < lo or mx >= hi:
        raise IndexOutOfRange(message(mn if mn < lo else mx))


def iota(n: int, device: str) -> Tensor:
    """0, 1, ..., n-1 as int64, made on the device (no host array of n values)."""
    from anychip.frontend.tensor import Tensor

    return Tensor._const(1, dtypes.int64, (n,), device)._cumsum(0) - 1 if n else empty_index(device)


def empty_index(device: str, n: int = 0) -> Tensor:
    from anychip.frontend.tensor import Tensor

    return Tensor._const(0, dtypes.int64, (n,), device)


def true_positions(mask: Tensor) -> Tensor:
    """Flat positions (k,) int64 where a 1-d bool `mask` (N,) holds, in order.

    The count k is read back to the host (the result's shape depends on it); the positions
    are found on the device: a running count gives each true element its output slot.
    """
    n = mask.numel()
    mask = mask.realize()  # computed once, then read by the count and by the positions
    k = int(mask.sum().item())
    if k == n:
        return iota(n, mask.device)
    if k == 0:
        return empty_index(mask.device)
    slot = mask._select(mask.to(dtypes.int64)._cumsum(0) - 1, k)  # (N,), false -> slot k
    out = empty_index(mask.device, k + 1)._prim(Ops.SCATTER_ADD, slot, iota(n, mask.device), arg=0)
    return out._shrink([(0, k)])


def take(x: Tensor, axis: int, idx: Tensor) -> Tensor:
    """x's slices at positions idx (any shape B, values in range) along axis:
    (..., n, ...) -> (..., *B, ...), one GATHER."""
    m = idx.numel()
    # internal reshapes, not views: the result is a value of its own, as torch's
    flat = idx._reshape((1,) * axis + (m,) + (1,) * (x.ndim - axis - 1))
    full = (*x.shape[:axis], m, *x.shape[axis + 1 :])
    out = x._prim(Ops.GATHER, flat._broadcast(full), arg=axis)
    return out._reshape(x.shape[:axis] + idx.shape + x.shape[axis + 1 :])


def as_index(x: Tensor, idx: Any, op: str) -> Tensor:
    """An integer index (tensor, list, array) as an int64 tensor on x's device."""

    if not isinstance(idx, _tensor.Tensor):
        arr = np.asarray(idx)
        if arr.size == 0:
            arr = arr.astype(np.int64)
        if arr.dtype.kind not in "iu":
            raise IndexDTypeError(f"{op}: indices must be integers, got {arr.dtype} values")
        t = _tensor.Tensor(arr.astype(np.int64), device=x.device)
        _HOST_VALUES[t.node] = arr  # lets check_range skip the read-back
        return t
    if idx.dtype.kind not in "iu":
        raise IndexDTypeError(
            f"{op}: tensors used as indices must be integer tensors, got {describe(idx)}"
        )
    return idx.to(x.device, dtypes.int64)


# --- parsing ------------------------------------------------------------------------------
def _item(x: Tensor, it: Any) -> Any:
    """One subscript entry as None, Ellipsis, int, slice, _Bool, _Mask or an int64 Tensor."""
    from anychip.frontend.tensor import Tensor

    if it is None or it is Ellipsis or isinstance(it, slice):
        return it
    if isinstance(it, (bool, np.bool_)):
        return _Bool(bool(it))
    if isinstance(it, (int, np.integer)):
        return int(it)
    if isinstance(it, Tensor):
        if it.dtype in (dtypes.bool_, dtypes.uint8):  # torch reads uint8 as a mask too
            m = it.to(x.device, dtypes.bool_)
            return _Bool(bool(m.item())) if m.ndim == 0 else _Mask(m)
        if it.dtype.kind not in "iu":
            raise IndexDTypeError(
                "getitem: tensors used as indices must be integer or bool tensors, "
                f"got {describe(it)}"
            )
        return int(it.item()) if it.ndim == 0 else it.to(x.device, dtypes.int64)
    arr = np.asarray(it)
    if arr.dtype.kind == "b":
        return _item(x, Tensor(arr, device=x.device))
    if arr.size == 0 or arr.dtype.kind in "iu":
        return as_index(x, arr, "getitem")
    raise DTypeError(f"getitem: unsupported index of type {type(it).__name__}")


def _consumed(it: Any) -> int:
    if it is None or it is Ellipsis or isinstance(it, _Bool):
        return 0
    return it.mask.ndim if isinstance(it, _Mask) else 1


def _expand_ellipsis(x: Tensor, items: list[Any]) -> list[Any]:
    used = sum(_consumed(it) for it in items)
    if used > x.ndim:
        raise IndexOutOfRange(
            f"getitem: too many indices for tensor of dimension {x.ndim} "
            f"({used} indexed, shape {x.shape})"
        )
    n_ell = sum(1 for it in items if it is Ellipsis)
    if n_ell > 1:
        raise IndexOutOfRange("getitem: an index can only have a single ellipsis ('...')")
    fill = [slice(None)] * (x.ndim - used)
    if n_ell == 0:
        return items + fill
    at = next(i for i, it in enumerate(items) if it is Ellipsis)
    return items[:at] + fill + items[at + 1 :]


def _slice_dim(s: slice, n: int) -> _Dim:
    def bound(v: Any) -> Any:
        return None if v is None else operator.index(v)

    step = 1 if s.step is None else operator.index(s.step)
    if step <= 0:
        raise ShapeError(f"getitem: step must be greater than zero, got {step}")
    start, stop, step = slice(bound(s.start), bound(s.stop), step).indices(n)
    return _Dim(start, step, len(range(start, stop, step)))


def _plan(x: Tensor, index: Any) -> _Plan:
    raw = list(index) if isinstance(index, tuple) else [index]
    items = _expand_ellipsis(x, [_item(x, it) for it in raw])
    dims: list[_Dim] = []
    shape: list[int] = []
    adv: list[_Adv] = []
    for it in items:
        d = len(dims)
        if it is None or isinstance(it, _Bool):
            if isinstance(it, _Bool):  # torch: unsqueeze, then index it with [0] or []
                adv.append(_Adv(len(shape), empty_index(x.device, int(it.value)), False))
            shape.append(1)
        elif isinstance(it, int):
            n = x.shape[d]
            if not -n <= it < n:
                raise IndexOutOfRange(
                    f"getitem: index {it} is out of bounds for dimension {d} with size {n} "
                    f"(tensor of {describe(x)})"
                )
            dims.append(_Dim(it % n, 1, 1))
        elif isinstance(it, slice):
            dims.append(_slice_dim(it, x.shape[d]))
            shape.append(dims[-1].length)
        elif isinstance(it, _Mask):
            covered = x.shape[d : d + it.mask.ndim]
            if it.mask.shape != covered:
                raise IndexOutOfRange(
                    f"getitem: the shape of the mask {list(it.mask.shape)} at index {d} does "
                    f"not match the shape of the indexed tensor {list(x.shape)} at index {d}"
                )
            dims.extend(_Dim(0, 1, n) for n in covered)
            # the mask's dims merge into one axis, indexed by the flat positions it selects
            adv.append(_Adv(len(shape), true_positions(it.mask.reshape(-1)), False))
            shape.append(math.prod(covered))
        else:
            n = x.shape[d]
            check_range(
                it,
                -n,
                n,
                lambda v, d=d, n=n: (
                    f"getitem: index {v} is out of bounds for dimension {d} with size {n} "
                    f"(tensor of {describe(x)})"
                ),
            )
            adv.append(_Adv(len(shape), it, True))
            dims.append(_Dim(0, 1, n))
            shape.append(n)
    return _Plan(tuple(dims), tuple(shape), tuple(adv))


# --- basic indexing and its transpose -----------------------------------------------------
def _span(d: _Dim) -> int:
    return (d.length - 1) * d.step + 1 if d.length else 0


def _stepped(d: _Dim) -> bool:
    return d.step > 1 and d.length > 1


def _basic(x: Tensor, plan: _Plan) -> Tensor:
    """Apply the basic part: shrink to each dim's window, then take every step-th element by
    padding to length*step, splitting (length, step) and keeping step index 0."""
    y = x._shrink([(d.start, d.start + _span(d)) for d in plan.dims])
    if any(_stepped(d) for d in plan.dims):
        y = y._pad_zero([(0, d.step - 1) if _stepped(d) else (0, 0) for d in plan.dims])
        # a dim that is not stepped has exactly d.length elements after the shrink
        split = [v for d in plan.dims for v in ((d.length, d.step) if _stepped(d) else (d.length,))]
        y = y._reshape(split)
        box = [
            b
            for d in plan.dims
            for b in (((0, d.length), (0, 1)) if _stepped(d) else ((0, d.length),))
        ]
        y = y._shrink(box)
    return y._reshape(plan.shape)


def _place(v: Tensor, plan: _Plan, shape: tuple[int, ...]) -> Tensor:
    """The transpose of `_basic`: v (plan.shape) put where it was read from, zeros elsewhere."""
    v = v._reshape(tuple(d.length for d in plan.dims))
    if any(_stepped(d) for d in plan.dims):
        v = v._reshape(
            [s for d in plan.dims for s in ((d.length, 1) if _stepped(d) else (d.length,))]
        )
        v = v._pad_zero(
            [
                p
                for d in plan.dims
                for p in (((0, 0), (0, d.step - 1)) if _stepped(d) else ((0, 0),))
            ]
        )
        v = v._reshape([d.length * d.step if _stepped(d) else d.length for d in plan.dims])
        v = v._shrink([(0, _span(d)) for d in plan.dims])
    return v._pad_zero(
        [(d.start, n - d.start - _span(d)) for d, n in zip(plan.dims, shape, strict=True)]
    )


# --- advanced indexing ------------------------------------------------------------------
def _advanced(y: Tensor, adv: tuple[_Adv, ...]) -> Tensor:
    """Gather y at the advanced indices: their dims are flattened into one axis and read
    with one linear index. The result dims (the indices broadcast together) replace the
    indexed dims when those are adjacent, and go first otherwise (numpy's rule)."""
    pos = [a.pos for a in adv]
    k = len(pos)
    idxs = [(a.idx < 0)._select(a.idx + y.shape[a.pos], a.idx) if a.repeats else a.idx for a in adv]
    b_shape = broadcast_shapes("getitem", *idxs)
    if pos == list(range(pos[0], pos[0] + k)):
        p0 = pos[0]
    else:
        y = y.permute(pos + [i for i in range(y.ndim) if i not in pos])
        p0 = 0
    sizes = y.shape[p0 : p0 + k]
    lin: Tensor | None = None
    for j, t in enumerate(idxs):
        stride = math.prod(sizes[j + 1 :])
        term = t._broadcast(b_shape) * stride if stride != 1 else t._broadcast(b_shape)
        lin = term if lin is None else lin + term
    assert lin is not None
    y = y.reshape((*y.shape[:p0], math.prod(sizes), *y.shape[p0 + k :]))
    return take(y, p0, lin)


def getitem(x: Tensor, index: Any) -> Tensor:
    """x[index]: a view of x for basic indices (ints, slices, None, Ellipsis), as in
    PyTorch; a copy once an integer tensor or a mask takes part."""
    plan = _plan(x, index)
    y = _basic(x, plan)
    if plan.adv:
        return _advanced(y, plan.adv)
    return views.alias(x) if y is x else views.make_view(x, y)


# --- assignment ---------------------------------------------------------------------------
def _value(x: Tensor, value: Any, shape: tuple[int, ...]) -> Tensor:
    """value as a tensor of x's dtype broadcast to `shape` (leading 1s dropped, as torch)."""
    from anychip.frontend.tensor import Tensor, to_tensor

    if not isinstance(value, Tensor) and isinstance(value, (int, float, bool)):
        return Tensor._const(value, x.dtype, shape, x.device)
    v = to_tensor(value, like=x).to(x.device, x.dtype)
    while v.ndim > len(shape) and v.shape[0] == 1:
        v = v.reshape(v.shape[1:])
    try:
        return v._broadcast(shape)
    except ShapeError:
        raise ShapeError(
            f"setitem: shape mismatch: value tensor of shape {v.shape} cannot be broadcast "
            f"to indexing result of shape {shape} (tensor of {describe(x)})"
        ) from None


def _last_writes(pos: Tensor, vals: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For flat positions (M,) that may repeat, keep only the last write to each (as a
    sequential loop would): sort stably, and keep each run's last element."""
    m = pos.shape[0]
    order = pos._prim(Ops.ARGSORT, arg=(0, False))
    spos = pos._prim(Ops.GATHER, order, arg=0)
    same_next = (spos._shrink([(0, m - 1)]) == spos._shrink([(1, m)]))._pad_zero([(0, 1)])
    keep = ~same_next  # (M,) bool, in sorted order
    return spos, keep._select(vals._prim(Ops.GATHER, order, arg=0), 0), keep


def setitem(x: Tensor, index: Any, value: Any) -> None:
    """x[index] = value, written into x through Tensor._assign (autograd sees it)."""
    from anychip.frontend.tensor import Tensor, no_grad

    plan = _plan(x, index)
    if not plan.adv:
        v = _value(x, value, plan.shape)
        hit = _place(Tensor._const(True, dtypes.bool_, plan.shape, x.device), plan, x.shape)
        x._assign(hit._select(_place(v, plan, x.shape), x), "setitem")
        return
    n = x.numel()
    with no_grad():  # flat positions of the written elements, by indexing an iota like x
        pos = _advanced(_basic(iota(n, x.device).reshape(x.shape), plan), plan.adv)
    v = _value(x, value, pos.shape).reshape(-1)
    pos = pos.reshape(-1)
    sdt = dtypes.int32 if x.dtype is dtypes.bool_ else x.dtype  # scatter-add needs numbers
    v = v.to(sdt)
    ones = Tensor._const(1, dtypes.int32, pos.shape, x.device)
    if any(a.repeats for a in plan.adv) and pos.shape[0] > 1:
        pos, v, keep = _last_writes(pos, v)
        ones = keep.to(dtypes.int32)
    placed = Tensor._const(0, sdt, (n,), x.device)._prim(Ops.SCATTER_ADD, pos, v, arg=0)
    hits = Tensor._const(0, dtypes.int32, (n,), x.device)._prim(Ops.SCATTER_ADD, pos, ones, arg=0)
    new = (hits > 0)._select(placed.to(x.dtype), x.reshape(-1))
    x._assign(new.reshape(x.shape), "setitem")


# imported last: anychip.frontend.tensor imports this module (directly or not), so the
# module object may be half made here; the functions above read `_tensor.X` when called,
# where a local import would cost about a microsecond a call (hundreds per training step)
from anychip.frontend import tensor as _tensor  # noqa: E402
