"""Reductions: sum, mean, var, max, argmax, prod, logsumexp, softmax, cumsum and friends.

`dim` is an int, a tuple of ints or None (all dimensions); `keepdim` keeps reduced
dimensions with size 1, as in PyTorch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from anychip import dtypes
from anychip.errors import DTypeError, ShapeError, describe
from anychip.frontend import views
from anychip.ir.ops import Ops

if TYPE_CHECKING:
    from anychip.frontend.tensor import Tensor

Dim = int | Sequence[int] | None
HALF = (dtypes.float16, dtypes.bfloat16)


class ValuesIndices(NamedTuple):
    """What `max(dim=)`, `min(dim=)`, `sort` and `topk` return, like torch.return_types."""

    values: Tensor
    indices: Tensor


class ReduceMixin:
    __slots__ = ()

    def _dims(self: Tensor, dim: Dim, op: str) -> tuple[int, ...]:
        raw = (dim,) if isinstance(dim, int) else tuple(dim) if dim is not None else ()
        if not raw:  # None, and (as in PyTorch) an empty tuple: every dimension
            return tuple(range(self.ndim))
        axes = tuple(self._axis(d, op) for d in raw)
        if len(set(axes)) != len(axes):
            raise ShapeError(f"{op}: dim {raw} appears more than once ({describe(self)})")
        return tuple(sorted(axes)) if self.ndim else ()

    def _reduce_to(self: Tensor, op: Ops, dim: Dim, keepdim: bool, name: str) -> Tensor:
        axes = self._dims(dim, name)
        if op in (Ops.RMAX, Ops.RMIN) and any(self.shape[a] == 0 for a in axes):
            raise ShapeError(
                f"{name}: cannot reduce over an empty dimension of a tensor of "
                f"{describe(self)}; the reduction has no identity"
            )
        # nothing to reduce (a 0-d input): still a new node, so autograd sees an op
        out = self._reduce(op, axes) if axes else views.fresh(self)
        if keepdim:
            return out
        return out._reshape([s for i, s in enumerate(self.shape) if i not in axes])

    def _wide(self: Tensor) -> Tensor:
        """Halves in float32: their sums overflow (float16 stops at 65504) or lose every
        small term; means, variances and softmax round once at the end, as PyTorch."""
        return self.to(dtypes.float32) if self.dtype in HALF else self

    def _acc_dtype(self: Tensor, dtype: Any) -> Tensor:
        if dtype is not None:
            return self.to(dtypes.to_dtype(dtype))
        if self.dtype is dtypes.uint64:  # no wider integer: sums wrap mod 2^64, as numpy's
            return self
        return self.to(dtypes.int64) if self.dtype.kind in "biu" else self

    def sum(self: Tensor, dim: Dim = None, keepdim: bool = False, dtype: Any = None) -> Tensor:
        return self._acc_dtype(dtype)._reduce_to(Ops.SUM, dim, keepdim, "sum")

    def prod(
        self: Tensor, dim: int | None = None, keepdim: bool = False, dtype: Any = None
    ) -> Tensor:
        x = self._acc_dtype(dtype)
        if x.dtype is dtypes.float32:
            x._dims(dim, "prod")  # a bad dim's error names the float32 tensor
            # float32 products round once per factor in any order, and the errors of
            # factors near 1 do not cancel (10**7 of them drift by percents): multiply in
            # float64 (the cast fuses into the reduction) and round once
            return x.to(dtypes.float64)._reduce_to(Ops.PROD, dim, keepdim, "prod").to(x.dtype)
        return x._reduce_to(Ops.PROD, dim, keepdim, "prod")

    def mean(self: Tensor, dim: Dim = None, keepdim: bool = False, dtype: Any = None) -> Tensor:
        x = self.to(dtypes.to_dtype(dtype)) if dtype is not None else self
        if not x.dtype.is_floating_point:
            raise DTypeError(f"mean: input dtype must be floating point, got {describe(self)}")
        n = math.prod(self.shape[a] for a in self._dims(dim, "mean"))
        total = x._wide().sum(dim, keepdim)
        return (total / n if n else total * math.nan).to(x.dtype)

    def var(
        self: Tensor,
        dim: Dim = None,
        unbiased: bool | None = None,
        keepdim: bool = False,
        *,
        correction: float | None = None,
    ) -> Tensor:
        if not self.dtype.is_floating_point:
            raise DTypeError(f"var: input dtype must be floating point, got {describe(self)}")
        corr = correction if correction is not None else (0 if unbiased is False else 1)
        n = math.prod(self.shape[a] for a in self._dims(dim, "var"))
        x = self._wide()
        d = x - x.mean(dim, keepdim=True)
        return ((d * d).sum(dim, keepdim) / max(n - corr, 0)).to(self.dtype)

    def std(
        self: Tensor,
        dim: Dim = None,
        unbiased: bool | None = None,
        keepdim: bool = False,
        *,
        correction: float | None = None,
    ) -> Tensor:
        return self.var(dim, unbiased, keepdim, correction=correction).sqrt()

    def amax(self: Tensor, dim: Dim = None, keepdim: bool = False) -> Tensor:
        return self._reduce_to(Ops.RMAX, dim, keepdim, "amax")

    def amin(self: Tensor, dim: Dim = None, keepdim: bool = False) -> Tensor:
        return self._reduce_to(Ops.RMIN, dim, keepdim, "amin")

    def max(self: Tensor, dim: Any = None, keepdim: bool = False) -> Any:
        """`x.max()` -> the largest value; `x.max(dim)` -> (values, indices); `x.max(other)`
        -> elementwise maximum."""
        if dim is None:
            return self._reduce_to(Ops.RMAX, None, False, "max")
        if not isinstance(dim, int):
            return self.maximum(dim)
        return self._values_at(self.argmax(dim, keepdim=True), dim, keepdim)

    def min(self: Tensor, dim: Any = None, keepdim: bool = False) -> Any:
        if dim is None:
            return self._reduce_to(Ops.RMIN, None, False, "min")
        if not isinstance(dim, int):
            return self.minimum(dim)
        return self._values_at(self.argmin(dim, keepdim=True), dim, keepdim)

    def _values_at(self: Tensor, idx: Tensor, dim: int, keepdim: bool) -> ValuesIndices:
        """(self at idx along dim, idx): gathering sends the gradient to the returned index
        only, as PyTorch's max(dim) does (amax splits it between ties)."""
        if self.ndim == 0:
            return ValuesIndices(self * 1, idx)
        d = self._axis(dim, "max")
        values = self._prim(Ops.GATHER, idx, arg=d)
        if not keepdim:
            values, idx = values.squeeze(d), idx.squeeze(d)
        return ValuesIndices(values, idx)

    def _arg_extreme(self: Tensor, dim: int | None, keepdim: bool, op: Ops, name: str) -> Tensor:
        if dim is None:
            out = self.reshape(-1)._arg_extreme(0, False, op, name)
            return out.reshape((1,) * self.ndim) if keepdim else out
        x = self.detach()
        d = x._axis(dim, name) if x.ndim else 0
        if x.ndim == 0:
            return _positions(1, self.device).reshape(()) * 0
        m = x._reduce_to(op, d, True, name)
        hit = (x == m) | (x.isnan() if x.dtype.is_floating_point else False)
        n = x.shape[d]
        idx = _positions(n, self.device).reshape((n,) + (1,) * (x.ndim - d - 1))
        first = hit._select(idx, n)._reduce_to(Ops.RMIN, d, keepdim, name)
        return first

    def argmax(self: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return self._arg_extreme(dim, keepdim, Ops.RMAX, "argmax")

    def argmin(self: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return self._arg_extreme(dim, keepdim, Ops.RMIN, "argmin")

    def all(self: Tensor, dim: Dim = None, keepdim: bool = False) -> Tensor:
        self._dims(dim, "all")
        b = self.bool()
        if dim is not None and not isinstance(dim, int) and not tuple(dim):
            return b  # torch's all/any take dim=() as "no dimension"
        return (
            b._reduce_to(Ops.RMIN, dim, keepdim, "all")
            if self.numel()
            else b._reduce_to(Ops.PROD, dim, keepdim, "all")
        )

    def any(self: Tensor, dim: Dim = None, keepdim: bool = False) -> Tensor:
        self._dims(dim, "any")
        b = self.bool()
        if dim is not None and not isinstance(dim, int) and not tuple(dim):
            return b
        return (
            b._reduce_to(Ops.RMAX, dim, keepdim, "any")
            if self.numel()
            else b._reduce_to(Ops.SUM, dim, keepdim, "any")
        )

    def logsumexp(self: Tensor, dim: Dim, keepdim: bool = False) -> Tensor:
        axes = self._dims(dim, "logsumexp")
        x = self._float()._wide()
        m = x.detach().amax(dim, keepdim=True) if x.numel() else x.sum(dim, True)
        m = m.isinf()._select(0, m)
        out = ((x - m).exp().sum(dim, keepdim=True).log() + m).to(self._float().dtype)
        return out if keepdim else out.squeeze(axes)

    def softmax(self: Tensor, dim: int, dtype: Any = None) -> Tensor:
        self._axis(dim, "softmax")
        x = self._float() if dtype is None else self.to(dtypes.to_dtype(dtype, "softmax"))
        if x.numel() == 0:  # nothing to normalise (and amax has no identity)
            return x * 1
        w = x._wide()
        e = (w - w.detach().amax(dim, keepdim=True)).exp()
        # times the reciprocal of the row sum, as PyTorch's CPU kernel does: one division
        # per row instead of one per element (divisions are the slowest vector op)
        return (e * (1 / e.sum(dim, keepdim=True))).to(x.dtype)

    def log_softmax(self: Tensor, dim: int, dtype: Any = None) -> Tensor:
        self._axis(dim, "log_softmax")
        x = self._float() if dtype is None else self.to(dtypes.to_dtype(dtype, "log_softmax"))
        w = x._wide()
        return (w - w.logsumexp(dim, keepdim=True)).to(x.dtype)

    def cumsum(self: Tensor, dim: int, dtype: Any = None) -> Tensor:
        x = self._acc_dtype(dtype)
        d = x._axis(dim, "cumsum")
        return x._cumsum(d) if x.ndim else views.fresh(x)

    def norm(self: Tensor, p: float = 2, dim: Dim = None, keepdim: bool = False) -> Tensor:
        self._dims(dim, "norm")
        if p == 2:
            return (self * self).sum(dim, keepdim).sqrt()
        if p == 1:
            return self.abs().sum(dim, keepdim)
        if p == math.inf:
            return self.abs().amax(dim, keepdim)
        return (self.abs() ** p).sum(dim, keepdim) ** (1 / p)

    def count_nonzero(self: Tensor, dim: Dim = None) -> Tensor:
        return (self != 0).sum(dim)


def _positions(n: int, device: Any) -> Tensor:
    """0, 1, ..., n-1 as int64, computed where it is used (argmax's kernel) from two aranges
    of about sqrt(n) each: `arange(n)` would hold 8 bytes per element of host memory."""
    from anychip.frontend.creation import arange

    b = 1 << (max(n - 1, 1).bit_length() + 1) // 2  # a power of two near sqrt(n)
    a = -(-n // b)
    rows = arange(a, device=device).reshape(a, 1) * b
    return (rows + arange(b, device=device).reshape(1, b)).reshape(a * b)[:n]
