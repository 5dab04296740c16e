"""scatter_add (embedding gradients) and f32 matrix inputs: values against numpy and exact
rationals, hazards, and costs derived by hand."""

from __future__ import annotations

import numpy as np
import pytest
from test_matrix_numerics import _reference

from anychip.npu import numerics as nx
from anychip.npu.config import PROFILES
from anychip.npu.costs import dma_cost, mma_cycles
from anychip.npu.errors import OutOfBounds, RaceError
from anychip.npu.isa import (
    DT,
    Dma,
    Finish,
    Gather,
    Mma,
    Ref,
    ScatterAdd,
    SetFlag,
    Space,
    Unit,
    WaitFlag,
)
from anychip.npu.program import Program
from anychip.npu.simulator import Simulator
from anychip.npu.timing import simulate_timing

DRAM, UB = Space.DRAM, Space.UB
EDGE = PROFILES["edge"]


def _scatter_program(dt: DT, table: int, src: int, idx: int, count: int, row: int,
                     rows: int) -> tuple:  # fmt: skip
    return (
        Dma(
            dt,
            Ref(UB, 0),
            Ref(DRAM, src),
            (1, count, row),
            (0, row, 1),
            (0, row, 1),
            (1, count, row),
        ),
        Dma(
            DT.I32,
            Ref(UB, 8192),
            Ref(DRAM, idx),
            (1, 1, count),
            (0, 0, 1),
            (0, 0, 1),
            (1, 1, count),
        ),
        SetFlag(Unit.DMA_IN, Unit.DMA_OUT, 0),
        WaitFlag(Unit.DMA_IN, Unit.DMA_OUT, 0),
        ScatterAdd(dt, Ref(DRAM, table), Ref(UB, 0), Ref(UB, 8192), count, row, row, row, rows),
    )


def _run_scatter(dt: DT, base: np.ndarray, src: np.ndarray, idx: np.ndarray) -> np.ndarray:
    sim = Simulator(EDGE)
    t, s, i = sim.put(base, dt), sim.put(src, dt), sim.put(idx, DT.I32)
    code = _scatter_program(dt, t, s, i, len(idx), base.shape[1], base.shape[0])
    sim.run(Program(((*code, Finish()),)))
    return sim.get(t, base.shape, dt)


def test_repeated_rows_accumulate_every_row_in_position_order():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((6, 8)).astype(np.float32)
    src = rng.standard_normal((7, 8)).astype(np.float32)
    idx = np.array([3, 1, 3, 3, 0, 5, 1], np.int32)
    want = base.copy()
    np.add.at(want, idx, src)  # numpy's unbuffered adds: one float32 add per row, in order
    np.testing.assert_array_equal(_run_scatter(DT.F32, base, src, idx), want)


def test_f16_rounds_each_addition_and_i64_wraps():
    base = np.array([[2048.0, 0.0]], np.float16)
    src = np.array([[1.0, 0.5], [1.0, 0.5]], np.float16)
    # 2048 + 1 = 2049 rounds to 2048 (f16 spacing 2 there), twice; the sum would be 2050
    got = _run_scatter(DT.F16, base, src, np.array([0, 0], np.int32))
    assert got.tolist() == [[2048.0, 1.0]]
    big = np.array([[2**63 - 1]], np.int64)
    one = np.array([[1], [2]], np.int64)
    assert _run_scatter(DT.I64, big, one, np.array([0, 0], np.int32)).tolist() == [[-(2**63) + 2]]


def test_an_index_outside_the_table_is_named():
    base = np.zeros((4, 2), np.float32)
    with pytest.raises(OutOfBounds, match=r"scatter_add index 4 at position 1 .*4 rows"):
        _run_scatter(DT.F32, base, np.ones((2, 2), np.float32), np.array([0, 4], np.int32))


def test_reading_the_table_without_a_flag_after_scatter_add_races():
    sim = Simulator(EDGE)
    t = sim.put(np.zeros((4, 8), np.float32), DT.F32)
    s = sim.put(np.ones((2, 8), np.float32), DT.F32)
    i = sim.put(np.array([1, 2], np.int32), DT.I32)
    code = _scatter_program(DT.F32, t, s, i, 2, 8, 4)
    read = Dma(DT.F32, Ref(UB, 4096), Ref(DRAM, t + 32), (1, 1, 8), (0, 0, 1), (0, 0, 1), (1, 1, 8))
    with pytest.raises(RaceError, match="race on dram"):
        sim.run(Program(((*code, read, Finish()),)))
    sim2 = Simulator(EDGE)  # with the flag from dma_out to dma_in, it is ordered
    t, s, i = (sim2.put(np.zeros((4, 8), np.float32), DT.F32),
               sim2.put(np.ones((2, 8), np.float32), DT.F32),
               sim2.put(np.array([1, 2], np.int32), DT.I32))  # fmt: skip
    code = _scatter_program(DT.F32, t, s, i, 2, 8, 4)
    flag = (SetFlag(Unit.DMA_OUT, Unit.DMA_IN, 1), WaitFlag(Unit.DMA_OUT, Unit.DMA_IN, 1))
    sim2.run(Program(((*code, *flag, read, Finish()),)))


def test_scatter_add_cost_by_hand():
    # edge: dram_burst 32, dram_page 2048, dram_activate 256, dma_latency 200
    sa = ScatterAdd(DT.F32, Ref(DRAM, 0), Ref(UB, 0), Ref(UB, 4096), 4, 8, 8, 8, 16)
    c = dma_cost(EDGE, sa)
    # 4 rows of 32 B: one burst each, read and written back: 2 * 4 * 32 B
    assert (c.traffic, c.activations, c.latency) == (256, 8, 400)
    assert c.occupancy == 256 + 8 * 256  # plus a page opened per row per direction
    g = Gather(DT.F32, Ref(UB, 0), Ref(DRAM, 0), Ref(UB, 4096), 4, 8, 8, 8, 16)
    assert dma_cost(EDGE, g).traffic * 2 == c.traffic


def test_f32_mma_follows_the_documented_rule_bit_for_bit():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((5, 20)).astype(np.float32)
    b = rng.standard_normal((20, 6)).astype(np.float32)
    b[0, 0] = np.float32(2.0**-30)  # a product far below the step's largest: truncated
    got = nx.matmul(DT.F32, a, b, None, 16)
    np.testing.assert_array_equal(got, _reference(a, b, 16))
    exact = a.astype(np.float64) @ b.astype(np.float64)
    assert np.abs(got - exact).max() < 1e-5  # float32 accuracy, not f16's 1e-3
    one = np.array([[2.0**100, 1.0, -(2.0**100)]], np.float32)
    assert nx.matmul(DT.F32, one, np.ones((3, 1), np.float32), None, 16)[0, 0] == 0.0


def test_f32_mma_runs_on_the_simulator_and_costs_matrix_f32_cycles():
    cube = PROFILES["cube"]
    sim = Simulator(cube)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((32, 16)).astype(np.float32)
    y = rng.standard_normal((16, 16)).astype(np.float32)
    xa, ya, out = sim.put(x, DT.F32), sim.put(y, DT.F32), sim.alloc(32 * 16 * 4)
    mma = Mma(DT.F32, Ref(Space.L0C, 0), Ref(Space.L0A, 0), Ref(Space.L0B, 0), 32, 16, 16, 0)
    code = (
        Dma(
            DT.F32,
            Ref(Space.L0A, 0),
            Ref(DRAM, xa),
            (1, 32, 16),
            (0, 16, 1),
            (0, 16, 1),
            (1, 32, 16),
        ),
        Dma(
            DT.F32,
            Ref(Space.L0B, 0),
            Ref(DRAM, ya),
            (1, 16, 16),
            (0, 16, 1),
            (0, 16, 1),
            (1, 16, 16),
        ),
        SetFlag(Unit.DMA_IN, Unit.MATRIX, 0),
        WaitFlag(Unit.DMA_IN, Unit.MATRIX, 0),
        mma,
        SetFlag(Unit.MATRIX, Unit.DMA_OUT, 0),
        WaitFlag(Unit.MATRIX, Unit.DMA_OUT, 0),
        Dma(
            DT.F32,
            Ref(DRAM, out),
            Ref(Space.L0C, 0),
            (1, 32, 16),
            (0, 16, 1),
            (0, 16, 1),
            (1, 32, 16),
        ),
        Finish(),
    )
    sim.run(Program((code,)))
    np.testing.assert_array_equal(sim.get(out, (32, 16), DT.F32), _reference(x, y, 16))
    # cube: a 16^3 tile per cycle; 2 x 1 x 1 tiles, 4 cycles each at the f32 rate
    assert mma_cycles(cube, mma) == 2 * cube.matrix_f32_cycles == 8
    # the 16-bit mma: 2 tiles of work, but its 2 KiB of f32 results need 4 cycles of the
    # l0c port (8 banks x 64 B)
    f16 = Mma(DT.F16, mma.acc, mma.a, mma.b, 32, 16, 16, 0)
    assert mma_cycles(cube, f16) == 4
    rep = simulate_timing(Program((code,)), cube)
    assert rep.macs_by_dtype == {"f32": 32 * 16 * 16}
    assert rep.energy["matrix"] == pytest.approx(32 * 16 * 16 * 4.6e-12)
