"""Data types and PyTorch's type-promotion rules.

bfloat16 has no numpy dtype: it is stored as uint16 bit patterns, and the `ref` backend
computes on float32 values rounded to bfloat16 after every op (as PyTorch's CPU kernels do).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from anychip.errors import DTypeError


@dataclass(frozen=True, eq=False)
class DType:
    """One element type. `np` is the numpy dtype holding its storage."""

    name: str
    itemsize: int
    kind: str  # 'b' bool, 'u' unsigned int, 'i' signed int, 'f' float
    np: np.dtype[Any]

    @property
    def is_floating_point(self) -> bool:
        return self.kind == "f"

    @property
    def is_int(self) -> bool:
        return self.kind in "ui"

    def __repr__(self) -> str:
        return f"anychip.{self.name}"

    def __reduce__(self) -> str:  # pickle dtypes as the module-level singletons
        return self.name


bool_ = DType("bool", 1, "b", np.dtype(np.bool_))
uint8 = DType("uint8", 1, "u", np.dtype(np.uint8))
int8 = DType("int8", 1, "i", np.dtype(np.int8))
int16 = DType("int16", 2, "i", np.dtype(np.int16))
int32 = DType("int32", 4, "i", np.dtype(np.int32))
int64 = DType("int64", 8, "i", np.dtype(np.int64))
uint32 = DType("uint32", 4, "u", np.dtype(np.uint32))
uint64 = DType("uint64", 8, "u", np.dtype(np.uint64))
float16 = DType("float16", 2, "f", np.dtype(np.float16))
bfloat16 = DType("bfloat16", 2, "f", np.dtype(np.uint16))
float32 = DType("float32", 4, "f", np.dtype(np.float32))
float64 = DType("float64", 8, "f", np.dtype(np.float64))

ALL: tuple[DType, ...] = (
    bool_,
    uint8,
    int8,
    int16,
    int32,
    int64,
    uint32,
    uint64,
    float16,
    bfloat16,
    float32,
    float64,
)
BY_NAME: dict[str, DType] = {d.name: d for d in ALL}
BY_NAME.update(
    {
        "half": float16,
        "float": float32,
        "double": float64,
        "long": int64,
        "int": int32,
        "short": int16,
    }
)
FLOATS = (float16, bfloat16, float32, float64)
_FROM_NP = {d.np: d for d in ALL if d is not bfloat16}

default_float = float32
default_int = int64


def to_dtype(x: Any, op: str = "dtype") -> DType:
    """Accept a DType, its name, a numpy dtype or a Python type (`op` names the caller in
    the error message)."""
    if isinstance(x, DType):
        return x
    if isinstance(x, str) and x in BY_NAME:
        return BY_NAME[x]
    if x is bool:
        return bool_
    if x is int:
        return default_int
    if x is float:
        return default_float
    try:
        return _FROM_NP[np.dtype(x)]
    except (TypeError, KeyError):
        raise DTypeError(
            f"{op}: unknown dtype {x!r}; known: {', '.join(sorted(BY_NAME))}"
        ) from None


def from_numpy(d: np.dtype[Any]) -> DType:
    if d in _FROM_NP:
        return _FROM_NP[d]
    raise DTypeError(f"tensor: numpy dtype {d} is not supported")


def _category(d: DType) -> int:
    return {"b": 0, "u": 1, "i": 1, "f": 2}[d.kind]


def promote_types(a: DType, b: DType) -> DType:
    """PyTorch's `promote_types` for two tensor dtypes."""
    if a is b:
        return a
    ca, cb = _category(a), _category(b)
    if ca != cb:
        return a if ca > cb else b
    if ca == 2:
        if {a, b} == {float16, bfloat16}:
            return float32
        return a if a.itemsize > b.itemsize else b
    if ca == 1:
        if a.kind != b.kind:  # one signed, one unsigned: a signed type holding both
            u, s = (a, b) if a.kind == "u" else (b, a)
            if s.itemsize > u.itemsize:
                return s
            if u.itemsize == 8:  # no signed type holds both (torch refuses too)
                raise DTypeError(
                    f"promote_types: promotion of {u.name} with {s.name} is not supported "
                    "(no signed type holds every value of both); cast one first"
                )
            return {1: int16, 2: int32, 4: int64}[u.itemsize]
        return a if a.itemsize > b.itemsize else b
    return a


def result_type(*args: Any) -> DType:
    """PyTorch's `result_type`: tensors with dims outrank 0-d tensors, which outrank Python
    scalars, except that a higher category (bool < int < float) always wins."""
    dim_t: DType | None = None
    zero_t: DType | None = None
    scalar: DType | None = None
    for x in args:
        dt = getattr(x, "dtype", None)
        if isinstance(dt, DType):
            if len(x.shape) > 0:
                dim_t = dt if dim_t is None else promote_types(dim_t, dt)
            else:
                zero_t = dt if zero_t is None else promote_types(zero_t, dt)
        else:
            s = scalar_dtype(x)
            scalar = s if scalar is None else promote_types(scalar, s)
    out = dim_t
    for cand in (zero_t, scalar):
        if cand is None:
            continue
        if out is None or _category(cand) > _category(out):
            out = cand
    assert out is not None, "result_type needs at least one argument"
    return out


def scalar_dtype(x: Any) -> DType:
    if isinstance(x, (bool, np.bool_)):
        return bool_
    if isinstance(x, (int, np.integer)):
        return default_int
    if isinstance(x, (float, np.floating)):
        return default_float
    raise DTypeError(f"expected a tensor or a Python number, got {type(x).__name__}")


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """uint16 bfloat16 bit patterns -> float32 values (exact)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 values -> uint16 bfloat16 bit patterns, round to nearest even; NaN stays NaN."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), rounded)


def round_bf16(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16, still as float32."""
    return bf16_to_f32(f32_to_bf16(x))


def finfo_max(d: DType) -> float:
    if d is bfloat16:
        return float(bf16_to_f32(np.array([0x7F7F], np.uint16))[0])
    return float(np.finfo(d.np).max)


def min_value(d: DType) -> Any:
    """The identity of a max-reduction in dtype d."""
    if d.kind == "f":
        return -np.inf
    if d.kind == "b":
        return False
    return int(np.iinfo(d.np).min)


def max_value(d: DType) -> Any:
    if d.kind == "f":
        return np.inf
    if d.kind == "b":
        return True
    return int(np.iinfo(d.np).max)
