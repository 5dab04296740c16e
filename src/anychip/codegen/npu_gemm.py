"""The compiler's GEMM generator for the npu matrix unit: a (batched) contraction over
strided device-memory views, with an epilogue on the f32 accumulator, as an npu Program.

out[b, i, j] = epilogue(sum_k a[b, i, k] * b[b, k, j]) for any sizes, strides (0 for
broadcast, transposed views) and batch, tiled for the design's L0A/L0B/L0C/UB sizes.

**Launch convention.** The generator bakes no device-memory address into the program:
every operand (`GemmView`) names the scalar register that holds its buffer's base byte
address at launch (`reg`, 3..31: r1 and r2 hold the core index and count), and the
program reads element `e` of the view at `dram:rREG + (offset + e's strided index) *
itemsize`. The backend sets those registers before the program runs (`bind` prepends
the `smov`s, for ISAs without launch arguments); several views may share a register.
The generator uses no other register, and no branch, so a bound program is unrolled code.

**Precision.** float16 and bfloat16 inputs run natively (f32 accumulation). float32
inputs are split on chip by the vector unit into bfloat16 pieces `x = x0 + x1 + x2`
(each the bfloat16 rounding of what the earlier pieces leave, exact in float32), and the
matrix unit sums piece products into the same f32 accumulator: "medium" x0*y0 (one pass),
"high" x0*y0 + x0*y1 + x1*y0 (three passes), "highest" the six products whose pieces sum
to at most 2 (six passes; the three dropped ones are below 2^-24 relative to |x||y|). A
matrix unit without bf16 (`edge`) gets float16 pieces of power-of-two scaled rows of A
and columns of B instead (`npu_gemm_split.py`; two pieces, all four products in two mmas).
At "highest", a matrix unit with f32 inputs takes float32 tiles as they are (its
quarter-rate mode, exact products) where the planner estimates that faster
(`GemmPlan.native`): no split, no copies, no maxima pass.

Schedule per core (work is split over cores by output tiles): dma_in streams (tm, tk) A
and (tk, tn) B tiles (through the unified buffer and the split when float32) into two
L0A/L0B slots ahead of the matrix unit, keeping a row's A tiles in L1 (when they fit)
for the row's other output tiles; the last k-step of a tile runs in row blocks, each
handed on to the vector unit (epilogue, down-cast) and the dma_out engine as it finishes,
while the next tile computes in the other accumulator. docs/npu-gemm.md has the details.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from anychip import dtypes
from anychip.codegen.npu_gemm_io import load_view, store_view
from anychip.codegen.npu_gemm_plan import (
    Bias,
    EpilogueOp,
    GemmPlan,
    GemmSpec,
    GemmView,
    Scale,
    Unary,
    bias_elems,
    bias_slots,
    block_rows,
    blocks,
    caches_a,
    check_spec,
    fits,
    passes,
    plan_npu_gemm,
    scaled,
    stage_depth,
)
from anychip.codegen.npu_gemm_split import Scales, Step, piece_tiles, split_bf16, split_f16
from anychip.errors import ArgumentError, DTypeNotImplemented, ShapeError
from anychip.ir.kernel import ContractionSpec, Operand
from anychip.npu.builder import Builder, Ring, Tile, program, round_up
from anychip.npu.config import NpuConfig
from anychip.npu.isa import DT, BinOp, Branch, Ref, SMov, Space, Unit, UnOp
from anychip.npu.program import Program
from anychip.precision import get_float32_matmul_precision

_DT = {dtypes.float32: DT.F32, dtypes.float16: DT.F16, dtypes.bfloat16: DT.BF16}


@dataclass(frozen=True)
class NpuGemm:
    """A generated GEMM: its program, plan, useful FLOPs (2 per MAC of the contraction)
    and the least device-memory bytes any schedule moves."""

    program: Program
    plan: GemmPlan
    flops: int
    dram_bytes: int


def from_contraction(
    c: ContractionSpec,
    regs: Sequence[int],
    epilogue: Sequence[EpilogueOp] = (),
    out_dtype: dtypes.DType | None = None,
    precision: str | None = None,
) -> GemmSpec:
    """The GemmSpec of a kernel IR contraction: `regs[i]` holds the base address of the
    kernel's buffer i (Operand.buf); the output is cast to `out_dtype` (default the
    output buffer's dtype); `precision` defaults to get_float32_matmul_precision()."""

    def view(op: Operand, dt: dtypes.DType) -> GemmView:
        if dt not in _DT:
            raise DTypeNotImplemented(f"npu gemm: no matrix path for {dt.name} operands")
        if op.buf >= len(regs):
            raise ArgumentError(f"npu gemm: no register given for buffer {op.buf}")
        return GemmView(regs[op.buf], _DT[dt], op.offset, op.batch_strides, op.rows, op.cols)

    return GemmSpec(
        c.batch, c.m, c.n, c.k, view(c.a, c.a.dtype), view(c.b, c.b.dtype),
        view(c.out, out_dtype or c.out.dtype), tuple(epilogue),
        precision or get_float32_matmul_precision(),
    )  # fmt: skip


def bind(prog: Program, values: Mapping[int, int]) -> Program:
    """`prog` with `smov`s setting each register to its value at the start of every core
    (branch targets shifted past them): a launch on an ISA without launch arguments."""
    head = tuple(SMov(r, v) for r, v in sorted(values.items()))
    cores = []
    for code in prog.cores:
        moved = tuple(
            dataclasses.replace(i, target=i.target + len(head)) if isinstance(i, Branch) else i
            for i in code
        )
        cores.append(head + moved)
    return Program(tuple(cores), prog.data)


# ---- generation ----------------------------------------------------------------------
def npu_gemm(config: NpuConfig, spec: GemmSpec, plan: GemmPlan | None = None) -> NpuGemm:
    """The Program computing `spec` on `config`'s matrix unit (see the module docstring
    for the register convention).

    >>> from anychip.npu.config import PROFILES
    >>> v = GemmView(3, DT.F16, 0, (), 40, 1)  # a (30, 40) row-major f16 matrix at r3
    >>> w = GemmView(4, DT.F16, 0, (), 20, 1)  # b (40, 20) at r4
    >>> o = GemmView(5, DT.F32, 0, (), 20, 1)  # out (30, 20) f32 at r5
    >>> g = npu_gemm(PROFILES["edge"], GemmSpec((), 30, 20, 40, v, w, o))
    >>> g.flops, g.plan.tm % 16
    (48000, 0)
    """
    check_spec(config, spec)
    plan = plan or plan_npu_gemm(config, spec)
    mdt, pieces, pairs = passes(config, spec.a.dtype, spec.precision, plan.native)
    if not fits(config, spec, plan, pieces):
        raise ShapeError(f"npu gemm: plan {plan} does not fit design {config.name!r}")
    s = spec
    items = [
        (bidx, i0, j0)
        for bidx in itertools.product(*(range(d) for d in s.batch))
        for i0 in range(0, s.m, plan.tm)
        for j0 in range(0, s.n, plan.tn)
    ]
    builders = []
    parts = min(config.cores, len(items))
    per, extra = divmod(len(items), parts)
    lo = 0
    for core in range(parts):  # contiguous runs of output tiles, sizes differing by <= 1
        hi = lo + per + (core < extra)
        bld = Builder(config, core)
        _CoreGen(bld, s, plan, mdt, pieces, pairs).emit(items[lo:hi])
        builders.append(bld)
        lo = hi
    bat = math.prod(s.batch)
    size = s.a.dtype.itemsize
    nbytes = bat * (size * (s.m * s.k + s.k * s.n) + s.out.dtype.itemsize * s.m * s.n)
    return NpuGemm(program(builders), plan, 2 * bat * s.m * s.n * s.k, nbytes)


class _CoreGen:
    """One core's code: every (output tile, k-step) in order, operands prepared ahead."""

    def __init__(self, bld: Builder, s: GemmSpec, p: GemmPlan, mdt: DT, pieces: int,
                 pairs: tuple[tuple[int, int], ...]) -> None:  # fmt: skip
        self.bld, self.s, self.p, self.mdt = bld, s, p, mdt
        self.pieces, self.pairs = pieces, pairs
        self.split = s.a.dtype != mdt  # float32 as 16-bit pieces (not native f32)
        self.blocks = blocks(bld.config, s.a.dtype, pieces)
        self.cat = self.blocks[1] > self.blocks[0]  # float16 pieces: P mmas (`blocks`)
        if self.cat:  # [x0 .. xP-1] @ each window of B's stack, the main one ([y0; ..]) last
            self.pairs = tuple((0, j) for j in reversed(range(pieces)))
        size = mdt.itemsize
        a_bytes, b_bytes = size * self.blocks[0] * p.tm * p.tk, size * self.blocks[1] * p.tk * p.tn
        l0 = [(bld.alloc(Space.L0A, a_bytes), bld.alloc(Space.L0B, b_bytes)) for _ in range(2)]
        self.ins = Ring(bld, [Unit.DMA_IN, Unit.MATRIX], l0)
        self.accs = [bld.alloc(Space.L0C, 4 * p.tm * p.tn) for _ in range(p.acc_slots)]
        self.scaled = self.split and scaled(bld.config, s.a.dtype)  # f16 scaled pieces
        self.vec = bool(s.epilogue) or s.out.dtype != DT.F32 or self.scaled
        last = Unit.VECTOR if self.vec else Unit.MATRIX
        self.f_ready = bld.flag((Unit.MATRIX, last)) if self.vec else -1  # block computed
        self.f_out = bld.flag((last, Unit.DMA_OUT))  # block ready to store
        self.f_free = bld.flag((Unit.DMA_OUT, Unit.MATRIX))  # accumulator stored
        self.acc_uses = 0
        self.casts: list[Ref] = []  # down-cast output blocks, two slots
        self.cast_uses = 0
        if s.out.dtype != DT.F32:
            slot = block_rows(bld.config, p.tm) * p.tn * s.out.dtype.itemsize
            self.casts = [bld.alloc(Space.UB, slot) for _ in range(2)]
            self.f_cast = bld.flag((Unit.DMA_OUT, Unit.VECTOR))  # a cast slot stored
        self.biases: list[tuple[Bias, Ring, Ref | None]] = []
        for e in s.epilogue:
            if isinstance(e, Bias):
                elems = bias_elems(e.view, p)
                slot = elems * e.view.dtype.itemsize
                slots = [bld.alloc(Space.UB, slot) for _ in range(bias_slots(e.view))]
                ring = Ring(bld, [Unit.DMA_IN, Unit.VECTOR], slots)
                wide = bld.alloc(Space.UB, 4 * elems) if e.view.dtype != DT.F32 else None
                self.biases.append((e, ring, wide))
        if self.split:
            raw = [(bld.alloc(Space.UB, 4 * p.tm * p.tk), bld.alloc(Space.UB, 4 * p.tk * p.tn))
                   for _ in range(2)]  # fmt: skip
            self.raw = Ring(bld, [Unit.DMA_IN, Unit.VECTOR], raw)
            pcs = [(bld.alloc(Space.UB, a_bytes), bld.alloc(Space.UB, b_bytes)) for _ in range(2)]
            self.pcs = Ring(bld, [Unit.VECTOR, Unit.DMA_IN], pcs)
            scratch = 4 * p.tk * max(p.tm, p.tn)
            self.scratch = [bld.alloc(Space.UB, scratch) for _ in range(2)]
        # a row of A's split tiles kept in L1 (one block per k-step) for the row's tiles
        self.a_cache: Ref | None = None
        if caches_a(bld.config, s, p, pieces):
            self.a_cache = bld.alloc(Space.L1, a_bytes * math.ceil(s.k / p.tk))
        self.a_cached: list[bool] = []
        # unsplit A without L1 rows: `stage` k-steps of A's rows in one longer-run DMA
        self.stage = stage_depth(bld.config, s, p, pieces)
        self.chunk: Ref | None = None
        if self.stage:
            self.chunk = bld.alloc(Space.UB, mdt.itemsize * p.tm * self.stage * p.tk)
        self.steps: list[Step] = []
        self.scales: Scales | None = None  # float16 pieces: the scales (npu_gemm_split)
        self.ready: dict[int, tuple[list[Tile], list[Tile]]] = {}
        self.prepared = 0

    def dims(self, st: Step) -> tuple[int, int, int, int, int, int]:
        """(rows, cols, depth) of a step and the same rounded up to the matrix tile."""
        cfg, s, p = self.bld.config, self.s, self.p
        _, i0, j0, k0 = st
        r, c, d = min(p.tm, s.m - i0), min(p.tn, s.n - j0), min(p.tk, s.k - k0)
        er, ec = round_up(r, cfg.matrix_m), round_up(c, cfg.matrix_n)
        return r, c, d, er, ec, round_up(d, cfg.matrix_k)

    def emit(self, items: list[tuple[tuple[int, ...], int, int]]) -> None:
        s, p = self.s, self.p
        self.steps = [(b, i0, j0, k0) for b, i0, j0 in items for k0 in range(0, s.k, p.tk)]
        # a step finds A's pieces in L1 when the tile before it was in the same row
        rows = [(b, i0) for b, i0, _, _ in self.steps]
        nk = math.ceil(s.k / p.tk)
        self.a_cached = [
            self.a_cache is not None and n >= nk and rows[n - nk] == rows[n]
            for n in range(len(self.steps))
        ]
        if self.scaled:
            block = block_rows(self.bld.config, p.tm) * p.tn
            self.scales = Scales(self.bld, self.steps, p.tm, p.tn, block, self.scratch[0])
        lead = 3 if self.split else 1
        for n, st in enumerate(self.steps):
            while self.prepared <= min(n + lead, len(self.steps) + 1):
                self._prepare(self.prepared)
                self.prepared += 1
            self._compute(n, st)
        while self.prepared <= len(self.steps) + 1:
            self._prepare(self.prepared)
            self.prepared += 1
        for ring in [self.ins] + [r for _, r, _ in self.biases]:
            ring.drain()
        for _ in range(min(self.cast_uses, len(self.casts))):
            self.bld.wait(Unit.DMA_OUT, Unit.VECTOR, self.f_cast)
        if self.split:
            self.raw.drain()
            self.pcs.drain()
        for _ in range(min(self.acc_uses, len(self.accs))):
            self.bld.wait(Unit.DMA_OUT, Unit.MATRIX, self.f_free)
        self.bld.finish()

    # -- operands ----------------------------------------------------------------------
    def _prepare(self, i: int) -> None:
        """Direct: load step i into L0. Split: load step i raw, split step i-1, copy
        step i-2's pieces into L0."""
        n = len(self.steps)
        if not self.split:
            if i < n:
                self._direct(i)
            return
        nk = math.ceil(self.s.k / self.p.tk)
        if i < n and self.scales is not None and nk > 1 and any(self.scales.fresh[i]):
            # the tile's maxima need its whole depth: their own pass over A and B first,
            # through the raw slots in their ring order (after step i-1, before step i)
            if i >= 2:
                self._copy(i - 2)
            if i >= 1:
                self._split(i - 1)
            self._maxima(i)
            self._raw(i)
            return
        if i < n:
            self._raw(i)
        if 0 <= i - 1 < n:
            self._split(i - 1)
        if 0 <= i - 2 < n:
            self._copy(i - 2)

    def _direct(self, i: int) -> None:
        bidx, i0, j0, k0 = st = self.steps[i]
        r, c, d, er, ec, ed = self.dims(st)
        ra, rb = self.ins.enter(0)
        ta, tb = Tile(ra, er, ed, self.mdt), Tile(rb, ed, ec, self.mdt)
        block = None
        if self.a_cache is not None:  # the row's A tiles stay in L1 for its other tiles
            off = k0 // self.p.tk * self.mdt.itemsize * self.p.tm * self.p.tk
            block = Tile(dataclasses.replace(self.a_cache, off=self.a_cache.off + off), er, ed,
                         self.mdt)  # fmt: skip
        if block is not None and self.a_cached[i]:
            self.bld.copy(ta, block)
        elif self.chunk is not None:  # a chunk of `stage` steps, loaded at its first
            g, tk = self.stage, self.p.tk
            chunk = Tile(self.chunk, er, g * tk, self.mdt)
            if k0 // tk % g == 0:
                load_view(self.bld, chunk, self.s.a, bidx, i0, k0, r, min(g * tk, self.s.k - k0))
            # dma_in copies in order after its own load, and the next chunk's load after
            self.bld.copy(ta, chunk.sub(0, k0 // tk % g * tk, er, ed))
        else:
            load_view(self.bld, ta, self.s.a, bidx, i0, k0, r, d)
        load_view(self.bld, tb, self.s.b, bidx, k0, j0, d, c)
        self.ins.leave(0)
        if block is not None and not self.a_cached[i]:
            # kept for the row's next tiles: after B's load, so the engine waits for A's
            # data (its own earlier write) while B's streams, not before
            self.bld.copy(block, ta)
        self.ready[i] = ([ta], [tb])

    def _raw(self, i: int) -> None:
        bidx, i0, j0, k0 = st = self.steps[i]
        r, c, d, er, ec, ed = self.dims(st)
        ra, rb = self.raw.enter(0)
        if not self.a_cached[i]:
            load_view(self.bld, Tile(ra, er, ed, DT.F32), self.s.a, bidx, i0, k0, r, d)
        load_view(self.bld, Tile(rb, ed, ec, DT.F32), self.s.b, bidx, k0, j0, d, c)
        self.raw.leave(0)

    def _split(self, i: int) -> None:
        """Step i's raw f32 tiles -> 16-bit pieces (`npu_gemm_split.py`): bf16 by
        Veltkamp's split, or f16 of the values times their row's / column's scale (computed
        here from the tiles themselves when the whole depth is one step)."""
        _, _, _, er, ec, ed = self.dims(self.steps[i])
        bld, mdt = self.bld, self.mdt
        raws = self.raw.enter(1)
        outs = self.pcs.enter(0)
        todo = [(raws[1], ed, ec, outs[1], 1)]
        if not self.a_cached[i]:
            todo.insert(0, (raws[0], er, ed, outs[0], 0))
        for ref, rows, cols, dst, op in todo:
            x = Tile(ref, rows, cols, DT.F32)
            t, r = (Tile(sc, rows, cols, DT.F32) for sc in self.scratch)
            piece = piece_tiles(dst, rows, cols, mdt, self.pieces, self.cat and op == 0)
            if self.scales is None:
                split_bf16(bld, x, piece, (t, r))
                continue
            if self.s.k <= self.p.tk and self.scales.fresh[i][op]:  # one step: from x
                self.scales.fold(op, i, x, True, True)
            split_f16(bld, x, self.scales.scale(op, i, rows, cols), piece, t)
            if self.cat and op == 1:  # y0 .. yP-2 again below yP-1
                stack = piece_tiles(dst, rows, cols, mdt, 2 * self.pieces - 1, False)
                for q in range(self.pieces - 1):
                    bld.vun(UnOp.COPY, stack[self.pieces + q], piece[q])
        self.raw.leave(1)
        self.pcs.leave(0)

    # -- float16 pieces: the maxima's own pass ------------------------------------------
    def _maxima(self, i: int) -> None:
        """A pass over the whole depth of step i's tile: (r, tk) chunks of A and (tk, c)
        of B through the raw slots, each chunk's maxima folded in as it lands."""
        assert self.scales is not None
        bidx, i0, j0, _ = self.steps[i]
        fa, fb = self.scales.fresh[i]
        ks = range(0, self.s.k, self.p.tk)
        for k0 in ks:
            r, c, d, er, ec, ed = self.dims((bidx, i0, j0, k0))
            ra, rb = self.raw.enter(0)
            if fa:
                load_view(self.bld, Tile(ra, er, ed, DT.F32), self.s.a, bidx, i0, k0, r, d)
            if fb:
                load_view(self.bld, Tile(rb, ed, ec, DT.F32), self.s.b, bidx, k0, j0, d, c)
            self.raw.leave(0)
            self.raw.enter(1)
            ends = (k0 == 0, k0 == ks[-1])
            if fa:
                self.scales.fold(0, i, Tile(ra, er, ed, DT.F32), *ends)
            if fb:
                self.scales.fold(1, i, Tile(rb, ed, ec, DT.F32), *ends)
            self.raw.leave(1)

    def _copy(self, i: int) -> None:
        """The pieces into L0A/L0B: A's from L1 when cached, else from the unified buffer
        (and into L1 for the row's next tiles). dma_in reads what it wrote to L1 in order."""
        _, _, _, er, ec, ed = self.dims(self.steps[i])
        src = self.pcs.enter(1)
        dst = self.ins.enter(0)
        block = None
        pa, pb = self.blocks
        if self.a_cache is not None:
            off = self.steps[i][3] // self.p.tk * 2 * pa * self.p.tm * self.p.tk
            block = Tile(dataclasses.replace(self.a_cache, off=self.a_cache.off + off), 1,
                         pa * er * ed, self.mdt)  # fmt: skip
        tiles: list[list[Tile]] = []
        for s_ref, d_ref, rows, cols, nb in ((src[0], dst[0], er, ed, pa),
                                             (src[1], dst[1], ed, ec, pb)):  # fmt: skip
            flat = nb * rows * cols
            into = Tile(d_ref, 1, flat, self.mdt)
            if d_ref is dst[0] and block is not None and self.a_cached[i]:
                self.bld.copy(into, block)
            else:
                self.bld.copy(into, Tile(s_ref, 1, flat, self.mdt))
                if d_ref is dst[0] and block is not None:
                    self.bld.copy(block, Tile(s_ref, 1, flat, self.mdt))
            tiles.append(piece_tiles(d_ref, rows, cols, self.mdt, self.pieces, False))
        if self.cat:  # A: (er, P ed); B's P windows: (P ed, ec) from block j
            ra, rb, n = dst[0], dst[1], self.pieces
            tiles = [[Tile(ra, er, n * ed, self.mdt)],
                     [Tile(dataclasses.replace(rb, off=rb.off + j * ed * ec * 2), n * ed, ec,
                           self.mdt) for j in range(n)]]  # fmt: skip
        self.pcs.leave(1)
        self.ins.leave(0)
        self.ready[i] = (tiles[0], tiles[1])

    # -- matrix, epilogue, store --------------------------------------------------------
    def _compute(self, n: int, st: Step) -> None:
        bld, cfg, p = self.bld, self.bld.config, self.p
        k0 = st[3]
        r, c, _, er, ec, _ = self.dims(st)
        ta, tb = self.ready.pop(n)
        slot = self.accs[(self.acc_uses - (k0 > 0)) % len(self.accs)]
        if k0 == 0:  # a new output tile: its accumulator must have been stored
            if self.acc_uses >= len(self.accs):
                bld.wait(Unit.DMA_OUT, Unit.MATRIX, self.f_free)
            self.acc_uses += 1
        acc = Tile(slot, er, ec, DT.F32)
        last = k0 + p.tk >= self.s.k
        if k0 == max(0, (math.ceil(self.s.k / p.tk) - 2) * p.tk):
            # epilogue operands load two steps before the tile's end: with one slot, the
            # previous tile's epilogue is done by then, and the load lands before its own
            for e, ring, _ in self.biases:
                self._biasload_view(e, ring, st)
        bs = block_rows(cfg, er) if last else er
        blocks = [(b0, min(b0 + bs, er)) for b0 in range(0, er, bs)]
        self.ins.enter(1)
        for b0, b1 in blocks:
            part = acc.sub(b0, 0, b1 - b0, ec)
            for q, (pa, pb) in enumerate(self.pairs):
                a = ta[pa].sub(b0, 0, b1 - b0, ta[pa].cols)
                bld.mma(part, a, tb[pb], accumulate=k0 > 0 or q > 0)
            if last:
                bld.set(Unit.MATRIX, Unit.VECTOR if self.vec else Unit.DMA_OUT,
                        self.f_ready if self.vec else self.f_out)  # fmt: skip
        self.ins.leave(1)
        if last:
            self._drain(acc, blocks, st, r, c, n)

    def _biasload_view(self, e: Bias, ring: Ring, st: Step) -> None:
        bidx, i0, j0, _ = st
        r, c, _, er, ec, _ = self.dims(st)
        ref = ring.enter(0)
        v = e.view
        rows, cols = (1 if v.rows == 0 else r), (1 if v.cols == 0 else c)
        prow, pcol = (1 if v.rows == 0 else er), (1 if v.cols == 0 else ec)
        load_view(self.bld, Tile(ref, prow, pcol, v.dtype), v, bidx, i0, j0, rows, cols)
        ring.leave(0)

    def _drain(self, acc: Tile, blocks: list[tuple[int, int]], st: Step, r: int, c: int,
               n: int) -> None:  # fmt: skip
        """The finished tile, block by block: the epilogue and down-cast (vector), then the
        store (dma_out). Emitted block by block, so that a vector wait for a cast slot is
        dispatched after the store that frees it (an in-order scalar unit would deadlock
        behind a full vector queue otherwise)."""
        bld, s = self.bld, self.s
        bidx, i0, j0, _ = st
        er, ec = acc.shape
        tiles = {}  # id(op) -> (bias tile, f32 scratch or None)
        for bias, ring, wide in self.biases:
            v = bias.view
            prow, pcol = (1 if v.rows == 0 else er), (1 if v.cols == 0 else ec)
            tiles[id(bias)] = (Tile(ring.enter(1), prow, pcol, v.dtype), wide)
        for b0, b1 in blocks:
            part = acc.sub(b0, 0, b1 - b0, ec)
            if self.vec:
                bld.wait(Unit.MATRIX, Unit.VECTOR, self.f_ready)
                if self.scales is not None:
                    self.scales.unscale(part, b0, n)
                for e in s.epilogue:
                    if isinstance(e, Scale):
                        bld.vscalar(BinOp.MUL, part, part, e.value)
                    elif isinstance(e, Unary):
                        bld.vun(e.op, part, part)
                    else:
                        add = self._bias_block(e, *tiles[id(e)], b0, b1, ec)
                        bld.vbin(BinOp.ADD, part, part, add)
                if self.casts:  # into the next block slot dma_out has stored
                    if self.cast_uses >= len(self.casts):
                        bld.wait(Unit.DMA_OUT, Unit.VECTOR, self.f_cast)
                    slot = self.casts[self.cast_uses % len(self.casts)]
                    self.cast_uses += 1
                    part = Tile(slot, b1 - b0, ec, s.out.dtype)
                    bld.vcast(part, acc.sub(b0, 0, b1 - b0, ec))
                bld.set(Unit.VECTOR, Unit.DMA_OUT, self.f_out)
            bld.wait(Unit.VECTOR if self.vec else Unit.MATRIX, Unit.DMA_OUT, self.f_out)
            rows = min(b1, r) - b0  # rows past the matrix's end are padding
            store_view(bld, s.out, bidx, i0 + b0, j0, part.sub(0, 0, rows, ec), rows, c)
            if self.casts:
                bld.set(Unit.DMA_OUT, Unit.VECTOR, self.f_cast)
        for _, ring, _ in self.biases:
            ring.leave(1)
        bld.set(Unit.DMA_OUT, Unit.MATRIX, self.f_free)  # the accumulator is free again

    def _bias_block(self, e: Bias, t: Tile, wide: Ref | None, b0: int, b1: int,
                    cols: int) -> Tile:  # fmt: skip
        """Rows [b0, b1) of a bias tile as an f32 (b1 - b0, cols) operand (broadcast
        along a 0 stride; cast to f32 in the scratch first when it is 16-bit)."""
        src = t if e.view.rows == 0 else t.sub(b0, 0, b1 - b0, t.cols)
        if wide is not None:
            w = Tile(wide, src.rows, src.cols, DT.F32)
            self.bld.vcast(w, src)
            src = w
        if e.view.rows == 0:
            src = src.bcast_rows(b1 - b0)
        if e.view.cols == 0:
            src = src.bcast_cols(cols)
        return src


__all__ = [
    "Bias",
    "GemmPlan",
    "GemmSpec",
    "GemmView",
    "NpuGemm",
    "Scale",
    "Unary",
    "bind",
    "from_contraction",
    "npu_gemm",
    "passes",
    "plan_npu_gemm",
]
