"""The timing model does not flatter: it validates what it times, shares buffer ports,
orders DMAs on one engine, derates device memory, and accounts energy.

Expected figures are derived by hand in the comments from the designs' fields and the
rules of docs/npu-timing.md.
"""

from __future__ import annotations

import numpy as np
import pytest
from timing_programs import box

from anychip.npu.config import PROFILES
from anychip.npu.costs import dma_cost
from anychip.npu.dram import loaded_latency
from anychip.npu.energy import sram_pj_per_byte
from anychip.npu.errors import (
    IllegalInstruction,
    OutOfBounds,
    RaceError,
    SyncError,
    UninitializedRead,
    UnsupportedDType,
)
from anychip.npu.isa import (
    DT,
    Barrier,
    BinOp,
    Finish,
    Gather,
    Mma,
    Ref,
    SetFlag,
    Space,
    Unit,
    UnOp,
    VBin,
    VDup,
    VUn,
    WaitFlag,
)
from anychip.npu.kernels import gemm
from anychip.npu.program import Program
from anychip.npu.simulator import Simulator
from anychip.npu.timing import simulate_timing

EDGE, DC, CUBE = PROFILES["edge"], PROFILES["datacenter"], PROFILES["cube"]
DI, DO, MX, VE = Unit.DMA_IN, Unit.DMA_OUT, Unit.MATRIX, Unit.VECTOR
L0A, L0B, L0C, UB = (Ref(s, 0) for s in (Space.L0A, Space.L0B, Space.L0C, Space.UB))
DRAM0 = Ref(Space.DRAM, 0)


def one_core(*code) -> Program:
    return Program((tuple(code),))


def run_functional(cfg, prog: Program, dram_bytes: int = 1 << 16) -> Simulator:
    sim = Simulator(cfg)
    sim.put(np.zeros(dram_bytes // 2), DT.F16)  # the device data hand programs read
    sim.run(prog)
    return sim


# ---- 1. both models reject the same programs with the same typed error ------------------
def _load_a(rows=16, cols=16):
    return box(DT.F16, L0A, DRAM0, rows, cols, cols, cols)


def _load_b(rows=16, cols=16):
    return box(DT.F16, L0B, DRAM0, rows, cols, cols, cols)


INVALID = {
    # operands of 32 MiB in 32 KiB buffers
    "mma 32 MiB": (EDGE, one_core(Mma(DT.F16, L0C, L0A, L0B, 4096, 4096, 4096, 0), Finish()),
                   OutOfBounds),
    "dma past the buffer": (EDGE, one_core(box(DT.F16, Ref(Space.UB, 131000), DRAM0, 16, 16,
                                               16, 16), Finish()), OutOfBounds),
    "no l1 on edge": (EDGE, one_core(box(DT.F16, Ref(Space.L1, 0), DRAM0, 1, 16, 16, 16),
                                     Finish()), OutOfBounds),
    "dram past the design": (EDGE, one_core(box(DT.F16, UB, Ref(Space.DRAM, (1 << 30) - 16), 1,
                                                16, 16, 16), Finish()), OutOfBounds),
    "uninitialised operand": (EDGE, one_core(_load_a(), Mma(DT.F16, L0C, L0A, L0B, 16, 16, 16,
                                                             0), Finish()), UninitializedRead),
    "uninitialised accumulator": (EDGE, one_core(_load_a(), _load_b(), SetFlag(DI, MX, 0),
                                                 WaitFlag(DI, MX, 0),
                                                 Mma(DT.F16, L0C, L0A, L0B, 16, 16, 16, 1),
                                                 Finish()), UninitializedRead),
    "unsupported dtype": (EDGE, one_core(VDup(DT.BF16, UB, 1.0, (1, 16), (16, 1)), Finish()),
                          UnsupportedDType),
    "exp of i32": (EDGE, one_core(VDup(DT.I32, UB, 1.0, (1, 16), (16, 1)),
                                  VUn(UnOp.EXP, DT.I32, UB, UB, (1, 16), (16, 1), (16, 1)),
                                  Finish()), IllegalInstruction),
    "race dma_in/vector": (EDGE, one_core(box(DT.F32, UB, DRAM0, 1, 16, 16, 16),
                                          VUn(UnOp.RELU, DT.F32, UB, UB, (1, 16), (16, 1),
                                              (16, 1)), Finish()), RaceError),
    "wait that nothing sets": (EDGE, one_core(WaitFlag(DI, MX, 3), Finish()), SyncError),
    "too many cores": (EDGE, Program(((Finish(),), (Finish(),))), IllegalInstruction),
}  # fmt: skip


@pytest.mark.parametrize("case", list(INVALID))
def test_both_models_reject_the_same_programs(case):
    cfg, prog, error = INVALID[case]
    with pytest.raises(error):
        run_functional(cfg, prog)
    with pytest.raises(error):
        simulate_timing(prog, cfg)


def test_a_gemm_planned_for_big_buffers_does_not_time_on_small_ones():
    # The issue: a GEMM planned for 512 KiB L0 buffers used to time on 4 KiB ones.
    kern = gemm(DC, 256, 256, 256)
    small = DC.replace(**{"l0a.size": 4096, "l0b.size": 4096})
    simulate_timing(kern.program, DC)  # fits where it was planned
    with pytest.raises(OutOfBounds, match=r"l0a|l0b"):
        simulate_timing(kern.program, small)
    with pytest.raises(OutOfBounds, match=r"l0a|l0b"):
        kern.run(small, {"a": np.ones((256, 256)), "b": np.ones((256, 256))})


def test_valid_programs_pass_both():
    # A load, a flag, the mma, the store: valid for both models.
    prog = one_core(_load_a(), _load_b(), SetFlag(DI, MX, 0), WaitFlag(DI, MX, 0),
                    Mma(DT.F16, L0C, L0A, L0B, 16, 16, 16, 0), SetFlag(MX, DO, 0),
                    WaitFlag(MX, DO, 0), box(DT.F32, Ref(Space.DRAM, 8192), L0C, 16, 16, 16, 16),
                    Finish())  # fmt: skip
    run_functional(EDGE, prog)
    assert simulate_timing(prog, EDGE).macs == 16**3


# ---- 2. buffer ports ---------------------------------------------------------------------
def test_vector_add_is_bounded_by_the_unified_buffer_port():
    # The issue: a vadd of 131072 f32 on a 512 B/cycle UB reads 2 * 512 KiB and writes
    # 512 KiB: >= 1.5 MiB / 512 = 3072 cycles (its 128 lanes alone would take 1024).
    ub512 = DC.replace(**{"ub.banks": 4})  # 4 banks x 128 B
    n = 131072
    a, b = Ref(Space.UB, 0), Ref(Space.UB, 4 * n)
    dup_a = VDup(DT.F32, a, 1.0, (1, n), (n, 1))
    dup_b = VDup(DT.F32, b, 2.0, (1, n), (n, 1))
    add = VBin(BinOp.ADD, DT.F32, a, a, b, (1, n), (n, 1), (n, 1), (n, 1))
    r = simulate_timing(one_core(dup_a, dup_b, add, Finish()), ub512)
    start, end = next((e[4], e[5]) for e in r.events if e[3] is add)
    assert end - start == 3 * 4 * n / 512 == 3072
    # each vdup only writes: 512 KiB / 512 B per cycle = 1024 cycles = its lane cycles
    assert r.units["core0.vector"].busy == 1024 + 1024 + 3072


def test_units_share_a_buffer_port():
    # ub at 512 B/cycle. A load into ub (cap min(dma_width 512, ub 512, dram 1024) = 512
    # B/cycle) starts at 1 and holds the whole port; a vdup writing 512 KiB elsewhere in
    # ub starts at 2 and gets an equal share, 256 B/cycle: 2048 cycles instead of 1024.
    ub512 = DC.replace(**{"ub.banks": 4})
    n = 131072
    load = box(DT.F32, Ref(Space.UB, 0), DRAM0, 256, 1024, 1024, 1024)  # 1 MiB
    dup = VDup(DT.F32, Ref(Space.UB, 1 << 20), 1.0, (1, n), (n, 1))
    alone = simulate_timing(one_core(dup, Finish()), ub512)
    shared = simulate_timing(one_core(load, dup, Finish()), ub512)
    span = next(e[5] - e[4] for e in shared.events if e[3] is dup)
    assert alone.units["core0.vector"].busy == 1024
    assert span == 2048


# ---- 5. ordering on one engine -------------------------------------------------------------
def test_a_dma_waits_for_what_its_engine_wrote_to_land():
    # The program on cube: dram -> l1 then l1 -> l0a on dma_in, no flag. The load
    # moves 32 KiB, 32 pages of 1 KiB: 32768 + 32 * 128 = 36864 bytes of bandwidth time
    # at 256 B/cycle: [1, 145), landing 300 later at 445. The copy reads those bytes, so
    # it starts at 445 (it used to run at [129, 257) while its data landed at 429).
    load = box(DT.F16, Ref(Space.L1, 0), DRAM0, 128, 128, 128, 128)
    copy = box(DT.F16, L0A, Ref(Space.L1, 0), 128, 128, 128, 128)
    prog = one_core(load, copy, Finish())
    r = simulate_timing(prog, CUBE)
    ld = next(e for e in r.events if e[3] is load)
    cp = next(e for e in r.events if e[3] is copy)
    assert (ld[4], ld[5], ld[6]) == (1, 145, 445)
    assert cp[4] == 445 and cp[5] == 445 + 32768 / 256
    # the functional model runs the engine's queue in order: the copy sees the loaded data
    sim = Simulator(CUBE)
    x = np.arange(128 * 128).astype(np.float16).reshape(128, 128)
    sim.write(0, x)
    sim.run(prog)
    got = sim.buffers[0][Space.L0A].data[: x.nbytes].view(np.float16).reshape(128, 128)
    np.testing.assert_array_equal(got, x)


def test_unrelated_dmas_on_one_engine_do_not_wait():
    # A copy from l1 bytes the load did not write (written before a barrier) starts as
    # soon as the engine is free.
    load = box(DT.F16, Ref(Space.L1, 0), DRAM0, 128, 128, 128, 128)
    init = box(DT.F16, Ref(Space.L1, 65536), DRAM0, 1, 16, 16, 16)
    copy = box(DT.F16, L0A, Ref(Space.L1, 65536), 1, 16, 16, 16)
    r = simulate_timing(one_core(init, Barrier(), load, copy, Finish()), CUBE)
    ld = next(e for e in r.events if e[3] is load)
    cp = next(e for e in r.events if e[3] is copy)
    assert cp[4] == ld[5]  # right after the load's transfer, before it lands


# ---- 4. device memory --------------------------------------------------------------------
def test_streaming_beats_random_access():
    # datacenter: 1 KiB pages, an activation costs 128 B of bandwidth time. A 1 MiB
    # contiguous load opens 1024 pages: 1 MiB / (1 MiB + 1024 * 128) = 8/9 of peak. A
    # gather of 512 B rows opens a page per row: 512 / 640 = 80%; 64 B rows: 1/3.
    stream = box(DT.F16, UB, DRAM0, 512, 1024, 1024, 1024)
    c = dma_cost(DC, stream)
    assert c.activations == 1024 and c.nbytes / c.occupancy == pytest.approx(8 / 9)
    for row_bytes, eff in ((512, 0.8), (64, 1 / 3)):
        g = Gather(DT.F16, UB, DRAM0, Ref(Space.UB, 1 << 20), 100, row_bytes // 2,
                   row_bytes // 2, row_bytes // 2, 1000)  # fmt: skip
        gc = dma_cost(DC, g)
        assert gc.nbytes / gc.occupancy == pytest.approx(eff)


def test_requests_in_flight_bound_an_engine():
    # datacenter with 8 outstanding requests of 512 B and 500 cycles of latency: Little's
    # law allows 8 * 512 / 500 = 8.192 B/cycle. A 64 KiB load (64 pages: 65536 + 64 *
    # 128 = 73728 bytes of bandwidth time) takes 73728 / 8.192 = 9000 cycles: [1, 9001),
    # landing at 9501.
    cfg = DC.replace(dma_outstanding=8)
    load = box(DT.F16, UB, DRAM0, 32, 1024, 1024, 1024)
    r = simulate_timing(one_core(load, Finish()), cfg)
    assert r.cycles == 9501


def test_latency_rises_with_load():
    # edge: 200 cycles unloaded; at 50% of the bandwidth over the last 200 cycles,
    # 200 * (1 + 0.25 * 0.5 / 0.5) = 250. Back-to-back loads saturate device memory, so
    # the second lands more than 200 cycles after its transfer ends.
    assert loaded_latency(EDGE, 0.5) == 250.0
    big = box(DT.F16, UB, DRAM0, 16, 256, 256, 256)  # 8 KiB
    nxt = box(DT.F16, Ref(Space.UB, 16384), Ref(Space.DRAM, 8192), 16, 256, 256, 256)
    r = simulate_timing(one_core(big, nxt, Finish()), EDGE)
    first, second = (next(e for e in r.events if e[3] is d) for d in (big, nxt))
    assert first[6] - first[5] == 200
    assert second[6] - second[5] > 200


# ---- 8. energy ---------------------------------------------------------------------------
def test_energy_adds_up_by_hand():
    # EDGE with the tile dataflow so the counts are simple: load A, B (512 B each), a 16^3
    # mma (reads A 512 B, B 512 B, writes C 1024 B), vmul C -> ub (1024 B each side),
    # store ub (1024 B). Buffer bytes: l0a 1024, l0b 1024, l0c 2048, ub 2048; device
    # traffic 2048 B; 4096 MACs in f16; 256 vector elements.
    cfg = EDGE.replace(matrix_dataflow="tile")
    e = cfg.energy
    prog = one_core(_load_a(), _load_b(), SetFlag(DI, MX, 0), WaitFlag(DI, MX, 0),
                    Mma(DT.F16, L0C, L0A, L0B, 16, 16, 16, 0), SetFlag(MX, VE, 0),
                    WaitFlag(MX, VE, 0),
                    VBin(BinOp.MUL, DT.F32, UB, L0C, L0C, (16, 16), (16, 1), (16, 1), (16, 1)),
                    SetFlag(VE, DO, 0), WaitFlag(VE, DO, 0),
                    box(DT.F32, Ref(Space.DRAM, 8192), UB, 16, 16, 16, 16), Finish())  # fmt: skip
    r = simulate_timing(prog, cfg)
    assert r.port_bytes == {"l0a": 1024, "l0b": 1024, "l0c": 3072, "ub": 2048}
    # (the vmul reads C twice: a * a)
    dynamic = (4096 * 2.0 + 256 * 2.3 + 1024 * 2.5 + 1024 * 2.5 + 3072 * e.l0c + 2048 * e.ub
               + 2048 * e.dram) * 1e-12  # fmt: skip
    assert (e.l0c, e.ub, e.dram) == (4.5, 6.5, 162.5)  # 64 KiB, 128 KiB SRAM; DDR
    assert r.energy_joules == pytest.approx(dynamic + 0.2 * r.seconds)
    assert r.average_watts == pytest.approx(r.energy_joules / r.seconds)
    assert r.flops_per_joule == pytest.approx(2 * 4096 / r.energy_joules)
    assert r.to_dict()["energy_joules"] == pytest.approx(r.energy_joules)


def test_energy_constants_follow_their_source():
    # Horowitz ISSCC 2014, 45 nm: fp16 mult 1.1 + fp32 add 0.9; int8 mult 0.2 + int32 add
    # 0.1 pJ; SRAM 64-bit reads 10/20/100 pJ at 8 KB/32 KB/1 MB.
    e = PROFILES["edge"].energy
    assert e.mac_f16 == pytest.approx(2.0) and e.mac_i8 == pytest.approx(0.3)
    assert [sram_pj_per_byte(s) for s in (8 << 10, 32 << 10, 1 << 20)] == [1.25, 2.5, 12.5]
    assert DC.energy.dram == pytest.approx(3.9 * 8)  # HBM2, 3.9 pJ/bit


def test_docs_worked_example_on_edge():
    # docs/npu-timing.md, "Worked example": the hand program on the real edge design.
    # A: 512 B in one 2 KiB page -> 512 + 256 = 768 B of bandwidth time at 16 B/cycle:
    #    [1, 49); no load in the last 200 cycles: lands at 249.
    # B: [49, 97); the last 200 cycles carried 768 B: rho = 768 / (200 * 16) = 0.24,
    #    latency 200 * (1 + 0.25 * 0.24 / 0.76) = 215.789..: lands at 312.789..
    # mma 16^3, output-stationary 16x16 array taking 4 k per cycle: one fold, stream
    #    ceil(16/4) = 4 < R = 16 (the drain): 16 cycles; latency 8 + (16 + 16 - 2) = 38.
    # vmuls 256 f32: 16 lanes -> 16 cycles (ub port: 1024 B / 128 = 8); latency 6.
    # store: 1024 B, one page -> 1280 / 16 = 80 cycles; no load in its window: +200.
    from test_timing import hand_program

    r = simulate_timing(hand_program(), EDGE)
    lat_b = 200 * (1 + 0.25 * 0.24 / 0.76)
    mma_start = 97 + lat_b
    store_start = mma_start + 16 + 38 + 16 + 6
    want = store_start + 80 + 200
    assert r.exact_cycles == pytest.approx(want) and r.cycles == 669


def test_both_models_reject_a_destination_shifted_onto_its_source() -> None:
    """A vector op writing its source shifted by one element: OverlapError in both models."""
    from anychip.npu.errors import OverlapError

    cfg = PROFILES["edge"]
    init = VDup(DT.F32, Ref(Space.UB, 0), 1.0, (1, 64), (64, 1))
    shifted = VUn(UnOp.EXP, DT.F32, Ref(Space.UB, 4), Ref(Space.UB, 0), (1, 64), (64, 1), (64, 1))
    prog = Program(((init, Barrier(), shifted, Finish()),))
    with pytest.raises(OverlapError):
        Simulator(cfg).run(prog)
    with pytest.raises(OverlapError):
        simulate_timing(prog, cfg)
