"""Weight initialisers (`anychip.nn.init`), with PyTorch's names, fans and gains.

Each fills a tensor in place from anychip's counter-based generator and returns it; the
values follow the same distributions as torch.nn.init (not the same numbers).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from anychip import dtypes
from anychip.errors import ArgumentError, ShapeError, describe
from anychip.frontend.random import rand, randn
from anychip.frontend.tensor import Tensor, no_grad


def _fill(tensor: Tensor, values: Tensor, op: str) -> Tensor:
    with no_grad():
        tensor._assign(values.to(tensor.dtype), op)
    return tensor


def _uniform01(tensor: Tensor) -> Tensor:
    # draw in float32 or better so narrow dtypes are only rounded once, at the end
    dt = dtypes.float64 if tensor.dtype is dtypes.float64 else dtypes.float32
    return rand(tensor.shape, dtype=dt, device=tensor.device)


def _normal01(tensor: Tensor) -> Tensor:
    dt = dtypes.float64 if tensor.dtype is dtypes.float64 else dtypes.float32
    return randn(tensor.shape, dtype=dt, device=tensor.device)


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0, generator: Any = None) -> Tensor:
    """Fill with values drawn from U(a, b).

    >>> import anychip as ac
    >>> w = ac.nn.init.uniform_(ac.empty(100), -1, 1)
    >>> bool((w.abs() <= 1).all())
    True
    """
    return _fill(tensor, _uniform01(tensor) * (b - a) + a, "uniform_")


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, generator: Any = None) -> Tensor:
    """Fill with values drawn from N(mean, std^2)."""
    return _fill(tensor, _normal01(tensor) * std + mean, "normal_")


def constant_(tensor: Tensor, val: float) -> Tensor:
    return _fill(tensor, Tensor._const(val, tensor.dtype, tensor.shape, tensor.device), "fill_")


def zeros_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 0.0)


def ones_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 1.0)


def eye_(tensor: Tensor) -> Tensor:
    if tensor.ndim != 2:
        raise ShapeError(f"eye_: only 2-d tensors are supported, got {describe(tensor)}")
    rows, cols = tensor.shape
    eye = Tensor(np.eye(rows, cols), dtype=tensor.dtype, device=tensor.device)
    return _fill(tensor, eye, "eye_")


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity (PyTorch's table).

    >>> import anychip as ac
    >>> round(ac.nn.init.calculate_gain("relu"), 4)
    1.4142
    """
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d")
    if nonlinearity in linear or nonlinearity == "sigmoid" or nonlinearity == "conv_transpose3d":
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        if isinstance(slope, bool) or not isinstance(slope, (int, float)):
            raise ArgumentError(f"calculate_gain: negative_slope {slope!r} is not a valid number")
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ArgumentError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _calculate_fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    """(fan_in, fan_out): dim 1 and dim 0 times the receptive field (dims 2 and up)."""
    if tensor.ndim < 2:
        raise ShapeError(
            "fan in and fan out can not be computed for a tensor with fewer than 2 "
            f"dimensions: {describe(tensor)}"
        )
    receptive = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _fan(tensor: Tensor, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ArgumentError(f"init: mode {mode!r} not supported, please use fan_in or fan_out")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, generator: Any = None) -> Tensor:
    """U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)) (Glorot and Bengio)."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    a = math.sqrt(3.0) * gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return uniform_(tensor, -a, a)


def xavier_normal_(tensor: Tensor, gain: float = 1.0, generator: Any = None) -> Tensor:
    """N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / float(fan_in + fan_out)))


def kaiming_uniform_(
    tensor: Tensor,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: Any = None,
) -> Tensor:
    """U(-bound, bound) with bound = gain * sqrt(3 / fan) (He et al.).

    >>> import anychip as ac
    >>> w = ac.nn.init.kaiming_uniform_(ac.empty(8, 6), a=5 ** 0.5)  # nn.Linear's default
    >>> bool((w.abs() <= 6 ** -0.5).all())
    True
    """
    if 0 in tensor.shape:
        return tensor
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(
    tensor: Tensor,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: Any = None,
) -> Tensor:
    """N(0, std^2) with std = gain / sqrt(fan)."""
    if 0 in tensor.shape:
        return tensor
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    return normal_(tensor, 0.0, std)


def _phi(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF in float64."""
    erf = np.frompyfunc(math.erf, 1, 1)
    return 0.5 * (1.0 + np.asarray(erf(x / math.sqrt(2.0)), dtype=np.float64))


def _truncated_standard(n: int, lo: float, hi: float) -> np.ndarray:
    """n draws of N(0, 1) conditioned on [lo, hi], from anychip's random stream."""
    mass = float(_phi(np.array([hi]))[0] - _phi(np.array([lo]))[0])
    if mass > 0.05:  # rejection: exact and cheap when the interval holds most of the mass
        out = np.empty(0)
        while out.size < n:
            want = int((n - out.size) / mass * 1.1) + 16
            z = randn(want, dtype=dtypes.float64, device="ref").numpy()
            out = np.concatenate([out, z[(z >= lo) & (z <= hi)]])
        return out[:n]
    # inverse CDF by bisection for narrow or far-out intervals (rare, so slow is fine)
    u = rand(n, dtype=dtypes.float64, device="ref").numpy()
    target = _phi(np.array([lo]))[0] + u * mass
    a, b = np.full(n, lo), np.full(n, hi)
    for _ in range(60):
        mid = (a + b) / 2
        below = _phi(mid) < target
        a, b = np.where(below, mid, a), np.where(below, b, mid)
    return np.asarray((a + b) / 2)


def trunc_normal_(
    tensor: Tensor,
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
    generator: Any = None,
) -> Tensor:
    """N(mean, std^2) truncated to [a, b] (a and b are absolute values, as in PyTorch).

    >>> import anychip as ac
    >>> w = ac.nn.init.trunc_normal_(ac.empty(1000), std=1.0, a=-0.5, b=0.5)
    >>> bool((w.abs() <= 0.5).all())
    True
    """
    if b < a:
        raise ArgumentError(f"trunc_normal_: empty interval [a={a}, b={b}]")
    z = _truncated_standard(tensor.numel(), (a - mean) / std, (b - mean) / std)
    vals = np.clip(z * std + mean, a, b).reshape(tensor.shape)
    return _fill(tensor, Tensor(vals, dtype=dtypes.float64, device=tensor.device), "trunc_normal_")


__all__ = [
    "calculate_gain",
    "constant_",
    "eye_",
    "kaiming_normal_",
    "kaiming_uniform_",
    "normal_",
    "ones_",
    "trunc_normal_",
    "uniform_",
    "xavier_normal_",
    "xavier_uniform_",
    "zeros_",
]
