"""Implicit-GEMM conv2d for stride 1, dilation 1, groups 1: the GEMM reads each kernel tap's
rows straight from the input (K = C x kh x kw through an offset table), so no im2col
matrix is stored; the backward is two more such products, none of them through im2col.

Forward and input gradient: (O, C*kh*kw) @ (C*kh*kw, H' x W') per sample, B the input's
taps [c, i, j, y, x] = x[c, y + i - top, x + j - left], a view of the unpadded input whose
zero padding is a guard on the load. The GEMM packs B row (c, i, j) by row, each sliver's
columns in runs of one output row (contiguous in the input), zeros where the guard fails
(`GemmSpec.b_bounds`): no padded copy, and the output is written in place, no junk columns.

The weight gradient uses the "wide" trick: with the padded input's rows Wp long, output
position p = y * Wp + x reads padded element p + i*Wp + j for tap (i, j), so every tap
(c, i, j) is one fixed shift of the flat padded input: columns of B through a table, K
the H' x Wp wide positions (the output gradient widened with zero columns).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from anychip import dtypes
from anychip.frontend.autograd import composite
from anychip.frontend.linalg import contract
from anychip.ir.ops import MOVEMENT, Ops

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
    derivative is `_vjp` (x's value is kept apart from x itself: changing x in place after
    the convolution does not change its gradients)."""
    xv = x._detached()
    y = _conv(xv, weight._detached(), geo.pads, geo.out)
    return composite(y, (x, weight, xv), _vjp, geo)


def _padded(x: Tensor, pads: tuple[tuple[int, int], ...]) -> Tensor:
    """(N, C, H, W) -> (N, C, H + top + bottom + 1, W + left + right), stored: the zero
    padding plus one zero row, since the last wide output row's taps read up to kw - 1
    elements past the padded input's end."""
    (top, bottom), (left, right) = pads
    return x._pad_zero([(0, 0), (0, 0), (top, bottom + 1), (left, right)]) * 1.0


def _conv(x: Tensor, w: Tensor, pads: tuple[tuple[int, int], ...], out: tuple[int, ...]) -> Tensor:
    """y (N, O, H', W') from the unpadded input (N, C, H, W): one GEMM per sample,
    (O, C*kh*kw) @ (C*kh*kw, H' x W'), B the taps of x padded as a view (a guarded load)."""
    from anychip.frontend.conv import sliding_windows

    (top, bottom), (left, right) = pads
    n, c = x.shape[:2]
    o, kh, kw = w.shape[0], w.shape[2], w.shape[3]
    xp = _stored(x)._pad_zero([(0, 0), (0, 0), (top, bottom), (left, right)])  # a view
    win = sliding_windows(xp, (kh, kw), (1, 1), (1, 1))  # (N, C, H', W', kh, kw)
    b = win.permute((0, 1, 4, 5, 2, 3)).reshape(n, 1, c, kh, kw, *out)
    return contract(w.reshape(1, o, c, kh, kw, 1, 1), b, (2, 3, 4))  # (N, O, H', W')


def _stored(t: Tensor) -> Tensor:
    """t, or a copy where it is a constant seen through views (the ones cotangent of a
    loss's sum): the GEMM reads B from memory, a constant's load is no strided view."""
    node = t.node
    while node.op in MOVEMENT:
        node = node.srcs[0]
    return t * 1.0 if node.op is Ops.CONST else t


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


def _vjp(
    g: Tensor, out: Tensor, srcs: tuple[Tensor, ...], geo: Geometry
) -> tuple[Tensor | None, ...]:
    """Cotangents of (x, weight, x's value). Input gradient: the convolution of g padded
    by k - 1 - p with the flipped, transposed kernel. Weight gradient: per sample, g widened to Wp
    columns (zeros in the junk ones) times the padded input's taps as columns (c, i, j),
    (O, H' * Wp) @ (H' * Wp, C*kh*kw), summed over the batch."""
    x, w, xv = srcs
    xp = _padded(x if x.requires_grad else xv, geo.pads)  # create_graph: x's history
    n, c, h, wd = x.shape
    (ho, wo), kernel, wp = geo.out, geo.kernel, xp.shape[3]
    back = tuple((k - 1 - lo, k - 1 - hi) for (lo, hi), k in zip(geo.pads, kernel, strict=True))
    wt = w.transpose(0, 1).flip((2, 3)) * 1.0  # (C, O, kh, kw), stored: a plain operand
    gx = _conv(g, wt, back, (h, wd))
    b = _taps(xp, kernel, ho).reshape(n, 1, c, *kernel, ho * wp)
    gwide = g._pad_zero([(0, 0), (0, 0), (0, 0), (0, wp - wo)]) * 1.0  # (N, O, H', Wp)
    gw = contract(gwide.reshape(n, g.shape[1], 1, 1, 1, ho * wp), b, 5).sum(0)
    return gx, gw, None
