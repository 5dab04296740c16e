"""Properties of the timing model on many programs: it agrees with the functional model on
what ran, never beats the roofline, and its cycle accounting adds up."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from timing_programs import box, gemm_program

from anychip.npu.config import PROFILES
from anychip.npu.isa import (
    DT,
    Barrier,
    BinOp,
    Finish,
    Instr,
    Mma,
    Ref,
    SetFlag,
    Space,
    Unit,
    VDup,
    VScalar,
    WaitFlag,
)
from anychip.npu.program import Program
from anychip.npu.simulator import Simulator
from anychip.npu.timing import simulate_timing

GEMMS = [
    ("edge", (64, 64, 64), (32, 32, 32)),
    ("edge", (128, 64, 96), (64, 32, 32)),
    ("cube", (256, 128, 128), (64, 64, 32)),
    ("datacenter", (512, 512, 256), (256, 256, 128)),
]


def _check_accounting(r) -> None:
    # every unit's busy + stalls fits in its core's time; the run never beats the roofline
    for name, s in r.units.items():
        core = int(name.split(".")[0][4:])
        assert s.busy + sum(s.stalls.values()) <= r.core_cycles[core] + 1e-6, name
        assert min(s.stalls.values()) >= 0 and s.busy >= 0
    assert r.exact_cycles >= r.compute_cycles - 1e-6
    assert r.exact_cycles >= r.memory_cycles - 1e-6
    assert 0 <= r.roofline_fraction <= 1 + 1e-9


@pytest.mark.parametrize("name,mnk,blocks", GEMMS)
@pytest.mark.parametrize("overlap", [True, False])
def test_timing_agrees_with_functional_run(name, mnk, blocks, overlap):
    cfg = PROFILES[name]
    m, n, k = mnk
    rng = np.random.default_rng(1)
    a = rng.standard_normal((m, k)).astype(np.float16)
    b = rng.standard_normal((k, n)).astype(np.float16)
    sim = Simulator(cfg)
    pa, pb, pc = sim.put(a, DT.F16), sim.put(b, DT.F16), sim.alloc(m * n * 4)
    prog = gemm_program(cfg, mnk, blocks, (pa, pb, pc), overlap=overlap)
    stats = sim.run(prog)  # the hand-written GEMM is race-free and correct ...
    want = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(sim.get(pc, (m, n), DT.F32), want, rtol=2e-3, atol=2e-3)
    r = simulate_timing(prog, cfg)  # ... and the timing model ran the same work
    assert r.macs == stats.macs == m * n * k
    for unit in ("dma_in", "dma_out", "matrix"):
        ran = sum(s.instructions for key, s in r.units.items() if key.endswith("." + unit))
        assert ran == stats.instructions[unit]
    assert r.bytes_moved["dram->l0a"] == m * k * 2 * (n // blocks[1])
    assert r.bytes_moved["l0c->dram"] == m * n * 4
    _check_accounting(r)


def test_overlap_never_loses():
    for name, mnk, blocks in GEMMS:
        cfg = PROFILES[name]
        good = simulate_timing(gemm_program(cfg, mnk, blocks), cfg)
        bad = simulate_timing(gemm_program(cfg, mnk, blocks, overlap=False), cfg)
        assert good.cycles <= bad.cycles, name


# ---- random straight-line programs with consistent flags -----------------------------
UNITS = (Unit.DMA_IN, Unit.DMA_OUT, Unit.MATRIX, Unit.VECTOR)


# Each unit touches only its own bytes (so no program races) and reads only what the
# prologue wrote before its barrier (so every program passes validation):
# dma_in: dram 0.. -> ub [0, 2K); dma_out: ub [4K, 6K) -> dram 1M + 64K*core..;
# vector: ub [8K, 12K);
# matrix: l0a, l0b -> l0c.
def _op(unit: Unit, size: int, core: int) -> Instr:
    if unit == Unit.DMA_IN:
        return box(DT.F16, Ref(Space.UB, 0), Ref(Space.DRAM, 0), size, 16, 16, 16)
    if unit == Unit.DMA_OUT:
        dst = Ref(Space.DRAM, (1 << 20) + core * (1 << 16))  # each core its own output
        return box(DT.F16, dst, Ref(Space.UB, 4096), size, 16, 16, 16)
    if unit == Unit.MATRIX:
        return Mma(DT.F16, Ref(Space.L0C, 0), Ref(Space.L0A, 0), Ref(Space.L0B, 0), size, 16, 16)
    return VScalar(BinOp.ADD, DT.F32, Ref(Space.UB, 8192), Ref(Space.UB, 8192), 1.0,
                   (size, 16), (16, 1), (16, 1))  # fmt: skip


PROLOGUE = (
    box(DT.F16, Ref(Space.L0A, 0), Ref(Space.DRAM, 0), 64, 16, 16, 16),
    box(DT.F16, Ref(Space.L0B, 0), Ref(Space.DRAM, 0), 16, 16, 16, 16),
    box(DT.F16, Ref(Space.UB, 4096), Ref(Space.DRAM, 0), 64, 16, 16, 16),
    VDup(DT.F32, Ref(Space.UB, 8192), 0.0, (64, 16), (16, 1)),
    VDup(DT.F32, Ref(Space.L0C, 0), 0.0, (64, 16), (16, 1)),
    Barrier(),
)


@st.composite
def programs(draw) -> Program:
    """Every waitf consumes a count set earlier in program order, so no run can hang, and
    every count set is waited on by the end."""
    ncores = draw(st.integers(1, 2))
    cores = []
    for core in range(ncores):
        code: list[Instr] = list(PROLOGUE)
        pending: dict[tuple[Unit, Unit], int] = {}
        for _ in range(draw(st.integers(0, 25))):
            kind = draw(st.sampled_from(["op", "op", "set", "wait"]))
            src, dst = draw(st.permutations(UNITS))[:2]
            if kind == "op":
                code.append(_op(src, draw(st.integers(1, 64)), core))
            elif kind == "set":
                code.append(SetFlag(src, dst, 0))
                pending[(src, dst)] = pending.get((src, dst), 0) + 1
            elif pending.get((src, dst)):
                code.append(WaitFlag(src, dst, 0))
                pending[(src, dst)] -= 1
        for (src, dst), left in pending.items():  # a setf never waited on is a fault
            code += [WaitFlag(src, dst, 0)] * left
        cores.append((*code, Finish()))
    return Program(tuple(cores))


@settings(max_examples=60, deadline=None)
@given(prog=programs(), name=st.sampled_from(["edge", "cube"]))
def test_random_programs_finish_and_account(prog, name):
    cfg = PROFILES[name].replace(cores=2)
    r = simulate_timing(prog, cfg)
    sim = Simulator(cfg)  # the functional model accepts the same program
    sim.put(np.zeros(1024), DT.F16)  # the device data the loads read
    sim.run(prog)
    _check_accounting(r)
    assert len(r.events) == sum(len(code) for code in prog.cores)
    # each unit's instructions start in program order and never overlap
    for core in range(len(prog.cores)):
        for unit in UNITS:
            spans = [(e[2], e[4], e[5]) for e in r.events if e[0] == core and e[1] == unit]
            spans.sort()
            for (_, s0, e0), (_, s1, _) in itertools.pairwise(spans):
                assert s0 <= s1 and e0 <= s1 + 1e-9
    # a run is at least as long as its busiest unit
    for name_, s in r.units.items():
        assert r.exact_cycles >= s.busy - 1e-6, name_
