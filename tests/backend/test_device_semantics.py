"""Edge-case semantics every device shares with `ref` exactly: integer division and
remainder by zero and of INT_MIN by -1, wrapping integer arithmetic, NaN-propagating
max/min, and halves computed in float32 and rounded after every op."""

from __future__ import annotations

import numpy as np
import pytest

import anychip as ac
from anychip.ir.ops import Ops  # DIV/MOD tested exactly as the primitives define them

INTS = np.array([7, -7, 0, 5, -128, 127, -1, 3], np.int64)
DIVS = np.array([2, 2, 0, 0, -1, -1, -1, -5], np.int64)


def both(fn, *arrays: np.ndarray, device: str) -> tuple[np.ndarray, np.ndarray]:
    got = fn(*[ac.tensor(a, device=device) for a in arrays]).numpy()
    want = fn(*[ac.tensor(a, device="ref") for a in arrays]).numpy()
    return got, want


@pytest.mark.parametrize("dtype", ["int8", "int32", "int64", "uint8"])
def test_integer_division_and_remainder(dtype: str, device: str) -> None:
    a, b = INTS.astype(dtype), DIVS.astype(dtype)
    for fn in (lambda x, y: x._prim(Ops.DIV, y), lambda x, y: x._prim(Ops.MOD, y)):
        got, want = both(fn, a, b, device=device)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", ["int8", "int16", "uint8", "int32"])
def test_integer_arithmetic_wraps(dtype: str, device: str) -> None:
    a = np.array([100, 120, -100, 7], np.int64).astype(dtype)
    got, want = both(lambda x: x * x + x, a, device=device)
    np.testing.assert_array_equal(got, want)
    got, want = both(lambda x: x.sum(), a, device=device)
    np.testing.assert_array_equal(got, want)


def test_max_min_propagate_nan(device: str) -> None:
    a = np.array([1.0, np.nan, 3.0, -np.inf], np.float32)
    b = np.array([np.nan, 2.0, 1.0, 0.0], np.float32)
    got, want = both(lambda x, y: ac.maximum(x, y), a, b, device=device)
    np.testing.assert_array_equal(got, want)
    got, want = both(lambda x: x.amax(), a, device=device)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_halves_round_after_every_op(dtype: str, device: str) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 64)).astype(np.float32)
    half = getattr(ac, dtype)

    def fn(x: ac.Tensor, y: ac.Tensor) -> ac.Tensor:
        x, y = x.to(half), y.to(half)
        return (x * y + x / (y * y + 1) - 0.1).to(ac.float32)

    got, want = both(fn, a, b, device=device)
    np.testing.assert_array_equal(got, want)  # bit-exact: same float32 ops, same rounding
    got, want = both(lambda x: x.to(half).sum().to(ac.float32), a, device=device)
    np.testing.assert_allclose(got, want, rtol=1e-2)  # float32 accumulation, any order
