"""The compiler's npu GEMM generator (codegen/npu_gemm.py), run on the functional simulator
against float64 numpy, and the float32 matmul precision setting (anychip/precision.py)."""

from __future__ import annotations

import doctest
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

import anychip as ac
from anychip import precision
from anychip.codegen import npu_gemm as ng, npu_gemm_plan
from anychip.codegen.npu_gemm import (
    Bias,
    GemmPlan,
    GemmSpec,
    GemmView,
    Scale,
    Unary,
    bind,
    from_contraction,
    npu_gemm,
)
from anychip.errors import ArgumentError, DTypeNotImplemented, ShapeError
from anychip.npu import numerics as nx
from anychip.npu.config import get_config
from anychip.npu.errors import UninitializedRead
from anychip.npu.isa import (
    DT,
    Branch,
    Cond,
    Dma,
    Finish,
    Ref,
    SAluI,
    SMov,
    SOp,
    Space,
    UnOp,
    VCast,
    VDup,
    VUn,
)
from anychip.npu.program import Program
from anychip.npu.simulator import Simulator
from anychip.npu.timing import simulate_timing

DESIGNS = ["edge", "cube", "datacenter"]
A_REG, B_REG, OUT_REG, BIAS_REG = 3, 4, 5, 6
Array = np.ndarray[Any, Any]


def rounded(x: Array, dt: DT) -> Array:
    """x rounded to `dt`, as float64 (what the device holds)."""
    return nx.to_values(nx.to_storage(x, dt), dt).astype(np.float64)


def run(
    design: str,
    a: Array,
    b: Array,
    dt: DT = DT.F16,
    out_dt: DT = DT.F32,
    trans_a: bool = False,
    trans_b: bool = False,
    epilogue: Sequence[Any] = (),
    extra: dict[str, tuple[Array, DT]] | None = None,
    precision_: str = "highest",
    plan: GemmPlan | None = None,
    out_col_major: bool = False,
) -> Array:
    """a (B, m, k) @ b (B or 1, k, n) on the simulator; b's batch of 1 is broadcast (stride
    0). `extra` holds epilogue operands by name (uploaded at r6, r7, ...)."""
    cfg = get_config(design)
    batch, m, k = a.shape
    n = b.shape[2]
    sim = Simulator(cfg)
    regs: dict[int, int] = {}
    if trans_a:  # stored (B, k, m)
        regs[A_REG] = sim.put(np.ascontiguousarray(a.transpose(0, 2, 1)), dt)
        av = GemmView(A_REG, dt, 0, (m * k,), 1, m)
    else:
        regs[A_REG] = sim.put(a, dt)
        av = GemmView(A_REG, dt, 0, (m * k,), k, 1)
    bstride = 0 if b.shape[0] == 1 else k * n
    if trans_b:  # stored (B, n, k): a Linear layer's weight
        regs[B_REG] = sim.put(np.ascontiguousarray(b.transpose(0, 2, 1)), dt)
        bv = GemmView(B_REG, dt, 0, (bstride,), 1, k)
    else:
        regs[B_REG] = sim.put(b, dt)
        bv = GemmView(B_REG, dt, 0, (bstride,), n, 1)
    regs[OUT_REG] = sim.alloc(batch * m * n * out_dt.itemsize)
    ov = GemmView(OUT_REG, out_dt, 0, (m * n,), *((1, m) if out_col_major else (n, 1)))
    for i, (values, vdt) in enumerate((extra or {}).values()):
        regs[BIAS_REG + i] = sim.put(values, vdt)
    spec = GemmSpec((batch,), m, n, k, av, bv, ov, tuple(epilogue), precision_)
    sim.run(bind(npu_gemm(cfg, spec, plan).program, regs))
    shape = (batch, n, m) if out_col_major else (batch, m, n)
    out = sim.get(regs[OUT_REG], shape, out_dt).astype(np.float64)
    return out.transpose(0, 2, 1) if out_col_major else out


def randn(*shape: int, seed: int = 0) -> Array:
    return np.random.default_rng(seed).standard_normal(shape)


def bound(a: Array, b: Array, k: int) -> Array:
    """The f32-accumulation error bound of the matrix unit: each of the k / matrix_k step
    sums and accumulations rounds once (2^-24), on at most |a| @ |b| (doubled: slack)."""
    return 2.0 * k * 2.0**-24 * (np.abs(a) @ np.abs(b)) + 1e-30


@pytest.mark.parametrize("design", DESIGNS)
def test_f16_odd_sizes_match_float64(design: str) -> None:
    a, b = randn(1, 37, 50), randn(1, 50, 45, seed=1)
    out = run(design, a, b)
    ar, br = rounded(a, DT.F16), rounded(b, DT.F16)
    assert np.all(np.abs(out - ar @ br) <= bound(ar, br, 50))


@pytest.mark.parametrize("design", DESIGNS)
def test_batch_transposes_and_broadcast_weight(design: str) -> None:
    """A^T and B^T views (transposed on the way in), a batch, and a weight shared by the
    batch (stride 0), with an explicit plan that leaves edge tiles in every dimension."""
    cfg = get_config(design)
    a, b = randn(3, 21, 40), randn(1, 40, 19, seed=2)
    plan = GemmPlan(cfg.matrix_m, cfg.matrix_n, cfg.matrix_k, 2)
    out = run(design, a, b, trans_a=True, trans_b=True, plan=plan)
    ar, br = rounded(a, DT.F16), rounded(b, DT.F16)
    assert np.all(np.abs(out - ar @ br) <= bound(ar, br, 40))


@pytest.mark.parametrize("mnk", [(1, 1, 1), (1, 33, 17), (17, 1, 300), (5, 7, 1)])
def test_vector_and_degenerate_shapes(mnk: tuple[int, int, int]) -> None:
    m, n, k = mnk
    a, b = randn(2, m, k), randn(1, k, n, seed=1)
    out = run("cube", a, b, trans_b=True)
    ar, br = rounded(a, DT.F16), rounded(b, DT.F16)
    assert np.all(np.abs(out - ar @ br) <= bound(ar, br, k))


def test_two_batch_dimensions_with_a_broadcast_one() -> None:
    """batch (2, 3): a has both, b only the second (stride 0 over the first)."""
    cfg = get_config("edge")
    m, n, k = 9, 11, 13
    a, b = randn(2, 3, m, k, seed=14), randn(3, k, n, seed=15)
    sim = Simulator(cfg)
    regs = {3: sim.put(a, DT.F16), 4: sim.put(b, DT.F16), 5: sim.alloc(2 * 3 * m * n * 4)}
    spec = GemmSpec(
        (2, 3), m, n, k,
        GemmView(3, DT.F16, 0, (3 * m * k, m * k), k, 1),
        GemmView(4, DT.F16, 0, (0, k * n), n, 1),
        GemmView(5, DT.F32, 0, (3 * m * n, m * n), n, 1),
    )  # fmt: skip
    sim.run(bind(npu_gemm(cfg, spec).program, regs))
    out = sim.get(regs[5], (2, 3, m, n), DT.F32)
    ar, br = rounded(a, DT.F16), rounded(b, DT.F16)
    assert np.all(np.abs(out - ar @ br) <= bound(ar, br, k))


def test_work_splits_over_cores_and_output_can_be_column_major() -> None:
    cfg = get_config("datacenter")
    a, b = randn(1, 300, 64), randn(1, 64, 200, seed=3)
    spec_plan = GemmPlan(128, 128, 128, 2)  # 3 x 2 output tiles over 4 cores
    av = GemmView(3, DT.F16, 0, (0,), 64, 1)
    spec = GemmSpec((1,), 300, 200, 64, av, av, GemmView(5, DT.F32, 0, (0,), 200, 1))
    assert len(npu_gemm(cfg, spec, spec_plan).program.cores) == 4
    out = run("datacenter", a, b, plan=spec_plan, out_col_major=True)
    ar, br = rounded(a, DT.F16), rounded(b, DT.F16)
    assert np.all(np.abs(out - ar @ br) <= bound(ar, br, 64))


@pytest.mark.parametrize("design", ["cube", "datacenter"])
def test_bf16_inputs(design: str) -> None:
    a, b = randn(2, 20, 33), randn(2, 33, 17, seed=4)
    out = run(design, a, b, dt=DT.BF16)
    ar, br = rounded(a, DT.BF16), rounded(b, DT.BF16)
    assert np.all(np.abs(out - ar @ br) <= bound(ar, br, 33))


def test_bf16_on_a_design_without_bf16_raises() -> None:
    """bfloat16 inputs need a bf16 matrix unit; float32 runs as float16 pieces there
    (test_npu_gemm_f16.py)."""
    a = randn(1, 4, 4)
    with pytest.raises(DTypeNotImplemented, match="'edge' has no bf16"):
        run("edge", a, a, dt=DT.BF16)


@pytest.mark.parametrize(("design", "k"), [("cube", 150), ("datacenter", 60)])
def test_f32_precisions_against_float64(design: str, k: int) -> None:
    """highest: float32 accuracy (torch's float32 tolerances against float64); high and
    medium: the error of their bf16 passes, each clearly coarser than the one above."""
    a, b = randn(2, 29, k, seed=5), randn(2, k, 23, seed=6)
    ref = a.astype(np.float32).astype(np.float64) @ b.astype(np.float32).astype(np.float64)
    scale = np.abs(a) @ np.abs(b)
    err = {}
    for p in ("highest", "high", "medium"):
        out = run(design, a, b, dt=DT.F32, precision_=p)
        err[p] = float(np.max(np.abs(out - ref) / scale))
    out = run(design, a, b, dt=DT.F32, precision_="highest")
    np.testing.assert_allclose(out, ref, rtol=1.3e-6, atol=1e-5)
    assert err["highest"] <= 4 * 2.0**-24 + k * 2.0**-24  # dropped pieces + f32 sums
    assert err["high"] <= 4 * 2.0**-16  # dropped x1*y1 and the rounded x1
    assert err["medium"] <= 4 * 2.0**-9  # x0 and y0 rounded to bf16
    assert err["medium"] > 10 * err["high"] > 100 * err["highest"]


@pytest.mark.parametrize(
    ("dt", "precision_", "transposed"),
    [(DT.F32, "highest", False), (DT.F32, "medium", True), (DT.F16, "highest", True)],
)
def test_rows_of_tiles_reuse_a_from_l1(dt: DT, precision_: str, transposed: bool) -> None:
    """Several output tiles per row on a core: A's tiles (a float32 A's split pieces) come
    from L1 after the row's first tile, which also puts them there."""
    design, tile = "cube", 16
    cfg = get_config(design)
    plan = GemmPlan(tile, tile, tile, 2)
    m, n, k = 20, 5 * tile + 3, 40  # two rows of six tiles over two cores
    v = GemmView(3, dt, 0, (1,), k, 1)
    spec = GemmSpec((1,), m, n, k, v, v, GemmView(5, DT.F32, 0, (1,), n, 1), (), precision_)
    pieces = 3 if dt == DT.F32 and precision_ == "highest" else 1
    assert npu_gemm_plan.caches_a(cfg, spec, plan, pieces)
    code = npu_gemm(cfg, spec, plan).program.cores[0]
    assert any(isinstance(i, Dma) and i.src.space == Space.L1 for i in code)
    a, b = randn(1, m, k, seed=16), randn(1, k, n, seed=17)
    out = run(design, a, b, dt=dt, plan=plan, precision_=precision_, trans_a=transposed)
    if dt == DT.F16 or precision_ == "medium":  # the same bits as 16-bit inputs
        ar, br = (
            rounded(a, DT.BF16 if dt == DT.F32 else dt),
            rounded(b, DT.BF16 if dt == DT.F32 else dt),
        )
        assert np.all(np.abs(out - ar @ br) <= bound(ar, br, k))
    else:
        ref = a.astype(np.float32).astype(np.float64) @ b.astype(np.float32).astype(np.float64)
        np.testing.assert_allclose(out, ref, rtol=1.3e-6, atol=1e-5)


@pytest.mark.parametrize("transposed", [False, True])
def test_edge_f16_stages_a_in_longer_runs(transposed: bool) -> None:
    """edge (no L1): float16 A rows of four k-steps in one DMA into the unified buffer,
    each step's tile copied to L0A (`npu_gemm_plan.stage_depth`); a ragged depth."""
    cfg = get_config("edge")
    plan = GemmPlan(32, 48, 16, 2)
    m, n, k = 40, 70, 200
    v = GemmView(3, DT.F16, 0, (1,), k, 1)
    spec = GemmSpec((1,), m, n, k, v, v, GemmView(5, DT.F32, 0, (1,), n, 1))
    assert npu_gemm_plan.stage_depth(cfg, spec, plan, 1) == 4
    code = npu_gemm(cfg, spec, plan).program.cores[0]
    copies = [i for i in code if isinstance(i, Dma) and i.src.space == Space.UB]
    assert len(copies) == 2 * 2 * 13  # every k-step of the 2 x 2 output tiles
    a, b = randn(1, m, k, seed=21), randn(1, k, n, seed=22)
    out = run("edge", a, b, plan=plan, trans_a=transposed)
    ar, br = rounded(a, DT.F16), rounded(b, DT.F16)
    assert np.all(np.abs(out - ar @ br) <= bound(ar, br, k))


def test_f32_highest_keeps_exact_products_exact() -> None:
    """Values with 24 significant bits (not representable in bf16) multiply exactly."""
    x = (1 + 2.0**-23) * np.ones((1, 16, 16))
    out = run("cube", x, np.eye(16)[None] * 3, dt=DT.F32, precision_="highest")
    assert np.all(out == np.float32(3 * (1 + 2.0**-23)))


@pytest.mark.parametrize("design", DESIGNS)
def test_epilogue_bias_scale_relu_and_f16_store(design: str) -> None:
    a, b = randn(2, 23, 30, seed=7), randn(2, 30, 26, seed=8)
    bias = randn(26, seed=9)
    epi = (
        Bias(GemmView(BIAS_REG, DT.F32, 0, (0,), 0, 1)),  # a (n,) bias shared by the batch
        Scale(0.5),
        Unary(UnOp.RELU),
    )
    out = run(design, a, b, out_dt=DT.F16, epilogue=epi, extra={"bias": (bias, DT.F32)})
    ar, br = rounded(a, DT.F16), rounded(b, DT.F16)
    ref = np.maximum((ar @ br + rounded(bias, DT.F32)) * 0.5, 0)
    tol = bound(ar, br, 30) + 2.0**-11 * np.abs(ref)  # plus the f16 store's rounding
    assert np.all(np.abs(out - ref) <= tol)
    assert np.all(out >= 0) and np.any(out == 0)


def _row_bias_residual_gelu(bias_dt: DT, res_dt: DT, plan: GemmPlan | None = None) -> None:
    """A per-row bias (column stride 0), a full (m, n) residual, gelu, a bf16 store."""
    m, n, k = 40, 24, 20
    a, b = randn(1, m, k, seed=10), randn(1, k, n, seed=11)
    rowb, res = randn(m, seed=12), randn(m, n, seed=13)
    epi = (
        Bias(GemmView(BIAS_REG, bias_dt, 0, (0,), 1, 0)),
        Bias(GemmView(BIAS_REG + 1, res_dt, 0, (0,), n, 1)),
        Unary(UnOp.GELU),
    )
    extra = {"rowb": (rowb, bias_dt), "res": (res, res_dt)}
    out = run("cube", a, b, out_dt=DT.BF16, epilogue=epi, extra=extra, plan=plan)
    ar, br = rounded(a, DT.F16), rounded(b, DT.F16)
    x = ar @ br + rounded(rowb, bias_dt)[:, None] + rounded(res, res_dt)
    ref = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    assert np.all(np.abs(out - ref) <= 2.0**-8 * np.abs(ref) + 1e-4 * (1 + np.abs(x)))


@pytest.mark.parametrize("plan", [None, GemmPlan(16, 16, 16, 2)])
def test_epilogue_row_bias_residual_gelu_bf16_store(plan: GemmPlan | None) -> None:
    """Also with small tiles: 3 x 2 output tiles of 2 k-steps, epilogue operands flowing
    through their slots (one for the full residual) from tile to tile."""
    _row_bias_residual_gelu(DT.F32, DT.F32, plan)


def _widening_vcast_works() -> bool:
    """Whether the simulator's vcast into f32 writes all four bytes of each element (its
    `_vec` read `dst_dt or dt`, and DT.F32 is 0: the f32 result was written as the source
    type, leaving half the destination never written)."""
    sim = Simulator(get_config("cube"))
    prog = Program(
        ((VDup(DT.F16, Ref(Space.UB, 0), 1.5, (1, 4), (4, 1)),
          VCast(DT.F32, DT.F16, Ref(Space.UB, 64), Ref(Space.UB, 0), (1, 4), (4, 1), (4, 1)),
          VUn(UnOp.COPY, DT.F32, Ref(Space.UB, 128), Ref(Space.UB, 64), (1, 4), (4, 1),
              (4, 1)),
          Finish()),)
    )  # fmt: skip
    try:
        sim.run(prog)
    except UninitializedRead:
        return False
    return True


def test_epilogue_16bit_operands_are_widened_on_chip() -> None:
    if not _widening_vcast_works():
        pytest.skip("the simulator's vcast to f32 mis-writes its result (npu/simulator.py)")
    _row_bias_residual_gelu(DT.F16, DT.BF16)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_from_contraction_runs_a_kernel_ir_matmul(dtype: str) -> None:
    """The ContractionSpec the scheduler attaches to x @ w.T becomes a GemmSpec: operand
    and output dtypes from the kernel's buffers, the precision from the setting."""
    from anychip.passes.pipeline import lower_kernel
    from anychip.runtime.realize import plan

    adt = getattr(ac, dtype)
    dt = DT.F32 if dtype == "float32" else DT.F16
    x = ac.randn(12, 20).to(adt).realize()
    w = ac.randn(9, 20).to(adt).realize()
    ir = lower_kernel(plan([(x @ w.T).node])[0].kernel)
    c = ir.contraction
    assert c is not None
    spec = from_contraction(c, regs=[3 + i for i in range(len(ir.bufs))])
    odt = {ac.float32: DT.F32, ac.float16: DT.F16}[ir.bufs[0].dtype]
    assert spec.a.dtype == dt and spec.out.dtype == odt  # the kernel's output buffer
    assert spec.precision == ac.get_float32_matmul_precision()
    cfg = get_config("cube")
    sim = Simulator(cfg)
    xs, ws = x.float().numpy().astype(np.float64), w.float().numpy().astype(np.float64)
    by_size = {x.numel(): xs, w.numel(): ws}  # buffers by element count
    regs = {3: sim.alloc(odt.itemsize * ir.bufs[0].size)}
    for i, buf in enumerate(ir.bufs[1:], start=1):
        regs[3 + i] = sim.put(by_size[buf.size], dt)
    sim.run(bind(npu_gemm(cfg, spec).program, regs))
    got = sim.get(regs[3], (12, 9), odt).astype(np.float64)
    if dt == DT.F32:
        np.testing.assert_allclose(got, xs @ ws.T, rtol=1.3e-6, atol=1e-5)
    else:  # f32 sums (rounded once more if the kernel stores f16)
        assert np.all(np.abs(got - xs @ ws.T) <= bound(xs, ws.T, 20) + 2.0**-11 * np.abs(got))


@pytest.mark.parametrize("design", DESIGNS)
def test_programs_pass_the_timing_models_checks(design: str) -> None:
    """The timing model validates races, bounds and uninitialised reads on its own."""
    cfg = get_config(design)
    dt = DT.F16 if design == "edge" else DT.F32
    v = GemmView(3, dt, 0, (), 70, 1)
    epi = (Scale(2.0), Unary(UnOp.RELU))
    spec = GemmSpec((), 50, 70, 70, v, v, GemmView(4, DT.F16, 0, (), 70, 1), epi)
    g = npu_gemm(cfg, spec)
    rep = simulate_timing(bind(g.program, {3: 0, 4: 1 << 20}), cfg)
    assert rep.cycles > 0 and rep.macs >= 50 * 70 * 70


def test_bind_sets_registers_and_shifts_branch_targets() -> None:
    cfg = get_config("edge")
    loop = (SAluI(SOp.ADD, 3, 3, 1), Branch(Cond.LT, 3, 4, 0), Finish())
    bound_prog = bind(Program((loop,)), {4: 5})
    assert bound_prog.cores[0][:2] == (SMov(4, 5), SAluI(SOp.ADD, 3, 3, 1))
    assert bound_prog.cores[0][2] == Branch(Cond.LT, 3, 4, 1)
    Simulator(cfg).run(bound_prog)  # terminates: r3 counts to 5


def test_bad_specs_raise_typed_errors() -> None:
    cfg = get_config("cube")
    f16 = GemmView(3, DT.F16, 0, (), 8, 1)
    out = GemmView(5, DT.F32, 0, (), 8, 1)
    with pytest.raises(DTypeNotImplemented, match="share a dtype, got f16 and f32"):
        npu_gemm(cfg, GemmSpec((), 8, 8, 8, f16, GemmView(4, DT.F32, 0, (), 8, 1), out))
    with pytest.raises(ShapeError, match="sizes must be >= 1"):
        npu_gemm(cfg, GemmSpec((), 0, 8, 8, f16, f16, out))
    with pytest.raises(ArgumentError, match="register r2"):
        npu_gemm(cfg, GemmSpec((), 8, 8, 8, f16, GemmView(2, DT.F16, 0, (), 8, 1), out))
    with pytest.raises(ArgumentError, match="precision 'fast'"):
        npu_gemm(cfg, GemmSpec((), 8, 8, 8, f16, f16, out, (), "fast"))
    with pytest.raises(ShapeError, match="output view writes an element twice"):
        npu_gemm(cfg, GemmSpec((), 8, 8, 8, f16, f16, GemmView(5, DT.F32, 0, (), 4, 1)))
    i8 = GemmView(3, DT.I8, 0, (), 8, 1)
    with pytest.raises(DTypeNotImplemented, match="i8 inputs"):
        npu_gemm(cfg, GemmSpec((), 8, 8, 8, i8, i8, out))


# ---- the precision setting ---------------------------------------------------------------
@pytest.fixture
def restore_precision() -> Iterator[None]:
    before = ac.get_float32_matmul_precision()
    yield
    ac.set_float32_matmul_precision(before)


def test_precision_default_set_get(restore_precision: None) -> None:
    assert precision.get_float32_matmul_precision() == "highest"  # nothing changed it yet
    for p in ("medium", "high", "highest"):
        ac.set_float32_matmul_precision(p)
        assert ac.get_float32_matmul_precision() == p


def test_precision_bad_value_raises(restore_precision: None) -> None:
    for bad in ("fast", "HIGH", None, 3):
        with pytest.raises(ArgumentError, match="'highest', 'high' or 'medium'"):
            ac.set_float32_matmul_precision(bad)  # type: ignore[arg-type]
    assert ac.get_float32_matmul_precision() == "highest"


def test_precision_is_process_wide_like_torch(restore_precision: None) -> None:
    t = threading.Thread(target=ac.set_float32_matmul_precision, args=("medium",))
    t.start()
    t.join()
    assert ac.get_float32_matmul_precision() == "medium"


def test_docstring_examples() -> None:
    for mod in (ng, npu_gemm_plan, precision):
        assert doctest.testmod(mod).failed == 0
