"""F.interpolate: resizing the spatial axes of (N, C, *spatial) as products with small
constant (out, in) matrices, one per axis, so every mode is a few matmuls (the GEMM's job)
and its gradient the transposed ones.

Every mode of torch is separable along axes: nearest and nearest-exact pick one source
per output, (bi/tri)linear weigh two neighbours, bicubic four (Keys' cubic convolution with
a = -0.75, edge indices clamped, as torch), and area averages torch's adaptive windows.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from anychip.errors import ArgumentError, ShapeError, describe
from anychip.frontend.conv import ntuple
from anychip.frontend.pool import _adaptive_bounds, _along

if TYPE_CHECKING:
    from anychip.frontend.tensor import Tensor

# modes tied to one spatial rank, and the rest (any rank)
RANK_MODES = {"linear": 1, "bilinear": 2, "bicubic": 2, "trilinear": 3}
MODES = ("nearest", "nearest-exact", "area", *RANK_MODES)
LINEAR = ("linear", "bilinear", "trilinear")
CUBIC_A = -0.75  # torch's (and OpenCV's) cubic convolution constant


def _source(
    dst: np.ndarray, i: int, o: int, align: bool, scale: float | None, cubic: bool
) -> np.ndarray:
    """Source coordinate of each output index (torch's area_pixel_compute_source_index)."""
    if align:
        return dst * ((i - 1) / (o - 1)) if o > 1 else np.zeros(o)
    ratio = (1.0 / scale) if scale else i / o
    pos = (dst + 0.5) * ratio - 0.5
    return pos if cubic else np.maximum(pos, 0.0)


def _cubic_weights(t: np.ndarray) -> list[np.ndarray]:
    """Weights of the neighbours at offsets -1, 0, 1, 2 for fractional positions t."""
    a = CUBIC_A

    def near(x: np.ndarray) -> np.ndarray:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: np.ndarray) -> np.ndarray:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def resize_matrix(i: int, o: int, mode: str, align: bool, scale: float | None) -> np.ndarray:
    """(o, i) weights of resizing one axis from i to o points in `mode`."""
    mat = np.zeros((o, i))
    dst = np.arange(o, dtype=np.float64)
    rows = np.arange(o)
    if mode in ("nearest", "nearest-exact"):
        ratio = (1.0 / scale) if scale else i / o
        shift = 0.5 if mode == "nearest-exact" else 0.0
        # in float32, as torch computes it (the rounding decides ties like 11.5 / 2.3)
        at = (dst + shift).astype(np.float32) * np.float32(ratio)
        src = np.minimum(np.floor(at), i - 1).astype(int)
        mat[rows, src] = 1.0
    elif mode == "area":
        for r, (lo, hi) in enumerate(_adaptive_bounds(i, o)):
            mat[r, lo:hi] = 1.0 / (hi - lo)
    elif mode == "bicubic":
        pos = _source(dst, i, o, align, scale, cubic=True)
        base = np.floor(pos)
        for off, w in zip((-1, 0, 1, 2), _cubic_weights(pos - base)):
            np.add.at(mat, (rows, np.clip(base.astype(int) + off, 0, i - 1)), w)
    else:  # linear
        pos = _source(dst, i, o, align, scale, cubic=False)
        lo = np.minimum(np.floor(pos).astype(int), i - 1)
        hi = np.minimum(lo + 1, i - 1)
        w = pos - lo
        np.add.at(mat, (rows, lo), 1.0 - w)
        np.add.at(mat, (rows, hi), w)
    return mat


def _check_mode(x: Tensor, nd: int, mode: str, align_corners: bool | None) -> None:
    if mode not in MODES:
        raise ArgumentError(f"interpolate: mode must be one of {', '.join(MODES)}; got {mode!r}")
    if mode in RANK_MODES and RANK_MODES[mode] != nd:
        raise ShapeError(
            f"interpolate: mode {mode!r} needs a {RANK_MODES[mode] + 2}-d input, got {describe(x)}"
        )
    if mode not in RANK_MODES and align_corners is not None:
        raise ArgumentError(
            "interpolate: align_corners only applies to the linear, bilinear, bicubic and "
            f"trilinear modes, not {mode!r}"
        )


def interpolate(
    x: Tensor,
    size: Any = None,
    scale_factor: Any = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
    recompute_scale_factor: bool | None = None,
    antialias: bool = False,
) -> Tensor:
    """Resize the spatial axes of (N, C, *spatial) by `size` or `scale_factor`: modes
    'nearest', 'nearest-exact', 'linear', 'bilinear', 'bicubic', 'trilinear', 'area'
    (torch's index rules and align_corners).

    >>> import anychip as ac
    >>> interpolate(ac.tensor([[[1.0, 2.0]]]), scale_factor=2).tolist()
    [[[1.0, 1.0, 2.0, 2.0]]]
    """
    nd = x.ndim - 2
    if nd < 1:
        raise ShapeError(f"interpolate: expected an (N, C, *spatial) input, got {describe(x)}")
    _check_mode(x, nd, mode, align_corners)
    if antialias:
        raise ArgumentError("interpolate: antialias=True is not supported")
    if (size is None) == (scale_factor is None):
        raise ArgumentError("interpolate: give exactly one of size and scale_factor")
    spatial = x.shape[2:]
    scales: list[float | None]
    if size is not None:
        outs = [int(v) for v in ntuple(size, nd, "size", "interpolate")]
        scales = [None] * nd
    else:
        sf = (
            [float(scale_factor)] * nd
            if not isinstance(scale_factor, (tuple, list))
            else [float(v) for v in scale_factor]
        )
        outs = [math.floor(i * f) for i, f in zip(spatial, sf, strict=True)]
        scales = [None if recompute_scale_factor else f for f in sf]
    if mode == "area":
        scales = [None] * nd  # adaptive windows depend on sizes only
    y = x._float()
    for j, (i, o) in enumerate(zip(spatial, outs, strict=True)):
        # torch's kernels copy an axis that keeps its size in the linear modes and area, and
        # in 2-d nearest (whose kernel also halves indices exactly at twice the size);
        # 1-d and 3-d nearest, nearest-exact and bicubic follow a given scale even then
        scale = scales[j]
        if mode == "nearest" and nd == 2 and o in (i, 2 * i):
            scale = None
        if i == o and (mode in ("area", *LINEAR) or (scale is None and mode != "bicubic")):
            continue
        y = _along(y, 2 + j, resize_matrix(i, o, mode, bool(align_corners), scale))
    return y
