"""The remaining PyTorch activations as functions (re-exported by nn.functional) and
modules: relu6, hardtanh, hardsigmoid, hardswish, softsign, mish, celu, selu,
softmin; plus F.unfold (im2col), built on the Tensor methods."""

from __future__ import annotations

import math
from typing import Any

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
