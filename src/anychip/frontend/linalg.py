"""Contractions: matmul (`@`) and einsum.

A contraction is a broadcast multiply followed by a sum over the shared axis; the compiler
recognises that pattern and gives it a tiled kernel. Half-precision inputs accumulate in
float32 and round once at the end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from anychip import dtypes
from anychip.errors import DTypeError, ShapeError, describe
from anychip.frontend.elementwise import broadcast_shapes

if TYPE_CHECKING:
    from anychip.frontend.tensor import Tensor

HALF = (dtypes.float16, dtypes.bfloat16)


def contract(a: Tensor, b: Tensor, axis: int) -> Tensor:
    """sum(a * b, axis) for a and b of one shape, accumulating halves in float32."""
    if a.dtype in HALF:
        out_dtype = a.dtype
        a, b = a.to(dtypes.float32), b.to(dtypes.float32)
        return (a * b).sum(axis).to(out_dtype)
    return (a * b).sum(axis)


class LinalgMixin:
    __slots__ = ()

    def matmul(self: Tensor, other: Tensor) -> Tensor:
        """Matrix product with numpy/PyTorch semantics: 1-d operands are promoted to
        matrices and back, leading (batch) dimensions broadcast.

        >>> import anychip as ac
        >>> (ac.ones(2, 3) @ ac.ones(3)).tolist()
        [3.0, 3.0]
        """
        from anychip.frontend.tensor import to_tensor

        other = to_tensor(other, like=self)
        if self.ndim == 0 or other.ndim == 0:
            raise ShapeError(
                f"matmul: both arguments need at least 1 dimension, got {describe(self, other)}"
            )
        if self.dtype is not other.dtype:
            raise DTypeError(
                f"matmul: expected both operands to have the same dtype, got "
                f"{describe(self, other)}"
            )
        if self.dtype is dtypes.bool_:
            raise DTypeError(f"matmul: not implemented for bool, got {describe(self, other)}")
        a = self.unsqueeze(0) if self.ndim == 1 else self
        b = other.unsqueeze(-1) if other.ndim == 1 else other
        if a.shape[-1] != b.shape[-2]:
            raise ShapeError(
                f"matmul: shapes cannot be multiplied ({a.shape[-2]}x{a.shape[-1]}"
                f" and {b.shape[-2]}x{b.shape[-1]}): {describe(self, other)}"
            )
        batch = broadcast_shapes("matmul", _Shape(a.shape[:-2]), _Shape(b.shape[:-2]))
        m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
        full = (*batch, m, k, n)
        out = contract(a.unsqueeze(-1)._broadcast(full), b.unsqueeze(-3)._broadcast(full), -2)
        if self.ndim == 1:
            out = out.squeeze(-2)
        if other.ndim == 1:
            out = out.squeeze(-1)
        return out

    def __matmul__(self: Tensor, other: Any) -> Tensor:
        return self.matmul(other)

    def __rmatmul__(self: Tensor, other: Any) -> Tensor:
        from anychip.frontend.tensor import to_tensor

        return to_tensor(other, like=self).matmul(self)

    def mm(self: Tensor, other: Tensor) -> Tensor:
        if self.ndim != 2 or other.ndim != 2:
            raise ShapeError(f"mm: expects 2-d tensors, got {describe(self, other)}")
        return self.matmul(other)

    def bmm(self: Tensor, other: Tensor) -> Tensor:
        if self.ndim != 3 or other.ndim != 3 or self.shape[0] != other.shape[0]:
            raise ShapeError(
                f"bmm: expects 3-d tensors with equal batch, got {describe(self, other)}"
            )
        return self.matmul(other)

    def dot(self: Tensor, other: Tensor) -> Tensor:
        if self.ndim != 1 or other.ndim != 1 or self.shape != other.shape:
            raise ShapeError(
                f"dot: expects two 1-d tensors of equal size, got {describe(self, other)}"
            )
        return self.matmul(other)


class _Shape:
    """Something with a .shape, for broadcast_shapes on bare shapes."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.dtype = dtypes.float32
        self.device = "-"
