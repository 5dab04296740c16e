"""Batch and group normalisation: `BatchNorm1d/2d/3d` (running statistics, momentum,
train/eval) and `GroupNorm`, with their functional forms `batch_norm` and `group_norm`.

The running statistics are buffers updated out of autograd; each forward first computes
the previous update (a few numbers per channel), so their graph never grows across steps.
"""

from __future__ import annotations

import math
from typing import Any

from anychip.errors import ArgumentError, ShapeError, describe
from anychip.frontend.tensor import Tensor, no_grad, realize_together
from anychip.nn import init
from anychip.nn.layers import _empty
from anychip.nn.module import Module, Parameter


def _per_channel(t: Tensor, ndim: int) -> Tensor:
    """A (C,) tensor shaped (1, C, 1, ...) to broadcast over an (N, C, ...) input."""
    return t.reshape((1, t.shape[0]) + (1,) * (ndim - 2))


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Normalise each channel (dim 1) of an (N, C, ...) input by the batch's statistics
    (training; the running ones are then moved `momentum` of the way towards them) or by
    the running statistics (evaluation).

    >>> import anychip as ac
    >>> x = ac.tensor([[1.0], [3.0]])
    >>> F = ac.nn.functional
    >>> F.batch_norm(x, None, None, training=True).tolist()  # (x - 2) / sqrt(1 + 1e-5)
    [[-0.9999949932098389], [0.9999949932098389]]
    """
    if input.ndim < 2:
        raise ShapeError(f"batch_norm: expected an (N, C, ...) input, got {describe(input)}")
    axes = (0, *range(2, input.ndim))
    n = math.prod(input.shape[a] for a in axes)
    if training:
        if n <= 1:
            raise ArgumentError(
                "batch_norm: expected more than 1 value per channel when training, got "
                f"input of {describe(input)}"
            )
        x = input._wide()
        mean = x.mean(axes, keepdim=True)
        centred = x - mean
        var = (centred * centred).mean(axes, keepdim=True)  # biased, to normalise
        out = (centred / (var + eps).sqrt()).to(input.dtype)
        if running_mean is not None and running_var is not None:
            with no_grad():
                m = mean.detach().reshape(-1).to(running_mean.dtype)
                v = (var.detach().reshape(-1) * (n / (n - 1))).to(running_var.dtype)
                running_mean._assign(running_mean * (1 - momentum) + m * momentum, "batch_norm")
                running_var._assign(running_var * (1 - momentum) + v * momentum, "batch_norm")
    else:
        if running_mean is None or running_var is None:
            raise ArgumentError("batch_norm: running_mean and running_var are needed in eval")
        rm, rv = _per_channel(running_mean, input.ndim), _per_channel(running_var, input.ndim)
        out = (input - rm) / (rv + eps).sqrt()
    return _affine(out, weight, bias)


def group_norm(
    input: Tensor,
    num_groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Normalise each group of C / num_groups channels of an (N, C, ...) input over the
    group's channels and positions, then scale and shift per channel."""
    if input.ndim < 2 or input.shape[1] % num_groups:
        raise ShapeError(
            f"group_norm: expected an (N, C, ...) input with C divisible by num_groups="
            f"{num_groups}, got {describe(input)}"
        )
    n = input.shape[0]
    x = input._wide().reshape((n, num_groups, -1))  # (N, G, C/G * positions)
    centred = x - x.mean(2, keepdim=True)
    var = (centred * centred).mean(2, keepdim=True)
    out = (centred / (var + eps).sqrt()).reshape(input.shape).to(input.dtype)
    return _affine(out, weight, bias)


def _affine(out: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    """out * weight + bias, per channel (axis 1), each where given."""
    if weight is not None:
        out = out * _per_channel(weight, out.ndim)
    if bias is not None:
        out = out + _per_channel(bias, out.ndim)
    return out


class _BatchNorm(Module):
    _dims: tuple[int, ...] = ()  # the input ranks this class accepts

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = Parameter(_empty((num_features,), device, dtype))
            self.bias = Parameter(_empty((num_features,), device, dtype))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            like = _empty((num_features,), device, dtype)
            self.register_buffer("running_mean", like.zeros_like())
            self.register_buffer("running_var", like.zeros_like() + 1)
            self.register_buffer("num_batches_tracked", Tensor(0, device=like.device))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            with no_grad():
                self.running_mean.zero_()
                self.running_var.fill_(1)
                self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def forward(self, input: Tensor) -> Tensor:
        if input.ndim not in self._dims:
            raise ShapeError(
                f"{type(self).__name__}: expected "
                f"{' or '.join(f'{d}D' for d in self._dims)} input (got {input.ndim}D input: "
                f"{describe(input)})"
            )
        use_batch = self.training or not self.track_running_stats
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            # last step's update, computed now: its inputs are ready, and the chain of
            # running-statistic updates stays one step long
            realize_together([self.running_mean, self.running_var, self.num_batches_tracked])
            with no_grad():
                self.num_batches_tracked.add_(1)
            if self.momentum is None:  # a cumulative average: 1 / batches seen
                momentum = 1.0 / int(self.num_batches_tracked.item())
        stats = self.running_mean is not None and (self.training or not use_batch)
        return batch_norm(
            input,
            self.running_mean if stats else None,
            self.running_var if stats else None,
            self.weight,
            self.bias,
            use_batch,
            momentum,
            self.eps,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) inputs over N (and L) per channel.

    >>> import anychip as ac
    >>> bn = ac.nn.BatchNorm1d(3)
    >>> bn(ac.randn(8, 3)).shape, bn.running_mean.shape
    ((8, 3), (3,))
    """

    _dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) inputs over N, H and W per channel."""

    _dims = (4,)


class BatchNorm3d(_BatchNorm):
    """Batch normalisation of (N, C, D, H, W) inputs over N, D, H and W per channel."""

    _dims = (5,)


class GroupNorm(Module):
    """Normalise groups of channels of an (N, C, ...) input (per sample), then scale and
    shift per channel; the same in training and evaluation.

    >>> import anychip as ac
    >>> ac.nn.GroupNorm(2, 4)(ac.randn(3, 4, 5)).shape
    (3, 4, 5)
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if num_channels % num_groups:
            raise ArgumentError(
                f"GroupNorm: num_channels ({num_channels}) must be divisible by num_groups "
                f"({num_groups})"
            )
        self.num_groups, self.num_channels, self.eps, self.affine = (
            num_groups,
            num_channels,
            eps,
            affine,
        )
        if affine:
            self.weight = Parameter(_empty((num_channels,), device, dtype))
            self.bias = Parameter(_empty((num_channels,), device, dtype))
            init.ones_(self.weight)
            init.zeros_(self.bias)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, input: Tensor) -> Tensor:
        return group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "GroupNorm",
    "batch_norm",
    "group_norm",
]
