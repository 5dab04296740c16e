"""More tensor ops from PyTorch, written with primitives: scans (cumprod, cummax, cummin,
logcumsumexp), scatter and scatter_reduce, triangles and diagonals, unfold,
repeat_interleave, std_mean/var_mean, movedim and meshgrid.

Scans other than cumsum run as a Hillis-Steele scan: log2(n) steps, each combining every
element with the one 2**s before it (a shift is a pad and a slice), so values and
gradients come from ordinary elementwise ops; each step is computed when it is built.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from anychip import dtypes
from anychip.errors import ArgumentError, ShapeError, describe

if TYPE_CHECKING:
    from anychip.frontend.tensor import Tensor

Pair = tuple["Tensor", "Tensor"]


def _shifted(x: Tensor, d: int, s: int, fill: Any) -> Tensor:
    """x moved s places later along d, the first s places holding `fill`."""
    n = x.shape[d]
    pads = [0] * (2 * (x.ndim - d) - 2) + [s, 0]
    return x.narrow(d, 0, n - s).pad(pads, value=fill)


def _scan(x: Tensor, d: int, combine: Callable[[Tensor, Tensor], Tensor], fill: Any) -> Tensor:
    s = 1
    while s < x.shape[d]:
        # each step is computed now: a step reads the one before it several times, so
        # fusing all log2(n) steps into one kernel would copy the first step's expression
        # (its uses multiplied together) into the last
        x = combine(_shifted(x, d, s, fill), x).realize()
        s *= 2
    return x


def _scan_pairs(v: Tensor, i: Tensor, d: int, later_wins: Callable[..., Tensor], fill: Any) -> Pair:
    """Scan (value, index) pairs: the later pair wins where `later_wins(earlier, later)`."""
    from anychip.frontend.tensor import realize_together

    s = 1
    while s < v.shape[d]:
        pv, pi = _shifted(v, d, s, fill), _shifted(i, d, s, -1)
        take = later_wins(pv, v)
        v, i = take._select(v, pv), take._select(i, pi)
        realize_together([v, i])  # one step at a time, as in _scan
        s *= 2
    return v, i


class ExtraOpsMixin:
    __slots__ = ()

    # --- scans -----------------------------------------------------------------------
    def cumprod(self: Tensor, dim: int, dtype: Any = None) -> Tensor:
        x = self.to(dtypes.to_dtype(dtype, "cumprod")) if dtype is not None else self
        if x.dtype is dtypes.bool_:
            x = x.to(dtypes.int64)
        if x.ndim == 0:
            return x * 1
        return _scan(x, x._axis(dim, "cumprod"), lambda a, b: a * b, 1)

    def _cum_extreme(self: Tensor, dim: int, op: str, later_wins: Callable[..., Tensor]) -> Any:
        from anychip.frontend.creation import arange
        from anychip.frontend.reduce import ValuesIndices

        if self.ndim == 0:
            return ValuesIndices(self * 1, _zero_index(self))
        d = self._axis(dim, op)
        n = self.shape[d]
        idx = arange(n, device=self.device).reshape([n if a == d else 1 for a in range(self.ndim)])
        idx = idx.expand(self.shape)
        if self.dtype.is_floating_point:
            fill: Any = -math.inf if op == "cummax" else math.inf
        elif self.dtype is dtypes.bool_:
            fill = op != "cummax"
        else:
            info = np.iinfo(self.dtype.np)
            fill = int(info.min) if op == "cummax" else int(info.max)
        v, i = _scan_pairs(self, idx, d, later_wins, fill)
        return ValuesIndices(v, i)

    def cummax(self: Tensor, dim: int) -> Any:
        """(values, indices): the running maximum and where it was (the last on ties)."""
        return self._cum_extreme(dim, "cummax", lambda a, b: (b >= a) | b.isnan())

    def cummin(self: Tensor, dim: int) -> Any:
        """(values, indices): the running minimum and where it was (the last on ties)."""
        return self._cum_extreme(dim, "cummin", lambda a, b: (b <= a) | b.isnan())

    def logcumsumexp(self: Tensor, dim: int) -> Tensor:
        x = self._float()
        if x.ndim == 0:
            return x * 1
        return _scan(x, x._axis(dim, "logcumsumexp"), lambda a, b: a.logaddexp(b), -math.inf)

    # --- scatter ---------------------------------------------------------------------
    def _scatter_src(self: Tensor, index: Tensor, src: Any, op: str) -> Tensor:
        from anychip.frontend.tensor import Tensor

        if not isinstance(src, Tensor):
            return Tensor._const(src, self.dtype, index.shape, self.device)
        if src.shape != index.shape:
            if src.ndim != index.ndim or any(a < b for a, b in zip(src.shape, index.shape)):
                raise ShapeError(
                    f"{op}: src must be at least as large as index ({describe(self, index, src)})"
                )
            src = src._shrink([(0, n) for n in index.shape])
        return src.to(self.dtype)

    def scatter(
        self: Tensor,
        dim: int,
        index: Tensor,
        src: Any = None,
        value: Any = None,
        reduce: str | None = None,
    ) -> Tensor:
        """self with self[..index[i]..] = src[i] along dim (torch.Tensor.scatter); `src`
        may be a number. With duplicate indices the values written are summed here where
        torch keeps an unspecified one; reduce='add'/'multiply' as scatter_reduce."""
        if src is None:
            src = value
        if reduce is not None:
            mode = {"add": "sum", "multiply": "prod"}.get(reduce)
            if mode is None:
                raise ArgumentError(f"scatter: reduce must be 'add' or 'multiply', got {reduce!r}")
            return self.scatter_reduce(dim, index, self._scatter_src(index, src, "scatter"), mode)
        srcv = self._scatter_src(index, src, "scatter")
        zeros = self.zeros_like()
        hit = zeros.scatter_add(dim, index, srcv.zeros_like() + 1) > 0
        return hit._select(zeros.scatter_add(dim, index, srcv), self)

    def scatter_reduce(
        self: Tensor,
        dim: int,
        index: Tensor,
        src: Tensor,
        reduce: str,
        *,
        include_self: bool = True,
    ) -> Tensor:
        """Reduce src into self at index along dim: 'sum', 'prod', 'mean', 'amax', 'amin'
        (torch.Tensor.scatter_reduce). prod/amax/amin compare every index with every
        position of dim (a one-hot of size index.shape[dim] x self.shape[dim])."""
        if reduce not in ("sum", "prod", "mean", "amax", "amin"):
            raise ArgumentError(f"scatter_reduce: unknown reduce {reduce!r} ({describe(self)})")
        srcv = self._scatter_src(index, src, "scatter_reduce")
        d = self._axis(dim, "scatter_reduce")
        zeros = self.zeros_like()
        ones = srcv.zeros_like() + 1
        count = zeros.scatter_add(d, index, ones)
        hit = count > 0
        identity = zeros + 1 if reduce == "prod" else zeros
        base = self if include_self else hit._select(identity, self)
        if reduce in ("sum", "mean"):
            total = base.scatter_add(d, index, srcv)
            if reduce == "sum":
                return total
            n = count + (1 if include_self else 0)
            n = n.maximum(n.zeros_like() + 1)
            out = total / n if self.dtype.is_floating_point else total.floor_divide(n)
            return out.to(self.dtype)
        if any(a != b for k, (a, b) in enumerate(zip(index.shape, self.shape)) if k != d):
            raise ShapeError(
                f"scatter_reduce: {reduce} needs index to match self outside dim {dim} "
                f"({describe(self, index)})"
            )
        from anychip.frontend.creation import arange

        size = self.shape[d]
        idx = index.movedim(d, -1).unsqueeze(-1)  # (..., m, 1)
        onehot = idx == arange(size, device=self.device)  # (..., m, n)
        vals = srcv.movedim(d, -1).unsqueeze(-1).expand(onehot.shape)
        if reduce == "prod":
            got = onehot._select(vals, 1).prod(-2)
        else:
            lim = -math.inf if reduce == "amax" else math.inf
            if not self.dtype.is_floating_point:
                info = np.iinfo(self.dtype.np)
                lim = int(info.min) if reduce == "amax" else int(info.max)
            picked = onehot._select(vals, lim)
            got = picked.amax(-2) if reduce == "amax" else picked.amin(-2)
        got = got.movedim(-1, d).to(self.dtype)
        if reduce == "prod":
            return base * got
        if not include_self:
            return hit._select(got, self)
        return base.maximum(got) if reduce == "amax" else base.minimum(got)

    # --- triangles and diagonals -------------------------------------------------------
    def _triangle(self: Tensor, diagonal: int, upper: bool, op: str) -> Tensor:
        from anychip.frontend.creation import arange

        if self.ndim < 2:
            raise ShapeError(
                f"{op}: input tensor must have at least 2 dimensions ({describe(self)})"
            )
        r, c = self.shape[-2:]
        gap = arange(c, device=self.device).reshape(1, c) - arange(r, device=self.device).reshape(
            r, 1
        )
        keep = gap >= diagonal if upper else gap <= diagonal
        return keep._select(self, 0).to(self.dtype)

    def tril(self: Tensor, diagonal: int = 0) -> Tensor:
        return self._triangle(diagonal, False, "tril")

    def triu(self: Tensor, diagonal: int = 0) -> Tensor:
        return self._triangle(diagonal, True, "triu")

    def diagonal(self: Tensor, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Tensor:
        """The offset diagonal of the (dim1, dim2) planes, as the last dimension."""
        a, b = self._axis(dim1, "diagonal"), self._axis(dim2, "diagonal")
        if a == b:
            raise ShapeError(f"diagonal: dim1 and dim2 cannot be the same ({describe(self)})")
        rest = [k for k in range(self.ndim) if k not in (a, b)]
        x = self.permute((*rest, a, b))
        lead, (r, c) = x.shape[:-2], x.shape[-2:]
        keep = [(0, s) for s in lead]
        r0, c0 = (0, offset) if offset >= 0 else (-offset, 0)
        rr, cc = max(r - r0, 0), max(c - c0, 0)
        n = min(rr, cc)
        if n == 0:
            return x._shrink([*keep, (0, 0), (0, 0)]).reshape((*lead, 0))
        x = x._shrink([*keep, (r0, r0 + n), (c0, c0 + n)])
        flat = x.reshape((*lead, n * n))._pad_zero([(0, 0)] * len(lead) + [(0, n)])
        return flat.reshape((*lead, n, n + 1))._shrink([*keep, (0, n), (0, 1)]).reshape((*lead, n))

    def diag(self: Tensor, diagonal: int = 0) -> Tensor:
        """1-d: a square matrix with self on the given diagonal; 2-d: that diagonal."""
        if self.ndim == 2:
            return self.diagonal(diagonal)
        if self.ndim != 1:
            raise ShapeError(f"diag: expected a 1-d or 2-d tensor, got {describe(self)}")
        n, k = self.shape[0], abs(diagonal)
        # (n, 1) padded to (n, n+1), read as n*(n+1) and cut to n*n: the values land on i*(n+1)
        m = self.reshape(n, 1)._pad_zero([(0, 0), (0, n)]).reshape(n * (n + 1))
        m = m._shrink([(0, n * n)]).reshape(n, n)
        pads = [(0, k), (k, 0)] if diagonal > 0 else [(k, 0), (0, k)]
        return m._pad_zero(pads)

    # --- windows and repeats -----------------------------------------------------------
    def unfold(self: Tensor, dimension: int, size: int, step: int) -> Tensor:
        """Every window of `size` elements, `step` apart, along `dimension`; the windows'
        elements become a new last dimension (torch.Tensor.unfold)."""
        from anychip.frontend.conv import _window_last

        if self.ndim == 0:
            return self.reshape(1).expand(size) if size == 1 else self.reshape(1)
        d = self._axis(dimension, "unfold")
        if size > self.shape[d] or size < 0 or step < 1:
            raise ShapeError(
                f"unfold: size {size} (step {step}) does not fit dimension {dimension} of "
                f"size {self.shape[d]} ({describe(self)})"
            )
        w = _window_last(self.movedim(d, -1), size, step, 1)  # (..., o, size)
        return w.movedim(-2, d)

    def repeat_interleave(
        self: Tensor, repeats: Any, dim: int | None = None, *, output_size: int | None = None
    ) -> Tensor:
        from anychip.frontend.tensor import Tensor

        x = self.flatten() if dim is None else self
        d = 0 if dim is None else x._axis(dim, "repeat_interleave")
        if isinstance(repeats, Tensor) and repeats.numel() == 1:
            repeats = int(repeats.item())
        if isinstance(repeats, int):
            shp = x.shape
            y = x.unsqueeze(d + 1).expand((*shp[: d + 1], repeats, *shp[d + 1 :]))
            return y.reshape((*shp[:d], shp[d] * repeats, *shp[d + 1 :]))
        reps = np.asarray(repeats.numpy() if isinstance(repeats, Tensor) else repeats).astype(
            np.int64
        )
        if reps.shape != (x.shape[d],) or (reps < 0).any():
            raise ShapeError(
                "repeat_interleave: repeats must be non-negative, one per element of dim "
                f"{d} ({describe(x)})"
            )
        picks = np.repeat(np.arange(x.shape[d]), reps)
        return x.index_select(d, Tensor(picks, device=x.device))

    def movedim(self: Tensor, source: int, destination: int) -> Tensor:
        from anychip.frontend.pool import movedim

        return movedim(self, source, destination)

    moveaxis = movedim

    # --- statistics --------------------------------------------------------------------
    def var_mean(
        self: Tensor, dim: Any = None, *, correction: float = 1, keepdim: bool = False
    ) -> Pair:
        return self.var(dim, correction=correction, keepdim=keepdim), self.mean(
            dim, keepdim=keepdim
        )

    def std_mean(
        self: Tensor, dim: Any = None, *, correction: float = 1, keepdim: bool = False
    ) -> Pair:
        return self.std(dim, correction=correction, keepdim=keepdim), self.mean(
            dim, keepdim=keepdim
        )


def _zero_index(x: Tensor) -> Tensor:
    """The index a 0-d cummax or cummin returns: 0, as int64."""
    from anychip.frontend.tensor import Tensor

    return Tensor._const(0, dtypes.int64, x.shape, x.device)


def meshgrid(*tensors: Any, indexing: str = "ij") -> tuple[Tensor, ...]:
    """Coordinate grids from 1-d tensors, 'ij' (matrix) or 'xy' (Cartesian) indexing.

    >>> import anychip as ac
    >>> a, b = meshgrid(ac.tensor([1, 2]), ac.tensor([3, 4, 5]))
    >>> a.shape, b.tolist()[0]
    ((2, 3), [3, 4, 5])
    """
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    if indexing not in ("ij", "xy"):
        raise ArgumentError(f"meshgrid: indexing must be 'ij' or 'xy', got {indexing!r}")
    ts: list[Any] = list(tensors)
    for t in ts:
        if t.ndim > 1:
            raise ShapeError(f"meshgrid: expects 0-d or 1-d tensors, got {describe(t)}")
    swap = indexing == "xy" and len(ts) >= 2
    if swap:
        ts[0], ts[1] = ts[1], ts[0]
    shape = tuple(t.numel() for t in ts)
    out = []
    for k, t in enumerate(ts):
        view = [1] * len(ts)
        view[k] = t.numel()
        out.append(t.reshape(view).expand(shape))
    if swap:  # 'xy' is 'ij' of the first two swapped, their grids swapped back
        out[0], out[1] = out[1], out[0]
    return tuple(out)


__all__ = ["meshgrid"]
