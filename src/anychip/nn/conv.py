"""Convolution layers: Conv1d/2d/3d and ConvTranspose1d/2d/3d, initialised as in PyTorch
(kaiming_uniform_ with a=sqrt(5), bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)))."""

from __future__ import annotations

import math
from typing import Any

from anychip.errors import ArgumentError
from anychip.frontend import conv as C
from anychip.frontend.tensor import Tensor
from anychip.nn import init
from anychip.nn.layers import _empty
from anychip.nn.module import Module, Parameter


class _ConvNd(Module):
    nd = 0
    transposed = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
        output_padding: Any = 0,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ArgumentError(
                f"{name}: in_channels {in_channels} and out_channels {out_channels} must be "
                f"divisible by groups {groups}"
            )
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ArgumentError(f"{name}: unknown padding_mode {padding_mode!r}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = C.ntuple(kernel_size, self.nd, "kernel_size", name)
        self.stride = C.ntuple(stride, self.nd, "stride", name)
        self.padding = (
            padding if isinstance(padding, str) else C.ntuple(padding, self.nd, "padding", name)
        )
        self.dilation = C.ntuple(dilation, self.nd, "dilation", name)
        self.output_padding = C.ntuple(output_padding, self.nd, "output_padding", name)
        self.padding_mode = padding_mode
        if self.transposed:
            shape = (in_channels, out_channels // groups, *self.kernel_size)
        else:
            shape = (out_channels, in_channels // groups, *self.kernel_size)
        self.weight = Parameter(_empty(shape, device, dtype))
        if bias:
            self.bias: Parameter | None = Parameter(_empty((out_channels,), device, dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * math.prod(self.kernel_size)
            if fan_in:
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        if self.padding != (0,) * self.nd:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self.nd:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + ("" if self.bias is not None else ", bias=False")


class _Conv(_ConvNd):
    def forward(self, input: Tensor) -> Tensor:
        x = input
        padding: tuple[int, ...] | str | int = self.padding
        if self.padding_mode != "zeros":
            # pad by the mode first, then convolve without padding (as torch does)
            if isinstance(self.padding, str):
                same = self.padding == "same"
                pairs = C._same_pads(self.kernel_size, self.dilation) if same else []
            else:
                pairs = [(p, p) for p in self.padding]
            flat = [v for lo_hi in reversed(pairs) for v in lo_hi]
            x = x.pad(flat, mode=self.padding_mode)
            padding = 0
        return C.conv_nd(
            x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups,
            self.nd, type(self).__name__.lower(),
        )  # fmt: skip


class Conv1d(_Conv):
    """1-d convolution over (N, C, L) inputs.

    >>> import anychip as ac
    >>> ac.nn.Conv1d(2, 4, 3, padding=1)(ac.ones(1, 2, 5)).shape
    (1, 4, 5)
    """

    nd = 1


class Conv2d(_Conv):
    """2-d convolution over (N, C, H, W) inputs.

    >>> import anychip as ac
    >>> ac.nn.Conv2d(3, 8, 3, stride=2, padding=1)(ac.ones(2, 3, 8, 8)).shape
    (2, 8, 4, 4)
    """

    nd = 2


class Conv3d(_Conv):
    """3-d convolution over (N, C, D, H, W) inputs."""

    nd = 3


class _ConvTranspose(_ConvNd):
    transposed = True

    def __init__(  # torch's argument order differs from Conv's after padding
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        output_padding: Any = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: Any = 1,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        if padding_mode != "zeros" or isinstance(padding, str):
            raise ArgumentError(
                f"{type(self).__name__}: only padding_mode='zeros' and int padding are "
                f"supported, got {padding_mode!r} and {padding!r}"
            )
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, device, dtype, output_padding,
        )  # fmt: skip

    def forward(self, input: Tensor, output_size: Any = None) -> Tensor:
        opad, pads = self.output_padding, self.padding
        assert not isinstance(pads, str)  # __init__ refuses string padding here
        if output_size is not None:  # choose output_padding to reach the requested size
            want = tuple(output_size)[-self.nd :]
            sp = input.shape[-self.nd :]
            base = [
                (i - 1) * s - 2 * p + d * (k - 1) + 1
                for i, s, p, d, k in zip(sp, self.stride, pads, self.dilation, self.kernel_size)
            ]
            opad = tuple(w - b for w, b in zip(want, base))
        return C.conv_transpose_nd(
            input, self.weight, self.bias, self.stride, pads, opad, self.groups,
            self.dilation, self.nd, type(self).__name__.lower(),
        )  # fmt: skip


class ConvTranspose1d(_ConvTranspose):
    """1-d transposed convolution over (N, Cin, L) inputs."""

    nd = 1


class ConvTranspose2d(_ConvTranspose):
    """2-d transposed convolution over (N, Cin, H, W) inputs.

    >>> import anychip as ac
    >>> ac.nn.ConvTranspose2d(4, 2, 2, stride=2)(ac.ones(1, 4, 3, 3)).shape
    (1, 2, 6, 6)
    """

    nd = 2


class ConvTranspose3d(_ConvTranspose):
    """3-d transposed convolution over (N, Cin, D, H, W) inputs."""

    nd = 3
