"""Movement ops: reshape, permute, expand, pad, slice, flip, cat, split and friends.

All are built from the six movement primitives, which move no data by themselves: the
compiler turns them into index arithmetic.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from anychip import dtypes
from anychip.errors import (
    DeviceError,
    DTypeError,
    IndexOutOfRange,
    ShapeError,
    describe,
)
from anychip.frontend import views
from anychip.ir.ops import Ops

if TYPE_CHECKING:
    from anychip.frontend.tensor import Tensor


def _shape_arg(shape: Sequence[Any]) -> tuple[Any, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def _int_sizes(sizes: Sequence[Any], op: str) -> list[int]:
    """Sizes as Python ints; floats and other non-integers are a DTypeError, as in torch."""
    try:
        return [operator.index(s) for s in sizes]
    except TypeError:
        raise DTypeError(f"{op}: sizes must be integers, got {tuple(sizes)}") from None


def _expands_to(shape: tuple[int, ...], to: tuple[int, ...]) -> bool:
    """Does each axis of `shape` equal `to`'s or have size 1? (a loop: every broadcast
    asks, and a generator costs a frame)"""
    for a, b in zip(shape, to):  # noqa: SIM110 (the loop is the point)
        if a != b and a != 1:
            return False
    return True


class MovementMixin:
    __slots__ = ()

    def _axis_nd(self: Tensor, dim: int, op: str) -> int:
        """Like `_axis`, for ops that need a real dimension (a 0-d tensor has none)."""
        if self.ndim == 0:
            raise IndexOutOfRange(
                f"{op}: dimension {dim} specified but the tensor has no dimensions "
                f"({describe(self)})"
            )
        return self._axis(dim, op)

    def _unique_axes(self: Tensor, dims: Sequence[int], op: str) -> tuple[int, ...]:
        axes = tuple(self._axis(d, op) for d in dims)
        if len(set(axes)) != len(axes):
            raise ShapeError(f"{op}: dim {tuple(dims)} appears more than once ({describe(self)})")
        return axes

    def _broadcast(self: Tensor, shape: tuple[int, ...], op: str = "expand") -> Tensor:
        """numpy broadcast to `shape` (add leading axes, then expand size-1 axes)."""
        have = self.node.shape  # read once (every op's operands pass here)
        if have == shape:
            return self
        x = self
        if len(have) < len(shape):
            x = x._prim(Ops.RESHAPE, arg=(1,) * (len(shape) - len(have)) + have)
            have = x.node.shape
        if len(have) > len(shape) or not _expands_to(have, shape):
            raise ShapeError(
                f"{op}: cannot broadcast a tensor of {describe(self)} to shape {tuple(shape)}"
            )
        return x._prim(Ops.EXPAND, arg=tuple(shape)) if have != shape else x

    def _reshape(self: Tensor, shape: Sequence[int]) -> Tensor:
        """RESHAPE for internal use: never a view, self when the shape is the same."""
        shape = tuple(shape)
        return self if shape == self.shape else self._prim(Ops.RESHAPE, arg=shape)

    def _new_shape(self: Tensor, shape: Sequence[Any], op: str) -> tuple[int, ...]:
        new = _int_sizes(_shape_arg(shape), op)
        if new.count(-1) > 1:
            raise ShapeError(
                f"{op}: only one dimension can be -1, got {tuple(new)} ({describe(self)})"
            )
        known = math.prod(s for s in new if s != -1)
        if -1 in new:
            if known == 0 or self.numel() % known:
                raise ShapeError(
                    f"{op}: shape {tuple(new)} is invalid for a tensor of "
                    f"{self.numel()} elements ({describe(self)})"
                )
            new[new.index(-1)] = self.numel() // known
        if math.prod(new) != self.numel() or any(s < 0 for s in new):
            raise ShapeError(
                f"{op}: shape {tuple(new)} is invalid for a tensor of "
                f"{self.numel()} elements ({describe(self)})"
            )
        return tuple(new)

    def reshape(self: Tensor, *shape: Any) -> Tensor:
        """A view of self with the new shape where self's layout allows one (as in
        PyTorch), else a copy."""
        return views.reshape(self, self._new_shape(shape, "reshape"), "reshape")

    def view(self: Tensor, *shape: Any) -> Tensor:
        """A view of self with the new shape; a ShapeError where self's layout (a transposed
        or sliced view) cannot be viewed so, as in PyTorch. `x.view(dtype)` reinterprets
        the bytes (a copy, read on the host)."""
        if len(shape) == 1 and isinstance(shape[0], (dtypes.DType, str)):  # x.view(ac.int32)
            return self._bitcast(shape[0])
        return views.reshape(self, self._new_shape(shape, "view"), "view")

    def view_as(self: Tensor, other: Tensor) -> Tensor:
        return self.view(other.shape)

    def reshape_as(self: Tensor, other: Tensor) -> Tensor:
        return self.reshape(other.shape)

    def flatten(self: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        if self.ndim == 0:
            return self.reshape(1)
        s, e = self._axis(start_dim, "flatten"), self._axis(end_dim, "flatten")
        if s > e:
            raise ShapeError(
                f"flatten: start_dim {start_dim} comes after end_dim {end_dim} ({describe(self)})"
            )
        return (
            self.reshape((*self.shape[:s], -1, *self.shape[e + 1 :]))
            if self.numel()
            else self.reshape(
                (*self.shape[:s], math.prod(self.shape[s : e + 1]), *self.shape[e + 1 :])
            )
        )

    def unflatten(self: Tensor, dim: int, sizes: Sequence[int]) -> Tensor:
        d = self._axis(dim, "unflatten")
        return self.reshape(self.shape[:d] + tuple(sizes) + self.shape[d + 1 :])

    def squeeze(self: Tensor, dim: int | Sequence[int] | None = None) -> Tensor:
        if dim is None:
            return self.reshape(tuple(s for s in self.shape if s != 1))
        dims = set(self._unique_axes((dim,) if isinstance(dim, int) else dim, "squeeze"))
        return self.reshape(
            tuple(s for i, s in enumerate(self.shape) if not (i in dims and s == 1))
        )

    def unsqueeze(self: Tensor, dim: int) -> Tensor:
        n = self.ndim + 1
        if not -n <= dim < n:
            raise IndexOutOfRange(
                f"unsqueeze: dimension {dim} out of range (expected in [{-n}, {n - 1}]) "
                f"for a tensor of {describe(self)}"
            )
        d = dim % n
        return self.reshape((*self.shape[:d], 1, *self.shape[d:]))

    def permute(self: Tensor, *dims: Any) -> Tensor:
        order = tuple(self._axis(d, "permute") for d in _shape_arg(dims))
        if sorted(order) != list(range(self.ndim)):
            raise ShapeError(
                f"permute: {tuple(_shape_arg(dims))} is not a permutation of the "
                f"{self.ndim} dimensions of a tensor of {describe(self)}"
            )
        return views.view_op(self, Ops.PERMUTE, order)

    def transpose(self: Tensor, dim0: int, dim1: int) -> Tensor:
        if self.ndim < 2 and dim0 in (0, -1) and dim1 in (0, -1):
            return views.alias(self)
        order = list(range(self.ndim))
        a, b = self._axis(dim0, "transpose"), self._axis(dim1, "transpose")
        order[a], order[b] = order[b], order[a]
        return self.permute(order)

    def swapaxes(self: Tensor, a: int, b: int) -> Tensor:
        return self.transpose(a, b)

    def t(self: Tensor) -> Tensor:
        if self.ndim > 2:
            raise ShapeError(f"t: expects a tensor with at most 2 dimensions, got {describe(self)}")
        return self.transpose(0, 1) if self.ndim == 2 else views.alias(self)

    @property
    def T(self: Tensor) -> Tensor:
        return self.permute(tuple(range(self.ndim))[::-1])

    @property
    def mT(self: Tensor) -> Tensor:
        return self.transpose(-2, -1)

    def expand(self: Tensor, *sizes: Any) -> Tensor:
        shape = _shape_arg(sizes)
        if len(shape) < self.ndim:
            raise ShapeError(
                f"expand: the number of sizes {len(shape)} in {tuple(shape)} must be at least "
                f"the number of dimensions {self.ndim} of a tensor of {describe(self)}"
            )
        lead = len(shape) - self.ndim
        full = tuple(
            self.shape[i - lead] if s == -1 and i >= lead else s for i, s in enumerate(shape)
        )
        if any(s < 0 for s in full):
            raise ShapeError(
                f"expand: sizes {tuple(shape)} may hold -1 only for existing dimensions and "
                f"no other negative size (tensor of {describe(self)})"
            )
        out = self._broadcast(full)
        return views.alias(self) if out is self else views.make_view(self, out)

    def expand_as(self: Tensor, other: Tensor) -> Tensor:
        return self.expand(other.shape)

    def broadcast_to(self: Tensor, shape: Sequence[int]) -> Tensor:
        return self.expand(tuple(shape))

    def repeat(self: Tensor, *sizes: Any) -> Tensor:
        reps = _shape_arg(sizes)
        if len(reps) < self.ndim:
            raise ShapeError(
                f"repeat: the number of repeat dims {len(reps)} can not be smaller "
                f"than the number of dimensions {self.ndim} of a tensor of {describe(self)}"
            )
        x = self.reshape((1,) * (len(reps) - self.ndim) + self.shape)
        # (r0, s0, r1, s1, ...) by expanding an axis before each, then merge pairs
        inter = x.reshape(tuple(v for s in x.shape for v in (1, s)))
        inter = inter.expand(tuple(v for r, s in zip(reps, x.shape) for v in (r, s)))
        return views.own(inter.reshape(tuple(r * s for r, s in zip(reps, x.shape))))

    def tile(self: Tensor, *sizes: Any) -> Tensor:
        reps = _shape_arg(sizes)
        return self.repeat((1,) * (self.ndim - len(reps)) + tuple(reps))

    def flip(self: Tensor, *dims: Any) -> Tensor:
        axes = tuple(sorted(self._unique_axes(_shape_arg(dims), "flip")))
        return self._prim(Ops.FLIP, arg=axes) if axes and self.ndim else views.fresh(self)

    def roll(
        self: Tensor, shifts: int | Sequence[int], dims: int | Sequence[int] | None = None
    ) -> Tensor:
        """Shift elements along dims, wrapping around; without dims, roll the flattened
        tensor (as torch.roll)."""
        if dims is None:
            if not isinstance(shifts, int) and len(shifts) != 1:
                raise ShapeError(f"roll: without dims, shifts must be one int, got {shifts}")
            s = shifts if isinstance(shifts, int) else shifts[0]
            return views.own(self.flatten().roll(s, 0).reshape(self.shape))
        sh = (shifts,) if isinstance(shifts, int) else tuple(shifts)
        ds = (dims,) if isinstance(dims, int) else tuple(dims)
        if len(sh) != len(ds):
            raise ShapeError(
                f"roll: shifts {sh} and dims {ds} must have the same length ({describe(self)})"
            )
        from anychip.frontend.creation import cat

        x = self
        for s, d in zip(sh, ds):
            n = x.shape[x._axis_nd(d, "roll")]
            if n:
                s %= n
                x = cat([x.narrow(d, n - s, s), x.narrow(d, 0, n - s)], d) if s else x
        return views.fresh(x) if x is self else x

    def _shrink(self: Tensor, box: Sequence[tuple[int, int]]) -> Tensor:
        box = tuple(box)
        for (a, b), s in zip(box, self.shape):
            if a != 0 or b != s:
                return self._prim(Ops.SHRINK, arg=box)
        return self  # the whole of self

    def _pad_zero(self: Tensor, pads: Sequence[tuple[int, int]]) -> Tensor:
        pads = tuple(pads)
        for lo, hi in pads:
            if lo or hi:
                return self._prim(Ops.PAD, arg=pads)
        return self  # nothing to pad

    def narrow(self: Tensor, dim: int, start: int, length: int) -> Tensor:
        d = self._axis_nd(dim, "narrow")
        n = self.shape[d]
        start = start + n if start < 0 else start
        if not (0 <= start <= n and length >= 0 and start + length <= n):
            raise IndexOutOfRange(
                f"narrow: start {start} + length {length} exceeds dimension "
                f"{dim} of size {n} of a tensor of {describe(self)}"
            )
        box = tuple((start, start + length) if i == d else (0, s) for i, s in enumerate(self.shape))
        return views.view_op(self, Ops.SHRINK, box)

    def pad(self: Tensor, pad: Sequence[int], mode: str = "constant", value: float = 0.0) -> Tensor:
        """`torch.nn.functional.pad`: (left, right) pairs from the last dimension backwards;
        negative amounts crop."""
        if mode != "constant":  # reflect, replicate, circular (or a typed error)
            from anychip.frontend.padding import pad_mode

            return pad_mode(self, pad, mode)
        if len(pad) % 2 or len(pad) // 2 > self.ndim:
            raise ShapeError(
                f"pad: padding length {len(pad)} must be even and at most twice "
                f"the number of dimensions of a tensor of {describe(self)}"
            )
        pairs = [(0, 0)] * self.ndim
        for i in range(len(pad) // 2):
            pairs[self.ndim - 1 - i] = (int(pad[2 * i]), int(pad[2 * i + 1]))
        crop = [(max(-lo, 0), s - max(-hi, 0)) for (lo, hi), s in zip(pairs, self.shape)]
        if any(a > b for a, b in crop):
            raise ShapeError(
                f"pad: padding {tuple(pad)} crops more than the tensor holds ({describe(self)})"
            )
        x = self._shrink(crop)
        grow = [(max(lo, 0), max(hi, 0)) for lo, hi in pairs]
        out = x._pad_zero(grow)
        if value != 0 and any(lo or hi for lo, hi in grow):
            from anychip.frontend.tensor import Tensor

            mask = Tensor._const(True, dtypes.bool_, x.shape, x.device)
            out = mask._pad_zero(grow)._select(out, value).to(self.dtype)
        return views.fresh(out) if out is self else out

    def split(
        self: Tensor, split_size_or_sections: int | Sequence[int], dim: int = 0
    ) -> tuple[Tensor, ...]:
        d = self._axis_nd(dim, "split")
        n = self.shape[d]
        if isinstance(split_size_or_sections, int):
            step = split_size_or_sections
            if step <= 0:
                raise ShapeError(
                    f"split: split_size must be positive, got {step} ({describe(self)})"
                )
            sizes = [min(step, n - i) for i in range(0, n, step)] or [0]
        else:
            sizes = list(split_size_or_sections)
            if sum(sizes) != n:
                raise ShapeError(
                    f"split: sections {tuple(sizes)} do not sum to dimension "
                    f"{dim} of size {n} of a tensor of {describe(self)}"
                )
        out, start = [], 0
        for s in sizes:
            out.append(self.narrow(d, start, s))
            start += s
        return tuple(out)

    def tensor_split(self: Tensor, sections: int, dim: int = 0) -> tuple[Tensor, ...]:
        n = self.shape[self._axis_nd(dim, "tensor_split")]
        if sections <= 0:
            raise ShapeError(
                f"tensor_split: sections must be positive, got {sections} ({describe(self)})"
            )
        q, r = divmod(n, sections)
        return self.split([q + 1] * r + [q] * (sections - r), dim)

    def chunk(self: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
        if chunks <= 0:
            raise ShapeError(f"chunk: chunks must be positive, got {chunks} ({describe(self)})")
        n = self.shape[self._axis_nd(dim, "chunk")]
        return self.split(max(-(-n // chunks), 1), dim)

    def select(self: Tensor, dim: int, index: int) -> Tensor:
        """A view of self at `index` along `dim`, which is removed (`x.select(0, i)` is
        `x[i]`)."""
        d = self._axis_nd(dim, "select")
        return self[(slice(None),) * d + (index,)]

    def unbind(self: Tensor, dim: int = 0) -> tuple[Tensor, ...]:
        d = self._axis_nd(dim, "unbind")
        return tuple(t.squeeze(d) for t in self.split(1, d))


def same_device(op: str, tensors: Sequence[Tensor]) -> str:
    devs = {t.device for t in tensors}
    if len(devs) > 1:
        raise DeviceError(f"{op}: tensors on different devices: {sorted(devs)}")
    return devs.pop()
