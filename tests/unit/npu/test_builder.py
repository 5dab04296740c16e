"""The macro-assembler: allocation limits, loops, flag rings, and that the simulator catches
deliberately broken builder programs (races, out-of-bounds, never-written reads)."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest

from anychip.npu.asm import assemble, disassemble
from anychip.npu.builder import Builder, DramLayout, Ring, Tile, pipeline, program
from anychip.npu.config import PROFILES
from anychip.npu.errors import IllegalInstruction, OutOfBounds, RaceError, UninitializedRead
from anychip.npu.isa import DT, BinOp, Ref, SAluI, SetFlag, SOp, Space, Unit, WaitFlag
from anychip.npu.kernels import elementwise, gemm
from anychip.npu.simulator import Simulator

EDGE = PROFILES["edge"]


def test_alloc_refuses_a_full_buffer():
    b = Builder(EDGE)
    b.alloc(Space.UB, EDGE.ub.size - 64)
    with pytest.raises(IllegalInstruction, match="do not fit ub"):
        b.alloc(Space.UB, 128)


def test_mma_shape_mismatch_is_rejected():
    b = Builder(EDGE)
    a, w = b.tile(Space.L0A, 16, 32, DT.F16), b.tile(Space.L0B, 16, 16, DT.F16)
    with pytest.raises(IllegalInstruction, match="mma shapes do not agree"):
        b.mma(b.tile(Space.L0C, 16, 16, DT.F32), a, w, accumulate=False)


def test_loop_runs_its_body_count_times_with_register_addresses():
    # x[i] += 1 for i in 0..4 through a register-addressed (1, 1) tile, then store x (1, 5)
    lay, b = DramLayout(), Builder(EDGE)
    out = lay.add("out", DT.F32, (5,), init="none")
    x = b.tile(Space.UB, 1, 5, DT.F32)
    b.vdup(x, 2.0)
    with b.loop(5) as i:
        addr = b.reg()
        b.emit(SAluI(SOp.MUL, addr, i, 4))  # byte offset of element i
        cell = Tile(Ref(Space.UB, x.ref.off, addr), 1, 1, DT.F32)
        b.vscalar(BinOp.ADD, cell, cell, float(1))
    b.set(Unit.VECTOR, Unit.DMA_OUT, 0)
    b.wait(Unit.VECTOR, Unit.DMA_OUT, 0)
    b.store(out.addr, 5, x)
    sim = Simulator(EDGE)
    sim.run(program([b], lay.decls))
    assert sim.get(out.addr, (5,), DT.F32).tolist() == [3.0] * 5


def test_pipeline_flags_pair_up():
    b = Builder(EDGE)
    units = [Unit.DMA_IN, Unit.VECTOR, Unit.DMA_OUT]
    pipeline(b, units, [0, 1, 2], list(range(7)), [lambda s, i: None] * 3)
    sets = Counter((i.src, i.dst) for i in b.code if isinstance(i, SetFlag))
    waits = Counter((i.src, i.dst) for i in b.code if isinstance(i, WaitFlag))
    assert sets == waits == {(units[0], units[1]): 7, (units[1], units[2]): 7,
                             (units[2], units[0]): 7}  # fmt: skip


def test_ring_reuses_a_slot_only_after_its_last_stage():
    b = Builder(EDGE)
    r = Ring(b, [Unit.DMA_IN, Unit.MATRIX], ["s0", "s1"])
    assert [r.enter(0), r.enter(0)] == ["s0", "s1"]
    assert not b.code  # two free slots: no wait yet
    assert r.enter(0) == "s0"
    assert b.code == [WaitFlag(Unit.MATRIX, Unit.DMA_IN, r.flag)]


def _strip_sync(prog):
    cores = tuple(
        tuple(i for i in code if not isinstance(i, (SetFlag, WaitFlag))) for code in prog.cores
    )
    return dataclasses.replace(prog, cores=cores)


def test_simulator_catches_a_race_in_a_builder_program_without_flags():
    k = elementwise(EDGE, "relu", 100)
    sim = Simulator(EDGE)
    sim.write(k.inputs[0].addr, np.ones(100, np.float32))
    with pytest.raises(
        RaceError,
        match=r"race on ub byte \d+: this read .*\(no flag or barrier between dma_in and vector\)",
    ):
        sim.run(_strip_sync(k.program))


def test_simulator_catches_a_race_in_gemm_without_flags():
    k = gemm(EDGE, 40, 40, 40)
    sim = Simulator(EDGE)
    for d in k.inputs:
        sim.write(d.addr, np.ones(d.shape, np.float16))
    with pytest.raises(RaceError, match=r"race on (l0a|l0b|l0c) byte"):
        sim.run(_strip_sync(k.program))


def test_simulator_catches_out_of_bounds_tile():
    b = Builder(EDGE)
    bad = Tile(Ref(Space.UB, EDGE.ub.size - 64), 4, 16, DT.F32)  # 256 bytes, 64 left
    b.vdup(bad, 1.0)
    with pytest.raises(OutOfBounds, match=r"out-of-bounds .* of ub at byte .*instruction #0"):
        Simulator(EDGE).run(program([b]))


def test_simulator_catches_read_of_never_written_buffer():
    b = Builder(EDGE)
    x, y = b.tile(Space.UB, 2, 8, DT.F32), b.tile(Space.UB, 2, 8, DT.F32)
    b.vbin(BinOp.ADD, y, x, x)
    with pytest.raises(UninitializedRead, match="never-written ub"):
        Simulator(EDGE).run(program([b]))


def test_kernel_programs_round_trip_through_text_and_binary():
    for k in (gemm(PROFILES["cube"], 50, 40, 70), elementwise(PROFILES["datacenter"], "fma", 999)):
        assert assemble(disassemble(k.program)) == k.program
        assert type(k.program).from_bytes(k.program.to_bytes()) == k.program
