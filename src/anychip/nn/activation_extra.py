"""The remaining PyTorch activations as functions (re-exported by nn.functional) and
modules: relu6, hardtanh, hardsigmoid, hardswish, softsign, mish, celu, selu,
softmin; plus F.unfold (im2col) and F.fold (col2im) with their modules, built on the
Tensor methods."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from anychip.errors import ShapeError, describe
from anychip.frontend.conv import im2col, ntuple
from anychip.frontend.tensor import Tensor
from anychip.nn.module import Module


def relu6(input: Tensor, inplace: bool = False) -> Tensor:
    return input.relu6()


def hardtanh(
    input: Tensor, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False
) -> Tensor:
    return input.hardtanh(min_val, max_val)


def hardsigmoid(input: Tensor, inplace: bool = False) -> Tensor:
    return input.hardsigmoid()


def hardswish(input: Tensor, inplace: bool = False) -> Tensor:
    return input.hardswish()


def softsign(input: Tensor) -> Tensor:
    return input.softsign()


def mish(input: Tensor, inplace: bool = False) -> Tensor:
    return input.mish()


def celu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    return input.celu(alpha)


def selu(input: Tensor, inplace: bool = False) -> Tensor:
    return input.selu()


def softmin(input: Tensor, dim: int | None = None, dtype: Any = None) -> Tensor:
    return input.softmin(dim if dim is not None else (0 if input.ndim in (0, 1, 3) else 1), dtype)


def unfold(
    input: Tensor, kernel_size: Any, dilation: Any = 1, padding: Any = 0, stride: Any = 1
) -> Tensor:
    """im2col: (N, C, H, W) -> (N, C*kh*kw, L), every sliding block as a column.

    >>> import anychip as ac
    >>> unfold(ac.ones(1, 2, 4, 4), 2).shape
    (1, 8, 9)
    """
    nd = input.ndim - 2
    k = ntuple(kernel_size, nd, "kernel_size", "unfold")
    d = ntuple(dilation, nd, "dilation", "unfold")
    p = ntuple(padding, nd, "padding", "unfold")
    s = ntuple(stride, nd, "stride", "unfold")
    x = input._pad_zero([(0, 0), (0, 0), *((q, q) for q in p)])
    n, c = input.shape[:2]
    return im2col(x, k, s, d).reshape(n, c * math.prod(k), -1)


def fold(
    input: Tensor,
    output_size: Any,
    kernel_size: Any,
    dilation: Any = 1,
    padding: Any = 0,
    stride: Any = 1,
) -> Tensor:
    """col2im, unfold's adjoint: (N, C*kh*kw, L) -> (N, C, H, W), each column's values added
    at its block's positions (overlaps sum), as torch.nn.functional.fold. One index_add
    into the padded plane, then the padding cropped.

    >>> import anychip as ac
    >>> fold(ac.ones(1, 4, 4), (3, 3), 2).tolist()
    [[[[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]]]
    """
    batched = input.ndim == 3
    x = input if batched else input.unsqueeze(0)
    if x.ndim != 3:
        raise ShapeError(f"fold: expected a 2-d or 3-d input, got {describe(input)}")
    out = ntuple(output_size, 2, "output_size", "fold")
    k, d = ntuple(kernel_size, 2, "kernel_size", "fold"), ntuple(dilation, 2, "dilation", "fold")
    p, s = ntuple(padding, 2, "padding", "fold"), ntuple(stride, 2, "stride", "fold")
    size = [o + 2 * q for o, q in zip(out, p)]
    blocks = [(z - dd * (kk - 1) - 1) // st + 1 for z, dd, kk, st in zip(size, d, k, s)]
    n, ck, length = x.shape
    kk = k[0] * k[1]
    if ck % kk or length != blocks[0] * blocks[1] or min(blocks) < 1:
        raise ShapeError(
            f"fold: input {describe(input)} does not fit output_size {tuple(out)} with "
            f"kernel_size {k}, dilation {d}, padding {p}, stride {s}: expected dim 1 divisible "
            f"by {kk} and {max(blocks[0], 0) * max(blocks[1], 0)} blocks"
        )
    c = ck // kk
    # the plane position of kernel offset (ki, kj) in block (bi, bj), as (kh*kw*L,) indices
    ki, kj, bi, bj = np.meshgrid(
        np.arange(k[0]), np.arange(k[1]), np.arange(blocks[0]), np.arange(blocks[1]),
        indexing="ij",
    )  # fmt: skip
    rows = bi * s[0] + ki * d[0]
    cols = bj * s[1] + kj * d[1]
    idx = Tensor((rows * size[1] + cols).reshape(-1), device=x.device)
    plane = Tensor._const(0, x.dtype, (n, c, size[0] * size[1]), x.device)
    y = plane.index_add(2, idx, x.reshape(n, c, kk * length)).reshape(n, c, *size)
    y = y[:, :, p[0] : p[0] + out[0], p[1] : p[1] + out[1]]
    return y if batched else y.squeeze(0)


class _Act(Module):
    def extra_repr(self) -> str:
        return ""


class ReLU6(_Act):
    def forward(self, input: Tensor) -> Tensor:
        return input.relu6()


class Hardtanh(_Act):
    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        self.min_val, self.max_val = min_val, max_val

    def forward(self, input: Tensor) -> Tensor:
        return input.hardtanh(self.min_val, self.max_val)


class Hardsigmoid(_Act):
    def forward(self, input: Tensor) -> Tensor:
        return input.hardsigmoid()


class Hardswish(_Act):
    def forward(self, input: Tensor) -> Tensor:
        return input.hardswish()


class Softsign(_Act):
    def forward(self, input: Tensor) -> Tensor:
        return input.softsign()


class LogSigmoid(_Act):
    def forward(self, input: Tensor) -> Tensor:
        return input.logsigmoid()


class Mish(_Act):
    def forward(self, input: Tensor) -> Tensor:
        return input.mish()


class CELU(_Act):
    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, input: Tensor) -> Tensor:
        return input.celu(self.alpha)


class SELU(_Act):
    def forward(self, input: Tensor) -> Tensor:
        return input.selu()


class Softmin(_Act):
    """softmax(-x) along `dim`.

    >>> import anychip as ac
    >>> ac.nn.Softmin(dim=0)(ac.tensor([0.0, 0.0])).tolist()
    [0.5, 0.5]
    """

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:
        return softmin(input, self.dim)


class Unfold(Module):
    """nn.Unfold: F.unfold with fixed arguments."""

    def __init__(
        self, kernel_size: Any, dilation: Any = 1, padding: Any = 0, stride: Any = 1
    ) -> None:
        super().__init__()
        self.kernel_size, self.dilation = kernel_size, dilation
        self.padding, self.stride = padding, stride

    def forward(self, input: Tensor) -> Tensor:
        return unfold(input, self.kernel_size, self.dilation, self.padding, self.stride)


class Fold(Module):
    """nn.Fold: F.fold with fixed arguments."""

    def __init__(
        self,
        output_size: Any,
        kernel_size: Any,
        dilation: Any = 1,
        padding: Any = 0,
        stride: Any = 1,
    ) -> None:
        super().__init__()
        self.output_size, self.kernel_size = output_size, kernel_size
        self.dilation, self.padding, self.stride = dilation, padding, stride

    def forward(self, input: Tensor) -> Tensor:
        return fold(
            input, self.output_size, self.kernel_size, self.dilation, self.padding, self.stride
        )
