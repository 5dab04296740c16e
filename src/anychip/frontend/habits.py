"""Tensor methods PyTorch code reaches for that are thin layers over other ops: `.cpu()`,
`new_*`, strides, in-place variants (`masked_fill_`, `uniform_`, `scatter_`, ...), hooks,
`unique`, `bincount` and the closeness tests.

In-place methods compute the out-of-place result and hand it to `Tensor._assign`, the one
in-place mechanism (so autograd and views see every in-place op the same way).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from anychip import dtypes
from anychip.errors import (
    ArgumentError,
    AutogradError,
    DTypeError,
    ModeNotImplemented,
    ShapeError,
    describe,
)

if TYPE_CHECKING:
    from anychip.frontend.hooks import RemovableHandle
    from anychip.frontend.tensor import Tensor


class Size(tuple[int, ...]):
    """A tensor's shape, as `torch.Size`: a tuple of ints (equal to plain tuples).

    >>> import anychip as ac
    >>> ac.zeros(2, 3).size() == ac.Size([2, 3]), ac.Size([2, 3]).numel()
    (True, 6)
    """

    def numel(self) -> int:
        n = 1
        for s in self:
            n *= s
        return n

    def __repr__(self) -> str:
        return f"anychip.Size({list(self)})"


def _sizes(size: Sequence[Any]) -> tuple[int, ...]:
    """new_zeros(2, 3) and new_zeros((2, 3)) alike."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        return tuple(int(s) for s in size[0])
    return tuple(int(s) for s in size)


class HabitsMixin:
    __slots__ = ()

    # --- where and how the data sits ------------------------------------------------
    def cpu(self: Tensor) -> Tensor:
        """`.to("cpu")`: this tensor on the cpu device (the same tensor if already there)."""
        return self.to("cpu")

    def is_floating_point(self: Tensor) -> bool:
        return self.dtype.is_floating_point

    def is_contiguous(self: Tensor, memory_format: Any = None) -> bool:
        """Whether self's elements sit row-major in its storage, as in PyTorch: False for a
        transposed, strided or expanded view (`contiguous()` then copies)."""
        from anychip.frontend import views

        return views.is_contiguous(self)

    def stride(self: Tensor, dim: int | None = None) -> Any:
        """Row-major strides in elements, as a contiguous PyTorch tensor has.

        >>> import anychip as ac
        >>> ac.zeros(2, 3, 4).stride()
        (12, 4, 1)
        """
        from anychip.frontend.views import strides_of

        strides = strides_of(self)  # a view's own strides, as PyTorch reports them
        return strides if dim is None else strides[self._axis(dim, "stride")]

    def nelement(self: Tensor) -> int:
        return self.numel()

    def ndimension(self: Tensor) -> int:
        return self.ndim

    @property
    def itemsize(self: Tensor) -> int:
        return self.dtype.itemsize

    @property
    def nbytes(self: Tensor) -> int:
        return self.numel() * self.dtype.itemsize

    @property
    def is_cuda(self: Tensor) -> bool:
        return False

    def get_device(self: Tensor) -> int:
        """-1, as torch answers for a tensor in host memory (anychip has no device ids)."""
        return -1

    @property
    def grad_fn(self: Tensor) -> Any:
        """The recorded op that made this tensor (None for a leaf), for `is None` checks."""
        return self._ctx

    def pin_memory(self: Tensor) -> Tensor:
        return self  # host memory is what every anychip device copies from anyway

    def is_pinned(self: Tensor) -> bool:
        return False

    def type_as(self: Tensor, other: Tensor) -> Tensor:
        return self.to(other.dtype)

    def short(self: Tensor) -> Tensor:
        return self.to(dtypes.int16)

    def byte(self: Tensor) -> Tensor:
        return self.to(dtypes.uint8)

    def char(self: Tensor) -> Tensor:
        return self.to(dtypes.int8)

    def detach_(self: Tensor) -> Tensor:
        """Make this tensor a leaf that does not require grad, in place."""
        t: Tensor = self  # (assigned through a Tensor: the slots are Tensor's, not the mixin's)
        t._ctx, t.requires_grad = None, False
        return t

    # --- new tensors like this one --------------------------------------------------
    def _new(self: Tensor, value: Any, size: Sequence[Any], kw: dict[str, Any]) -> Tensor:
        from anychip.frontend.creation import full

        dt = kw.get("dtype") or self.dtype
        out = full(_sizes(size), value, dtype=dt, device=kw.get("device") or self.device)
        return out.requires_grad_() if kw.get("requires_grad") else out

    def new_zeros(self: Tensor, *size: Any, **kw: Any) -> Tensor:
        """Zeros of `size` with this tensor's dtype and device (unless given)."""
        return self._new(0, size, kw)

    def new_ones(self: Tensor, *size: Any, **kw: Any) -> Tensor:
        return self._new(1, size, kw)

    def new_empty(self: Tensor, *size: Any, **kw: Any) -> Tensor:
        return self._new(0, size, kw)  # anychip never hands out uninitialised memory

    def new_full(self: Tensor, size: Sequence[int], fill_value: Any, **kw: Any) -> Tensor:
        return self._new(fill_value, (size,), kw)

    def new_tensor(
        self: Tensor, data: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False
    ) -> Tensor:
        """A copy of `data` with this tensor's dtype and device (unless given)."""
        from anychip.frontend.tensor import Tensor

        src = data.detach() if isinstance(data, Tensor) else data
        return Tensor(
            src,
            dtype=dtype or self.dtype,
            device=device or self.device,
            requires_grad=requires_grad,
        )

    # --- in place -------------------------------------------------------------------
    def masked_fill_(self: Tensor, mask: Tensor, value: Any) -> Tensor:
        return self._assign(self.masked_fill(mask, value), "masked_fill_")

    def uniform_(self: Tensor, a: float = 0.0, b: float = 1.0, generator: Any = None) -> Tensor:
        """Fill with values uniform in [a, b) from anychip's seeded generator (or from
        `generator`, an anychip.Generator)."""
        from anychip.frontend.random import rand
        from anychip.frontend.tensor import Tensor

        dt = self._float_dtype("uniform_")
        if generator is not None:
            u = Tensor(generator.rng.random(self.shape), dtype=dt, device=self.device)
        else:
            u = rand(*self.shape, dtype=dt, device=self.device)
        return self._assign(u * (b - a) + a, "uniform_")

    def normal_(self: Tensor, mean: float = 0.0, std: float = 1.0, generator: Any = None) -> Tensor:
        """Fill with normal values from anychip's seeded generator (or `generator`)."""
        from anychip.frontend.random import randn
        from anychip.frontend.tensor import Tensor

        dt = self._float_dtype("normal_")
        if generator is not None:
            z = Tensor(generator.rng.standard_normal(self.shape), dtype=dt, device=self.device)
        else:
            z = randn(*self.shape, dtype=dt, device=self.device)
        return self._assign(z * std + mean, "normal_")

    def _float_dtype(self: Tensor, op: str) -> dtypes.DType:
        if not self.dtype.is_floating_point:
            raise DTypeError(f"{op}: needs a floating point tensor, got {describe(self)}")
        return self.dtype

    def sqrt_(self: Tensor) -> Tensor:
        return self._assign(self.sqrt(), "sqrt_")

    def exp_(self: Tensor) -> Tensor:
        return self._assign(self.exp(), "exp_")

    def log_(self: Tensor) -> Tensor:
        return self._assign(self.log(), "log_")

    def abs_(self: Tensor) -> Tensor:
        return self._assign(self.abs(), "abs_")

    def neg_(self: Tensor) -> Tensor:
        return self._assign(-self, "neg_")

    def pow_(self: Tensor, exponent: Any) -> Tensor:
        return self._assign(self.pow(exponent), "pow_")

    def sigmoid_(self: Tensor) -> Tensor:
        return self._assign(self.sigmoid(), "sigmoid_")

    def tanh_(self: Tensor) -> Tensor:
        return self._assign(self.tanh(), "tanh_")

    def relu_(self: Tensor) -> Tensor:
        return self._assign(self.relu(), "relu_")

    def floor_(self: Tensor) -> Tensor:
        return self._assign(self.floor(), "floor_")

    def ceil_(self: Tensor) -> Tensor:
        return self._assign(self.ceil(), "ceil_")

    def round_(self: Tensor, decimals: int = 0) -> Tensor:
        return self._assign(self.round(decimals), "round_")

    def trunc_(self: Tensor) -> Tensor:
        return self._assign(self.trunc(), "trunc_")

    def sign_(self: Tensor) -> Tensor:
        return self._assign(self.sign(), "sign_")

    def reciprocal_(self: Tensor) -> Tensor:
        return self._assign(self.reciprocal(), "reciprocal_")

    def square_(self: Tensor) -> Tensor:
        return self._assign(self.square(), "square_")

    def bernoulli_(self: Tensor, p: Any = 0.5, generator: Any = None) -> Tensor:
        """Fill with 1 with probability p (a number or a tensor of probabilities), else 0."""
        from anychip.frontend.tensor import Tensor

        u = Tensor._const(0.0, dtypes.float64, self.shape, self.device).uniform_(
            generator=generator
        )
        return self._assign((u < p).to(self.dtype), "bernoulli_")

    def index_fill_(self: Tensor, dim: int, index: Any, value: Any) -> Tensor:
        """self[..., index, ...] = value along `dim`."""
        from anychip.frontend.subscript import as_index

        d = self._axis(dim, "index_fill_")
        where: list[Any] = [slice(None)] * self.ndim
        where[d] = as_index(self, index, "index_fill_").reshape(-1)
        self[tuple(where)] = value
        return self

    def index_copy_(self: Tensor, dim: int, index: Any, source: Tensor) -> Tensor:
        """self[..., index[i], ...] = source[..., i, ...] along `dim`."""
        from anychip.frontend.subscript import as_index

        d = self._axis(dim, "index_copy_")
        where: list[Any] = [slice(None)] * self.ndim
        where[d] = as_index(self, index, "index_copy_").reshape(-1)
        self[tuple(where)] = source  # one advanced index keeps its place: source fits as is
        return self

    def clamp_min_(self: Tensor, min: Any) -> Tensor:
        return self._assign(self.clamp(min=min), "clamp_min_")

    def clamp_max_(self: Tensor, max: Any) -> Tensor:
        return self._assign(self.clamp(max=max), "clamp_max_")

    def lerp_(self: Tensor, end: Any, weight: Any) -> Tensor:
        return self._assign(self.lerp(end, weight), "lerp_")

    def addcmul_(self: Tensor, t1: Any, t2: Any, value: float = 1) -> Tensor:
        return self._assign(self + t1 * t2 * value, "addcmul_")

    def addcdiv_(self: Tensor, t1: Any, t2: Any, value: float = 1) -> Tensor:
        return self._assign(self + t1 * value / t2, "addcdiv_")

    def index_add_(
        self: Tensor, dim: int, index: Any, source: Tensor, *, alpha: float = 1
    ) -> Tensor:
        return self._assign(self.index_add(dim, index, source, alpha=alpha), "index_add_")

    def scatter_add_(self: Tensor, dim: int, index: Any, src: Tensor) -> Tensor:
        return self._assign(self.scatter_add(dim, index, src), "scatter_add_")

    def index_put_(
        self: Tensor, indices: Sequence[Any], values: Any, accumulate: bool = False
    ) -> Tensor:
        """self[indices] = values, or += with `accumulate` (repeated indices add up)."""
        index = tuple(indices)
        if accumulate:
            from anychip.frontend.tensor import Tensor

            picked = self[index]  # the shape values broadcast to
            v = (
                values
                if isinstance(values, Tensor)
                else Tensor._const(values, self.dtype, picked.shape, self.device)
            )
            self._assign(self._index_accumulate(index, v._broadcast(picked.shape)), "index_put_")
        else:
            self[index] = values
        return self

    def _index_accumulate(self: Tensor, index: tuple[Any, ...], v: Tensor) -> Tensor:
        """self with v added at self[index] for integer-tensor indices of the leading dims:
        the positions become row numbers of self flattened to (rows, rest...)."""
        from anychip.frontend.subscript import as_index

        k = len(index)
        lead = self.shape[:k]
        idx = [as_index(self, i, "index_put_") for i in index]
        flat = None
        for i, (n, t) in enumerate(zip(lead, idx, strict=True)):
            t = (t < 0)._select(t + n, t)  # negative indices count from the end
            stride = math.prod(lead[i + 1 :])
            flat = t * stride if flat is None else flat + t * stride
        assert flat is not None
        rows = self.reshape((math.prod(lead), *self.shape[k:]))
        src = v.reshape((flat.numel(), *self.shape[k:]))
        return rows.index_add(0, flat.reshape(-1), src.to(self.dtype)).reshape(self.shape)

    def scatter_(
        self: Tensor,
        dim: int,
        index: Any,
        src: Any = None,
        value: Any = None,
        reduce: str | None = None,
    ) -> Tensor:
        """self[..., index[i, j, ...], ...] = src[i, j, ...] along `dim` (a later write to
        the same place wins, as on torch's CPU); `src` may be a number."""
        from anychip.frontend.creation import arange
        from anychip.frontend.subscript import as_index
        from anychip.frontend.tensor import Tensor

        src = value if src is None else src
        idx = as_index(self, index, "scatter_")
        d = self._axis(dim, "scatter_")
        if idx.ndim != self.ndim and self.ndim:
            raise ShapeError(
                "scatter_: index tensor must have the same number of dimensions as the "
                f"input tensor ({describe(self, idx)})"
            )
        if not isinstance(src, Tensor):
            src = Tensor._const(src, self.dtype, idx.shape, self.device)
        else:  # torch reads only src's leading block the size of index
            src = src._shrink([(0, n) for n in idx.shape])
        if reduce == "add":
            return self.scatter_add_(d, idx, src)
        if reduce is not None:
            raise ModeNotImplemented(f"scatter_: reduce={reduce!r} is not supported (only 'add')")
        if self.ndim == 0:
            self[()] = src.reshape(())
            return self
        grid = []
        for a, n in enumerate(idx.shape):
            if a == d:
                grid.append(idx)
            else:
                shape = [1] * idx.ndim
                shape[a] = n
                grid.append(arange(n, device=self.device).reshape(shape)._broadcast(idx.shape))
        self[tuple(grid)] = src
        return self

    # --- autograd -------------------------------------------------------------------
    def register_hook(self: Tensor, hook: Callable[[Tensor], Tensor | None]) -> RemovableHandle:
        """Call `hook(grad)` when backward computes this tensor's gradient; a returned
        tensor replaces the gradient. `.remove()` on the result takes it off."""
        from anychip.frontend.hooks import register_hook

        if not self.requires_grad:
            raise AutogradError(
                "register_hook: cannot register a hook on a tensor that doesn't require "
                f"gradient ({describe(self)})"
            )
        return register_hook(self, hook)

    # --- values ---------------------------------------------------------------------
    def unique(
        self: Tensor,
        sorted: bool = True,
        return_inverse: bool = False,
        return_counts: bool = False,
        dim: int | None = None,
    ) -> Any:
        """The distinct values (sorted, as torch on CPU returns them even with
        sorted=False), optionally with each element's position in them and the counts."""
        from anychip.frontend.tensor import Tensor

        arr = self.numpy()
        axis = None if dim is None else self._axis(dim, "unique")
        vals, inv, counts = np.unique(arr, return_inverse=True, return_counts=True, axis=axis)
        out = [Tensor(vals, dtype=self.dtype, device=self.device)]
        if return_inverse:
            shape = self.shape if axis is None else (self.shape[axis],)
            out.append(Tensor(inv.reshape(shape).astype(np.int64), device=self.device))
        if return_counts:
            out.append(Tensor(counts.astype(np.int64), device=self.device))
        return out[0] if len(out) == 1 else tuple(out)

    def bincount(self: Tensor, weights: Tensor | None = None, minlength: int = 0) -> Tensor:
        """How often each value 0..max occurs in this 1-d integer tensor (summing
        `weights` instead of ones when given)."""
        from anychip.frontend.tensor import Tensor

        if self.ndim != 1 or self.dtype.kind not in "iu":
            raise DTypeError(f"bincount: needs a 1-d integer tensor, got {describe(self)}")
        n = self.numel()
        ids = self.numpy()
        if n and int(ids.min()) < 0:
            raise ArgumentError(f"bincount: values must be non-negative ({describe(self)})")
        size = max(int(ids.max()) + 1 if n else 0, minlength)
        if weights is None:
            ones = Tensor._const(1, dtypes.int64, (n,), self.device)
            base = Tensor._const(0, dtypes.int64, (size,), self.device)
            return base.index_add(0, self, ones)
        if weights.shape != self.shape:
            raise ShapeError(
                f"bincount: weights must have the input's shape ({describe(self, weights)})"
            )
        wdt = weights.dtype if weights.dtype.is_floating_point else dtypes.float64
        base = Tensor._const(0, wdt, (size,), self.device)
        return base.index_add(0, self, weights.to(wdt))

    def isclose(
        self: Tensor, other: Any, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False
    ) -> Tensor:
        """|self - other| <= atol + rtol |other| elementwise (equal infinities are close)."""
        a, b = self._operands("isclose", other)
        close = a == b
        if a.dtype.is_floating_point:
            err = (a - b).abs()  # an infinite error is never close (inf vs -inf), as torch
            close = close | (err.isfinite() & (err <= (b.abs() * rtol + atol)))
            if equal_nan:
                close = close | (a.isnan() & b.isnan())
        return close

    def allclose(
        self: Tensor, other: Any, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False
    ) -> bool:
        return bool(self.isclose(other, rtol, atol, equal_nan).all().item())

    def equal(self: Tensor, other: Tensor) -> bool:
        """True when both have the same shape and the same values."""
        if tuple(self.shape) != tuple(other.shape):
            return False
        return bool((self == other).all().item())
