"""The vector unit's compare, select, logic, math, integer and cast instructions against
numpy and PyTorch (independent references), bit for bit where the ISA says so."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from vec_harness import run_vec

from anychip.npu.config import PROFILES
from anychip.npu.costs import vector_cycles
from anychip.npu.errors import IllegalInstruction
from anychip.npu.isa import (
    DT,
    BinOp,
    CastMode,
    CmpOp,
    Dma,
    Finish,
    RedOp,
    Ref,
    SetFlag,
    Space,
    Unit,
    UnOp,
    VBin,
    VCast,
    VCmp,
    VCmpS,
    VDup,
    VReduce,
    VScalar,
    VScan,
    VSel,
    VSort,
    VUn,
    WaitFlag,
)
from anychip.npu.program import Program
from anychip.npu.timing import simulate_timing

RNG = np.random.default_rng(7)
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the references hit NaN, inf
CMP = {CmpOp.EQ: np.equal, CmpOp.NE: np.not_equal, CmpOp.LT: np.less, CmpOp.LE: np.less_equal,
       CmpOp.GT: np.greater, CmpOp.GE: np.greater_equal}  # fmt: skip


def _binary(op, dt, a, b, out_dt=None):
    r, c = a.shape
    s = (c, 1)
    return run_vec(lambda ins, o: VBin(op, dt, o, ins[0], ins[1], (r, c), s, s, s),
                   [(a, dt), (b, dt)], out_dt or dt)  # fmt: skip


def _unary(op, dt, a):
    r, c = a.shape
    return run_vec(lambda ins, o: VUn(op, dt, o, ins[0], (r, c), (c, 1), (c, 1)), [(a, dt)], dt)


def _special_f32() -> tuple[np.ndarray, np.ndarray]:
    a = np.array([[0.0, -0.0, 1.0, np.nan, np.inf, -np.inf, 2.5, -3.0]], np.float32)
    b = np.array([[-0.0, 0.0, np.nan, np.nan, np.inf, 1.0, 2.5, 7.0]], np.float32)
    return a, b


@pytest.mark.parametrize("op", list(CmpOp), ids=lambda o: o.name.lower())
def test_compare_f32_matches_numpy_with_nan_and_signed_zero(op):
    a, b = _special_f32()
    x = np.concatenate([a, RNG.standard_normal((3, 8)).astype(np.float32)])
    y = np.concatenate([b, x[1:] * (RNG.random((3, 8)) < 0.5)]).astype(np.float32)
    r, c = x.shape
    s = (c, 1)
    got = run_vec(lambda ins, o: VCmp(op, DT.F32, o, ins[0], ins[1], (r, c), s, s, s),
                  [(x, DT.F32), (y, DT.F32)], DT.BOOL)  # fmt: skip
    np.testing.assert_array_equal(got, CMP[op](x, y).astype(np.uint8))


@pytest.mark.parametrize("dt", [DT.I64, DT.I32, DT.F64, DT.BF16, DT.BOOL])
def test_compare_other_types_and_the_immediate_form(dt):
    if dt == DT.I64:  # beyond float64's 2^53: compared as integers, not rounded
        x = np.array([[2**62 + 1, 2**62, -(2**63), 5]], np.int64)
        y = np.array([[2**62, 2**62 + 1, -(2**63), 5]], np.int64)
    elif dt == DT.BOOL:
        x, y = np.array([[0, 1, 1, 0]], np.uint8), np.array([[0, 0, 1, 1]], np.uint8)
    else:
        x = RNG.integers(-3, 3, (2, 4)).astype(np.float64)
        y = RNG.integers(-3, 3, (2, 4)).astype(np.float64)
    r, c = x.shape
    s = (c, 1)
    design = "datacenter" if dt == DT.BF16 else "edge"  # edge has no bf16
    got = run_vec(lambda ins, o: VCmp(CmpOp.LT, dt, o, ins[0], ins[1], (r, c), s, s, s),
                  [(x, dt), (y, dt)], DT.BOOL, design=design)  # fmt: skip
    np.testing.assert_array_equal(got, (x < y).astype(np.uint8))
    imm = run_vec(lambda ins, o: VCmpS(CmpOp.GE, dt, o, ins[0], 1.0, (r, c), s, s),
                  [(x, dt)], DT.BOOL, design=design)  # fmt: skip
    np.testing.assert_array_equal(imm, (x >= 1).astype(np.uint8))


def test_isnan_is_compare_ne_with_itself():
    a, _ = _special_f32()
    got = run_vec(lambda ins, o: VCmp(CmpOp.NE, DT.F32, o, ins[0], ins[0], (1, 8), (8, 1),
                                      (8, 1), (8, 1)), [(a, DT.F32)], DT.BOOL)  # fmt: skip
    np.testing.assert_array_equal(got[0], np.isnan(a[0]).astype(np.uint8))


def test_select_is_bit_exact_and_broadcasts_a_scalar():
    mask = (RNG.random((4, 16)) < 0.5).astype(np.uint8)
    a = RNG.standard_normal((4, 16)).astype(np.float32)
    a[0, 0] = np.float32(np.nan)  # a payload-carrying NaN must survive bit for bit
    b = np.full((1, 1), -0.0, np.float32)
    s = (16, 1)
    got = run_vec(lambda ins, o: VSel(DT.F32, o, ins[0], ins[1], ins[2], (4, 16), s, s, s, (0, 0)),
                  [(mask, DT.BOOL), (a, DT.F32), (b, DT.F32)], DT.F32, (4, 16))  # fmt: skip
    want = np.where(mask != 0, a, np.float32(-0.0))
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("op", [BinOp.AND, BinOp.OR, BinOp.XOR])
def test_mask_logic_and_integer_bitwise(op):
    fn = {BinOp.AND: np.bitwise_and, BinOp.OR: np.bitwise_or, BinOp.XOR: np.bitwise_xor}[op]
    m1 = (RNG.random((2, 32)) < 0.5).astype(np.uint8)
    m2 = (RNG.random((2, 32)) < 0.5).astype(np.uint8)
    np.testing.assert_array_equal(_binary(op, DT.BOOL, m1, m2), fn(m1, m2))
    i1 = RNG.integers(-(2**62), 2**62, (2, 8))
    i2 = RNG.integers(-(2**62), 2**62, (2, 8))
    np.testing.assert_array_equal(_binary(op, DT.I64, i1, i2), fn(i1, i2))
    np.testing.assert_array_equal(_unary(UnOp.NOT, DT.BOOL, m1), 1 - m1)
    np.testing.assert_array_equal(_unary(UnOp.NOT, DT.I64, i1), np.invert(i1))


def test_an_op_the_type_lacks_is_illegal_and_named():
    a = np.ones((1, 4), np.float32)
    with pytest.raises(IllegalInstruction, match="and is not defined on f32"):
        _binary(BinOp.AND, DT.F32, a, a)
    with pytest.raises(IllegalInstruction, match="sin is not defined on i32"):
        _unary(UnOp.SIN, DT.I32, a.astype(np.int32))


_F32_MATH = {
    UnOp.SIN: torch.sin, UnOp.COS: torch.cos, UnOp.ERF: torch.erf, UnOp.LOG1P: torch.log1p,
    UnOp.EXPM1: torch.expm1, UnOp.FLOOR: torch.floor, UnOp.CEIL: torch.ceil,
    UnOp.ROUND: torch.round, UnOp.TRUNC: torch.trunc, UnOp.SIGN: torch.sign,
}  # fmt: skip


@pytest.mark.parametrize("op", list(_F32_MATH), ids=lambda o: o.name.lower())
def test_math_is_within_an_ulp_of_torch_float32_and_exact_in_float64(op):
    x = (RNG.standard_normal((4, 64)) * 4).astype(np.float32)
    x[0, :6] = [0.5, -0.5, 1.5, 2.5, -0.0, 100.0]  # round's ties go to even
    got = _unary(op, DT.F32, x)
    ref = _F32_MATH[op](torch.from_numpy(x)).numpy()
    ulp = np.spacing(np.abs(ref).astype(np.float32))
    near = np.abs(got.astype(np.float64) - ref) <= ulp
    assert np.all(near | (got == ref) | (np.isnan(got) & np.isnan(ref))), op
    f64 = {UnOp.SIN: np.sin, UnOp.COS: np.cos, UnOp.LOG1P: np.log1p, UnOp.EXPM1: np.expm1,
           UnOp.ERF: np.vectorize(math.erf)}.get(op)  # fmt: skip
    if f64 is not None:  # correctly rounded: the float64 value rounded once
        np.testing.assert_array_equal(got, f64(x.astype(np.float64)).astype(np.float32))
    else:
        np.testing.assert_array_equal(got, ref)


def test_pow_and_mod_follow_the_primitives():
    a = np.array([[2.0, -8.0, 0.0, 5.5, -5.5, 1e30]], np.float32)
    b = np.array([[10.0, 1 / 3, -1.0, 2.0, 2.0, 3.0]], np.float32)
    np.testing.assert_array_equal(_binary(BinOp.POW, DT.F32, a, b),
                                  np.power(a.astype(np.float64), b).astype(np.float32))  # fmt: skip
    np.testing.assert_array_equal(_binary(BinOp.MOD, DT.F32, a, b), np.fmod(a, b))
    # integers: C division and remainder (toward zero), zero divisors give 0, b < 0 powers 1
    x = np.array([[7, -7, 7, -7, 5, -(2**31)]], np.int32)
    y = np.array([[2, 2, -2, -2, 0, -1]], np.int32)
    np.testing.assert_array_equal(_binary(BinOp.DIV, DT.I32, x, y),
                                  [[3, -3, -3, 3, 0, -(2**31)]])  # fmt: skip
    np.testing.assert_array_equal(_binary(BinOp.MOD, DT.I32, x, y), [[1, -1, 1, -1, 0, 0]])
    p = np.array([[3, 2, 7, -2]], np.int64)
    q = np.array([[4, 63, -1, 3]], np.int64)
    np.testing.assert_array_equal(_binary(BinOp.POW, DT.I64, p, q), [[81, 2**63 - 2**64, 1, -8]])


def test_integer_division_matches_torch_trunc_on_random_data():
    x = RNG.integers(-1000, 1000, (4, 16))
    y = RNG.integers(-9, 10, (4, 16))
    y[y == 0] = 3
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    np.testing.assert_array_equal(_binary(BinOp.DIV, DT.I64, x, y),
                                  torch.div(tx, ty, rounding_mode="trunc").numpy())  # fmt: skip
    np.testing.assert_array_equal(_binary(BinOp.MOD, DT.I64, x, y), torch.fmod(tx, ty).numpy())


def test_shifts_wrap_their_count_and_shr_keeps_the_sign():
    x = np.array([[1, -16, 1, 3]], np.int32)
    n = np.array([[31, 2, 33, 0]], np.int32)
    np.testing.assert_array_equal(_binary(BinOp.SHL, DT.I32, x, n), [[-(2**31), -64, 2, 3]])
    np.testing.assert_array_equal(_binary(BinOp.SHR, DT.I32, x, n), [[0, -4, 0, 3]])


def test_i64_and_f64_arithmetic_are_exact_in_their_width():
    x = np.array([[2**63 - 1, 2**53 + 1, -5]], np.int64)
    y = np.array([[1, 2, 7]], np.int64)
    np.testing.assert_array_equal(_binary(BinOp.ADD, DT.I64, x, y),
                                  [[-(2**63), 2**53 + 3, 2]])  # fmt: skip
    a = RNG.standard_normal((3, 8))
    b = RNG.standard_normal((3, 8))
    np.testing.assert_array_equal(_binary(BinOp.MUL, DT.F64, a, b), a * b)
    np.testing.assert_array_equal(_unary(UnOp.EXP, DT.F64, a), np.exp(a))


def _reduce(op, dt, a, axis):
    r, c = a.shape
    shape = (r, 1) if axis == 1 else (1, c)
    return run_vec(lambda ins, o: VReduce(op, dt, axis, o, ins[0], (r, c), (shape[1], 1), (c, 1)),
                   [(a, dt)], dt, shape)  # fmt: skip


def test_min_and_prod_reductions_and_exact_f64_sums():
    a = RNG.standard_normal((4, 32)).astype(np.float32)
    np.testing.assert_array_equal(_reduce(RedOp.MIN, DT.F32, a, 1), a.min(1, keepdims=True))
    prod = np.prod(a.astype(np.float64), axis=0, keepdims=True).astype(np.float32)
    np.testing.assert_array_equal(_reduce(RedOp.PROD, DT.F32, a, 0), prod)
    big = np.array([[1e16, 1.0, -1e16, 3.0] * 4], np.float64)  # float64 sums lose the 1.0
    assert _reduce(RedOp.SUM, DT.F64, big, 1)[0, 0] == math.fsum(big[0]) == 16.0
    m = np.array([[0, 1, 0], [1, 1, 1]], np.uint8)
    np.testing.assert_array_equal(_reduce(RedOp.MAX, DT.BOOL, m, 1), [[1], [1]])
    np.testing.assert_array_equal(_reduce(RedOp.MIN, DT.BOOL, m, 1), [[0], [1]])


def _cast(src, dst, a, mode):
    r, c = a.shape
    return run_vec(lambda ins, o: VCast(dst, src, o, ins[0], (r, c), (c, 1), (c, 1), mode),
                   [(a, src)], dst)  # fmt: skip


def test_truncating_cast_is_the_primitive_cast():
    x = np.array([[2.7, -2.7, 0.5, -0.5, 1e10, np.nan, -1e10, 3.0]], np.float32)
    got = _cast(DT.F32, DT.I32, x, CastMode.TRUNC)
    np.testing.assert_array_equal(got, [[2, -2, 0, 0, 2**31 - 1, 0, -(2**31), 3]])
    rounded = _cast(DT.F32, DT.I32, x, CastMode.ROUND)
    np.testing.assert_array_equal(rounded[0, :4], [3, -3, 0, 0])  # half to even
    big = np.array([[2**40 + 5, -(2**33) - 1, 7]], np.int64)
    np.testing.assert_array_equal(_cast(DT.I64, DT.I32, big, CastMode.TRUNC), big.astype(np.int32))
    np.testing.assert_array_equal(_cast(DT.I64, DT.I32, big, CastMode.ROUND),
                                  [[2**31 - 1, -(2**31), 7]])  # fmt: skip


def test_casts_to_and_from_bool_and_i64_to_f32_round_once():
    x = np.array([[0.0, -0.0, np.nan, 2.0]], np.float32)
    np.testing.assert_array_equal(_cast(DT.F32, DT.BOOL, x, CastMode.TRUNC), [[0, 0, 1, 1]])
    m = np.array([[0, 1]], np.uint8)
    np.testing.assert_array_equal(_cast(DT.BOOL, DT.F32, m, CastMode.ROUND), [[0.0, 1.0]])
    i = np.array([[2**60 + 2**36 + 1, -(2**53) - 1, 3]], np.int64)  # double rounding would err
    want = torch.from_numpy(i).to(torch.float32).numpy()
    np.testing.assert_array_equal(_cast(DT.I64, DT.F32, i, CastMode.ROUND), want)


def test_vscalar_on_i64_and_bool_immediates():
    x = np.array([[1, -2, 3]], np.int64)
    got = run_vec(lambda ins, o: VScalar(BinOp.SHL, DT.I64, o, ins[0], 40.0, (1, 3), (3, 1),
                                         (3, 1)), [(x, DT.I64)], DT.I64)  # fmt: skip
    np.testing.assert_array_equal(got, x << 40)


def test_cycles_of_64_bit_and_mask_instructions_by_hand():
    edge = PROFILES["edge"]  # 16 lanes of 32 bits, vector_f64_cycles 4, latency 6
    ub = Ref(Space.UB, 0)
    s = (64, 1)
    # f64 math: 64 elements / 8 lanes = 8 groups, 4 cycles each
    assert vector_cycles(edge, VBin(BinOp.ADD, DT.F64, ub, ub, ub, (1, 64), s, s, s)) == 32
    # moving f64 bits runs at full rate: 8 groups
    assert vector_cycles(edge, VUn(UnOp.COPY, DT.F64, ub, ub, (1, 64), s, s)) == 8
    # i64 arithmetic is not f64 math: half the lanes only
    assert vector_cycles(edge, VBin(BinOp.ADD, DT.I64, ub, ub, ub, (1, 64), s, s, s)) == 8
    # an f32 compare: lanes by the f32 inputs, 64 / 16 = 4
    cmp = VCmp(CmpOp.LT, DT.F32, Ref(Space.UB, 4096), ub, ub, (1, 64), s, s, s)
    assert vector_cycles(edge, cmp) == 4
    # a bool select: 16-bit-class lanes (32), 2 groups
    sel = VSel(DT.BOOL, ub, ub, ub, ub, (1, 64), s, s, s, s)
    assert vector_cycles(edge, sel) == 2
    # the whole program: vdup issued at 0, starts at 1, busy 8 (f64, full rate), + latency 6
    dup = VDup(DT.F64, ub, 1.0, (1, 64), s)
    assert simulate_timing(Program(((dup, Finish()),)), edge).cycles == 15


def _row_op(make, x, dt, out_dt):
    return run_vec(make, [(x, dt)], out_dt)


@pytest.mark.parametrize("dt", [DT.F32, DT.F64, DT.I64, DT.F16])
def test_cumsum_along_rows_and_columns(dt):
    x = RNG.integers(-50, 50, (3, 40)).astype(np.float64)
    if dt.is_float:
        x = x + RNG.standard_normal((3, 40))
    store = {DT.F32: np.float32, DT.F64: np.float64, DT.I64: np.int64, DT.F16: np.float16}[dt]
    x = x.astype(store)
    r, c = x.shape
    for axis in (0, 1):
        got = _row_op(
            lambda ins, o, ax=axis: VScan(dt, ax, o, ins[0], (r, c), (c, 1), (c, 1)), x, dt, dt
        )
        exact = np.cumsum(x.astype(np.float64) if dt.is_float else x, axis=axis)
        if dt == DT.F64:  # each prefix within one rounding of the exact sum
            fs = np.array(
                [
                    [math.fsum(line[: j + 1]) for j in range(line.size)]
                    for line in np.moveaxis(x, axis, 0).T
                ]
            ).T
            np.testing.assert_array_equal(got, np.moveaxis(fs, 0, axis))
        else:
            np.testing.assert_array_equal(got, exact.astype(store))


def test_argsort_is_stable_with_nan_and_signed_zero_as_torch():
    x = np.array([[3.0, np.nan, -0.0, 1.0, 0.0, 3.0, np.nan, -np.inf]], np.float32)
    x = np.concatenate([x, RNG.integers(0, 4, (3, 8)).astype(np.float32)])
    for desc in (0, 1):
        got = _row_op(
            lambda ins, o, d=desc: VSort(DT.F32, d, o, ins[0], (4, 8), (8, 1), (8, 1)),
            x,
            DT.F32,
            DT.I32,
        )
        want = torch.sort(torch.from_numpy(x), dim=1, descending=bool(desc), stable=True)[1]
        np.testing.assert_array_equal(got, want.numpy())


def test_sort_and_scan_cycles_by_hand():
    edge = PROFILES["edge"]
    ub = Ref(Space.UB, 0)
    # 3 rows of 100 f32: padded to 128, 7 * 8 / 2 = 28 stages of 128 / 16 = 8 cycles
    assert vector_cycles(edge, VSort(DT.F32, 0, ub, ub, (3, 100), (100, 1), (100, 1))) == 672
    # a scan streams like an elementwise op: 3 * 100 / 16 lanes, dense
    assert vector_cycles(edge, VScan(DT.F32, 1, ub, ub, (3, 100), (100, 1), (100, 1))) == 19


def test_f64_elements_cost_their_own_energy():
    edge = PROFILES["edge"]
    ub = Ref(Space.UB, 0)
    s = (64, 1)
    add = VBin(BinOp.ADD, DT.F64, ub, ub, ub, (1, 64), s, s, s)
    code = (VDup(DT.F64, ub, 1.0, (1, 64), s), add, Finish())
    rep = simulate_timing(Program((code,)), edge)
    assert (rep.vector_elements, rep.vector_f64_elements) == (128, 64)  # the dup moves bits
    e = edge.energy
    assert rep.energy["vector"] == pytest.approx((64 * e.vector_op + 64 * e.vector_op_f64) * 1e-12)
    assert e.vector_op_f64 == pytest.approx(4 * e.vector_op)


def test_a_reversed_dma_pays_a_burst_per_element():
    from anychip.npu.costs import dma_cost
    from anychip.npu.isa import Dma

    edge = PROFILES["edge"]  # 32-byte bursts
    fwd = Dma(DT.F32, Ref(Space.UB, 0), Ref(Space.DRAM, 0), (1, 1, 8), (0, 0, 1), (0, 0, 1),
              (1, 1, 8))  # fmt: skip
    rev = Dma(DT.F32, Ref(Space.UB, 0), Ref(Space.DRAM, 28), (1, 1, 8), (0, 0, 1), (0, 0, -1),
              (1, 1, 8))  # fmt: skip
    # forward: one 32-byte run, one burst; reversed: 8 runs of 4 bytes, a burst each
    assert (dma_cost(edge, fwd).traffic, dma_cost(edge, rev).traffic) == (32, 8 * 32)


def test_iota_gives_loop_indices_as_values_from_a_register_offset():
    from anychip.npu.isa import SMov, VIota
    from anychip.npu.simulator import Simulator

    sim = Simulator(PROFILES["edge"])
    out = sim.alloc(3 * 5 * 8)
    ub = Ref(Space.UB, 0)
    code = (
        SMov(7, 100),  # the tile's first row index
        VIota(DT.I64, ub, 7, 2, 5, 1, (3, 5), (5, 1)),
        SetFlag(Unit.VECTOR, Unit.DMA_OUT, 0),
        WaitFlag(Unit.VECTOR, Unit.DMA_OUT, 0),
        Dma(DT.I64, Ref(Space.DRAM, out), ub, (1, 3, 5), (0, 5, 1), (0, 5, 1), (1, 3, 5)),
        Finish(),
    )
    sim.run(Program((code,)))
    i, j = np.meshgrid(np.arange(3), np.arange(5), indexing="ij")
    np.testing.assert_array_equal(sim.get(out, (3, 5), DT.I64), 102 + 5 * i + j)
    big = run_vec(lambda ins, o: VIota(DT.F32, o, 0, 2**24, 1, 1, (1, 4), (4, 1)),
                  [(np.zeros((1, 4), np.float32), DT.F32)], DT.F32)  # fmt: skip
    np.testing.assert_array_equal(big, [[2.0**24, 2.0**24, 2.0**24 + 2, 2.0**24 + 4]])
    # cost: as vdup, 15 i64 elements on 8 lanes of 64 bits: 2 groups
    assert vector_cycles(PROFILES["edge"], code[1]) == 2


def test_unsigned_and_16_bit_integers_wrap_compare_and_shift_as_numpy():
    a8 = np.array([[200, 5, 255, 0]], np.uint8)
    b8 = np.array([[100, 7, 1, 1]], np.uint8)
    np.testing.assert_array_equal(_binary(BinOp.ADD, DT.U8, a8, b8), a8 + b8)  # wraps
    np.testing.assert_array_equal(_binary(BinOp.SUB, DT.U8, a8, b8), a8 - b8)
    a32 = np.array([[2**31 + 5, 1, 2**32 - 1]], np.uint32)
    b32 = np.array([[3, 2**31, 4]], np.uint32)
    np.testing.assert_array_equal(_binary(BinOp.DIV, DT.U32, a32, b32), a32 // b32)
    # logical (zero-filling), by the count modulo 32
    np.testing.assert_array_equal(_binary(BinOp.SHR, DT.U32, a32, b32), a32 >> (b32 % 32))
    s3 = (3, 1)
    gt = lambda ins, o: VCmp(CmpOp.GT, DT.U32, o, ins[0], ins[1], (1, 3), s3, s3, s3)  # noqa: E731
    got = run_vec(gt, [(a32, DT.U32), (b32, DT.U32)], DT.BOOL)
    np.testing.assert_array_equal(got, (a32 > b32).astype(np.uint8))
    a64 = np.array([[2**64 - 1, 2**63]], np.uint64)
    one = np.array([[1, 2**63]], np.uint64)
    np.testing.assert_array_equal(_binary(BinOp.ADD, DT.U64, a64, one), a64 + one)
    np.testing.assert_array_equal(_binary(BinOp.MAX, DT.U64, a64, one), np.maximum(a64, one))
    i16 = np.array([[300, -300, 2**15 - 1]], np.int16)
    np.testing.assert_array_equal(_binary(BinOp.MUL, DT.I16, i16, i16), i16 * i16)


def test_casts_among_unsigned_types_wrap_or_saturate():
    x = np.array([[300, -1, 7]], np.int32)
    np.testing.assert_array_equal(_cast(DT.I32, DT.U8, x, CastMode.TRUNC), [[44, 255, 7]])
    np.testing.assert_array_equal(_cast(DT.I32, DT.U8, x, CastMode.ROUND), [[255, 0, 7]])
    f = np.array([[-5.5, 300.7, 2.0**70, np.nan]], np.float32)
    np.testing.assert_array_equal(_cast(DT.F32, DT.U8, f, CastMode.TRUNC), [[0, 255, 255, 0]])
    np.testing.assert_array_equal(_cast(DT.F32, DT.U64, f, CastMode.TRUNC),
                                  [[0, 300, 2**64 - 1, 0]])  # fmt: skip
    u = np.array([[2**64 - 1, 2**40]], np.uint64)
    np.testing.assert_array_equal(
        _cast(DT.U64, DT.I32, u, CastMode.ROUND), [[2**31 - 1, 2**31 - 1]]
    )
    np.testing.assert_array_equal(_cast(DT.U64, DT.F32, u, CastMode.ROUND), u.astype(np.float32))


@pytest.mark.parametrize("dt", [DT.F32, DT.F16, DT.BF16])
def test_vpows_2_is_the_bits_of_vmul_x_x(dt: DT) -> None:
    """The npu lowering writes `x * x` as `vpows x 2` (one operand read, not two): the
    square is exact in f64 and rounded once, so it is vmul's result bit for bit, special
    values, overflow and underflow included."""
    rng = np.random.default_rng(11)
    vals = np.concatenate([rng.standard_normal(500) * 10.0 ** rng.integers(-25, 25, 500),
                           [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-45, 3e38, 65504.0,
                            300.0, 1e-7, 2.0**-130, -(2.0**64)]])  # fmt: skip
    a = vals.reshape(1, -1)
    if dt != DT.BF16:
        with np.errstate(over="ignore"):
            a = a.astype(np.float16 if dt == DT.F16 else np.float32).astype(np.float64)
    r, c = a.shape
    s = (c, 1)
    sq = run_vec(lambda ins, o: VScalar(BinOp.POW, dt, o, ins[0], 2.0, (r, c), s, s),
                 [(a, dt)], dt, design="datacenter")  # fmt: skip
    mul = run_vec(lambda ins, o: VBin(BinOp.MUL, dt, o, ins[0], ins[0], (r, c), s, s, s),
                  [(a, dt)], dt, design="datacenter")  # fmt: skip
    assert np.asarray(sq).tobytes() == np.asarray(mul).tobytes()
