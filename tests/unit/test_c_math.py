"""Accuracy of the cpu backend's own float32 math (ac_logf, ac_erff, ac_sinf, ac_powf in c_prelude):
millions of float32 inputs through compiled kernels, measured in ulps against float64."""

from __future__ import annotations

import math

import numpy as np
import pytest

import anychip as ac

pytestmark = pytest.mark.skipif("cpu" not in ac.devices(), reason="no C compiler")


def ulps(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """|got - ref| in units of the float32 spacing at ref (subnormal spacing at least)."""
    _, e = np.frexp(np.abs(ref))
    step = np.ldexp(1.0, np.maximum(e - 24, -149))
    return np.abs(got.astype(np.float64) - ref) / step


def bit_sweep(n: int) -> np.ndarray:
    """n float32 values evenly spread over all bit patterns: every binade, both signs,
    subnormals, inf and NaN (shape (n,))."""
    bits = np.linspace(0, 2**32 - 1, n, dtype=np.uint64).astype(np.uint32)
    return bits.view(np.float32)


def run(x: np.ndarray, op: str) -> np.ndarray:
    return getattr(ac.tensor(x, device="cpu"), op)().numpy()


def test_log_ulp_over_all_binades() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            bit_sweep(4_000_000),
            rng.uniform(0.5, 2.0, 1_000_000).astype(np.float32),  # around 1 and sqrt(2)
            np.abs(rng.standard_normal(500_000).astype(np.float32)),
        ]
    )
    pos = (x > 0) & np.isfinite(x)
    got = run(x, "log")
    with np.errstate(all="ignore"):
        ref = np.log(x.astype(np.float64))
    assert ulps(got[pos], ref[pos]).max() <= 1.5
    assert np.isnan(got[x < 0]).all()
    assert np.isnan(got[np.isnan(x)]).all()


def test_log_special_values() -> None:
    x = np.array([0.0, -0.0, -1.0, -np.inf, np.inf, np.nan, 1.0, 1e-45, 1.1754942e-38], np.float32)
    got = run(x, "log")
    assert got[:2].tolist() == [-np.inf, -np.inf]
    assert np.isnan(got[2]) and np.isnan(got[3]) and np.isnan(got[5])
    assert got[4] == np.inf and got[6] == 0.0
    # smallest subnormal 2^-149 and the largest subnormal: exact within float32 rounding
    ref = np.log(x[7:].astype(np.float64))
    assert ulps(got[7:], ref).max() <= 1.0


def test_exp_tail_and_special_values() -> None:
    # the underflow tail: subnormal results down to -104, exact zeros below (computed without
    # a subnormal intermediate), and -inf (a masked softmax score) -> 0
    x = np.concatenate(
        [
            np.linspace(-110.0, -80.0, 200_001, dtype=np.float32),
            np.array([-np.inf, -1e30, -104.5, np.inf, 0.0, np.nan], np.float32),
        ]
    )
    got = run(x, "exp")
    fin = np.isfinite(x)
    with np.errstate(all="ignore"):
        ref = np.exp(x.astype(np.float64))
    assert ulps(got[fin], ref[fin]).max() <= 1.5
    assert (got[x < -104.0] == 0.0).all()
    assert got[-3] == np.inf and got[-2] == 1.0 and np.isnan(got[-1])


def test_erf_ulp_wide_and_dense() -> None:
    rng = np.random.default_rng(1)
    x = np.concatenate(
        [
            rng.uniform(-4.5, 4.5, 1_500_000).astype(np.float32),  # where both formulas work
            bit_sweep(600_000),
            np.linspace(0.99, 1.01, 50_001, dtype=np.float32),  # the switch at |x| = 1
        ]
    )
    fin = np.isfinite(x)
    got = run(x, "erf")
    ref = np.vectorize(math.erf, otypes=[np.float64])(x[fin].astype(np.float64))
    assert ulps(got[fin], ref).max() <= 1.5
    assert (got[np.isinf(x)] == np.sign(x[np.isinf(x)])).all()
    assert np.isnan(got[np.isnan(x)]).all()


def test_erf_special_values() -> None:
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3.92, 10.0, -10.0, 1e-30, -1e-45], np.float32)
    got = run(x, "erf")
    assert got[0] == 0.0 and not np.signbit(got[0])
    assert got[1] == 0.0 and np.signbit(got[1])  # odd: erf(-0) = -0
    assert got[2] == 1.0 and got[3] == -1.0 and np.isnan(got[4])
    assert got[5:8].tolist() == [1.0, 1.0, -1.0]  # saturates (erfc(3.92) < 2^-25)
    ref = 2 / math.sqrt(math.pi) * x[8:].astype(np.float64)
    assert ulps(got[8:], ref).max() <= 1.0


def test_sin_ulp_whole_range_and_near_multiples_of_half_pi() -> None:
    rng = np.random.default_rng(2)
    k = np.arange(1, 2_000_000, dtype=np.float64)
    x = np.concatenate(
        [
            bit_sweep(3_000_000),
            rng.uniform(-10.0, 10.0, 500_000).astype(np.float32),
            # the floats nearest k pi/2: the largest cancellation in the range reduction
            (k * (np.pi / 2)).astype(np.float32),
            (k * 2.0**40 * (np.pi / 2)).astype(np.float32),  # huge arguments, 2^40 on
        ]
    )
    fin = np.isfinite(x)
    got = run(x, "sin")
    ref = np.sin(x[fin].astype(np.float64))
    assert ulps(got[fin], ref).max() <= 1.0
    assert np.isnan(got[~fin]).all()


def test_sin_special_values() -> None:
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-30, 3.4028235e38], np.float32)
    got = run(x, "sin")
    assert got[0] == 0.0 and not np.signbit(got[0])
    assert got[1] == 0.0 and np.signbit(got[1])  # odd: sin(-0) = -0
    assert np.isnan(got[2:5]).all()
    assert got[5:7].tolist() == x[5:7].tolist()  # sin(x) rounds to x for tiny x
    assert ulps(got[7:], np.sin(x[7:].astype(np.float64))).max() <= 1.0


def test_pow_ulp() -> None:
    rng = np.random.default_rng(3)
    n = 1_000_000
    x = np.concatenate(
        [
            rng.uniform(0, 10, n),
            np.exp(rng.uniform(-80, 80, n)),  # results from subnormal to overflow
            -rng.integers(1, 30, n).astype(np.float64),  # negative bases, integer powers
        ]
    ).astype(np.float32)
    y = np.concatenate(
        [rng.uniform(-40, 40, n), rng.uniform(-2, 2, n), rng.integers(-20, 20, n)]
    ).astype(np.float32)
    got = (ac.tensor(x, device="cpu") ** ac.tensor(y, device="cpu")).numpy()
    with np.errstate(all="ignore"):
        ref = np.power(x.astype(np.float64), y.astype(np.float64))
    fin = np.isfinite(ref) & (np.abs(ref) < 3.4e38) & (ref != 0)
    assert ulps(got[fin], ref[fin]).max() <= 1.0
    over = np.abs(ref) > 3.5e38
    assert (got[over] == np.sign(ref[over]) * np.inf).all()


def test_pow_special_values_match_c99() -> None:
    # every pair of these: numpy's float32 power is C99 powf (0, -0, +-1, inf, NaN, odd powers)
    special = [0, -0.0, 1, -1, 2, -2, 0.5, -0.5, np.inf, -np.inf, np.nan, 1e-45, -1e-45]
    v = np.array([*special, 3e38, -3e38, 16777216, -16777217, 3, -3, 2.5], np.float32)
    x, y = (a.ravel() for a in np.meshgrid(v, v))
    got = (ac.tensor(x, device="cpu") ** ac.tensor(y, device="cpu")).numpy()
    with np.errstate(all="ignore"):
        ref = np.power(x, y)
    assert (np.isnan(got) == np.isnan(ref)).all()
    ok = ~np.isnan(ref)
    np.testing.assert_array_max_ulp(got[ok], ref[ok], maxulp=1)
    assert (np.signbit(got[ok]) == np.signbit(ref[ok])).all()


@pytest.mark.parametrize("op", ["log", "erf", "sin"])
def test_float16_rounds_from_float32(op: str) -> None:
    # every finite half: computed in float32, rounded once to half; ref from float64
    x = np.arange(2**16, dtype=np.uint16).view(np.float16)
    x = x[np.isfinite(x) & ((x > 0) if op == "log" else True)]
    got = run(x, op).astype(np.float64)
    fn = {"log": np.log, "sin": np.sin}.get(op, np.vectorize(math.erf, otypes=[np.float64]))
    ref = fn(x.astype(np.float64))
    # one half ulp is 2^13 float32 ulps; double rounding may land one half ulp off
    step = np.spacing(np.abs(ref).astype(np.float16)).astype(np.float64)
    assert (np.abs(got - ref) <= step).all()
