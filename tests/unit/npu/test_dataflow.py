"""The matrix unit's dataflow against SCALE-Sim, an independent systolic-array simulator.

Reference figures: SCALE-Sim 3.0.0 (pip install scalesim; numpy < 2 needed), run as
`python -m scalesim.scale -c cfg -t topo.csv -l layout.csv -i gemm -s N` with a 128x128
array (ArrayHeight = ArrayWidth = 128), Dataflow ws or os, 8192 kB ifmap/filter/ofmap
SRAMs, InterfaceBandwidth CALC (no memory stalls), topology rows `name, M, N, K,`. The
"Compute cycles" it printed per layer are copied below; they are not our model's output.
"""

from __future__ import annotations

import numpy as np
import pytest
from timing_programs import box

from anychip.npu.config import PROFILES
from anychip.npu.costs import mma_cost
from anychip.npu.isa import DT, Barrier, Finish, Mma, Ref, Space, VDup
from anychip.npu.program import Program
from anychip.npu.timing import simulate_timing

# (M, N, K): SCALE-Sim 3.0.0 compute cycles for (ws, os) on the 128x128 array
SCALESIM = {
    (128, 1024, 1024): (32639, 10223),
    (256, 256, 256): (2551, 2039),
    (512, 512, 512): (14303, 12255),
    (1024, 128, 512): (5623, 6127),
    (64, 2048, 256): (14271, 8159),
    (1000, 300, 200): (8291, 10895),
    (384, 640, 96): (3829, 5249),
}

# One core of datacenter: a 128x128 array, 1 MAC per element per cycle. Without double
# buffering each fold pays preload and fill/drain in full, as SCALE-Sim schedules it.
# Ports (l0a 1024 B/cycle, l0c 2048) keep up with the array's streams, so this is the
# compute-only figure.
BASE = PROFILES["datacenter"].replace(cores=1, matrix_double_buffer=False)


def mma(m: int, n: int, k: int, accumulate: int = 0) -> Mma:
    return Mma(DT.F16, Ref(Space.L0C, 0), Ref(Space.L0A, 0), Ref(Space.L0B, 0), m, n, k,
               accumulate)  # fmt: skip


@pytest.mark.parametrize("mnk", list(SCALESIM))
@pytest.mark.parametrize("dataflow", ["ws", "os"])
def test_compute_cycles_match_scalesim(mnk, dataflow):
    cfg = BASE.replace(matrix_dataflow=dataflow)
    want = SCALESIM[mnk][dataflow == "os"]
    got = mma_cost(cfg, mma(*mnk)).cycles
    assert abs(got - want) <= 0.10 * want, (mnk, dataflow, got, want)


def test_issue_figures_for_128x1024x1024():
    # The issue: SCALE-Sim gives 25% (ws) and 80% (os) for this shape on 128x128; ideal is
    # 128*1024*1024 / 16384 = 8192 cycles.
    ideal = 128 * 1024 * 1024 / 16384
    ws = mma_cost(BASE.replace(matrix_dataflow="ws"), mma(128, 1024, 1024)).cycles
    os_ = mma_cost(BASE.replace(matrix_dataflow="os"), mma(128, 1024, 1024)).cycles
    assert ideal / ws == pytest.approx(0.25, abs=0.01)
    assert ideal / os_ == pytest.approx(0.80, abs=0.01)


def test_hand_derived_fold_costs():
    # ws, 256^3 on 128x128: folds ceil(256/128) * ceil(256/128) = 4, each preload R=128 +
    # stream M=256 + fill/drain R+C-2 = 254: 4 * 638 = 2552. Double-buffered: each fold
    # costs max(preload 128, stream 256) = 256 -> 1024, and one preload plus fill/drain
    # (128 + 254) shows as latency after it (16 + 382).
    ws = BASE.replace(matrix_dataflow="ws")
    assert mma_cost(ws, mma(256, 256, 256)).cycles == 2552
    db = mma_cost(ws.replace(matrix_double_buffer=True), mma(256, 256, 256))
    assert db.cycles == 1024 and db.latency == 16 + 128 + 254
    # os, same shape: folds ceil(256/128)^2 = 4, each T=K=256 + R+C-2: 4 * 510 = 2040
    assert mma_cost(BASE.replace(matrix_dataflow="os"), mma(256, 256, 256)).cycles == 2040


def test_the_timing_model_charges_the_dataflow():
    # A lone mma after its operands are loaded: the matrix unit is busy exactly the
    # SCALE-Sim figure (1 core, ws, no double buffering).
    cfg = BASE.replace(matrix_dataflow="ws")
    m, n, k = 256, 256, 256
    code = (
        box(DT.F16, Ref(Space.L0A, 0), Ref(Space.DRAM, 0), m, k, k, k),
        box(DT.F16, Ref(Space.L0B, 0), Ref(Space.DRAM, 0), k, n, n, n),
        Barrier(),
        mma(m, n, k),
        VDup(DT.F32, Ref(Space.UB, 0), 0.0, (1, 16), (16, 1)),
        Finish(),
    )
    r = simulate_timing(Program((code,)), cfg)
    assert r.units["core0.matrix"].busy == pytest.approx(SCALESIM[(m, n, k)][0], rel=0.001)


def test_double_buffering_hides_preload_and_fill_only_between_folds():
    # 2048^3 as sixteen (2048, 128, 2048) mmas... here one 2048^3 mma: ws folds 16 * 16,
    # each stream 2048 >= preload 128, so double-buffered cycles are the ideal 524288;
    # without, SCALE-Sim's 256 * (2*128 + 128 + 2048 - 2) = 622080 (84.3%).
    ws = BASE.replace(matrix_dataflow="ws")
    big = mma(2048, 2048, 2048)
    assert mma_cost(ws, big).cycles == 256 * (2 * 128 + 128 + 2048 - 2)
    assert mma_cost(ws.replace(matrix_double_buffer=True), big).cycles == 2048**3 / 16384


def test_operand_ports_bound_the_matrix_unit():
    # The issue: with l0a/l0b at 8 B/cycle, 16 mmas of 128^3 need their operands read:
    # A and B are 32 KiB each per mma, 4096 cycles each at 8 B/cycle. Without double
    # buffering the weight preload (B) and the stream of A are serial: >= 16 * 8192 =
    # 131072 cycles. With it, B's preload overlaps A's stream on the other buffer: each
    # port alone bounds the run at 16 * 4096 = 65536.
    slow = {"l0a.banks": 1, "l0a.bank_width": 8, "l0b.banks": 1, "l0b.bank_width": 8}
    code = (
        box(DT.F16, Ref(Space.L0A, 0), Ref(Space.DRAM, 0), 128, 128, 128, 128),
        box(DT.F16, Ref(Space.L0B, 0), Ref(Space.DRAM, 0), 128, 128, 128, 128),
        Barrier(),
        *[mma(128, 128, 128)] * 16,
        Finish(),
    )
    prog = Program((code,))
    for double, floor in ((False, 131072), (True, 65536)):
        cfg = PROFILES["datacenter"].replace(matrix_double_buffer=double, **slow)
        r = simulate_timing(prog, cfg)
        assert r.units["core0.matrix"].busy >= floor
        assert r.cycles >= floor
        fast = simulate_timing(prog, cfg.replace(**{"l0a.bank_width": 128,
                                                    "l0b.bank_width": 128, "l0a.banks": 8,
                                                    "l0b.banks": 8}))  # fmt: skip
        assert fast.units["core0.matrix"].busy < floor / 4


@pytest.mark.parametrize("dataflow", ["ws", "os"])
def test_double_buffering_only_helps_and_never_beats_the_array(dataflow):
    # On random shapes (edge's 16x16 array, D = 4 MACs per element per cycle, and the
    # 128x128 one): overlapped folds never cost more than serial ones, and no mma runs
    # faster than its MACs over the array's MACs per cycle.
    rng = np.random.default_rng(3)
    for base in (PROFILES["edge"], BASE):
        serial = base.replace(matrix_dataflow=dataflow, matrix_double_buffer=False)
        overlapped = serial.replace(matrix_double_buffer=True)
        for _ in range(20):
            m, n, k = (int(x) for x in rng.integers(1, 600, 3))
            one = mma_cost(serial, mma(m, n, k, 1)).cycles
            two = mma_cost(overlapped, mma(m, n, k, 1)).cycles
            assert m * n * k / base.matrix_macs_per_cycle <= two <= one, (m, n, k)
