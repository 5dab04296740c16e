"""Free functions and small types PyTorch code expects at the top level: `from_numpy`,
`as_tensor`, `allclose`/`isclose`/`equal`, `unique`, `bincount`, `Size`, the default dtype,
`inference_mode` and a seeded `Generator` (for DataLoader shuffling).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from anychip import dtypes
from anychip.errors import DTypeError
from anychip.frontend.habits import Size
from anychip.frontend.tensor import Tensor, _grad_mode, is_grad_enabled, to_tensor


def from_numpy(ndarray: np.ndarray) -> Tensor:
    """A tensor with the array's values and dtype (float64 stays float64). Unlike torch
    it is a copy: anychip tensors are values, so later writes to the array do not show."""
    if not isinstance(ndarray, np.ndarray):
        raise DTypeError(f"from_numpy: expected np.ndarray (got {type(ndarray).__name__})")
    return Tensor(ndarray)


def as_tensor(data: Any, dtype: Any = None, device: Any = None) -> Tensor:
    """`data` as a tensor: a tensor already of that dtype and device comes back as is."""
    if isinstance(data, Tensor):
        return data.to(*(a for a in (device, dtype) if a is not None))
    return Tensor(data, dtype=dtype, device=device)


def isclose(
    input: Any, other: Any, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False
) -> Tensor:
    return to_tensor(input).isclose(other, rtol, atol, equal_nan)


def allclose(
    input: Any, other: Any, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False
) -> bool:
    return to_tensor(input).allclose(other, rtol, atol, equal_nan)


def equal(input: Tensor, other: Tensor) -> bool:
    return to_tensor(input).equal(to_tensor(other))


def unique(
    input: Tensor,
    sorted: bool = True,
    return_inverse: bool = False,
    return_counts: bool = False,
    dim: int | None = None,
) -> Any:
    return input.unique(sorted, return_inverse, return_counts, dim)


def bincount(input: Tensor, weights: Tensor | None = None, minlength: int = 0) -> Tensor:
    return input.bincount(weights, minlength)


def set_default_dtype(d: Any) -> None:
    """The dtype of float tensors made from Python floats (float32 unless changed);
    only floating dtypes, as in torch."""
    dt = dtypes.to_dtype(d, "set_default_dtype")
    if not dt.is_floating_point:
        raise DTypeError(f"set_default_dtype: only floating-point types are supported, got {dt}")
    dtypes.default_float = dt


def get_default_dtype() -> dtypes.DType:
    return dtypes.default_float


_INFERENCE = [False]


class inference_mode(contextlib.ContextDecorator):
    """`torch.inference_mode`: no autograd recording inside (a context manager or a
    decorator); `inference_mode(False)` changes nothing."""

    def __init__(self, mode: bool = True) -> None:
        self.mode = mode
        self._stack: list[contextlib.ExitStack] = []

    def __enter__(self) -> None:
        stack = contextlib.ExitStack()
        if self.mode:
            stack.enter_context(_grad_mode(False))
            stack.enter_context(_flag(True))
        self._stack.append(stack)

    def __exit__(self, *exc: Any) -> None:
        self._stack.pop().close()


@contextlib.contextmanager
def _flag(on: bool) -> Iterator[None]:
    prev = _INFERENCE[0]
    _INFERENCE[0] = on
    try:
        yield
    finally:
        _INFERENCE[0] = prev


def is_inference_mode_enabled() -> bool:
    return _INFERENCE[0] and not is_grad_enabled()


class Generator:
    """A seeded source of randomness for data loading (`DataLoader(shuffle=True,
    generator=g)`), as `torch.Generator`; same seed, same order."""

    def __init__(self, device: Any = None) -> None:
        self._seed = int(np.random.SeedSequence().entropy) % (1 << 63)  # type: ignore[arg-type]
        self.rng = np.random.default_rng(self._seed)

    def manual_seed(self, seed: int) -> Generator:
        self._seed = int(seed)
        self.rng = np.random.default_rng(self._seed)
        return self

    def initial_seed(self) -> int:
        return self._seed

    def seed(self) -> int:
        return self.manual_seed(int(np.random.SeedSequence().entropy) % (1 << 63))._seed  # type: ignore[arg-type]


__all__ = [
    "Generator",
    "Size",
    "allclose",
    "as_tensor",
    "bincount",
    "equal",
    "from_numpy",
    "get_default_dtype",
    "inference_mode",
    "is_inference_mode_enabled",
    "isclose",
    "set_default_dtype",
    "unique",
]
