"""Native float32 GEMMs (codegen/npu_gemm.py, `GemmPlan.native`): float32 tiles straight
into the matrix unit's quarter-rate f32 mode at precision "highest", run on the functional
simulator against float64 numpy at float32 tolerances; the planner's choice between the
native path and the 16-bit split, checked by the timing model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from anychip.codegen.npu_gemm import Bias, GemmPlan, GemmSpec, GemmView, Unary, bind, npu_gemm
from anychip.codegen.npu_gemm_plan import plan_npu_gemm
from anychip.npu.config import get_config
from anychip.npu.isa import DT, Mma, UnOp, VBin, VCast, VScalar
from anychip.npu.simulator import Simulator
from anychip.npu.timing import simulate_timing

Array = np.ndarray[Any, Any]
DESIGNS = ["edge", "cube", "datacenter"]


def f32(x: Array) -> Array:
    """What the device holds: x rounded to float32, as float64."""
    return x.astype(np.float32).astype(np.float64)


def spec_of(m: int, n: int, k: int, batch: int = 1, trans_a: bool = False,
            out_dt: DT = DT.F32, epilogue: tuple[Any, ...] = (),
            precision: str = "highest") -> GemmSpec:  # fmt: skip
    """a (batch, m, k) (stored (batch, k, m) when trans_a) @ b (batch, k, n), at r3, r4;
    the output at r5, epilogue operands from r6."""
    a = (
        GemmView(3, DT.F32, 0, (m * k,), 1, m)
        if trans_a
        else GemmView(3, DT.F32, 0, (m * k,), k, 1)
    )
    b = GemmView(4, DT.F32, 0, (k * n,), n, 1)
    out = GemmView(5, out_dt, 0, (m * n,), n, 1)
    return GemmSpec((batch,), m, n, k, a, b, out, epilogue, precision)


def run(design: str, spec: GemmSpec, a: Array, b: Array, plan: GemmPlan | None = None,
        extra: tuple[Array, ...] = ()) -> tuple[Array, GemmPlan]:  # fmt: skip
    cfg = get_config(design)
    sim = Simulator(cfg)
    stored_a = a.transpose(0, 2, 1) if spec.a.rows == 1 else a
    regs = {3: sim.put(np.ascontiguousarray(stored_a), DT.F32), 4: sim.put(b, DT.F32)}
    regs[5] = sim.alloc(spec.batch[0] * spec.m * spec.n * spec.out.dtype.itemsize)
    for i, x in enumerate(extra):
        regs[6 + i] = sim.put(x, DT.F32)
    g = npu_gemm(cfg, spec, plan)
    sim.run(bind(g.program, regs))
    shape = (spec.batch[0], spec.m, spec.n)
    return sim.get(regs[5], shape, spec.out.dtype).astype(np.float64), g.plan


def bound(a: Array, b: Array) -> Array:
    """The f32 mode's error: each matrix_k step's exact sum is rounded once and added to
    the f32 accumulator with one more rounding (2^-24 each, at most 2 per 16 of depth,
    a step being at least 16 deep), on at most |a| @ |b|; no piece is dropped."""
    k = a.shape[-1]
    return 2 * (k // 16 + 2) * 2.0**-24 * (np.abs(a) @ np.abs(b)) + 1e-30


@pytest.mark.parametrize("design", DESIGNS)
@pytest.mark.parametrize(("m", "n", "k", "batch", "trans_a"),
                         [(37, 29, 75, 2, False), (5, 130, 300, 1, True)])  # fmt: skip
def test_native_f32_against_float64(design: str, m: int, n: int, k: int, batch: int,
                                    trans_a: bool) -> None:  # fmt: skip
    rng = np.random.default_rng(m + k)
    a, b = rng.standard_normal((batch, m, k)), rng.standard_normal((batch, k, n))
    out, plan = run(design, spec_of(m, n, k, batch, trans_a), a, b)
    assert plan.native
    ref = f32(a) @ f32(b)
    np.testing.assert_allclose(out, ref, rtol=1.3e-6, atol=1e-5)  # torch's float32 tolerances
    assert np.all(np.abs(out - ref) <= bound(f32(a), f32(b)))


def test_native_keeps_24_bit_products_and_wide_magnitudes() -> None:
    """Values with 24 significant bits, rows from 2^-60 to 2^60: what 16-bit pieces of a
    scaled row would lose below 2^-39 of its largest, the f32 mode keeps."""
    rng = np.random.default_rng(3)
    m, n, k = 20, 18, 40
    a = (1 + rng.integers(0, 1 << 23, (1, m, k)) * 2.0**-23) * rng.choice([-1, 1], (1, m, k))
    a *= 2.0 ** rng.integers(-60, 60, (1, m, k))
    b = rng.standard_normal((1, k, n))
    out, plan = run("edge", spec_of(m, n, k), a, b)
    assert plan.native
    assert np.all(np.abs(out - f32(a) @ f32(b)) <= bound(f32(a), f32(b)))


@pytest.mark.parametrize("design", ["edge", "datacenter"])
def test_native_program_has_no_split(design: str) -> None:
    """Only DMAs and f32 mmas: no vector op (split, scales, unscale) for an f32 output."""
    cfg = get_config(design)
    g = npu_gemm(cfg, spec_of(100, 70, 200))
    code = [i for core in g.program.cores for i in core]
    assert {i.dtype for i in code if isinstance(i, Mma)} == {DT.F32}
    assert not any(isinstance(i, (VBin, VScalar, VCast)) for i in code)


def test_native_epilogue_bias_relu_f16_store() -> None:
    rng = np.random.default_rng(5)
    m, n, k = 33, 40, 50
    a, b, bias = (rng.standard_normal(s) for s in ((1, m, k), (1, k, n), (n,)))
    epi = (Bias(GemmView(6, DT.F32, 0, (0,), 0, 1)), Unary(UnOp.RELU))
    out, plan = run("edge", spec_of(m, n, k, out_dt=DT.F16, epilogue=epi), a, b, extra=(bias,))
    assert plan.native
    ref = np.maximum(f32(a) @ f32(b) + f32(bias), 0)
    assert np.all(np.abs(out - ref) <= bound(f32(a), f32(b)) + 2.0**-11 * np.abs(ref))


def test_planner_keeps_the_split_where_it_is_faster_or_asked_for() -> None:
    """A design whose f32 mode is 16 times slower than its 16-bit one (more than the six
    passes of the bfloat16 split) keeps the split; "high" and "medium" keep their pieces."""
    s = spec_of(512, 512, 512)
    cube = get_config("cube")
    assert plan_npu_gemm(cube, s).native
    assert not plan_npu_gemm(cube.replace(matrix_f32_cycles=16), s).native
    for p in ("high", "medium"):
        assert not plan_npu_gemm(cube, spec_of(512, 512, 512, precision=p)).native
    no_f32 = cube.replace(matrix_dtypes=("f16", "bf16", "i8"))
    assert not plan_npu_gemm(no_f32, s).native


@pytest.mark.parametrize("design", DESIGNS)
def test_native_is_faster_than_the_split_by_the_timing_model(design: str) -> None:
    """The planner's choice agrees with the timing model at 128^3 (docs/npu-backend.md has
    the 512^3 figures: edge 3799 -> 1293 us)."""
    cfg = get_config(design)
    s = spec_of(128, 128, 128)
    native = plan_npu_gemm(cfg, s)
    split = plan_npu_gemm(cfg.replace(matrix_f32_cycles=64), s)  # the split's best plan
    assert native.native and not split.native
    regs = {3: 0, 4: 1 << 20, 5: 2 << 20}
    cycles = [simulate_timing(bind(npu_gemm(cfg, s, p).program, regs), cfg).cycles
              for p in (native, split)]  # fmt: skip
    assert cycles[0] < cycles[1]


@pytest.mark.parametrize("trans_a", [False, True])
def test_edge_stages_a_in_longer_runs(trans_a: bool) -> None:
    """edge (no L1): A's rows for four k-steps come in one DMA into the unified buffer and
    go to L0A by on-chip copies; a depth that is no multiple of the chunk or the step, two
    column tiles, a batch of two."""
    from anychip.codegen.npu_gemm_plan import stage_depth
    from anychip.npu.isa import Dma, Space

    cfg = get_config("edge")
    m, n, k = 40, 70, 200
    plan = GemmPlan(48, 48, 16, 2, native=True)
    spec = spec_of(m, n, k, batch=2, trans_a=trans_a)
    assert stage_depth(cfg, spec, plan, 1) == 4
    code = npu_gemm(cfg, spec, plan).program.cores[0]
    copies = [i for i in code if isinstance(i, Dma) and i.src.space == Space.UB]
    assert len(copies) == 2 * 2 * 13  # every k-step of every output tile (2 x 2 of them)
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal((2, m, k)), rng.standard_normal((2, k, n))
    out, _ = run("edge", spec, a, b, plan)
    np.testing.assert_allclose(out, f32(a) @ f32(b), rtol=1.3e-6, atol=1e-5)
