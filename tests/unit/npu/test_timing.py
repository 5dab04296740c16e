"""The timing model's scheduling rules against cycle counts derived by hand.

Every expected count below is worked out in the comments from the `edge` profile's fields
and the rules of docs/npu-timing.md, not captured from the model. To check the scheduler
(issue, queues, flags, barriers, bandwidth sharing) on its own, most tests use `EDGE0`:
edge with its systolic dataflow and device-memory derating switched off; those parts
have their own hand-derived tests in test_timing_honest.py and test_dataflow.py.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from timing_programs import box, gemm_program

from anychip.npu.config import PROFILES
from anychip.npu.costs import bank_factor, vector_cycles
from anychip.npu.errors import IllegalInstruction, SyncError
from anychip.npu.isa import (
    DT,
    Barrier,
    BinOp,
    Branch,
    Cond,
    Finish,
    Gather,
    Mma,
    Ref,
    SAluI,
    SetFlag,
    SMov,
    SOp,
    Space,
    Unit,
    VDup,
    VScalar,
    WaitFlag,
)
from anychip.npu.program import Program
from anychip.npu.simulator import Simulator
from anychip.npu.timing import simulate_timing
from anychip.npu.trace import write_trace

EDGE = PROFILES["edge"]
# a pipelined tile engine (every 16^3 tile 4 cycles), no page activations, no queueing
EDGE0 = EDGE.replace(name="edge0", matrix_dataflow="tile", dram_activate=0, dram_queueing=0.0)
CUBE0 = PROFILES["cube"].replace(name="cube0", dram_activate=0, dram_queueing=0.0)
DI, DO, MX, VE = Unit.DMA_IN, Unit.DMA_OUT, Unit.MATRIX, Unit.VECTOR
L0A, L0B, L0C, UB = (Ref(s, 0) for s in (Space.L0A, Space.L0B, Space.L0C, Space.UB))


def mma(m: int, n: int, k: int, accumulate: int = 1) -> Mma:
    return Mma(DT.F16, L0C, L0A, L0B, m, n, k, accumulate)


def vmul(dst: Ref, a: Ref, rows: int, cols: int) -> VScalar:
    return VScalar(BinOp.MUL, DT.F32, dst, a, 2.0, (rows, cols), (cols, 1), (cols, 1))


def one_core(*code) -> Program:
    return Program((tuple(code),))


PROLOGUE = (  # every program is validated before it is timed: write what the mmas read
    box(DT.F16, L0A, Ref(Space.DRAM, 0), 64, 64, 64, 64),
    box(DT.F16, L0B, Ref(Space.DRAM, 0), 64, 64, 64, 64),
    VDup(DT.F32, L0C, 0.0, (1, 4096), (4096, 1)),
    Barrier(),
)


def primed(*code) -> tuple[Program, int]:
    """(PROLOGUE + code, T0): after the barrier, instruction i of `code` issues at T0 + i."""
    t0 = simulate_timing(one_core(*PROLOGUE[:-1], Finish()), EDGE0).cycles
    return one_core(*PROLOGUE, *code), t0


def test_edge_numbers_used_below():
    # The hand derivations rely on these fields of the edge design.
    c = EDGE
    assert (c.clock_ghz, c.dma_width, c.dram_bandwidth, c.dma_latency) == (1.0, 32, 16.0, 200)
    assert (c.matrix_m, c.matrix_n, c.matrix_k, c.matrix_macs_per_cycle) == (16, 16, 16, 1024)
    assert (c.matrix_latency, c.vector_lanes, c.vector_latency) == (8, 16, 6)
    assert (c.l0a.bandwidth, c.ub.banks, c.ub.bank_width, c.queue_depth) == (256, 4, 32, 8)
    assert (c.l0c.bandwidth, c.dma_outstanding, c.dma_request) == (256, 128, 128)


def hand_program(a_addr: int = 0, b_addr: int = 4096, c_addr: int = 8192) -> Program:
    """Load A, B (16x16 f16); C = A@B; D = 2*C (f32, into ub); store D. Flags between."""
    return one_core(
        box(DT.F16, L0A, Ref(Space.DRAM, a_addr), 16, 16, 16, 16),  # 0
        box(DT.F16, L0B, Ref(Space.DRAM, b_addr), 16, 16, 16, 16),  # 1
        SetFlag(DI, MX, 0),  # 2
        WaitFlag(DI, MX, 0),  # 3
        mma(16, 16, 16, accumulate=0),  # 4
        SetFlag(MX, VE, 0),  # 5
        WaitFlag(MX, VE, 0),  # 6
        vmul(UB, L0C, 16, 16),  # 7
        SetFlag(VE, DO, 0),  # 8
        WaitFlag(VE, DO, 0),  # 9
        box(DT.F32, Ref(Space.DRAM, c_addr), UB, 16, 16, 16, 16),  # 10
        Finish(),  # 11
    )


def test_hand_derived_cycle_count():
    # Scalar unit issues instruction i at cycle i; its unit may start it at i + 1.
    # DMA rate alone = min(dma_width 32, l0a/l0b/ub bandwidth >= 64, dram 16) = 16 B/cycle.
    # #0 A: 16*16*2 = 512 B -> 512/16 = 32 cycles of transfer: [1, 33), lands at 33+200 = 233
    # #1 B: starts when dma_in is free: [33, 65), lands at 65 + 200 = 265
    # #2 setf dma_in->matrix: counts up once all dma_in work has landed: at 265
    # #3 waitf (matrix): passes at 265
    # #4 mma 16x16x16: 1 tile * ceil(4096/1024) = 4 cycles: [265, 269), done 269 + 8 = 277
    # #5/#6 setf matrix->vector at 277, the vector unit passes its waitf at 277
    # #7 vmuls 256 f32 on 16 lanes, dense: 16 cycles: [277, 293), done 293 + 6 = 299
    # #8/#9 flag to dma_out at 299
    # #10 store 16*16*4 = 1024 B at 16 B/cycle: 64 cycles [299, 363), lands 363 + 200 = 563
    # #11 finish, issued at 11: ends at max(12, 563) = 563.
    rate = min(EDGE.dma_width, EDGE.dram_bandwidth)
    a_done = 1 + 512 / rate
    b_land = a_done + 512 / rate + EDGE.dma_latency
    mma_done = b_land + 4 + EDGE.matrix_latency
    vec_done = mma_done + 256 / 16 + EDGE.vector_latency
    store_land = vec_done + 1024 / rate + EDGE.dma_latency
    assert store_land == 563

    r = simulate_timing(hand_program(), EDGE0)
    assert r.cycles == 563
    assert r.seconds == pytest.approx(563e-9)
    u = r.units
    assert u["core0.dma_in"].busy == 64 and u["core0.dma_out"].busy == 64
    assert u["core0.matrix"].busy == 4 and u["core0.vector"].busy == 16
    assert u["core0.scalar"].busy == 12
    # matrix: starved until its waitf arrives at 4, then held by the flag until 265
    assert u["core0.matrix"].stalls["queue"] == 4
    assert u["core0.matrix"].stalls["sync"] == 265 - 4
    assert r.bytes_moved == {"dram->l0a": 512, "dram->l0b": 512, "ub->dram": 1024}
    assert r.macs == 16**3 and r.flops == 2 * 16**3


def test_hand_program_is_valid_on_the_functional_simulator():
    # The program timed above is race-free and computes 2 * A @ B.
    sim = Simulator(EDGE)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 16, 16)).astype(np.float16)
    pa, pb = sim.put(a, DT.F16), sim.put(b, DT.F16)
    pc = sim.alloc(16 * 16 * 4)
    sim.run(hand_program(pa, pb, pc))
    want = 2 * (a.astype(np.float64) @ b.astype(np.float64))
    np.testing.assert_allclose(sim.get(pc, (16, 16), DT.F32), want, rtol=1e-3, atol=1e-3)


def test_independent_units_overlap():
    # 10 MMAs 32x32x32 (8 tiles * 4 = 32 cycles each) and 10 vdups of 512 f32 (32 cycles),
    # interleaved with no synchronisation: each stream alone takes ~320 cycles; together
    # they overlap, so the total is the max plus a few issue cycles, not the sum.
    vdup = VDup(DT.F32, UB, 1.0, (1, 512), (512, 1))
    both, t0 = primed(*[x for _ in range(10) for x in (mma(32, 32, 32), vdup)], Finish())
    only_mma = simulate_timing(primed(*[mma(32, 32, 32)] * 10, Finish())[0], EDGE0)
    only_vec = simulate_timing(one_core(*[vdup] * 10, Finish()), EDGE0)
    # alone: first starts at 1 (t0 + 1 after the prologue); 10 * 32 busy; plus latency
    # (8 matrix, 6 vector)
    assert only_mma.cycles == t0 + 1 + 320 + 8 and only_vec.cycles == 1 + 320 + 6
    total = simulate_timing(both, EDGE0).cycles
    # the vdups start one issue cycle later (at t0 + 2): t0 + 2 + 320 + 6 < t0 + 329
    assert total == only_mma.cycles == t0 + 329
    assert total - t0 < 0.6 * (only_mma.cycles - t0 + only_vec.cycles)


def test_sync_serialises():
    # Same two instructions, but the vector op waits for the MMA's flag:
    # mma [1, 33) done 41 -> flag at 41 -> vdup [41, 73) done 79.
    vdup = VDup(DT.F32, UB, 1.0, (1, 512), (512, 1))
    free, t0 = primed(mma(32, 32, 32), vdup, Finish())
    synced, _ = primed(mma(32, 32, 32), SetFlag(MX, VE, 1), WaitFlag(MX, VE, 1), vdup, Finish())
    assert simulate_timing(free, EDGE0).cycles == t0 + 1 + 32 + 8
    assert simulate_timing(synced, EDGE0).cycles == t0 + 1 + 32 + 8 + 32 + 6


def test_two_dmas_share_device_memory_bandwidth():
    # One 4096 B load alone: 4096/16 = 256 cycles of transfer [1, 257) + 200 latency = 457.
    load = box(DT.F32, UB, Ref(Space.DRAM, 0), 1, 1024, 1024, 1024)
    store = box(DT.F32, Ref(Space.DRAM, 1 << 20), Ref(Space.UB, 8192), 1, 1024, 1024, 1024)
    alone = simulate_timing(one_core(load, Finish()), EDGE0)
    assert alone.cycles == 1 + 256 + 200
    # Load and store together: the store's source is first written by a vdup ([1, 65):
    # 1024 f32 on 16 lanes, done at 65 + 6 = 71); flags hold both DMAs until 71. Then they
    # share dram 16 B/cycle fairly, 8 each: 4096 / 8 = 512 cycles, both end at 583 and
    # land at 783; each was busy 256 cycles (its solo time) and stalled 256 on bandwidth.
    init = VDup(DT.F32, Ref(Space.UB, 8192), 0.0, (1, 1024), (1024, 1))
    code = (init, SetFlag(VE, DO, 0), SetFlag(VE, DI, 0), WaitFlag(VE, DO, 0),
            WaitFlag(VE, DI, 0), load, store, Finish())  # fmt: skip
    both = simulate_timing(one_core(*code), EDGE0)
    assert both.cycles == 783 > alone.cycles
    assert both.units["core0.dma_out"].stalls["bandwidth"] == pytest.approx(256)
    assert both.units["core0.dma_in"].stalls["bandwidth"] == pytest.approx(256)
    # work-conserving: 8192 B of traffic at 16 B/cycle need 512 cycles, which they got
    assert both.dram_traffic == 8192


def test_cores_share_device_memory_bandwidth():
    # Two cores of the cube design each load 64 KiB: dma_width 256 = dram 256 B/cycle, so
    # alone a load takes 256 cycles; together they share 256 B/cycle and take 512.
    cube = CUBE0
    load = box(DT.F16, Ref(Space.L1, 0), Ref(Space.DRAM, 0), 128, 256, 256, 256)
    one = simulate_timing(Program(((load, Finish()),)), cube)
    two = simulate_timing(Program(((load, Finish()), (load, Finish()))), cube)
    assert one.cycles == 1 + 65536 // 256 + cube.dma_latency
    assert two.cycles == 1 + 2 * 65536 // 256 + cube.dma_latency


def test_mma_only_stream_reaches_peak():
    # 200 MMAs of 64^3 = 64 tiles * 4 cycles = 256 each: busy 51200 of 1 + 51200 + 8 cycles
    # after the prologue. Their operand ports keep up: per mma A is read once per tile
    # column, 64*64*2 * 4 = 32 KiB over 256 cycles = 128 B/cycle of l0a's 256.
    prog, t0 = primed(*[mma(64, 64, 64)] * 200, Finish())
    r = simulate_timing(prog, EDGE0)
    assert r.cycles == t0 + 1 + 200 * 256 + 8
    assert r.bound == "compute"
    assert r.units["core0.matrix"].busy == 51200
    # the scalar unit ran ahead until the matrix queue (depth 8) filled up
    assert r.units["core0.scalar"].stalls["queue"] > 0


def test_partial_tiles_cost_whole_tiles():
    # 17x16x16 needs two 16-row tiles: 8 cycles, but only 17*16*16 MACs of work. (Its
    # 17*16*4 B accumulator write takes 4.25 cycles of l0c's 256 B/cycle port, less.)
    prog, t0 = primed(mma(17, 16, 16, accumulate=0), Finish())
    r = simulate_timing(prog, EDGE0)
    assert r.cycles == t0 + 1 + 8 + 8 and r.macs == 17 * 16 * 16


def test_loops_cost_issue_cycles_and_repeat_their_body():
    # smov r3=0; smov r4=N; L: mma 32^3; saddi r3+=1; blt r3<r4 L; finish.
    # Issue: smovs at 0, 1; iteration i issues its mma at 2 + 3i. Each mma is 32 busy
    # cycles, longer than the 3-cycle loop, so they run back to back from cycle 3.
    n = 20
    top = len(PROLOGUE) + 2  # the loop's first instruction, after the prologue
    prog, t0 = primed(SMov(3, 0), SMov(4, n), mma(32, 32, 32), SAluI(SOp.ADD, 3, 3, 1),
                      Branch(Cond.LT, 3, 4, top), Finish())  # fmt: skip
    r = simulate_timing(prog, EDGE0)
    assert r.cycles == t0 + 3 + 32 * n + 8
    assert r.units["core0.matrix"].instructions == n
    assert r.units["core0.scalar"].instructions == len(PROLOGUE) + 2 + 3 * n + 1


def test_bank_conflicts_slow_strided_vector_ops():
    # ub: 4 banks of 32 B. f32 elements 32 apart are 128 B apart: all in bank 0, so the
    # 16 elements of a cycle need 16 cycles. 64 elements: 4 groups * 16 = 64 cycles.
    assert bank_factor(128, 16, 4, 32) == 16
    assert bank_factor(4, 16, 4, 32) == 1  # 64 contiguous bytes: 2 words in 2 banks
    strided = VDup(DT.F32, UB, 1.0, (1, 64), (0, 32))
    dense = VDup(DT.F32, UB, 1.0, (1, 64), (64, 1))
    assert vector_cycles(EDGE, strided) == 64
    assert vector_cycles(EDGE, dense) == 4
    # non-dense rows start new groups: 4 rows of 20 f32 (row pitch 32) -> 4 * ceil(20/16)
    assert vector_cycles(EDGE, VDup(DT.F32, UB, 1.0, (4, 20), (32, 1))) == 8
    # 16-bit elements go twice as wide: 64 f16 dense -> 2 cycles
    assert vector_cycles(EDGE, VDup(DT.F16, UB, 1.0, (1, 64), (64, 1))) == 2


def test_bursts_round_strided_device_memory_traffic():
    # 16 rows of 8 f16 (16 B) each 256 B apart: every row costs a whole 32 B burst.
    # Each row is also one 16 B request: 128 in flight over 200 cycles of latency allow
    # 128 * 16 / 200 = 10.24 B/cycle, below dram's 16: 512 / 10.24 = 50 cycles.
    load = box(DT.F16, UB, Ref(Space.DRAM, 0), 16, 8, 8, 128)
    r = simulate_timing(one_core(load, Finish()), EDGE0)
    assert r.bytes_moved == {"dram->ub": 256} and r.dram_traffic == 16 * 32
    assert r.cycles == 1 + 50 + 200


def test_gather_rows_are_separate_bursts():
    # 10 rows of 8 f16 = 16 B each: each row is its own run, rounded up to a 32 B burst,
    # and its own 16 B request: 10.24 B/cycle (as above). The index is written first by a
    # vdup (10 i32 on 16 lanes: [1, 2), done 8); the gather then runs 320 / 10.24 =
    # 31.25 cycles from 8 and lands 200 later: 239.25 -> 240.
    g = Gather(DT.F16, UB, Ref(Space.DRAM, 0), Ref(Space.UB, 4096), 10, 8, 64, 8, 100)
    index = VDup(DT.I32, Ref(Space.UB, 4096), 0.0, (1, 10), (10, 1))
    r = simulate_timing(one_core(index, SetFlag(VE, DI, 0), WaitFlag(VE, DI, 0), g, Finish()),
                        EDGE0)  # fmt: skip
    assert r.bytes_moved == {"dram->ub": 160} and r.dram_traffic == 320
    assert r.cycles == 240


def test_on_chip_copies_use_buffer_bandwidth_not_device_memory():
    # cube: the load into l1 (64 KiB at 256 B/cycle: [1, 257), lands 557) comes first; the
    # copy l1 -> l0a on the same engine reads what it wrote, so it waits for it to land
    # (docs: ordering on one engine), then moves 64 KiB at min(dma_width 256, l1 8*64 =
    # 512, l0a 16*64 = 1024) = 256 B/cycle: [557, 813), no device-memory latency.
    load = box(DT.F16, Ref(Space.L1, 0), Ref(Space.DRAM, 0), 128, 256, 256, 256)
    copy = box(DT.F16, L0A, Ref(Space.L1, 0), 128, 256, 256, 256)
    r = simulate_timing(one_core(load, copy, Finish()), CUBE0)
    assert r.cycles == 557 + 65536 // 256
    assert r.bytes_moved == {"dram->l1": 65536, "l1->l0a": 65536} and r.dram_traffic == 65536


def test_gemm_overlap_reaches_the_issue_target_and_no_overlap_cannot():
    dc = PROFILES["datacenter"]
    # k-steps of 256: each A/B tile row is a 512 B run of device memory (one page
    # activation each, 80% efficient); 128-wide steps (256 B runs) would be 67% efficient
    good = simulate_timing(gemm_program(dc, (2048, 2048, 2048), (512, 512, 256)), dc)
    bad = simulate_timing(gemm_program(dc, (2048, 2048, 2048), (512, 512, 256), overlap=False), dc)
    # ideal: 2048^3 MACs / (4 cores * 16384 MAC/cycle) = 131072 cycles
    assert good.compute_cycles == 131072 == bad.compute_cycles
    assert good.utilisation >= 0.85 and good.bound == "compute"
    assert bad.utilisation < 0.6


def test_deadlock_is_reported_with_the_instruction():
    with pytest.raises(SyncError, match="waitf"):
        simulate_timing(one_core(WaitFlag(DI, MX, 3), Finish()), EDGE)


def test_too_many_cores_is_an_error():
    with pytest.raises(IllegalInstruction, match="cores"):
        simulate_timing(Program(((Finish(),), (Finish(),))), EDGE)


def test_report_outputs(tmp_path):
    r = simulate_timing(hand_program(), EDGE0)
    d = json.loads(json.dumps(r.to_dict()))
    assert d["cycles"] == 563 and d["design"] == "edge0"
    assert d["units"]["core0.matrix"]["busy"] == 4
    assert d["bound"] == "bandwidth"  # 8192 FLOP over 2048 B: 4 FLOP/B < 2048/16 = 128
    assert math.isclose(d["roofline_cycles"], 2048 / 16)
    row = r.to_row()
    assert row["units.core0.dma_in.stalls.bandwidth"] == 0 and row["cycles"] == 563
    text = str(r)
    assert "563 cycles" in text and "core0.matrix" in text and "bandwidth-bound" in text


def test_trace_file(tmp_path):
    r = simulate_timing(hand_program(), EDGE0)
    raw = json.loads(write_trace(r.events, tmp_path / "raw.json", clock_ghz=2.0).read_text())
    assert raw["otherData"] == {"clock_ghz": 2.0} and len(raw["traceEvents"]) > 12
    path = write_trace(r, tmp_path / "trace.json")
    doc = json.loads(path.read_text())
    slices = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert len(slices) == 12  # one per executed instruction
    names = {(e["pid"], e["tid"], e["name"]) for e in slices}
    assert (0, int(MX), "mma") in names and (0, int(DO), "dma") in names
    threads = {e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "thread_name"}
    assert threads == {"scalar", "dma_in", "dma_out", "matrix", "vector"}
    mma_slice = next(e for e in slices if e["name"] == "mma")
    # 1 GHz: a cycle is 1e-3 us; the mma runs [265, 269)
    assert mma_slice["ts"] == pytest.approx(0.265) and mma_slice["dur"] == pytest.approx(0.004)
    assert mma_slice["args"]["instr"].startswith("mma ")
    for track in {(e["pid"], e["tid"]) for e in slices}:  # slices on a track never overlap
        spans = sorted(
            (e["ts"], e["ts"] + e["dur"]) for e in slices if (e["pid"], e["tid"]) == track
        )
        assert all(a[1] <= b[0] + 1e-12 for a, b in itertools.pairwise(spans))
