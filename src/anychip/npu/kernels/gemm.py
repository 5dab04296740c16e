"""Tiled, double-buffered GEMM for the matrix unit: C (M, N) f32 = A (M, K) @ B (K, N), fp16
(or bf16) inputs, any sizes: edge tiles are zero-padded up to the matrix-unit tile.

Each core owns a contiguous run of (tm, tn) output tiles. Its dma_in engine streams (tm, tk)
slices of A and (tk, tn) slices of B into two L0A/L0B slots while the matrix unit works on
the other slot; finished accumulators (two L0C slots when they fit) drain to device memory
on the dma_out engine while the next output tile is computed.

On designs with an L1 buffer, A and B are staged through it: (tm, kc) and (kc, tn) panels,
kc a multiple of tk, come from device memory (A in rows of kc elements: long runs, few page
activations, large requests) into two L1 slots each, a whole chunk ahead of use, which
hides device-memory latency; each step's (tm, tk) and (tk, tn) slices are copied on chip
into L0A/L0B. The copies follow the panel's load on the same engine, so they wait for it to
land without a flag (docs/npu-timing.md, "Ordering on one engine").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from anychip.errors import DTypeError, ShapeError
from anychip.npu.builder import Builder, DramLayout, Ring, Tile, program, round_up
from anychip.npu.config import NpuConfig
from anychip.npu.errors import ConfigError
from anychip.npu.isa import DT, Space, Unit
from anychip.npu.kernels.common import Kernel, chunks, need_shape, split
from anychip.npu.program import DataDecl

MAX_TILE = 1024  # largest tm/tn the planner tries: bigger tiles gain nothing measurable
MAX_PANEL = 1024  # widest A panel staged in L1 (elements): 2 KiB runs of f16 are enough
DRAM_EFFICIENCY = 0.6  # the share of peak DRAM bandwidth the planner counts on
STORE_BLOCKS = 4  # row blocks per finished tile, stored one by one as the matrix unit ends


@dataclass(frozen=True)
class GemmPlan:
    """Tile sizes (multiples of the matrix-unit tile) and slot counts of one GEMM.

    >>> from anychip.npu.config import PROFILES
    >>> plan_gemm(PROFILES["datacenter"], 2048, 2048, 2048)
    GemmPlan(tm=512, tn=512, tk=256, acc_slots=2, kc=0)
    """

    tm: int
    tn: int
    tk: int
    acc_slots: int = 2
    kc: int = 0  # A panel width staged in L1 (a multiple of tk); 0: A straight to L0A


def _fits(cfg: NpuConfig, tm: int, tn: int, tk: int, acc_slots: int, size: int,
          kc: int = 0) -> bool:  # fmt: skip
    """Two A and two B slots, `acc_slots` f32 accumulators (64-byte aligned), two L1 panels."""
    a, b = round_up(tm * tk * size, 64), round_up(tk * tn * size, 64)
    c = round_up(tm * tn * 4, 64)
    panels = 2 * (round_up(tm * kc * size, 64) + round_up(kc * tn * size, 64)) <= cfg.l1.size
    return (2 * a <= cfg.l0a.size and 2 * b <= cfg.l0b.size and acc_slots * c <= cfg.l0c.size
            and panels)  # fmt: skip


def _panel(cfg: NpuConfig, p: GemmPlan, k: int, size: int) -> int:
    """The deepest panels (kc, a multiple of tk, at most MAX_PANEL and K) for which two A
    (tm, kc) and two B (kc, tn) panels fit L1; 0 when none of more than one k-step fits
    (staging would only add copies)."""
    tk = p.tk
    kc = min(round_up(k, tk), max(tk, MAX_PANEL - MAX_PANEL % tk))
    while kc > tk and not _fits(cfg, p.tm, p.tn, tk, p.acc_slots, size, kc):
        kc -= tk
    return kc if kc > tk else 0


def _estimate(cfg: NpuConfig, m: int, n: int, k: int, p: GemmPlan, size: int) -> float:
    """Rough cycles of a plan: the slower of matrix work and DRAM traffic, plus the pipeline
    fill (first loads) and drain (last store) that no overlap hides."""
    tiles = math.ceil(m / p.tm) * math.ceil(n / p.tn)
    per_core = math.ceil(tiles / cfg.cores)
    steps = math.ceil(k / p.tk)
    hw = (p.tm // cfg.matrix_m) * (p.tn // cfg.matrix_n) * (p.tk // cfg.matrix_k)
    compute = per_core * steps * hw * cfg.tile_cycles
    traffic = size * k * (m * math.ceil(n / p.tn) + n * math.ceil(m / p.tm)) + 4 * m * n
    share = cfg.dram_bandwidth / min(cfg.cores, tiles)
    fill = (size * p.tk * (p.tm + p.tn) + 4 * p.tm * p.tn) / share + 2 * cfg.dma_latency
    stall = 0.0 if p.acc_slots == 2 else per_core * 4 * p.tm * p.tn / share
    # DRAM is derated: DMA latency and burst effects keep real streams below the peak, and
    # a plan that needs most of the bandwidth leaves the matrix unit waiting
    mem = traffic / (DRAM_EFFICIENCY * cfg.dram_bandwidth)
    return max(compute, mem) + fill + stall + per_core * steps * 8


def plan_gemm(config: NpuConfig, m: int, n: int, k: int, dtype: DT = DT.F16) -> GemmPlan:
    """The tile sizes with the fewest estimated cycles that fit the L0 buffers."""
    mm, mn, mk = config.matrix_m, config.matrix_n, config.matrix_k
    pm, pn, pk = round_up(m, mm), round_up(n, mn), round_up(k, mk)
    best: tuple[float, int, GemmPlan] | None = None
    for tm in range(mm, min(pm, max(MAX_TILE, mm)) + 1, mm):
        for tn in range(mn, min(pn, max(MAX_TILE, mn)) + 1, mn):
            for acc_slots in (2, 1):
                # the largest tk (a multiple of matrix_k, at most K) that fits
                tk = min(pk, config.l0a.size // (4 * tm), config.l0b.size // (4 * tn))
                tk -= tk % mk
                if tk < mk or not _fits(config, tm, tn, tk, acc_slots, dtype.itemsize):
                    continue
                plan = GemmPlan(tm, tn, tk, acc_slots)
                key = (_estimate(config, m, n, k, plan, dtype.itemsize), -tk, plan)
                if best is None or key[:2] < best[:2]:
                    best = key
                break  # two accumulators fit: one is never better
    if best is None:
        raise ConfigError(
            f"npu gemm: design {config.name!r} cannot hold one {mm}x{mk} A tile, one "
            f"{mk}x{mn} B tile (two slots each) and an f32 accumulator in its L0 buffers"
        )
    plan = best[2]
    # Stage through L1 when loading tiles straight from device memory would waste it:
    # A's rows (tk elements) shorter than half a page cost an activation each for little
    # data, and a step shorter than twice the memory latency cannot hide its loads.
    size = dtype.itemsize
    step = (plan.tm // mm) * (plan.tn // mn) * (plan.tk // mk) * config.tile_cycles
    if plan.tk * size < config.dram_page // 2 or step < 2 * config.dma_latency:
        plan = GemmPlan(plan.tm, plan.tn, plan.tk, plan.acc_slots, _panel(config, plan, pk, size))
    return plan


def gemm(
    config: NpuConfig,
    m: int,
    n: int,
    k: int,
    plan: GemmPlan | None = None,
    dtype: DT = DT.F16,
) -> Kernel:
    """C (m, n) f32 = A (m, k) @ B (k, n) with fp16 (or bf16) inputs, accumulating in f32.

    Device data: `a` (m, k), `b` (k, n) row-major in `dtype`; `c` (m, n) f32.

    >>> from anychip.npu.config import PROFILES
    >>> k = gemm(PROFILES["edge"], 20, 30, 40)
    >>> [d.name for d in k.inputs], k.outputs[0].shape, k.flops
    (['a', 'b'], (20, 30), 48000)
    """
    need_shape("gemm", (m, n, k))
    if dtype not in (DT.F16, DT.BF16):
        raise DTypeError(f"npu gemm: inputs must be f16 or bf16, got {dtype.name.lower()}")
    plan = plan or plan_gemm(config, m, n, k, dtype)
    _check_plan(config, plan, dtype)
    lay = DramLayout()
    a = lay.add("a", dtype, (m, k))
    b = lay.add("b", dtype, (k, n))
    c = lay.add("c", DT.F32, (m, n), init="none")
    tiles = [(i0, j0) for i0 in range(0, m, plan.tm) for j0 in range(0, n, plan.tn)]
    builders = []
    for core, (lo, hi) in enumerate(split(len(tiles), config.cores)):
        bld = Builder(config, core)
        _core(bld, plan, tiles[lo:hi], (a, b, c), (m, n, k))
        builders.append(bld)
    nbytes = dtype.itemsize * (m * k + k * n) + 4 * m * n
    return Kernel("gemm", program(builders, lay.decls), (a, b), (c,), 2 * m * n * k, nbytes)


def _check_plan(config: NpuConfig, p: GemmPlan, dtype: DT) -> None:
    ok = (
        p.tm % config.matrix_m == 0
        and p.tn % config.matrix_n == 0
        and p.tk % config.matrix_k == 0
        and min(p.tm, p.tn, p.tk) > 0
        and p.acc_slots in (1, 2)
        and p.kc >= 0
        and p.kc % p.tk == 0
    )
    if not ok or not _fits(config, p.tm, p.tn, p.tk, p.acc_slots, dtype.itemsize, p.kc):
        raise ConfigError(f"npu gemm: plan {p} does not suit design {config.name!r}")


def _core(
    bld: Builder,
    p: GemmPlan,
    tiles: list[tuple[int, int]],
    decls: tuple[DataDecl, DataDecl, DataDecl],
    mnk: tuple[int, int, int],
) -> None:
    """One core's code: every (tile, k-step) in order, loads one step ahead of the mma."""
    cfg, (a, b, c), (m, n, k) = bld.config, decls, mnk
    dt, size = a.dtype, a.dtype.itemsize
    ins = Ring(
        bld,
        [Unit.DMA_IN, Unit.MATRIX],
        [(bld.alloc(Space.L0A, p.tm * p.tk * size), bld.alloc(Space.L0B, p.tk * p.tn * size))
         for _ in range(2)],
    )  # fmt: skip
    accs = [bld.alloc(Space.L0C, p.tm * p.tn * 4) for _ in range(p.acc_slots)]
    outs = Ring(bld, [Unit.MATRIX, Unit.DMA_OUT], accs)
    steps = [(i0, j0, k0) for i0, j0 in tiles for k0 in range(0, k, p.tk)]
    stages = [_Stage(bld, p, d, (m, n, k), d is a) for d in (a, b)] if p.kc else []
    for stage in stages:
        stage.plan([(i0, j0, k0 - k0 % p.kc) for i0, j0, k0 in steps])

    def dims(i0: int, j0: int, k0: int) -> tuple[int, int, int]:
        """The step's real (rows, cols, depth); the mma runs on them rounded up to the tile."""
        return min(p.tm, m - i0), min(p.tn, n - j0), min(p.tk, k - k0)

    def load(step: tuple[int, int, int]) -> tuple[Tile, Tile]:
        i0, j0, k0 = step  # (on-chip copies from L1 panels when staged)
        rows, cols, depth = dims(i0, j0, k0)
        em, en, ek = (round_up(rows, cfg.matrix_m), round_up(cols, cfg.matrix_n),
                      round_up(depth, cfg.matrix_k))  # fmt: skip
        ra, rb = ins.enter(0)
        ta, tb = Tile(ra, em, ek, dt), Tile(rb, ek, en, dt)  # (em, ek), (ek, en): zero-padded
        if stages:
            stages[0].copy(ta, step)
            stages[1].copy(tb, step)
        else:
            bld.load(ta, a.addr + (i0 * k + k0) * size, rows, depth, ld=k)
            bld.load(tb, b.addr + (k0 * n + j0) * size, depth, cols, ld=n)
        ins.leave(0)
        return ta, tb

    acc = Tile(outs.slots[0], 1, 1, DT.F32)
    loaded = load(steps[0]) if steps else None
    for s, (i0, j0, k0) in enumerate(steps):
        ta, tb = loaded  # type: ignore[misc]
        loaded = load(steps[s + 1]) if s + 1 < len(steps) else None
        if k0 == 0:  # a new output tile: take an accumulator the dma_out engine has drained
            acc = Tile(outs.enter(0), ta.rows, tb.cols, DT.F32)
        last = k0 + p.tk >= k
        # the last k-step runs in row blocks, each handed to dma_out as soon as it is done,
        # so storing the tile overlaps its own last matrix work (a shorter pipeline drain)
        bs = round_up(-(-ta.rows // STORE_BLOCKS), cfg.matrix_m) if last else ta.rows
        blocks = chunks(0, ta.rows, bs)
        ins.enter(1)
        for r0, r1 in blocks:
            part = acc.sub(r0, 0, r1 - r0, acc.cols)
            bld.mma(part, ta.sub(r0, 0, r1 - r0, ta.cols), tb, accumulate=k0 > 0)
            if last:
                bld.set(Unit.MATRIX, Unit.DMA_OUT, outs.flag)
        ins.leave(1)
        if last:
            rows, cols, _ = dims(i0, j0, k0)
            for r0, r1 in blocks:
                bld.wait(Unit.MATRIX, Unit.DMA_OUT, outs.flag)
                if r0 < rows:  # rows past the matrix's end are padding: nothing to store
                    at = c.addr + ((i0 + r0) * n + j0) * 4
                    bld.store(at, n, acc.sub(r0, 0, min(r1, rows) - r0, acc.cols), cols=cols)
            bld.set(Unit.DMA_OUT, Unit.MATRIX, outs.flag)  # the accumulator is free again
    ins.drain()
    outs.drain()
    bld.finish()


class _Stage:
    """One operand staged through L1: per chunk (i0, j0, kc0) a panel of A (tm, kc) or B
    (kc, tn) in one of two L1 slots, loaded in row blocks one chunk ahead."""

    def __init__(self, bld: Builder, p: GemmPlan, decl: DataDecl, mnk: tuple[int, int, int],
                 is_a: bool) -> None:  # fmt: skip
        self.bld, self.p, self.decl, self.mnk, self.is_a = bld, p, decl, mnk, is_a
        size = decl.dtype.itemsize
        width = p.tm if is_a else p.tn
        self.slots = [bld.alloc(Space.L1, width * p.kc * size) for _ in range(2)]
        self.chunks: list[tuple[int, int, int]] = []
        self.index: dict[tuple[int, int, int], int] = {}
        self.emitted = 0

    def plan(self, keys: list[tuple[int, int, int]]) -> None:
        """The chunks (i0, j0, kc0) in the order the steps use them."""
        for key in keys:
            if key not in self.index:
                self.index[key] = len(self.chunks)
                self.chunks.append(key)

    def _box(self, n: int) -> tuple[int, int, int, int, Tile]:
        """(DRAM row, DRAM col, real rows, real cols, padded panel tile) of chunk n."""
        cfg, p, (m, nn, k) = self.bld.config, self.p, self.mnk
        i0, j0, kc0 = self.chunks[n]
        if self.is_a:  # A (tm, kc) at (i0, kc0): rows of the output, columns of depth
            r, c = min(p.tm, m - i0), min(p.kc, k - kc0)
            pr, pc, at = round_up(r, cfg.matrix_m), round_up(c, cfg.matrix_k), (i0, kc0)
        else:  # B (kc, tn) at (kc0, j0)
            r, c = min(p.kc, k - kc0), min(p.tn, nn - j0)
            pr, pc, at = round_up(r, cfg.matrix_k), round_up(c, cfg.matrix_n), (kc0, j0)
        return at[0], at[1], r, c, Tile(self.slots[n % 2], pr, pc, self.decl.dtype)

    def _load(self, n: int, part: int, parts: int) -> None:
        """Emits row block `part` of `parts` of chunk n's panel; the last block also
        zero-fills the padding rows (and every block the padding columns)."""
        row, col, rows, cols, panel = self._box(n)
        blocks = chunks(0, rows, -(-rows // parts))
        if part >= len(blocks):
            return
        r0, r1 = blocks[part]
        end = panel.rows if part == len(blocks) - 1 else r1
        ld = self.decl.shape[1]
        at = self.decl.addr + ((row + r0) * ld + col) * self.decl.dtype.itemsize
        self.bld.load(panel.sub(r0, 0, end - r0, panel.cols), at, r1 - r0, cols, ld=ld)

    def copy(self, dst: Tile, step: tuple[int, int, int]) -> None:
        """Copies the step's slice of its chunk's panel into the L0 tile `dst`. The next
        chunk's panel is loaded in row blocks, one behind each copy of this chunk, so the
        engine never holds the steps' own copies back for a whole panel."""
        i0, j0, k0 = step
        p, k = self.p, self.mnk[2]
        kc0 = k0 - k0 % p.kc
        n = self.index[(i0, j0, kc0)]
        if self.emitted <= n:  # the first chunk: loaded whole, just before its first copy
            self._load(n, 0, 1)
            self.emitted = n + 1
        panel = self._box(n)[4]
        r0, c0 = (0, k0 - kc0) if self.is_a else (k0 - kc0, 0)
        self.bld.copy(dst, panel.sub(r0, c0, dst.rows, dst.cols))
        steps = -(-min(p.kc, k - kc0) // p.tk)
        if n + 1 < len(self.chunks):
            self._load(n + 1, (k0 - kc0) // p.tk, steps)
            if (k0 - kc0) // p.tk == steps - 1:
                self.emitted = n + 2


def run_gemm(config: NpuConfig, a: Any, b: Any, plan: GemmPlan | None = None) -> np.ndarray:
    """A @ B on the functional simulator: inputs rounded to fp16, the result f32 (m, n).

    >>> from anychip.npu.config import PROFILES
    >>> run_gemm(PROFILES["edge"], np.ones((3, 5)), np.ones((5, 2))).tolist()
    [[5.0, 5.0], [5.0, 5.0], [5.0, 5.0]]
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ShapeError(f"npu gemm: needs a (m, k) and b (k, n), got a {a.shape} and b {b.shape}")
    kern = gemm(config, a.shape[0], b.shape[1], a.shape[1], plan)
    out, _ = kern.run(config, {"a": a, "b": b})
    return out["c"]
