"""Pooling and resizing layers: MaxPool, AvgPool, AdaptiveAvgPool/AdaptiveMaxPool,
MaxUnpool and Upsample, thin modules over `frontend/pool.py`."""

from __future__ import annotations

from typing import Any

from anychip.errors import ArgumentError
from anychip.frontend import pool as P, resize as R
from anychip.frontend.tensor import Tensor
from anychip.nn.module import Module


class _MaxPoolNd(Module):
    nd = 0

    def __init__(
        self,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        dilation: Any = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.return_indices, self.ceil_mode = dilation, return_indices, ceil_mode

    def forward(self, input: Tensor) -> Any:
        return P.max_pool(
            input, self.nd, self.kernel_size, self.stride, self.padding, self.dilation,
            self.ceil_mode, self.return_indices, type(self).__name__,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool1d(_MaxPoolNd):
    """Max over sliding windows of (N, C, L)."""

    nd = 1


class MaxPool2d(_MaxPoolNd):
    """Max over sliding windows of (N, C, H, W).

    >>> import anychip as ac
    >>> ac.nn.MaxPool2d(2)(ac.ones(1, 3, 8, 8)).shape
    (1, 3, 4, 4)
    """

    nd = 2


class MaxPool3d(_MaxPoolNd):
    """Max over sliding windows of (N, C, D, H, W)."""

    nd = 3


class _AvgPoolNd(Module):
    nd = 0

    def __init__(
        self,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad
        self.divisor_override = divisor_override

    def forward(self, input: Tensor) -> Tensor:
        return P.avg_pool(
            input, self.nd, self.kernel_size, self.stride, self.padding, self.ceil_mode,
            self.count_include_pad, self.divisor_override, type(self).__name__,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool1d(_AvgPoolNd):
    """Mean over sliding windows of (N, C, L)."""

    nd = 1


class AvgPool2d(_AvgPoolNd):
    """Mean over sliding windows of (N, C, H, W).

    >>> import anychip as ac
    >>> ac.nn.AvgPool2d(2)(ac.ones(1, 3, 8, 8)).shape
    (1, 3, 4, 4)
    """

    nd = 2


class AvgPool3d(_AvgPoolNd):
    """Mean over sliding windows of (N, C, D, H, W)."""

    nd = 3


class _AdaptiveNd(Module):
    nd = 0
    kind = "avg"

    def __init__(self, output_size: Any, return_indices: bool = False) -> None:
        super().__init__()
        self.output_size, self.return_indices = output_size, return_indices

    def forward(self, input: Tensor) -> Tensor:
        name = type(self).__name__
        if self.kind == "avg":
            return P.adaptive_avg_pool(input, self.nd, self.output_size, name)
        if self.return_indices:
            raise ArgumentError(f"{name}: return_indices=True is not supported")
        return P.adaptive_max_pool(input, self.nd, self.output_size, name)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveAvgPool1d(_AdaptiveNd):
    nd = 1


class AdaptiveAvgPool2d(_AdaptiveNd):
    """Average pooling to a fixed output size.

    >>> import anychip as ac
    >>> ac.nn.AdaptiveAvgPool2d((1, 1))(ac.ones(2, 3, 7, 7)).shape
    (2, 3, 1, 1)
    """

    nd = 2


class AdaptiveAvgPool3d(_AdaptiveNd):
    nd = 3


class AdaptiveMaxPool1d(_AdaptiveNd):
    nd, kind = 1, "max"


class AdaptiveMaxPool2d(_AdaptiveNd):
    nd, kind = 2, "max"


class _MaxUnpoolNd(Module):
    nd = 0

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, input: Tensor, indices: Tensor, output_size: Any = None) -> Tensor:
        return P.max_unpool(
            input, indices, self.nd, self.kernel_size, self.stride, self.padding, output_size,
            type(self).__name__,
        )  # fmt: skip


class MaxUnpool1d(_MaxUnpoolNd):
    nd = 1


class MaxUnpool2d(_MaxUnpoolNd):
    """Inverse of MaxPool2d: values back at the positions its indices name, zeros elsewhere."""

    nd = 2


class Upsample(Module):
    """Resize by `size` or `scale_factor` ('nearest', 'linear', 'bilinear', 'trilinear').

    >>> import anychip as ac
    >>> ac.nn.Upsample(scale_factor=2)(ac.ones(1, 1, 2, 2)).shape
    (1, 1, 4, 4)
    """

    def __init__(
        self,
        size: Any = None,
        scale_factor: Any = None,
        mode: str = "nearest",
        align_corners: bool | None = None,
        recompute_scale_factor: bool | None = None,
    ) -> None:
        super().__init__()
        self.size, self.scale_factor, self.mode = size, scale_factor, mode
        self.align_corners, self.recompute_scale_factor = align_corners, recompute_scale_factor

    def forward(self, input: Tensor) -> Tensor:
        return R.interpolate(
            input, self.size, self.scale_factor, self.mode, self.align_corners,
            self.recompute_scale_factor,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return f"size={self.size}, scale_factor={self.scale_factor}, mode={self.mode!r}"
