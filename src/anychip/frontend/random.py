"""Random tensors from a counter-based generator (Philox-4x64), seeded by `manual_seed`.

The stream is a pure function of (seed, counter): the n-th value drawn after
`manual_seed(s)` is the same on every device and every machine, because values are drawn
in host memory from Philox and only then copied to the tensor's device.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from anychip import dtypes
from anychip.errors import DTypeError, ShapeError
from anychip.frontend.movement import _int_sizes, _shape_arg
from anychip.frontend.tensor import Tensor
from anychip.runtime import device as devmod

_lock = threading.Lock()
_state = {"seed": 0, "counter": 0}  # one stream per process, as torch's CPU generator
_thread = threading.local()  # per thread: how often it drew or reseeded (for anychip.jit)


def _touch() -> None:
    _thread.uses = getattr(_thread, "uses", 0) + 1


def thread_uses() -> int:
    """How many times this thread has drawn from or reseeded the stream: `anychip.jit`
    compares it around a capture, so draws in other threads do not count against it."""
    return int(getattr(_thread, "uses", 0))


def manual_seed(seed: int) -> None:
    """Restart the random stream at `seed` (same seed, same numbers, on every device).

    >>> import anychip as ac
    >>> ac.manual_seed(0); a = ac.rand(3).tolist()
    >>> ac.manual_seed(0); a == ac.rand(3).tolist()
    True
    """
    _touch()
    with _lock:
        _state["seed"] = int(seed) & (2**64 - 1)
        _state["counter"] = 0


def initial_seed() -> int:
    return _state["seed"]


def get_rng_state() -> tuple[int, int]:
    return _state["seed"], _state["counter"]


def set_rng_state(state: tuple[int, int]) -> None:
    _touch()
    with _lock:
        _state["seed"], _state["counter"] = int(state[0]), int(state[1])


def _raw(n: int) -> np.ndarray:
    """The next n 64-bit words of the stream; the counter advances by whole Philox blocks."""
    _touch()
    with _lock:
        blocks = -(-n // 4)
        bitgen = np.random.Philox(key=_state["seed"], counter=_state["counter"])
        _state["counter"] += blocks
    return bitgen.random_raw(blocks * 4)[:n]


def _uniform(n: int) -> np.ndarray:
    """n float64 values in [0, 1), 53 random bits each."""
    return (_raw(n) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _size(op: str, size: Any) -> tuple[int, ...]:
    shape = tuple(_int_sizes(_shape_arg(size), op))
    if any(s < 0 for s in shape):
        raise ShapeError(f"{op}: negative dimension in size {shape}")
    return shape


def _make(
    op: str,
    vals: np.ndarray,
    shape: tuple[int, ...],
    dt: dtypes.DType,
    device: Any,
    requires_grad: bool,
) -> Tensor:
    dev = devmod.canonical(device, op, f"shape {shape}, dtype {dt.name}")
    return Tensor(vals.reshape(shape), dtype=dt, device=dev, requires_grad=requires_grad)


# significand bits (with the implicit one) of the narrow floats: the largest value below 1
# is 1 - 2**-bits
_MANTISSA_BITS = {"float32": 24, "float16": 11, "bfloat16": 8}


def _float_dtype(op: str, dtype: Any) -> dtypes.DType:
    dt = dtypes.to_dtype(dtype, op) if dtype is not None else dtypes.default_float
    if not dt.is_floating_point:
        raise DTypeError(f"{op}: expected a floating point dtype, got {dt.name}")
    return dt


def rand(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """Uniform values in [0, 1)."""
    shape = _size("rand", size)
    dt = _float_dtype("rand", dtype)
    u = _uniform(math.prod(shape))
    if dt is not dtypes.float64:  # never round up to 1.0 in a narrower type
        u = np.minimum(u, 1.0 - 2.0 ** -_MANTISSA_BITS[dt.name])
    return _make("rand", u, shape, dt, device, requires_grad)


def randn(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """Standard normal values (Box-Muller on pairs of uniforms)."""
    shape = _size("randn", size)
    dt = _float_dtype("randn", dtype)
    n = math.prod(shape)
    u = _uniform(2 * -(-n // 2)).reshape(2, -1)
    r = np.sqrt(-2.0 * np.log1p(-u[0]))  # 1 - u in (0, 1]: log is finite
    z = np.concatenate([r * np.cos(2 * np.pi * u[1]), r * np.sin(2 * np.pi * u[1])])[:n]
    return _make("randn", z, shape, dt, device, requires_grad)


def randint(
    low: int, high: int | None = None, size: Any = (), dtype: Any = None, device: Any = None
) -> Tensor:
    """Integers in [low, high); `randint(high, size)` as in torch.

    >>> import anychip as ac
    >>> ac.manual_seed(0); ac.randint(3, (4,)).shape
    (4,)
    """
    if isinstance(high, (tuple, list)):  # randint(high, size)
        low, high, size = 0, low, high
    if high is None:
        low, high = 0, low
    if high <= low:
        raise ShapeError(f"randint: expects low < high, got low={low}, high={high}")
    shape = _size("randint", size if isinstance(size, (tuple, list)) else (size,))
    dt = dtypes.to_dtype(dtype, "randint") if dtype is not None else dtypes.int64
    span = high - low
    vals = low + np.floor(_uniform(math.prod(shape)) * span).astype(np.int64)
    return _make("randint", vals, shape, dt, device, False)


def randperm(n: int, dtype: Any = None, device: Any = None) -> Tensor:
    keys = _raw(n)
    return Tensor(np.argsort(keys, kind="stable"), dtype=dtype or dtypes.int64, device=device)


def rand_like(t: Tensor, dtype: Any = None) -> Tensor:
    return rand(t.shape, dtype=dtype or t.dtype, device=t.device)


def randn_like(t: Tensor, dtype: Any = None) -> Tensor:
    return randn(t.shape, dtype=dtype or t.dtype, device=t.device)
