"""The matrix unit's numerics are the ISA's rule, bit for bit, and nothing else: exact
products, per hardware step an aligned exact sum rounded once to f32, steps added in f32.

The reference here is independent of numpy's arithmetic: exact rationals (`Fraction`)."""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from anychip.dtypes import bf16_to_f32
from anychip.npu import numerics as nx
from anychip.npu.config import PROFILES
from anychip.npu.isa import DT, Barrier, Dma, Finish, Mma, Ref, Space
from anychip.npu.program import Program
from anychip.npu.simulator import Simulator


def _trunc_to(x: Fraction, unit: Fraction) -> Fraction:
    q = x / unit
    return (q.numerator // q.denominator if q >= 0 else -((-q.numerator) // q.denominator)) * unit


def _step_sum(prods: list[Fraction]) -> Fraction:
    top = max(abs(p) for p in prods)
    if top == 0:
        return Fraction(0)
    e = 0  # 2^(e-1) <= top < 2^e
    while Fraction(2) ** e <= top:
        e += 1
    while Fraction(2) ** (e - 1) > top:
        e -= 1
    unit = Fraction(2) ** (e - nx.ALIGN_BITS)
    return sum((_trunc_to(p, unit) for p in prods), Fraction(0))


def _reference(a: np.ndarray, b: np.ndarray, step: int) -> np.ndarray:
    """The documented rule with rationals, one output element at a time."""
    m, k = a.shape
    out = np.zeros((m, b.shape[1]), np.float32)
    for i in range(m):
        for j in range(b.shape[1]):
            acc = np.float32(0.0)
            for k0 in range(0, k, step):
                prods = [Fraction(float(a[i, t])) * Fraction(float(b[t, j]))
                         for t in range(k0, min(k, k0 + step))]  # fmt: skip
                acc = np.float32(acc + np.float32(float(_step_sum(prods))))
            out[i, j] = acc
    return out


def _wide(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """fp16 values over the whole exponent range, so many steps need truncation."""
    mant = rng.uniform(1, 2, shape) * rng.choice([-1, 1], shape)
    return (mant * 2.0 ** rng.integers(-24, 15, shape)).astype(np.float16)


@pytest.mark.parametrize("step", [4, 16])
@pytest.mark.parametrize("wide", [True, False])
def test_matmul_follows_the_documented_rule(step, wide):
    rng = np.random.default_rng(0)
    if wide:  # most steps truncate: the explicit path
        a, b = _wide(rng, (5, 11)), _wide(rng, (11, 6))
    else:  # typical data: no step truncates, one BLAS call is exact
        a = rng.standard_normal((5, 11)).astype(np.float16)
        b = rng.standard_normal((11, 6)).astype(np.float16)
    got = nx.matmul(DT.F16, a, b, None, step)
    np.testing.assert_array_equal(got, _reference(a, b, step))


def test_bf16_wide_range_follows_the_rule():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((4, 9)) * 2.0 ** rng.integers(-60, 60, (4, 9))).astype(np.float32)
    y = (rng.standard_normal((9, 3)) * 2.0 ** rng.integers(-60, 60, (9, 3))).astype(np.float32)
    a, b = nx.to_storage(x, DT.BF16), nx.to_storage(y, DT.BF16)
    got = nx.matmul(DT.BF16, a, b, None, 8)
    np.testing.assert_array_equal(got, _reference(bf16_to_f32(a), bf16_to_f32(b), 8))


@pytest.mark.parametrize("step", [4, 16])
def test_f32_sums_near_a_rounding_tie_follow_the_rule(step):
    """1 + 2^-24 (a tie in f32) plus a product below the step's truncation grid: BLAS's
    float64 sum rounds the other way than the aligned sum, so these triples must take the
    explicit path (numerics `_round_beyond`); wide-range rows take the fast one."""
    rng = np.random.default_rng(7)
    m, n, k = 12, 5, 9
    a, b = np.zeros((m, k)), np.ones((k, n))
    sign = rng.choice([-1.0, 1.0], (m, 2))
    a[:, 0], a[:, 1], a[:, 2] = 1.0, sign[:, 0] * 2.0**-24, sign[:, 1] * 0.75 * 2.0**-52
    a[:6] *= 2.0 ** rng.integers(-20, 20, (6, 1))
    a[6:, 3:] = rng.standard_normal((6, k - 3)) * 2.0 ** rng.integers(-40, 40, (6, k - 3))
    b *= 2.0 ** rng.integers(-30, 30, (1, n))
    a, b = a.astype(np.float32), b.astype(np.float32)
    got = nx.matmul(DT.F32, a, b, None, step)
    np.testing.assert_array_equal(got.view(np.uint32), _reference(a, b, step).view(np.uint32))


def test_infinities_and_nans_follow_ieee():
    a = np.array([[np.inf, 1.0], [np.inf, 1.0], [np.nan, 1.0]], np.float16)
    b = np.array([[1.0, -1.0], [2.0**-24, 1.0]], np.float16)
    got = nx.matmul(DT.F16, a, b, np.array([[0, 0], [np.inf, 0], [0, 0]], np.float32), 16)
    assert got[0, 0] == np.inf and got[0, 1] == -np.inf
    assert got[1, 0] == np.inf and got[1, 1] == -np.inf
    assert np.isnan(got[2]).all()


def _issue_dot(order: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """2^15*2^15 + 2^-24*2^-24 - 2^15*2^15, its three k terms in `order`."""
    xs, ys = [2.0**15, 2.0**-24, -(2.0**15)], [2.0**15, 2.0**-24, 2.0**15]
    return (np.array([[xs[t] for t in order]], np.float16),
            np.array([[ys[t]] for t in order], np.float16))  # fmt: skip


def test_the_issue_dot_product_has_one_answer_for_every_order_shape_and_step():
    results = set()
    for order in ([0, 1, 2], [0, 2, 1], [1, 2, 0], [2, 1, 0]):
        a, b = _issue_dot(order)
        for step in (3, 16, 128):
            for rows, cols in ((1, 1), (7, 5), (32, 32)):  # the same dot inside bigger tiles
                big_a = np.tile(a, (rows, 1))
                big_b = np.tile(b, (1, cols))
                results.add(nx.matmul(DT.F16, big_a, big_b, None, step).tobytes()[:4])
    assert results == {np.float32(0.0).tobytes()}  # 2^-48 lies below the aligned 2^-21


def _sim_gemm(x: np.ndarray, y: np.ndarray, kt: int, design: str = "cube") -> np.ndarray:
    """x @ y on the simulator as k tiles of `kt`, accumulated in l0c."""
    cfg = PROFILES[design]
    m, k = x.shape
    n = y.shape[1]
    sim = Simulator(cfg)
    xa, ya, out = sim.put(x, DT.F16), sim.put(y, DT.F16), sim.alloc(m * n * 4)
    code: list = []
    for t, k0 in enumerate(range(0, k, kt)):
        a_ref, b_ref = Ref(Space.L0A, t * m * kt * 2), Ref(Space.L0B, t * kt * n * 2)
        code += [
            Dma(DT.F16, a_ref, Ref(Space.DRAM, xa + k0 * 2), (1, m, kt), (0, kt, 1), (0, k, 1),
                (1, m, kt)),
            Dma(DT.F16, b_ref, Ref(Space.DRAM, ya + k0 * n * 2), (1, kt, n), (0, n, 1),
                (0, n, 1), (1, kt, n)),
        ]  # fmt: skip
    code.append(Barrier())
    for t in range(k // kt):
        a_ref, b_ref = Ref(Space.L0A, t * m * kt * 2), Ref(Space.L0B, t * kt * n * 2)
        code.append(Mma(DT.F16, Ref(Space.L0C, 0), a_ref, b_ref, m, n, kt, int(t > 0)))
    code += [Barrier(), Dma(DT.F32, Ref(Space.DRAM, out), Ref(Space.L0C, 0), (1, m, n),
                            (0, n, 1), (0, n, 1), (1, m, n)), Finish()]  # fmt: skip
    sim.run(Program((tuple(code),)))
    return sim.get(out, (m, n), DT.F32)


def test_splitting_k_at_step_boundaries_gives_identical_bits():
    rng = np.random.default_rng(2)
    x, y = _wide(rng, (8, 64)), _wide(rng, (64, 8))
    one = _sim_gemm(x, y, 64)
    for kt in (16, 32):
        np.testing.assert_array_equal(_sim_gemm(x, y, kt), one)
    np.testing.assert_array_equal(one, _reference(x, y, PROFILES["cube"].matrix_k))


_THREADS_SCRIPT = """
import hashlib
import numpy as np
from anychip.npu import numerics as nx
from anychip.npu.isa import DT
rng = np.random.default_rng(5)
a = (rng.standard_normal((256, 512)) * 2.0 ** rng.integers(-6, 6, (256, 512)))
b = rng.standard_normal((512, 192))
a, b = a.astype(np.float16), b.astype(np.float16)
for step in (512, 128):  # one big BLAS call (threaded when allowed), then batched steps
    print(hashlib.sha256(nx.matmul(DT.F16, a, b, None, step).tobytes()).hexdigest())
"""


def test_results_do_not_depend_on_blas_threads():
    outs = set()
    for threads in ("1", "2"):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads,
               "MKL_NUM_THREADS": threads}  # fmt: skip
        r = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT], env=env, check=True,
                           capture_output=True, text=True)  # fmt: skip
        outs.add(r.stdout)
    assert len(outs) == 1


def test_batched_mmas_equal_one_at_a_time():
    """The simulator computes mmas in batches; interleaved accumulators, resets, different
    k and trans_b must give what each instruction gives alone, in program order."""
    rng = np.random.default_rng(7)
    cfg = PROFILES["cube"]
    sim = Simulator(cfg)
    xs = [rng.standard_normal((16, k)).astype(np.float16) for k in (16, 32, 16, 48)]
    ys = [rng.standard_normal((k, 16)).astype(np.float16) for k in (16, 32, 16, 48)]
    out = sim.alloc(2 * 16 * 16 * 4)
    code: list = []
    for t, (x, y) in enumerate(zip(xs, ys, strict=True)):
        xa = sim.put(x, DT.F16)
        yt = sim.put(np.ascontiguousarray(y.T) if t == 1 else y, DT.F16)  # #1 via trans_b
        k = x.shape[1]
        bshape = (16, k) if t == 1 else (k, 16)
        code += [
            Dma(DT.F16, Ref(Space.L0A, t * 2048), Ref(Space.DRAM, xa), (1, 16, k), (0, k, 1),
                (0, k, 1), (1, 16, k)),
            Dma(DT.F16, Ref(Space.L0B, t * 2048), Ref(Space.DRAM, yt), (1, *bshape),
                (0, bshape[1], 1), (0, bshape[1], 1), (1, *bshape)),
        ]  # fmt: skip
    code.append(Barrier())
    acc0, acc1 = Ref(Space.L0C, 0), Ref(Space.L0C, 1024)
    plan = [(0, acc0, 0), (1, acc1, 0), (2, acc0, 1), (1, acc0, 1), (3, acc1, 1), (2, acc1, 0),
            (0, acc1, 1), (3, acc0, 1)]  # (operands, accumulator, accumulate)  # fmt: skip
    want = {0: None, 1024: None}
    for t, acc, accumulate in plan:
        k = xs[t].shape[1]
        code.append(Mma(DT.F16, acc, Ref(Space.L0A, t * 2048), Ref(Space.L0B, t * 2048), 16, 16,
                        k, accumulate, int(t == 1)))  # fmt: skip
        old = want[acc.off] if accumulate else None
        want[acc.off] = nx.matmul(DT.F16, xs[t], ys[t], old, cfg.matrix_k)
    code += [Barrier(), Dma(DT.F32, Ref(Space.DRAM, out), Ref(Space.L0C, 0), (1, 32, 16),
                            (0, 16, 1), (0, 16, 1), (1, 32, 16)), Finish()]  # fmt: skip
    sim.run(Program((tuple(code),)))
    got = sim.get(out, (32, 16), DT.F32)
    np.testing.assert_array_equal(got[:16], want[0])
    np.testing.assert_array_equal(got[16:], want[1024])
