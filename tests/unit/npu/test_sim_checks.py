"""The functional simulator's checks hold on long, looping and multi-core programs: the
cached operand checks, the race detector's record pruning and device-memory growth never
hide a fault or change a result."""

from __future__ import annotations

import numpy as np
import pytest

from anychip.npu.config import PROFILES
from anychip.npu.errors import RaceError, UninitializedRead
from anychip.npu.isa import (
    DT,
    Barrier,
    Branch,
    Cond,
    Dma,
    Finish,
    Mma,
    Ref,
    SAluI,
    SetFlag,
    SMov,
    SOp,
    Space,
    Unit,
    UnOp,
    VUn,
    WaitFlag,
)
from anychip.npu.program import Program
from anychip.npu.simulator import Simulator

DRAM, UB = Space.DRAM, Space.UB


def _load(dst: Ref, src: Ref, rows: int, cols: int, ld: int, dt: DT = DT.F16) -> Dma:
    """A (rows, cols) tile from a row-major matrix with `ld` columns, dense at dst."""
    return Dma(dt, dst, src, (1, rows, cols), (0, cols, 1), (0, ld, 1), (1, rows, cols))


def _gemm(m: int, n: int, k: int, t: int, cores: int, a: int, b: int, c: int) -> list[list]:
    """Per core: C tiles (t x t) round-robin, A/B tiles double-buffered under flags."""
    out = []
    tiles = [(i, j) for i in range(m // t) for j in range(n // t)]
    for core in range(cores):
        code: list = []
        step = 0
        for i, j in tiles[core::cores]:
            for kk in range(k // t):
                s = step % 2
                if step >= 2:
                    code.append(WaitFlag(Unit.MATRIX, Unit.DMA_IN, s))
                ra, rb = Ref(Space.L0A, s * t * t * 2), Ref(Space.L0B, s * t * t * 2)
                code += [
                    _load(ra, Ref(DRAM, a + (i * t * k + kk * t) * 2), t, t, k),
                    _load(rb, Ref(DRAM, b + (kk * t * n + j * t) * 2), t, t, n),
                    SetFlag(Unit.DMA_IN, Unit.MATRIX, s),
                    WaitFlag(Unit.DMA_IN, Unit.MATRIX, s),
                    Mma(DT.F16, Ref(Space.L0C, 0), ra, rb, t, t, t, int(kk > 0)),
                    SetFlag(Unit.MATRIX, Unit.DMA_IN, s),
                ]
                step += 1
            dst = Ref(DRAM, c + (i * t * n + j * t) * 4)
            code += [
                SetFlag(Unit.MATRIX, Unit.DMA_OUT, 0),
                WaitFlag(Unit.MATRIX, Unit.DMA_OUT, 0),
                Dma(DT.F32, dst, Ref(Space.L0C, 0), (1, t, t), (0, n, 1), (0, t, 1), (1, t, t)),
                SetFlag(Unit.DMA_OUT, Unit.MATRIX, 0),
                WaitFlag(Unit.DMA_OUT, Unit.MATRIX, 0),
            ]
        drain = [WaitFlag(Unit.MATRIX, Unit.DMA_IN, s) for s in range(min(step, 2))]
        out.append([*code, *drain, Finish()])  # every setf is waited on
    return out


def _reference(x: np.ndarray, y: np.ndarray, t: int) -> np.ndarray:
    """The ISA's rule for data whose steps truncate nothing (normal values; the general rule
    is tested in test_matrix_numerics): per k-tile of matrix_k, the exact dot (float64 is
    exact here), rounded to f32, added in f32."""
    acc = np.zeros((x.shape[0], y.shape[1]), np.float32)
    for kk in range(0, x.shape[1], t):
        part = x[:, kk : kk + t].astype(np.float64) @ y[kk : kk + t].astype(np.float64)
        acc = (acc + part.astype(np.float32)).astype(np.float32)
    return acc


@pytest.mark.parametrize("design", ["cube", "edge"])
def test_multicore_gemm_is_bit_exact(design):
    cfg = PROFILES[design]
    m, n, k, t = 64, 48, 80, 16
    rng = np.random.default_rng(3)
    x = rng.standard_normal((m, k)).astype(np.float16)
    y = rng.standard_normal((k, n)).astype(np.float16)
    sim = Simulator(cfg)
    a, b, c = sim.put(x, DT.F16), sim.put(y, DT.F16), sim.alloc(m * n * 4)
    stats = sim.run(Program(tuple(map(tuple, _gemm(m, n, k, t, cfg.cores, a, b, c)))))
    assert stats.macs == m * n * k
    np.testing.assert_array_equal(sim.get(c, (m, n), DT.F32), _reference(x, y, t))


def test_a_missing_wait_late_in_a_long_program_is_a_race():
    cfg = PROFILES["cube"]
    sim = Simulator(cfg)
    x = np.ones((64, 64), np.float16)
    a, b, c = sim.put(x, DT.F16), sim.put(x, DT.F16), sim.alloc(64 * 64 * 4)
    cores = _gemm(64, 64, 64, 16, 1, a, b, c)
    last = max(i for i, v in enumerate(cores[0]) if isinstance(v, WaitFlag)
               and v.src == Unit.DMA_IN)  # fmt: skip
    del cores[0][last]  # the mma after it moves up to its index
    mma_index = last
    with pytest.raises(RaceError, match="not ordered after the write") as e:
        sim.run(Program((tuple(cores[0]),)))
    msg = str(e.value)
    assert "dma_in and matrix" in msg
    assert f"instruction #{mma_index} `mma" in msg


def _row_loop(rows: int, read_rows: int) -> tuple:
    """Writes `rows` ub rows of 8 f32, then a loop reads `read_rows` of them (r3 += 32)."""
    return (
        Dma(DT.F32, Ref(UB, 0), Ref(DRAM, 0), (1, rows, 8), (0, 8, 1), (0, 8, 1), (1, rows, 8)),
        Barrier(),
        SMov(3, 0),
        SMov(4, read_rows * 32),
        VUn(UnOp.EXP, DT.F32, Ref(UB, 4096, 3), Ref(UB, 0, 3), (1, 8), (8, 1), (8, 1)),
        SAluI(SOp.ADD, 3, 3, 32),
        Branch(Cond.LT, 3, 4, 4),
        Finish(),
    )


def test_loop_reading_one_row_past_what_was_written_faults_at_that_row():
    sim = Simulator(PROFILES["edge"])
    sim.put(np.zeros((4, 8)), DT.F32)
    sim.run(Program((_row_loop(4, 4),)))  # every read row was written
    sim2 = Simulator(PROFILES["edge"])
    sim2.put(np.zeros((4, 8)), DT.F32)
    with pytest.raises(UninitializedRead, match="never-written ub memory at byte 128"):
        sim2.run(Program((_row_loop(4, 5),)))


def test_results_survive_device_memory_growing_between_runs():
    cfg = PROFILES["edge"]
    sim = Simulator(cfg)
    x = np.arange(32, dtype=np.float32).reshape(4, 8) / 8
    addr = sim.put(x, DT.F32)
    prog = Program(((
        Dma(DT.F32, Ref(UB, 0), Ref(DRAM, addr), (1, 4, 8), (0, 8, 1), (0, 8, 1), (1, 4, 8)),
        Barrier(),
        VUn(UnOp.NEG, DT.F32, Ref(UB, 256), Ref(UB, 0), (4, 8), (8, 1), (8, 1)),
        Barrier(),
        Dma(DT.F32, Ref(DRAM, addr), Ref(UB, 256), (1, 4, 8), (0, 8, 1), (0, 8, 1), (1, 4, 8)),
        Finish(),
    ),))  # fmt: skip
    sim.run(prog)
    far = sim.alloc(8 << 20)  # device memory grows (its arrays move)
    sim.write(far, np.ones(4, np.float32))
    sim.run(prog)  # negates again: x
    np.testing.assert_array_equal(sim.get(addr, (4, 8), DT.F32), x)
    np.testing.assert_array_equal(sim.get(far, (4,), DT.F32), np.ones(4))


@pytest.mark.parametrize("offset, races", [(1, False), (0, True)])
def test_interleaved_strided_accesses_race_only_on_shared_bytes(offset, races):
    sim = Simulator(PROFILES["edge"])
    sim.put(np.zeros(64), DT.F32)
    # dma_in writes the even f32 of 32 pairs; the vector unit reads even (race) or odd ones
    code = (
        Dma(DT.F32, Ref(UB, 4), Ref(DRAM, 0), (1, 1, 32), (0, 0, 2), (0, 0, 1), (1, 1, 32)),
        Barrier(),
        Dma(DT.F32, Ref(UB, 0), Ref(DRAM, 0), (1, 1, 32), (0, 0, 2), (0, 0, 1), (1, 1, 32)),
        VUn(UnOp.ABS, DT.F32, Ref(UB, 512), Ref(UB, 4 * offset), (1, 32), (32, 1), (64, 2)),
        Finish(),
    )
    if races:
        with pytest.raises(RaceError, match="race on ub byte 0"):
            sim.run(Program((code,)))
    else:
        sim.run(Program((code,)))


@pytest.mark.parametrize("same, races", [(True, True), (False, False)])
def test_cores_writing_the_same_device_bytes_race(same, races):
    sim = Simulator(PROFILES["cube"])
    src = sim.put(np.ones(16), DT.F32)
    out = sim.alloc(128)

    def core(c: int) -> tuple:
        dst = Ref(DRAM, out + (0 if same else 64 * c))
        return (
            Dma(DT.F32, Ref(UB, 0), Ref(DRAM, src), (1, 1, 16), (0, 0, 1), (0, 0, 1), (1, 1, 16)),
            Barrier(),
            Dma(DT.F32, dst, Ref(UB, 0), (1, 1, 16), (0, 0, 1), (0, 0, 1), (1, 1, 16)),
            Finish(),
        )

    prog = Program((core(0), core(1)))
    if races:
        with pytest.raises(RaceError, match="race on dram"):
            sim.run(prog)
    else:
        sim.run(prog)
        np.testing.assert_array_equal(sim.get(out, (32,), DT.F32), np.ones(32))


@pytest.mark.parametrize("strided", [False, True])
def test_a_race_after_hundreds_of_repeated_reads_is_still_found(strided):
    """The race detector forgets records that later ones cover; the last one must remain."""
    sim = Simulator(PROFILES["edge"])
    src = sim.put(np.ones((8, 16)), DT.F32)
    cols, ld = (8, 16) if strided else (16, 16)
    read = Dma(DT.F32, Ref(UB, 0), Ref(DRAM, src), (1, 8, cols), (0, cols, 1), (0, ld, 1),
               (1, 8, cols))  # fmt: skip
    stage = Dma(DT.F32, Ref(UB, 4096), Ref(DRAM, src), (1, 1, 8), (0, 0, 1), (0, 0, 1),
                (1, 1, 8))  # fmt: skip
    # dma_out overwrites the source's last row with no flag after the dma_in reads
    clobber = Dma(DT.F32, Ref(DRAM, src + 7 * 64), Ref(UB, 4096), (1, 1, 8), (0, 0, 1),
                  (0, 0, 1), (1, 1, 8))  # fmt: skip
    code = (stage, Barrier(), *([read] * 600), clobber, Finish())
    with pytest.raises(RaceError, match=f"race on dram byte {src + 7 * 64}") as e:
        sim.run(Program((code,)))
    assert "after the read by core 0 instruction #601 `dma" in str(e.value)  # the last one
