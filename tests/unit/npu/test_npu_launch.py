"""Launch arguments, scalar loads and stores, and negative strides: one compiled program
serves any buffers, sizes and runtime scalars; FLIP is a reversed view."""

from __future__ import annotations

import numpy as np
import pytest

from anychip.npu.config import PROFILES
from anychip.npu.errors import IllegalInstruction, OutOfBounds, SyncError
from anychip.npu.isa import (
    DT,
    BinOp,
    Branch,
    Cond,
    Dma,
    Finish,
    Ref,
    SAluI,
    SetFlag,
    SLoad,
    SMov,
    SOp,
    Space,
    SStore,
    Unit,
    UnOp,
    VBin,
    VUn,
    WaitFlag,
)
from anychip.npu.program import Program
from anychip.npu.simulator import Simulator
from anychip.npu.timing import simulate_timing

DRAM, UB = Space.DRAM, Space.UB
EDGE = PROFILES["edge"]


def _row_io(dst: Ref, src: Ref, n: int, dt: DT = DT.F32) -> Dma:
    return Dma(dt, dst, src, (1, 1, n), (0, 0, 1), (0, 0, 1), (1, 1, n))


def _scaled_rows() -> Program:
    """y[i] = x[i] * s for r5 rows of 8 f32: x at r3, y at r4, the f32 scalar s at r6
    (read by sld, put in ub by sst, broadcast with strides 0)."""
    code = (
        SLoad(DT.F32, 7, Ref(DRAM, 0, 6)),  # r7 = bits of s
        SStore(DT.F32, Ref(UB, 4096), 7),  # ub:4096 = s
        SMov(8, 0),  # r8: row byte offset
        SMov(9, 0),  # r9: row counter
        _row_io(Ref(UB, 0, 8), Ref(DRAM, 0, 3), 8),  # loop (index 4)
        SetFlag(Unit.DMA_IN, Unit.VECTOR, 0),
        WaitFlag(Unit.DMA_IN, Unit.VECTOR, 0),
        VBin(
            BinOp.MUL,
            DT.F32,
            Ref(UB, 2048, 8),
            Ref(UB, 0, 8),
            Ref(UB, 4096),
            (1, 8),
            (8, 1),
            (8, 1),
            (0, 0),
        ),
        SetFlag(Unit.VECTOR, Unit.DMA_OUT, 0),
        WaitFlag(Unit.VECTOR, Unit.DMA_OUT, 0),
        _row_io(Ref(DRAM, 0, 10), Ref(UB, 2048, 8), 8),
        SAluI(SOp.ADD, 8, 8, 32),
        SAluI(SOp.ADD, 9, 9, 1),
        SAluI(SOp.ADD, 3, 3, 32),
        SAluI(SOp.ADD, 10, 10, 32),
        Branch(Cond.LT, 9, 5, 4),
        Finish(),
    )
    # r10 walks y: start it at r4 (the loop adds 32 per row)
    return Program(((SAluI(SOp.ADD, 10, 4, 0), *code),))


def _fix_targets(p: Program) -> Program:
    """The prologue shifted every index by one: the branch goes back to the dma."""
    code = list(p.cores[0])
    code = [Branch(i.cond, i.ra, i.rb, i.target + 1) if isinstance(i, Branch) else i
            for i in code]  # fmt: skip
    return Program((tuple(code),))


@pytest.mark.parametrize(("rows", "scale"), [(3, 0.5), (5, -3.25)])
def test_one_program_runs_with_any_buffers_sizes_and_scalar(rows, scale):
    prog = _fix_targets(_scaled_rows())
    sim = Simulator(EDGE)
    x = np.random.default_rng(rows).standard_normal((rows, 8)).astype(np.float32)
    xa = sim.put(x, DT.F32)
    ya = sim.alloc(x.nbytes)
    block = sim.put(np.array([scale], np.float32), DT.F32)  # the argument block
    stats = sim.run(prog, args=(xa, ya, rows, block))
    np.testing.assert_array_equal(sim.get(ya, (rows, 8), DT.F32), x * np.float32(scale))
    assert stats.loads == [[int(np.array(scale, np.float32).view(np.uint32))]]
    rep = simulate_timing(prog, EDGE, args=(xa, ya, rows, block), loads=stats.loads)
    assert rep.units["core0.vector"].instructions == 3 * rows  # per row: waitf, vmul, setf


def test_timing_a_load_needs_the_functional_values():
    code = (SLoad(DT.I64, 3, Ref(DRAM, 0)), Finish())
    with pytest.raises(IllegalInstruction, match="needs the values a functional run loaded"):
        simulate_timing(Program((code,)), EDGE)


def test_sld_cycles_by_hand():
    # sld issued at 0: the queues are empty, so it starts at 1 and waits dma_latency (200)
    # for device memory; finish at 201 ends at 202.
    code = (SLoad(DT.I64, 3, Ref(DRAM, 0)), Finish())
    assert simulate_timing(Program((code,)), EDGE, loads=[[5]]).cycles == 202
    onchip = (SStore(DT.I32, Ref(UB, 0), 0), SLoad(DT.I32, 3, Ref(UB, 0)), Finish())
    # each on-chip access: start + 1 cycle; finish + 1: 2 + 2 + 1
    assert simulate_timing(Program((onchip,)), EDGE, loads=[[0]]).cycles == 5


def test_sld_sees_what_the_core_wrote_and_values_are_typed():
    sim = Simulator(EDGE)
    src = sim.put(np.array([-7, 2**40], np.int64), DT.I64)
    out = sim.alloc(64)
    code = (
        _row_io(Ref(UB, 0), Ref(DRAM, src), 2, DT.I64),
        SetFlag(Unit.DMA_IN, Unit.DMA_OUT, 0),
        WaitFlag(Unit.DMA_IN, Unit.DMA_OUT, 0),
        _row_io(Ref(DRAM, out), Ref(UB, 0), 2, DT.I64),
        SLoad(DT.I64, 3, Ref(DRAM, out + 8)),  # drains first: sees the dma_out's bytes
        SLoad(DT.I8, 4, Ref(DRAM, out)),  # the low byte of -7, sign-extended
        SAluI(SOp.SHR, 3, 3, 38),
        SStore(DT.I32, Ref(DRAM, out + 16), 3),
        SStore(DT.I32, Ref(DRAM, out + 20), 4),
        Finish(),
    )
    stats = sim.run(Program((code,)))
    assert stats.loads == [[2**40, -7]]
    assert sim.get(out + 16, (2,), DT.I32).tolist() == [4, -7]


def test_sld_out_of_bounds_and_bad_arguments_are_named():
    with pytest.raises(OutOfBounds, match="scalar load of ub"):
        Simulator(EDGE).run(Program(((SLoad(DT.F32, 3, Ref(UB, 1 << 30)), Finish()),)))
    with pytest.raises(IllegalInstruction, match=r"launch argument 1 .r4. must be a 64-bit"):
        Simulator(EDGE).run(Program(((Finish(),),)), args=(1, 2.5))
    with pytest.raises(IllegalInstruction, match="30 launch arguments"):
        Simulator(EDGE).run(Program(((Finish(),),)), args=tuple(range(30)))


def test_a_runaway_loop_on_loaded_values_still_meets_the_budget():
    sim = Simulator(EDGE)
    flag = sim.put(np.array([1], np.int32), DT.I32)
    code = (SLoad(DT.I32, 3, Ref(DRAM, flag)), Branch(Cond.NE, 3, 0, 0), Finish())
    with pytest.raises(SyncError, match="ran 50 instructions"):
        sim.run(Program((code,)), max_steps=50)


def test_negative_strides_flip_rows_in_dma_and_vector_operands():
    sim = Simulator(EDGE)
    x = np.arange(24, dtype=np.float32).reshape(3, 8)
    xa, ya = sim.put(x, DT.F32), sim.alloc(x.nbytes)
    code = (
        # columns reversed by the DMA: source element (i, j) at x + (i*8 + 7 - j)
        Dma(DT.F32, Ref(UB, 0), Ref(DRAM, xa + 7 * 4), (1, 3, 8), (0, 8, 1), (0, 8, -1), (1, 3, 8)),
        SetFlag(Unit.DMA_IN, Unit.VECTOR, 0),
        WaitFlag(Unit.DMA_IN, Unit.VECTOR, 0),
        # rows reversed by the vector unit: a starts at the last row, row stride -8
        VUn(UnOp.NEG, DT.F32, Ref(UB, 512), Ref(UB, 2 * 32), (3, 8), (8, 1), (-8, 1)),
        SetFlag(Unit.VECTOR, Unit.DMA_OUT, 0),
        WaitFlag(Unit.VECTOR, Unit.DMA_OUT, 0),
        Dma(DT.F32, Ref(DRAM, ya), Ref(UB, 512), (1, 3, 8), (0, 8, 1), (0, 8, 1), (1, 3, 8)),
        Finish(),
    )
    sim.run(Program((code,)))
    np.testing.assert_array_equal(sim.get(ya, (3, 8), DT.F32), -np.flip(x))
    assert simulate_timing(Program((code,)), EDGE).cycles > 0


def test_a_negative_stride_below_the_buffer_is_out_of_bounds():
    code = (VUn(UnOp.NEG, DT.F32, Ref(UB, 0), Ref(UB, 4), (1, 4), (4, 1), (4, -1)), Finish())
    with pytest.raises(OutOfBounds, match="byte -8"):
        Simulator(EDGE).run(Program((code,)))
    with pytest.raises(IllegalInstruction, match="destination elements overlap"):
        VUn(UnOp.NEG, DT.F32, Ref(UB, 64), Ref(UB, 0), (2, 4), (-2, 1), (4, 1))
