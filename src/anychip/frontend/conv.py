"""Convolutions (conv1d/2d/3d and their transposes) as contractions on sliding windows.

`sliding_windows` views every window of a tensor through movement ops only (index math,
no copies); a convolution stores that view once as an im2col matrix and multiplies it by
the weight with a batched matmul, which the compiler hands to its GEMM generator. The
gradients come from the same primitives' rules: two more GEMMs and a col2im sum.
Stride-1 2-d convolutions skip im2col: `conv_implicit.py`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from anychip.errors import ArgumentError, DTypeError, ShapeError, describe
from anychip.frontend.autograd import composite

if TYPE_CHECKING:
    from anychip.frontend.tensor import Tensor

IntOrTuple = int | Sequence[int]


def ntuple(v: Any, n: int, name: str, op: str) -> tuple[int, ...]:
    """An int or a sequence of n ints -> a tuple of n ints (`stride=2` -> (2, 2))."""
    if isinstance(v, int):
        return (v,) * n
    t = tuple(int(x) for x in v)
    if len(t) == 1:
        return t * n
    if len(t) != n:
        raise ShapeError(f"{op}: {name} must be an int or {n} ints, got {tuple(v)}")
    return t


def _window_last(x: Tensor, k: int, s: int, d: int) -> Tensor:
    """(..., i) -> (..., o, k): element [a, b] is x[a*s + b*d], o = (i - d(k-1) - 1)//s + 1."""
    lead, i = x.shape[:-1], x.shape[-1]
    o = (i - d * (k - 1) - 1) // s + 1
    keep = [(0, n) for n in lead]
    if d == 1 and k <= s:  # non-overlapping windows: rows of length s, keep the first k
        x = x._pad_zero([*[(0, 0)] * len(lead), (0, max(o * s - i, 0))])
        x = x._shrink([*keep, (0, o * s)]).reshape((*lead, o, s))
        return x._shrink([*keep, (0, o), (0, k)])
    # k copies of x laid end to end, then re-read with rows of length i2 + d: row b starts
    # b*d further into x, so [b, a*s] is x[b*d + a*s] (x padded so rows hold o*s values)
    i2 = max(i, o * s - d)
    x = x._pad_zero([*[(0, 0)] * len(lead), (0, i2 - i)])
    x = x.reshape((*lead, 1, i2)).expand((*lead, k, i2)).reshape((*lead, k * i2))
    x = x._pad_zero([*[(0, 0)] * len(lead), (0, k * d)]).reshape((*lead, k, i2 + d))
    x = x._shrink([*keep, (0, k), (0, o * s)]).reshape((*lead, k, o, s))
    x = x._shrink([*keep, (0, k), (0, o), (0, 1)]).reshape((*lead, k, o))
    n = len(lead)
    return x.permute((*range(n), n + 1, n))


def im2col(
    x: Tensor, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]
) -> Tensor:
    """(N, C, *spatial) -> (N, C, *kernel, *out): every window's elements, kernel axes
    before the output positions, the layout convolution's matrix and F.unfold take."""
    nd = len(kernel)
    win = sliding_windows(x, kernel, stride, dilation)  # (N, C, *out, *k)
    return win.permute((0, 1, *range(2 + nd, 2 + 2 * nd), *range(2, 2 + nd)))


def sliding_windows(
    x: Tensor, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]
) -> Tensor:
    """(*lead, *spatial) -> (*lead, *out, *kernel), a view of every window of the last
    len(kernel) dimensions: out[..., p, q] = x[..., p*stride + q*dilation].

    >>> import anychip as ac
    >>> sliding_windows(ac.arange(5.0), (2,), (2,), (1,)).tolist()
    [[0.0, 1.0], [2.0, 3.0]]
    """
    n = len(kernel)
    lead = x.ndim - n
    for j, (k, s, d) in enumerate(zip(kernel, stride, dilation, strict=True)):
        ax = lead + j
        rest = [a for a in range(x.ndim) if a != ax]
        w = _window_last(x.permute((*rest, ax)), k, s, d)  # (...rest, o, k)
        # put o back at ax; the kernel axis goes last, after those already made
        order = list(range(w.ndim - 2))
        order.insert(ax, w.ndim - 2)
        x = w.permute((*order, w.ndim - 1))
    # kernel axes sit after the spatial ones already, in order
    return x


def _check_conv(x: Tensor, w: Tensor, nd: int, groups: int, op: str) -> None:
    if w.ndim != nd + 2 or x.ndim not in (nd + 1, nd + 2):
        raise ShapeError(
            f"{op}: expected a {nd + 1}-d (unbatched) or {nd + 2}-d input and a "
            f"{nd + 2}-d weight, got {describe(x, w)}"
        )
    if not x.dtype.is_floating_point or x.dtype is not w.dtype:
        raise DTypeError(f"{op}: input and weight must share one float dtype, got {describe(x, w)}")
    if groups < 1:
        raise ArgumentError(f"{op}: groups must be positive, got {groups}")


def _same_pads(kernel: tuple[int, ...], dilation: tuple[int, ...]) -> list[tuple[int, int]]:
    """'same' padding (stride 1): the extra element of an odd total goes after, as in torch."""
    totals = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
    return [(t // 2, t - t // 2) for t in totals]


def conv_nd(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: IntOrTuple,
    padding: IntOrTuple | str,
    dilation: IntOrTuple,
    groups: int,
    nd: int,
    op: str,
) -> Tensor:
    """N-d convolution (cross-correlation, as torch): input (N, C, *sp), weight
    (O, C/groups, *k) -> (N, O, *out)."""
    _check_conv(x, weight, nd, groups, op)
    if x.ndim == nd + 1:
        return conv_nd(
            x.unsqueeze(0), weight, bias, stride, padding, dilation, groups, nd, op
        ).squeeze(0)
    c, spatial = x.shape[1], x.shape[2:]
    o_ch, cg, kernel = weight.shape[0], weight.shape[1], weight.shape[2:]
    st = ntuple(stride, nd, "stride", op)
    dil = ntuple(dilation, nd, "dilation", op)
    if c % groups or o_ch % groups or cg * groups != c:
        raise ShapeError(
            f"{op}: input channels {c} and output channels {o_ch} must divide into "
            f"groups={groups} with weight.shape[1] == channels/groups ({describe(x, weight)})"
        )
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ArgumentError(f"{op}: padding must be 'same', 'valid' or ints, got {padding!r}")
        if padding == "same" and any(s != 1 for s in st):
            raise ArgumentError(f"{op}: padding='same' needs stride 1, got stride {st}")
        pads = _same_pads(kernel, dil) if padding == "same" else [(0, 0)] * nd
    else:
        pads = [(p, p) for p in ntuple(padding, nd, "padding", op)]
    if min(st) < 1 or min(dil) < 1 or min(lo for lo, _ in pads) < 0:
        raise ArgumentError(f"{op}: stride and dilation must be positive, padding >= 0")
    padded = [s + lo + hi for s, (lo, hi) in zip(spatial, pads, strict=True)]
    out = [(p - d * (k - 1) - 1) // s + 1 for p, k, s, d in zip(padded, kernel, st, dil)]
    if min(out, default=1) < 1:
        raise ShapeError(
            f"{op}: kernel {kernel} (dilation {dil}) is larger than the padded input "
            f"{tuple(padded)} ({describe(x, weight)})"
        )
    geo = Geometry(tuple(pads), tuple(kernel), st, dil, groups, tuple(out))
    # imported here: the implicit path builds on this module's window view
    from anychip.frontend import conv_implicit

    if conv_implicit.fits(x, geo):
        y = conv_implicit.conv2d_implicit(x, weight, geo)  # no im2col, fwd nor bwd
    elif math.prod(kernel) == 1 and all(s == 1 for s in st) and not any(sum(p) for p in pads):
        y = _conv_gemm(x, weight, geo)[0]  # 1x1: no im2col, the primitives' gradients
    elif math.prod(kernel) <= MAX_TAPS:
        # forward outside autograd, one record with conv's own derivative (`_conv_vjp`);
        # the stored im2col is kept for the weight gradient
        y, cols = _conv_gemm(x._detached(), weight._detached(), geo)
        y = composite(y, (x, weight, cols), _conv_vjp, geo)
    else:  # so many taps that summing shifted slices would be one huge kernel
        y = _conv_gemm(x, weight, geo)[0]
    if bias is not None:
        y = y + bias.reshape((1, o_ch, *[1] * nd))
    return y


# Kernels with more taps than this differentiate through the window view's own rules
# (a scatter); up to this many, the input gradient is a sum of that many shifted slices.
MAX_TAPS = 64


@dataclass(frozen=True)
class Geometry:
    """A convolution's shape parameters, per spatial axis; `out` is the output's size."""

    pads: tuple[tuple[int, int], ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    out: tuple[int, ...]


def _cols(x: Tensor, geo: Geometry) -> Tensor:
    """(N, C, *sp) -> (N, G, Cg*K, L): the input padded and cut into windows, stored once
    (`* 1.0` gives the GEMM a plain operand) with its axes apart (an affine index); a
    view of x itself for a 1x1 kernel with stride 1 and no padding."""
    n, c = x.shape[:2]
    kk, ll = math.prod(geo.kernel), math.prod(geo.out)
    g = geo.groups
    if kk == 1 and all(s == 1 for s in geo.stride) and not any(sum(p) for p in geo.pads):
        return x.reshape(n, g, c // g, ll)
    xp = x._pad_zero([(0, 0), (0, 0), *geo.pads])
    return (im2col(xp, geo.kernel, geo.stride, geo.dilation) * 1.0).reshape(n, g, c // g * kk, ll)


def _conv_gemm(x: Tensor, weight: Tensor, geo: Geometry) -> tuple[Tensor, Tensor]:
    """(y (N, O, *out), the im2col matrix it multiplied)."""
    n, g, o = x.shape[0], geo.groups, weight.shape[0]
    cols = _cols(x, geo)  # (N, G, Cg*K, L)
    # the weight broadcast over the batch explicitly, so its gradient is a batched GEMM
    # per sample summed after (the GEMM needs one stride per reduced axis)
    wm = weight.reshape(1, g, o // g, cols.shape[2]).expand(n, g, o // g, cols.shape[2])
    return (wm @ cols).reshape((n, o, *geo.out)), cols


def _conv_vjp(
    g: Tensor, out: Tensor, srcs: tuple[Tensor, ...], geo: Geometry
) -> tuple[Tensor | None, ...]:
    """Cotangents of (x, weight, cols) for y = conv(x, weight): two GEMMs, as the
    primitives' rules give them, and the input gradient as the sum over kernel taps of
    that tap's column gradient slid back into place (shifted, strided slices: index math
    a fused kernel reads directly, where the window view's own rule scatters)."""
    x, w, cols = srcs
    n, c, o, gr = x.shape[0], x.shape[1], w.shape[0], geo.groups
    if x.requires_grad:  # create_graph: the columns must carry x's history
        cols = _cols(x, geo)
    ck, ll = cols.shape[2], cols.shape[3]
    gm = g.reshape(n, gr, o // gr, ll)  # (N, G, Og, L)
    gw = (gm @ cols.transpose(2, 3)).sum(0).reshape(w.shape)
    wt = w.reshape(1, gr, o // gr, ck).transpose(2, 3).expand(n, gr, ck, o // gr)
    gcols = (wt @ gm).reshape((n, c, *geo.kernel, *geo.out))
    return _col2im(gcols, x.shape, geo), gw, None


def _col2im(gc: Tensor, shape: tuple[int, ...], geo: Geometry) -> Tensor:
    """(N, C, *kernel, *out) column gradient -> (N, C, *spatial): each tap's slice
    (N, C, *out) strided by `stride` and shifted by tap * dilation into the padded input,
    summed, then the padding cut off."""
    nd = len(geo.kernel)
    padded = [s + lo + hi for s, (lo, hi) in zip(shape[2:], geo.pads, strict=True)]
    total: Tensor | None = None
    for taps in itertools.product(*(range(k) for k in geo.kernel)):
        piece = _dilate(gc[(slice(None), slice(None), *taps)], geo.stride)
        spans = [(o - 1) * s + 1 for o, s in zip(geo.out, geo.stride, strict=True)]
        shift = [t * d for t, d in zip(taps, geo.dilation, strict=True)]
        piece = piece._pad_zero(
            [(0, 0), (0, 0), *[(a, p - a - w) for a, p, w in zip(shift, padded, spans)]]
        )
        total = piece if total is None else total + piece
    assert total is not None
    keep = [(lo, lo + s) for (lo, _), s in zip(geo.pads, shape[2:], strict=True)]
    return total._shrink([(0, shape[0]), (0, shape[1]), *keep]) if nd else total


def _dilate(x: Tensor, stride: tuple[int, ...]) -> Tensor:
    """Insert stride-1 zeros between the elements of the last len(stride) axes."""
    nd = len(stride)
    lead = x.ndim - nd
    for j, s in enumerate(stride):
        if s == 1:
            continue
        ax = lead + j
        shp = x.shape
        x = x.unsqueeze(ax + 1)._pad_zero(
            [(0, 0)] * (ax + 1) + [(0, s - 1)] + [(0, 0)] * (nd - j - 1)
        )
        x = x.reshape((*shp[:ax], shp[ax] * s, *shp[ax + 1 :]))
        x = x.narrow(ax, 0, (shp[ax] - 1) * s + 1)
    return x


def conv_transpose_nd(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: IntOrTuple,
    padding: IntOrTuple,
    output_padding: IntOrTuple,
    groups: int,
    dilation: IntOrTuple,
    nd: int,
    op: str,
) -> Tensor:
    """N-d transposed convolution: input (N, Cin, *sp), weight (Cin, Cout/groups, *k).
    Computed as the convolution of the stride-dilated input with the flipped kernel."""
    _check_conv(x, weight, nd, groups, op)
    if x.ndim == nd + 1:
        return conv_transpose_nd(
            x.unsqueeze(0), weight, bias, stride, padding, output_padding, groups, dilation, nd, op
        ).squeeze(0)
    cin, cog, kernel = weight.shape[0], weight.shape[1], weight.shape[2:]
    if x.shape[1] != cin or cin % groups:
        raise ShapeError(
            f"{op}: input channels {x.shape[1]} must equal weight.shape[0] and divide "
            f"into groups={groups} ({describe(x, weight)})"
        )
    st = ntuple(stride, nd, "stride", op)
    pd = ntuple(padding, nd, "padding", op)
    opd = ntuple(output_padding, nd, "output_padding", op)
    dil = ntuple(dilation, nd, "dilation", op)
    if any(p >= max(s, d) for p, s, d in zip(opd, st, dil)):
        raise ArgumentError(
            f"{op}: output_padding {opd} must be smaller than stride {st} or dilation {dil}"
        )
    xd = _dilate(x, st)
    # pad by d(k-1) - p each side (+ output_padding after); a negative amount crops
    flat: list[int] = []
    for k, p, q, d in reversed(list(zip(kernel, pd, opd, dil))):
        e = d * (k - 1) - p
        flat += [e, e + q]
    xd = xd.pad(flat)
    g = groups
    w = weight.reshape((g, cin // g, cog, *kernel)).transpose(1, 2)
    # stored (`* 1.0`, a few KB): the GEMM reads a weight with one stride per axis, which
    # the flipped, transposed view reshaped into a matrix is not
    w = w.reshape((g * cog, cin // g, *kernel)).flip(tuple(range(2, 2 + nd))) * 1.0
    return conv_nd(xd, w, bias, 1, 0, dil, groups, nd, op)


# --- the torch.nn.functional names -----------------------------------------------------
def conv1d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: IntOrTuple | str = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
) -> Tensor:
    """1-d convolution: (N, C, L) with weight (O, C/groups, k) -> (N, O, L_out).

    >>> import anychip as ac
    >>> conv1d(ac.ones(1, 1, 4), ac.ones(1, 1, 2)).tolist()
    [[[2.0, 2.0, 2.0]]]
    """
    return conv_nd(input, weight, bias, stride, padding, dilation, groups, 1, "conv1d")


def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: IntOrTuple | str = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
) -> Tensor:
    """2-d convolution: (N, C, H, W) with weight (O, C/groups, kh, kw) -> (N, O, H', W').

    >>> import anychip as ac
    >>> conv2d(ac.ones(1, 1, 3, 3), ac.ones(1, 1, 2, 2)).tolist()
    [[[[4.0, 4.0], [4.0, 4.0]]]]
    """
    return conv_nd(input, weight, bias, stride, padding, dilation, groups, 2, "conv2d")


def conv3d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: IntOrTuple | str = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
) -> Tensor:
    """3-d convolution: (N, C, D, H, W) with weight (O, C/groups, kd, kh, kw)."""
    return conv_nd(input, weight, bias, stride, padding, dilation, groups, 3, "conv3d")


def conv_transpose1d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    output_padding: IntOrTuple = 0,
    groups: int = 1,
    dilation: IntOrTuple = 1,
) -> Tensor:
    """1-d transposed convolution: (N, Cin, L) with weight (Cin, Cout/groups, k)."""
    return conv_transpose_nd(
        input, weight, bias, stride, padding, output_padding, groups, dilation, 1,
        "conv_transpose1d",
    )  # fmt: skip


def conv_transpose2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    output_padding: IntOrTuple = 0,
    groups: int = 1,
    dilation: IntOrTuple = 1,
) -> Tensor:
    """2-d transposed convolution: (N, Cin, H, W) with weight (Cin, Cout/groups, kh, kw).

    >>> import anychip as ac
    >>> conv_transpose2d(ac.ones(1, 1, 2, 2), ac.ones(1, 1, 2, 2), stride=2).shape
    (1, 1, 4, 4)
    """
    return conv_transpose_nd(
        input, weight, bias, stride, padding, output_padding, groups, dilation, 2,
        "conv_transpose2d",
    )  # fmt: skip


def conv_transpose3d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    output_padding: IntOrTuple = 0,
    groups: int = 1,
    dilation: IntOrTuple = 1,
) -> Tensor:
    """3-d transposed convolution: (N, Cin, D, H, W) with weight (Cin, Cout/groups, k...)."""
    return conv_transpose_nd(
        input, weight, bias, stride, padding, output_padding, groups, dilation, 3,
        "conv_transpose3d",
    )  # fmt: skip
