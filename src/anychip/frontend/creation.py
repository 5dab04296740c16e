"""Tensor creation: from data, constants, ranges, and joining tensors (cat, stack)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from anychip import dtypes
from anychip.errors import DTypeNotImplemented, IndexOutOfRange, ShapeError, describe
from anychip.frontend import views
from anychip.frontend.movement import _int_sizes, _shape_arg, same_device
from anychip.frontend.tensor import Tensor, check_int_range
from anychip.runtime import device as devmod


def tensor(data: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """A tensor holding a copy of `data` (nested lists, numbers, numpy arrays, tensors).

    >>> import anychip as ac
    >>> ac.tensor([[1, 2], [3, 4]]).dtype
    anychip.int64
    """
    return Tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)


def _shape(size: Sequence[Any], op: str) -> tuple[int, ...]:
    shape = tuple(_int_sizes(_shape_arg(size), op))
    if any(s < 0 for s in shape):
        raise ShapeError(f"{op}: negative dimension in size {shape}")
    return shape


def _filled(
    op: str, size: Sequence[Any], value: Any, dtype: Any, device: Any, requires_grad: bool
) -> Tensor:
    shape = _shape(size, op)
    dt = dtypes.to_dtype(dtype, op) if dtype is not None else dtypes.scalar_dtype(value)
    dev = devmod.canonical(device, op, f"shape {shape}, dtype {dt.name}")
    devmod.check_size(dev, shape, dt.itemsize, f"{op} ({dt.name})")
    if dt.kind in "iu" and isinstance(value, int) and not isinstance(value, bool):
        check_int_range(np.array([value]), dt, op)  # as torch: 300 is no int8, -1 a uint8
    elif dt is dtypes.bfloat16 and isinstance(value, (int, float)):
        # a bfloat16 tensor holds bfloat16 values: round the fill as `tensor` does (the
        # backends round bfloat16 results at each op, never a constant read as it is)
        value = float(dtypes.round_bf16(np.array([value], np.float32))[0])
    t = Tensor._const(value, dt, shape, dev)
    return t.requires_grad_() if requires_grad else t


def full(
    size: Sequence[int],
    fill_value: Any,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    """A tensor of shape `size` filled with `fill_value`.

    >>> import anychip as ac
    >>> ac.full((2,), 7).tolist()
    [7, 7]
    """
    return _filled("full", size, fill_value, dtype, device, requires_grad)


def zeros(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return _filled("zeros", size, 0.0, dtype or dtypes.default_float, device, requires_grad)


def ones(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return _filled("ones", size, 1.0, dtype or dtypes.default_float, device, requires_grad)


def empty(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """Like zeros: anychip never hands out uninitialised memory."""
    return _filled("empty", size, 0.0, dtype or dtypes.default_float, device, requires_grad)


def _from_host(
    op: str, vals: np.ndarray, dt: dtypes.DType, device: Any, requires_grad: bool
) -> Tensor:
    dev = devmod.canonical(device, op, f"shape {vals.shape}, dtype {dt.name}")
    return Tensor(vals, dtype=dt, device=dev, requires_grad=requires_grad)


def _like(op: str, t: Tensor, value: Any, dtype: Any, device: Any, requires_grad: bool) -> Tensor:
    return _filled(op, t.shape, value, dtype or t.dtype, device or t.device, requires_grad)


def full_like(
    t: Tensor, fill_value: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False
) -> Tensor:
    return _like("full_like", t, fill_value, dtype, device, requires_grad)


def zeros_like(
    t: Tensor, dtype: Any = None, device: Any = None, requires_grad: bool = False
) -> Tensor:
    return _like("zeros_like", t, 0, dtype, device, requires_grad)


def ones_like(
    t: Tensor, dtype: Any = None, device: Any = None, requires_grad: bool = False
) -> Tensor:
    return _like("ones_like", t, 1, dtype, device, requires_grad)


def empty_like(
    t: Tensor, dtype: Any = None, device: Any = None, requires_grad: bool = False
) -> Tensor:
    return _like("empty_like", t, 0, dtype, device, requires_grad)


def arange(
    start: float,
    end: float | None = None,
    step: float = 1,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    """Values from start (inclusive) to end (exclusive) by step, like torch.arange.

    >>> import anychip as ac
    >>> ac.arange(5).tolist()
    [0, 1, 2, 3, 4]
    """
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ShapeError("arange: step must be nonzero")
    if (end - start) / step < 0:
        raise ShapeError(
            f"arange: upper bound and step sign are inconsistent "
            f"(start {start}, end {end}, step {step})"
        )
    is_int = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
    dt = (
        dtypes.to_dtype(dtype, "arange")
        if dtype is not None
        else (dtypes.default_int if is_int else dtypes.default_float)
    )
    n = max(int(np.ceil((end - start) / step)), 0)
    vals = start + np.arange(n, dtype=np.float64 if not is_int else np.int64) * np.asarray(step)
    return _from_host("arange", vals, dt, device, requires_grad)


def linspace(
    start: float,
    end: float,
    steps: int,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    if steps < 0:
        raise ShapeError(f"linspace: number of steps must be non-negative, got {steps}")
    dt = dtypes.to_dtype(dtype, "linspace") if dtype is not None else dtypes.default_float
    if dt is dtypes.bool_:  # as torch: there is no bool linspace kernel
        raise DTypeNotImplemented(f"linspace: not implemented for dtype bool (steps {steps})")
    i = np.arange(steps, dtype=np.float64)
    step = (end - start) / (steps - 1) if steps > 1 else 0.0
    # from both ends, as torch does, so the last value is exactly `end` (one step: `start`)
    vals = np.where(i < max(steps // 2, 1), start + i * step, end - (steps - 1 - i) * step)
    return _from_host("linspace", vals, dt, device, requires_grad)


def eye(
    n: int, m: int | None = None, dtype: Any = None, device: Any = None, requires_grad: bool = False
) -> Tensor:
    dt = dtypes.to_dtype(dtype, "eye") if dtype is not None else dtypes.default_float
    cols = m if m is not None else n
    if n < 0 or cols < 0:
        raise ShapeError(f"eye: n and m must be non-negative, got n={n}, m={cols}")
    return _from_host("eye", np.eye(n, cols), dt, device, requires_grad)


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join tensors along an existing dimension: each padded into place, then chosen by a
    select on its range (`rangesplit` turns it into one plain copy a part)."""
    ts = list(tensors)
    if not ts:
        raise ShapeError("cat: expected a non-empty list of tensors")
    # torch skips 1-d empty tensors in cat
    ts = [t for t in ts if not (t.ndim == 1 and t.shape[0] == 0)] or ts[:1]
    ref = ts[0]
    if ref.ndim == 0:
        raise ShapeError(f"cat: zero-dimensional tensors cannot be concatenated ({describe(*ts)})")
    d = ref._axis(dim, "cat")
    same_device("cat", ts)
    for t in ts:
        if t.ndim != ref.ndim or any(
            a != b for i, (a, b) in enumerate(zip(t.shape, ref.shape)) if i != d
        ):
            raise ShapeError(
                f"cat: sizes of tensors must match except in dimension {dim}: {describe(*ts)}"
            )
    dt = dtypes.result_type(*ts)
    total = sum(t.shape[d] for t in ts)
    out: Tensor | None = None
    start = 0
    for t in ts:
        n = t.shape[d]
        pads = [(start, total - start - n) if i == d else (0, 0) for i in range(t.ndim)]
        part = t.to(dt)._pad_zero(pads)
        if out is None or n == 0:
            out = part if out is None else out
        else:  # a select, not `out + part`: -0.0 + 0.0 would be +0.0 (torch keeps -0.0)
            inside = Tensor._const(True, dtypes.bool_, t.shape, t.device)._pad_zero(pads)
            out = inside._select(part, out)
        start += n
    assert out is not None
    # one tensor joined with nothing: a copy all the same (a new node, never a view of it)
    return views.fresh(out) if any(out is t for t in ts) else out


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    ts = list(tensors)
    if not ts:
        raise ShapeError("stack: expected a non-empty list of tensors")
    for t in ts:
        if t.shape != ts[0].shape:
            raise ShapeError(f"stack: expects each tensor to be equal size: {describe(*ts)}")
    n = ts[0].ndim + 1
    if not -n <= dim < n:
        raise IndexOutOfRange(
            f"stack: dimension {dim} out of range (expected in [{-n}, {n - 1}]) for a "
            f"{n}-d result from tensors of {describe(*ts)}"
        )
    return cat([t.unsqueeze(dim) for t in ts], dim)
