"""Pooling: max/avg pooling over sliding windows, and adaptive pooling as products with
small constant matrices (one per spatial axis; resize.py resizes the same way).

Windows come from `conv.sliding_windows` (movement ops), so a pool is one reduction
kernel and its gradient one more; adaptive average pooling is a matmul along each axis,
so it reaches the GEMM generator too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from anychip import dtypes
from anychip.errors import ArgumentError, ShapeError, describe
from anychip.frontend.conv import ntuple, sliding_windows

if TYPE_CHECKING:
    from anychip.frontend.tensor import Tensor


def _check(x: Tensor, nd: int, op: str) -> None:
    if x.ndim not in (nd + 1, nd + 2):
        raise ShapeError(
            f"{op}: expected a {nd + 1}-d (unbatched) or {nd + 2}-d input, got {describe(x)}"
        )


def _geometry(
    spatial: Sequence[int],
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    ceil_mode: bool,
    op: str,
) -> tuple[list[int], list[tuple[int, int]]]:
    """Output sizes and (before, after) padding per axis; ceil mode pads more after so the
    last, partial window exists (it must start inside the input or the left padding)."""
    outs, pads = [], []
    for i, k, s, p, d in zip(spatial, kernel, stride, padding, dilation, strict=True):
        if p > (d * (k - 1) + 1) // 2 or p < 0:
            raise ArgumentError(
                f"{op}: padding {p} must be at most half the effective kernel size {k}"
            )
        span = i + 2 * p - d * (k - 1) - 1
        o = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (o - 1) * s >= i + p:
            o -= 1
        if o < 1:
            raise ShapeError(f"{op}: input size {i} is too small for kernel {k} (padding {p})")
        extra = max((o - 1) * s + d * (k - 1) + 1 - (i + 2 * p), 0)
        outs.append(o)
        pads.append((p, p + extra))
    return outs, pads


def _pool_args(
    nd: int, kernel_size: Any, stride: Any, padding: Any, dilation: Any, op: str
) -> tuple[tuple[int, ...], ...]:
    k = ntuple(kernel_size, nd, "kernel_size", op)
    s = ntuple(stride if stride not in (None, []) else k, nd, "stride", op)
    return k, s, ntuple(padding, nd, "padding", op), ntuple(dilation, nd, "dilation", op)


def _pad_value(x: Tensor, pads: list[tuple[int, int]], value: float) -> Tensor:
    flat = [v for lo_hi in reversed(pads) for v in lo_hi]
    return x.pad(flat, value=value) if any(flat) else x


def max_pool(
    x: Tensor,
    nd: int,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
    op: str = "max_pool",
) -> Any:
    """Max over each window (padding never wins); with return_indices also each maximum's
    position in the flattened input plane, as torch (the first maximum on ties)."""
    _check(x, nd, op)
    k, s, p, d = _pool_args(nd, kernel_size, stride, padding, dilation, op)
    spatial = x.shape[-nd:]
    outs, pads = _geometry(spatial, k, s, p, d, ceil_mode, op)
    low = -math.inf if x.dtype.is_floating_point else int(np.iinfo(x.dtype.np).min)
    win = sliding_windows(_pad_value(x, pads, low), k, s, d)  # (..., *out, *k)
    win = win.reshape((*win.shape[: x.ndim], -1))
    out = win.amax(-1)
    if not return_indices:
        return out
    from anychip.frontend.creation import arange

    pos = arange(math.prod(spatial), device=x.device).reshape(spatial)
    pos_win = sliding_windows(_pad_value(pos, pads, -1), k, s, d).reshape((*outs, -1))
    arg = win.argmax(-1, keepdim=True)  # the first maximum
    lead = x.shape[: x.ndim - nd]
    pos_win = pos_win.expand((*lead, *pos_win.shape))
    return out, pos_win.gather(-1, arg).squeeze(-1)


def avg_pool(
    x: Tensor,
    nd: int,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    op: str = "avg_pool",
) -> Tensor:
    """Mean over each window. The divisor counts the window's cells inside the padded input
    (count_include_pad) or inside the input only, never the cells ceil mode adds."""
    from anychip.frontend.tensor import Tensor

    _check(x, nd, op)
    k, s, p, d = _pool_args(nd, kernel_size, stride, padding, 1, op)
    spatial = x.shape[-nd:]
    outs, pads = _geometry(spatial, k, s, p, d, ceil_mode, op)
    xf = x._float()
    total = sliding_windows(_pad_value(xf, pads, 0.0), k, s, d)
    total = total.reshape((*total.shape[: x.ndim], -1)).sum(-1)
    if divisor_override:
        return total / divisor_override
    # the divisor of each window, counted on a ones mask of the plane (host numpy: constant)
    if count_include_pad:  # ones over the input and its padding, zeros where ceil mode adds
        mask = np.ones([i + 2 * lo for i, (lo, _) in zip(spatial, pads, strict=True)])
        mask = np.pad(mask, [(0, hi - lo) for lo, hi in pads])
    else:
        mask = np.pad(np.ones(spatial), pads)
    ones = Tensor(mask.astype(xf.dtype.np), device=x.device)
    count = sliding_windows(ones, k, s, d).reshape((*outs, -1)).sum(-1)
    return total / count


def _adaptive_bounds(i: int, o: int) -> list[tuple[int, int]]:
    """torch's adaptive windows: [floor(j*i/o), ceil((j+1)*i/o)) for each output j."""
    return [((j * i) // o, -(-((j + 1) * i) // o)) for j in range(o)]


def movedim(x: Tensor, src: int, dst: int) -> Tensor:
    """x with axis `src` moved to position `dst` (the others keep their order)."""
    src, dst = x._axis(src, "movedim"), x._axis(dst, "movedim")
    order = [a for a in range(x.ndim) if a != src]
    order.insert(dst, src)
    return x.permute(order)


def _along(x: Tensor, axis: int, mat: np.ndarray) -> Tensor:
    """Apply the (o, i) matrix `mat` along `axis` of x: a matmul (the GEMM's job)."""
    from anychip.frontend.tensor import Tensor

    m = Tensor(mat.astype(x.dtype.np), device=x.device)
    if axis == x.ndim - 1:
        return x @ m.t()
    return movedim(m @ movedim(x, axis, -2), -2, axis) if axis != x.ndim - 2 else m @ x


def _out_size(x: Tensor, nd: int, output_size: Any, op: str) -> list[int]:
    sizes = [output_size] * nd if isinstance(output_size, int) else list(output_size)
    if len(sizes) != nd:
        raise ShapeError(f"{op}: output_size must be {nd} ints, got {output_size!r}")
    spatial = x.shape[-nd:]
    return [i if o is None else int(o) for o, i in zip(sizes, spatial, strict=True)]


def adaptive_avg_pool(x: Tensor, nd: int, output_size: Any, op: str) -> Tensor:
    """Average over torch's adaptive windows, one averaging matrix per axis."""
    _check(x, nd, op)
    outs = _out_size(x, nd, output_size, op)
    y = x._float()
    for j, o in enumerate(outs):
        ax = x.ndim - nd + j
        i = x.shape[ax]
        mat = np.zeros((o, i))
        for r, (a, b) in enumerate(_adaptive_bounds(i, o)):
            mat[r, a:b] = 1.0 / (b - a)
        y = _along(y, ax, mat)
    return y


def adaptive_max_pool(x: Tensor, nd: int, output_size: Any, op: str) -> Tensor:
    """Max over torch's adaptive windows, axis by axis (a max over a box is separable):
    each output row masks the input row with -inf outside its window."""
    from anychip.frontend.tensor import Tensor

    _check(x, nd, op)
    outs = _out_size(x, nd, output_size, op)
    y = x
    for j, o in enumerate(outs):
        ax = x.ndim - nd + j
        i = y.shape[ax]
        mask = np.full((o, i), -np.inf)
        for r, (a, b) in enumerate(_adaptive_bounds(i, o)):
            mask[r, a:b] = 0.0
        m = Tensor(mask.astype(y.dtype.np), device=x.device)
        moved = movedim(y, ax, -1).unsqueeze(-2)  # (..., 1, i)
        y = movedim((moved + m).amax(-1), -1, ax)  # (..., o) -> back at ax
    return y


def max_unpool(
    x: Tensor, indices: Tensor, nd: int, kernel_size: Any, stride: Any, padding: Any,
    output_size: Any, op: str,
) -> Tensor:  # fmt: skip
    """Scatter each value to its recorded position in a zero plane (max_pool's inverse)."""
    from anychip.frontend.tensor import Tensor

    _check(x, nd, op)
    k, s, p, _ = _pool_args(nd, kernel_size, stride, padding, 1, op)
    if x.shape != indices.shape or indices.dtype is not dtypes.int64:
        raise ShapeError(
            f"{op}: indices must be int64 of the input's shape ({describe(x, indices)})"
        )
    spatial = x.shape[-nd:]
    if output_size is None:
        outs = [(i - 1) * st - 2 * pp + kk for i, st, pp, kk in zip(spatial, s, p, k)]
    else:
        outs = list(output_size)[-nd:]
    lead = x.shape[: x.ndim - nd]
    flat_x = x.reshape((*lead, -1))
    base = Tensor._const(0, x.dtype, (*lead, math.prod(outs)), x.device)
    return base.scatter_add(-1, indices.reshape((*lead, -1)), flat_x).reshape((*lead, *outs))


# --- the torch.nn.functional names -----------------------------------------------------
def max_pool1d(
    input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
    ceil_mode: bool = False, return_indices: bool = False,
) -> Any:  # fmt: skip
    """Max over windows of (N, C, L); with return_indices also the positions."""
    return max_pool(
        input, 1, kernel_size, stride, padding, dilation, ceil_mode, return_indices, "max_pool1d"
    )


def max_pool2d(
    input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
    ceil_mode: bool = False, return_indices: bool = False,
) -> Any:  # fmt: skip
    """Max over windows of (N, C, H, W).

    >>> import anychip as ac
    >>> max_pool2d(ac.arange(16.0).reshape(1, 1, 4, 4), 2).tolist()
    [[[[5.0, 7.0], [13.0, 15.0]]]]
    """
    return max_pool(
        input, 2, kernel_size, stride, padding, dilation, ceil_mode, return_indices, "max_pool2d"
    )


def max_pool3d(
    input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
    ceil_mode: bool = False, return_indices: bool = False,
) -> Any:  # fmt: skip
    """Max over windows of (N, C, D, H, W)."""
    return max_pool(
        input, 3, kernel_size, stride, padding, dilation, ceil_mode, return_indices, "max_pool3d"
    )


def avg_pool1d(
    input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
    ceil_mode: bool = False, count_include_pad: bool = True,
) -> Tensor:  # fmt: skip
    """Mean over windows of (N, C, L)."""
    return avg_pool(
        input, 1, kernel_size, stride, padding, ceil_mode, count_include_pad, None, "avg_pool1d"
    )


def avg_pool2d(
    input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
    ceil_mode: bool = False, count_include_pad: bool = True, divisor_override: int | None = None,
) -> Tensor:  # fmt: skip
    """Mean over windows of (N, C, H, W).

    >>> import anychip as ac
    >>> avg_pool2d(ac.arange(16.0).reshape(1, 1, 4, 4), 2).tolist()
    [[[[2.5, 4.5], [10.5, 12.5]]]]
    """
    return avg_pool(
        input,
        2,
        kernel_size,
        stride,
        padding,
        ceil_mode,
        count_include_pad,
        divisor_override,
        "avg_pool2d",
    )


def avg_pool3d(
    input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
    ceil_mode: bool = False, count_include_pad: bool = True, divisor_override: int | None = None,
) -> Tensor:  # fmt: skip
    """Mean over windows of (N, C, D, H, W)."""
    return avg_pool(
        input,
        3,
        kernel_size,
        stride,
        padding,
        ceil_mode,
        count_include_pad,
        divisor_override,
        "avg_pool3d",
    )


def adaptive_avg_pool1d(input: Tensor, output_size: Any) -> Tensor:
    return adaptive_avg_pool(input, 1, output_size, "adaptive_avg_pool1d")


def adaptive_avg_pool2d(input: Tensor, output_size: Any) -> Tensor:
    """Average pooling to a fixed output size (torch's window bounds).

    >>> import anychip as ac
    >>> adaptive_avg_pool2d(ac.ones(1, 2, 5, 7), 1).shape
    (1, 2, 1, 1)
    """
    return adaptive_avg_pool(input, 2, output_size, "adaptive_avg_pool2d")


def adaptive_avg_pool3d(input: Tensor, output_size: Any) -> Tensor:
    return adaptive_avg_pool(input, 3, output_size, "adaptive_avg_pool3d")


def adaptive_max_pool1d(input: Tensor, output_size: Any, return_indices: bool = False) -> Tensor:
    if return_indices:
        raise ArgumentError("adaptive_max_pool1d: return_indices=True is not supported")
    return adaptive_max_pool(input, 1, output_size, "adaptive_max_pool1d")


def adaptive_max_pool2d(input: Tensor, output_size: Any, return_indices: bool = False) -> Tensor:
    """Max pooling to a fixed output size (torch's window bounds)."""
    if return_indices:
        raise ArgumentError("adaptive_max_pool2d: return_indices=True is not supported")
    return adaptive_max_pool(input, 2, output_size, "adaptive_max_pool2d")


def max_unpool1d(
    input: Tensor, indices: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
    output_size: Any = None,
) -> Tensor:  # fmt: skip
    return max_unpool(input, indices, 1, kernel_size, stride, padding, output_size, "max_unpool1d")


def max_unpool2d(
    input: Tensor, indices: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
    output_size: Any = None,
) -> Tensor:  # fmt: skip
    """Put max_pool2d's maxima back at their positions in a zero plane."""
    return max_unpool(input, indices, 2, kernel_size, stride, padding, output_size, "max_unpool2d")
