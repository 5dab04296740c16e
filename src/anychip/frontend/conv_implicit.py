"""Implicit-GEMM conv2d for stride 1, dilation 1, groups 1: the GEMM reads each kernel tap's
rows straight from the padded input (K = C x kh x kw through an offset table), so no im2col
matrix is stored; the backward is two more such products, none of them through im2col.

The trick is the "wide" output: with the padded input's rows Wp long, output row y's
element x reads padded element (y + i) * Wp + (x + j), i.e. flat position p + i*Wp + j with
p = y * Wp + x. Computing all Wp columns of every output row (the last Wp - W' of each are
junk, cut off after) makes the output one axis p of stride 1, and every tap (c, i, j) one
fixed shift of the flat input: a plain GEMM operand whose K rows start at c*L + i*Wp + j.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from anychip import dtypes
from anychip.frontend.autograd import composite
from anychip.frontend.linalg import contract

if TYPE_CHECKING:
    from anychip.frontend.conv import Geometry
    from anychip.frontend.tensor import Tensor


def fits(x: Tensor, geo: Geometry) -> bool:
    """The shapes this path computes: 2-d, more than one tap, stride and dilation 1, one
    group, float32/float64, padding at most k - 1 per side (the input gradient's padding,
    k - 1 - p, must not be negative)."""
    return (
        len(geo.kernel) == 2
        and math.prod(geo.kernel) > 1
        and geo.groups == 1
        and all(s == 1 for s in geo.stride)
        and all(d == 1 for d in geo.dilation)
        and x.dtype in (dtypes.float32, dtypes.float64)
        and all(max(p) <= k - 1 for p, k in zip(geo.pads, geo.kernel, strict=True))
    )


def conv2d_implicit(x: Tensor, weight: Tensor, geo: Geometry) -> Tensor:
    """(N, C, H, W) with weight (O, C, kh, kw) -> (N, O, H', W'), one record whose
    derivative is `_vjp` (the padded input is kept for the weight gradient)."""
    xp = _padded(x._detached(), geo.pads)
    y = _wide_conv(xp, weight._detached(), geo.out)
    return composite(y, (x, weight, xp), _vjp, geo)


def _padded(x: Tensor, pads: tuple[tuple[int, int], ...]) -> Tensor:
    """(N, C, H, W) -> (N, C, H + top + bottom + 1, W + left + right), stored: the zero
    padding plus one zero row, since the last wide output row's taps read up to kw - 1
    elements past the padded input's end."""
    (top, bottom), (left, right) = pads
    return x._pad_zero([(0, 0), (0, 0), (top, bottom + 1), (left, right)]) * 1.0


def _taps(xp: Tensor, kernel: tuple[int, ...], rows: int) -> Tensor:
    """Padded (N, C, Hp, Wp) -> (N, C, kh, kw, rows * Wp), a view (index math, no copy):
    element [n, c, i, j, p] is xp's flat (n, c) plane at i * Wp + j + p."""
    from anychip.frontend.conv import sliding_windows

    n, c, hp, wp = xp.shape
    kh, kw = kernel
    span = kh * wp  # the taps' shifts i * Wp + j lie below it
    win = sliding_windows(xp.reshape(n, c, hp * wp), (span,), (1,), (1,))  # [n, c, p, s]
    win = win._shrink([(0, n), (0, c), (0, rows * wp), (0, span)]).reshape(n, c, rows * wp, kh, wp)
    win = win._shrink([(0, n), (0, c), (0, rows * wp), (0, kh), (0, kw)])
    return win.permute((0, 1, 3, 4, 2))


def _wide_conv(xp: Tensor, w: Tensor, out: tuple[int, ...]) -> Tensor:
    """y (N, O, H', W') from the padded input (N, C, Hp, Wp): one GEMM per sample,
    (O, C*kh*kw) @ (C*kh*kw, H' * Wp), then the junk columns of each row cut off."""
    (ho, wo), (n, c, _, wp) = out, xp.shape
    o, kh, kw = w.shape[0], w.shape[2], w.shape[3]
    b = _taps(xp, (kh, kw), ho).reshape(n, 1, c, kh, kw, ho * wp)
    y = contract(w.reshape(1, o, c, kh, kw, 1), b, (2, 3, 4))  # (N, O, H' * Wp)
    return y.reshape(n, o, ho, wp)._shrink([(0, n), (0, o), (0, ho), (0, wo)])


def _vjp(
    g: Tensor, out: Tensor, srcs: tuple[Tensor, ...], geo: Geometry
) -> tuple[Tensor | None, ...]:
    """Cotangents of (x, weight, padded x). Input gradient: the convolution of g padded
    by k - 1 - p with the flipped, transposed kernel. Weight gradient: per sample, g widened
    to Wp columns (zeros in the junk ones) times the padded input's taps as columns
    (c, i, j), (O, H' * Wp) @ (H' * Wp, C*kh*kw), summed over the batch."""
    x, w, xp = srcs
    if x.requires_grad:  # create_graph: the padded input must carry x's history
        xp = _padded(x, geo.pads)
    n, c, h, wd = x.shape
    kernel, ho, wp = geo.kernel, geo.out[0], xp.shape[3]
    back = tuple((k - 1 - lo, k - 1 - hi) for (lo, hi), k in zip(geo.pads, kernel, strict=True))
    wt = w.transpose(0, 1).flip((2, 3)) * 1.0  # (C, O, kh, kw), stored: a plain operand
    gp = _padded(g, back)
    gx = _wide_conv(gp, wt, (h, wd))
    b = _taps(xp, kernel, ho).reshape(n, 1, c, *kernel, ho * wp)
    gw = contract(_widened(g, gp, back, wp), b, 5).sum(0)  # (O, C, kh, kw)
    return gx, gw, None


def _widened(g: Tensor, gp: Tensor, back: tuple[tuple[int, int], ...], wp: int) -> Tensor:
    """(N, O, H', W') -> (N, O, 1, 1, 1, H' * Wp): g's rows Wp long, zeros after W'. When
    the padded g's rows are Wp long too (left + right padding = kw - 1, 'same' as in
    ResNet), that is a view of it: row y from its left padding on, the junk columns its
    right padding and the next row's left; else a copy."""
    n, o, ho, wo = g.shape
    (top, _), (left, _) = back
    if gp.shape[3] == wp:
        start = top * wp + left
        flat = gp.reshape(n, o, gp.shape[2] * wp)._shrink(
            [(0, n), (0, o), (start, start + ho * wp)]
        )
    else:
        flat = (g._pad_zero([(0, 0), (0, 0), (0, 0), (0, wp - wo)]) * 1.0).reshape(n, o, ho * wp)
    return flat.reshape(n, o, 1, 1, 1, ho * wp)
