"""float32 GEMMs on a matrix unit with float16 but no bfloat16 inputs (`edge`): float16
pieces of power-of-two scaled rows of A and columns of B (codegen/npu_gemm_split.py), run
on the functional simulator against float64 numpy, at each float32 matmul precision."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from test_npu_gemm import randn, run

from anychip.codegen.npu_gemm import (
    Bias,
    GemmPlan,
    GemmSpec,
    GemmView,
    Scale,
    Unary,
    bind,
    npu_gemm,
)
from anychip.codegen.npu_gemm_plan import passes
from anychip.npu.config import get_config
from anychip.npu.isa import DT, Mma, UnOp, VCast
from anychip.npu.timing import simulate_timing

Array = np.ndarray[Any, Any]
PRECISIONS = ("highest", "high", "medium")
SMALL = GemmPlan(16, 16, 16, 2)  # several row, column and depth tiles on small shapes


def f32(x: Array) -> Array:
    """What the device holds: x rounded to float32, as float64."""
    return x.astype(np.float32).astype(np.float64)


def bound(a: Array, b: Array, precision: str, plan: GemmPlan | None = None) -> Array:
    """The error bound of docs/npu-gemm.md, per output: the f32 sums (each matrix-unit
    step sum and accumulation rounds once, 2^-24, on at most |a| @ |b|, over every pass),
    the pieces' error relative to each element, and the floor 2^-39 of the row's (the
    column's) largest magnitude below which float16 pieces lose bits."""
    _, _, pairs = passes(get_config("edge"), DT.F32, precision)
    k = a.shape[-1]
    sums = 2 * len(pairs) * (math.ceil(k / 16) + 1) * 2.0**-24
    # three pieces hold every bit of each operand (the dropped products are below 2^-33),
    # two are within 2^-22 of it (all four products kept), one (float16) within 2^-11
    rel = {"highest": 2.0**-30, "high": 2.0**-21, "medium": 2.0**-10}[precision] * (1 + 2.0**-20)
    aa, ab = np.abs(a), np.abs(b)
    floor = 2.0**-38 * (aa.max(-1, keepdims=True) * ab.sum(-2, keepdims=True)
                        + aa.sum(-1, keepdims=True) * ab.max(-2, keepdims=True))  # fmt: skip
    return (sums + rel) * (aa @ ab) + floor + 1e-300


def check(a: Array, b: Array, precision: str, plan: GemmPlan | None = None, **kw: Any) -> Array:
    out = run("edge", a, b, dt=DT.F32, precision_=precision, plan=plan, **kw)
    a64, b64 = f32(a), f32(b)
    ref = a64 @ b64
    err = np.abs(out - ref)
    lim = bound(a64, b64, precision, plan)
    assert np.all(err <= lim), f"{precision}: worst {np.max(err / lim):.3g} of the bound"
    return out


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize(
    ("shape", "plan"),
    [((1, 1, 1), None), ((37, 45, 50), None), ((29, 23, 150), SMALL), ((3, 70, 33), SMALL)],
)
def test_odd_shapes_and_deep_k_against_float64(
    precision: str, shape: tuple[int, int, int], plan: GemmPlan | None
) -> None:
    """Odd sizes; with SMALL, K spans several tiles (the scales come from a pass over
    the whole depth before the tile's first step)."""
    m, n, k = shape
    check(randn(2, m, k, seed=1), randn(2, k, n, seed=2), precision, plan)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_highest_meets_the_cpu_float32_tolerances(precision: str) -> None:
    """ "highest" as the bf16 x6 path on cube and datacenter: torch's float32 tolerances
    against float64; "high" and "medium" are each coarser than the one above."""
    a, b = randn(1, 40, 130, seed=3), randn(1, 130, 36, seed=4)
    ref = f32(a) @ f32(b)
    out = check(a, b, precision, SMALL)
    err = float(np.max(np.abs(out - ref) / (np.abs(f32(a)) @ np.abs(f32(b)))))
    if precision == "highest":
        np.testing.assert_allclose(out, ref, rtol=1.3e-6, atol=1e-5)
        assert err <= 2.0**-20
    elif precision == "medium":
        assert 2.0**-16 < err <= 2.0**-11  # float16 rounding of each operand


@pytest.mark.parametrize("precision", PRECISIONS)
def test_rows_spanning_a_wide_range_of_magnitudes(precision: str) -> None:
    """Each row of A (column of B) mixes values from 2^-30 to 2^30 of one another, and
    whole rows sit near 1e20 and 1e-20: the error stays within the bound relative to
    each row's and column's largest value (and to each element, above the floor)."""
    rng = np.random.default_rng(5)
    a = randn(1, 24, 70, seed=6) * 2.0 ** rng.integers(-30, 31, (1, 24, 70))
    b = randn(1, 70, 20, seed=7) * 2.0 ** rng.integers(-30, 31, (1, 70, 20))
    a[0, 3] *= 1e20 / np.abs(a[0, 3]).max()
    a[0, 4] *= 1e-20 / np.abs(a[0, 4]).max()
    b[0, :, 5] *= 1e-15 / np.abs(b[0, :, 5]).max()
    check(a, b, precision, SMALL)
    check(a, b, precision, None)


def test_magnitudes_near_float32s_ends() -> None:
    """Operands near 1e35 and 1e-30 (products near 1e5) and near 1e-35 and 1e20: the
    scales and the one combined unscale keep them as accurate as unit-sized ones."""
    a, b = randn(1, 20, 50, seed=14), randn(1, 50, 18, seed=15)
    for sa, sb in ((1e35, 1e-30), (1e-35, 1e20)):
        check(a * sa, b * sb, "highest", SMALL)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_zeros_rows_and_columns(precision: str) -> None:
    a, b = randn(1, 20, 40, seed=8), randn(1, 40, 18, seed=9)
    a[0, 2] = 0.0  # a row of zeros
    a[0, :, 5:9] = 0.0  # and zero columns in every row
    b[0, :, 3] = 0.0
    out = check(a, b, precision, SMALL)
    assert np.all(out[0, 2] == 0) and np.all(out[0, :, 3] == 0)
    zero = run("edge", np.zeros((1, 17, 33)), b[:, :33], dt=DT.F32, precision_=precision)
    assert np.all(zero == 0)


def test_exact_products_stay_exact() -> None:
    """24-bit values (not representable in float16) times small integers: exact."""
    x = (1 + 2.0**-23) * np.ones((1, 16, 16))
    out = run("edge", x, np.eye(16)[None] * 3, dt=DT.F32, precision_="highest")
    assert np.all(out == np.float32(3 * (1 + 2.0**-23)))


def test_inf_and_nan_propagate_to_their_row_and_column() -> None:
    """An inf or NaN in a row of A makes that row's outputs NaN (inf - inf in the split),
    one in a column of B that column's; every other output is unaffected. With one piece
    ("medium") an inf stays inf: float64's ±inf where a single inf is involved."""
    a, b = randn(1, 20, 40, seed=10), randn(1, 40, 18, seed=11)
    a[0, 4, 7], a[0, 9, 0], b[0, 3, 2] = np.inf, np.nan, -np.inf
    out = run("edge", a, b, dt=DT.F32, precision_="highest", plan=SMALL)
    bad = np.zeros(out.shape, bool)
    bad[0, [4, 9]], bad[0, :, 2] = True, True
    assert np.all(np.isnan(out[bad]))
    ref = f32(a) @ f32(b)
    np.testing.assert_allclose(out[~bad], ref[~bad], rtol=1.3e-6, atol=1e-5)
    out = run("edge", a, b, dt=DT.F32, precision_="medium", plan=SMALL)
    single = bad.copy()
    single[0, 9], single[0, 4, 2] = False, False  # the NaN row; inf times -inf's column
    assert np.all(np.isnan(out[0, 9])) and np.all(np.isinf(ref[single]))
    np.testing.assert_array_equal(out[single], ref[single])


@pytest.mark.parametrize("precision", PRECISIONS)
def test_batch_transposes_and_f16_store(precision: str) -> None:
    a, b = randn(3, 21, 40, seed=12), randn(1, 40, 19, seed=13)
    check(a, b, precision, SMALL, trans_a=True, trans_b=True)
    out = run("edge", a, b, dt=DT.F32, out_dt=DT.F16, precision_=precision, plan=SMALL)
    ref = f32(a) @ f32(b)
    tol = bound(f32(a), f32(b), precision) + 2.0**-11 * np.abs(ref)  # the f16 store
    assert np.all(np.abs(out - ref) <= tol)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_pieces_run_on_the_matrix_unit_and_pass_the_timing_checks(precision: str) -> None:
    """Every product is an f16 mma (six of depth tk for "highest", two of 2 tk for "high",
    one for "medium"), every piece a vcast to f16 on chip; the timing model's race and
    bounds checks pass."""
    cfg = get_config("edge")
    k = 70
    v = GemmView(3, DT.F32, 0, (), k, 1)
    spec = GemmSpec((), 50, 40, k, v, GemmView(4, DT.F32, 0, (), 40, 1),
                    GemmView(5, DT.F32, 0, (), 40, 1), (), precision)  # fmt: skip
    g = npu_gemm(cfg, spec, SMALL)
    code = g.program.cores[0]
    mmas = [i for i in code if isinstance(i, Mma)]
    assert mmas and all(i.dtype == DT.F16 for i in mmas)
    assert {i.k for i in mmas} == {32 if precision == "high" else 16}
    npass = len(passes(cfg, DT.F32, precision)[2])
    assert sum(i.m * i.n * i.k for i in mmas) == npass * 64 * 48 * 80
    assert any(isinstance(i, VCast) and i.dst_dtype == DT.F16 for i in code)
    rep = simulate_timing(bind(g.program, {3: 0, 4: 1 << 20, 5: 1 << 21}), cfg)
    assert rep.cycles > 0


def test_epilogue_runs_after_the_unscale() -> None:
    """bias, scale and relu see the unscaled product (the unscale comes first)."""
    a, b = randn(2, 23, 30, seed=16) * 1e3, randn(2, 30, 26, seed=17) * 1e-3
    bias = randn(26, seed=18)
    epi = (Bias(GemmView(6, DT.F32, 0, (0,), 0, 1)), Scale(0.5), Unary(UnOp.RELU))
    out = run("edge", a, b, dt=DT.F32, epilogue=epi, extra={"bias": (bias, DT.F32)}, plan=SMALL)
    ref = np.maximum((f32(a) @ f32(b) + f32(bias)) * 0.5, 0)
    np.testing.assert_allclose(out, ref, rtol=1.3e-6, atol=1e-5)
    assert np.any(out == 0)
