"""Kernel IR -> npu instructions: loop nests as 2-D tiles of the unified buffer.

A kernel's loops are cut into *steps*. A step covers a (rows, cols) box of iteration
points whose loop variables are affine in (row, col): rows and columns from two loops, or
both from one long loop (point = base + row*cols + col). Inside a step every expression is
one tile of the unified buffer (`ub`): loads are DMAs (strided boxes; other index patterns
through the gather DMA from a table of element numbers the compiler computes), arithmetic
is vector instructions on whole tiles, stores are DMAs back. Steps flow through a
two-slot ring (dma_in -> vector -> dma_out, double buffered, ordered by flags); values
that outlive a step (accumulators, a row's reduced values, runtime scalars, constants)
sit in a persistent part of `ub`. Independent rows go to different cores.

Buffer addresses and runtime scalars are launch arguments: buffer i is addressed through
register `BUF_REG + i` (beyond `MAX_BUF_REGS` buffers, the least used ones through
operands relocated at launch: `spill.py`), the scalars are read from a device-memory
block at register `arg_reg`, and the compiler's tables from `const_reg` (see
`backends/npu/__init__.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anychip import dtypes
from anychip.backends.npu.lower_exprs import (
    _BIN,
    _BOOL_BIN,
    _UN,
    NpuUnsupported,
    _dt,
    _scanned,
    _vk,
    max_form,
)
from anychip.backends.npu.lower_steps import (
    KEEP_REGIONS,
    ROW_SLOTS,
    SLOTS,
    Frame,
    Step,
    Val,
    _AccState,
    _as_row,
    _blocks,
    _has_loop,
    _long_frames,
    _TooBig,
)
from anychip.backends.npu.spill import (
    BUF_REG,
    arg_reg,
    buffer_regs,
    relocations,
)
from anychip.dtypes import DType
from anychip.ir.kernel import (
    Acc,
    Alu,
    Const,
    Expr,
    KernelIR,
    Let,
    Load,
    Local,
    Loop,
    SortRow,
    Stmt,
    Store,
    Update,
    Var,
)
from anychip.ir.ops import Ops
from anychip.npu.builder import Tile, round_up
from anychip.npu.config import NpuConfig
from anychip.npu.isa import (
    DT,
    BinOp,
    CastMode,
    CmpOp,
    Dma,
    Finish,
    Instr,
    Ref,
    Space,
    UnOp,
    VBin,
    VCast,
    VCmp,
    VDup,
    VScalar,
    VSel,
    VUn,
)


@dataclass(frozen=True)
class Compiled:
    """A kernel lowered for one design: each core's code (without the launch prologue),
    the int32 table the code reads at `const_reg`, and static counts for the profiler."""

    name: str
    cores: tuple[tuple[Instr, ...], ...]
    consts: np.ndarray
    nbufs: int
    scalars: tuple[DType, ...]
    flops: int
    tile_elems: int
    scratch: int = 0  # int32 elements of device-memory scratch (computed gather indices)
    regs: tuple[int, ...] = ()  # each buffer's register, 0: relocated (empty: BUF_REG + i)
    relocs: tuple[tuple[int, int], ...] = ()  # (core, instruction) to relocate at launch

    @property
    def arg_reg(self) -> int:
        return arg_reg(self.nbufs)

    @property
    def const_reg(self) -> int:
        return arg_reg(self.nbufs) + 1

    @property
    def scratch_reg(self) -> int:
        return arg_reg(self.nbufs) + 2

    def buffer_regs(self) -> tuple[int, ...]:
        return self.regs or tuple(BUF_REG + i for i in range(self.nbufs))


class CoreLowering:
    """Builds one core's steps for its share of the kernel's groups."""

    def __init__(self, low: Lowering) -> None:
        self.low = low
        self.cfg = low.cfg
        self.ub = self.cfg.ub.size
        self.persist_top = 0  # group-local values grow up from 0 ...
        # a row kernel's group regions (KEEP_REGIONS of keep_bytes) come on top
        self.persist_size = self.ub // 4 + max(0, KEEP_REGIONS - 2) * low.keep_bytes
        self.const_top = self.persist_size  # ... constants down from the top
        self.group_mark = 0
        self.slots = low.slots
        slot = (self.ub - self.persist_size) // self.slots // 64 * 64
        self.slot_base = [self.persist_size + i * slot for i in range(self.slots)]
        self.slot_size = slot
        self.steps: list[Step] = []
        self.step: Step | None = None
        self.slot_top = 0
        self.env: dict[str, Val] = {}
        self.accs: dict[str, _AccState] = {}
        self.carries: dict[str, Tile] = {}  # scanned accumulators: the running value so far
        self.consts: dict[tuple[float, DT], Tile] = {}
        self.args: dict[int, Tile] = {}
        self.prologue: list[Instr] = []
        self.memo: dict[Expr, Val] = {}
        self.donors: list[Tile] = []  # operands the op being lowered reads last (`alu`)
        self.donor_step: Step | None = None  # ... in this step
        self.gathers: dict[Load, tuple[int, int]] = {}  # prepared: scratch offsets
        self.kept: dict[tuple[int, int, int, int, int, int], Tile] = {}  # a group's rows
        self.keep_base: list[int] = []  # KEEP_REGIONS regions of `ub`, groups in turn
        self.group_no = -1
        self.keep_top = 0
        self.inner: tuple[str, int] | None = None  # a group's inner loop: (var, extent)
        self.reused: dict[tuple[object, ...], Val] = {}  # values its later loops reuse
        self.keep_for: tuple[object, ...] | None = None  # the next temp is kept under this
        self.kept_tile: Tile | None = None
        self.group_level = True

    # -- memory
    def persist(self, rows: int, cols: int, dt: DT) -> Tile:
        addr = round_up(self.persist_top, 64)
        n = rows * cols * dt.itemsize
        if addr + n > self.const_top:
            raise _TooBig
        self.persist_top = addr + n
        return Tile(Ref(Space.UB, addr), rows, cols, dt)

    def new_group(self) -> None:
        """Group-local persistent values (accumulators, a row's values) start over."""
        self.persist_top = self.group_mark
        self.env = {}
        self.accs = {}
        self.carries = {}
        self.kept = {}
        self.reused = {}
        self.group_level = True  # until an outer loop inside the group
        self.keep_base = self.keep_base[1:] + self.keep_base[:1]
        self.group_no += 1
        self.keep_top = 0

    def keep(self, rows: int, cols: int, dt: DT) -> Tile | None:
        """A tile in this group's region for loads its inner loops repeat and values they
        compute again (None when the region is full). The region's loads are issued a
        group or two ahead (`lower_steps._emit`), once the vector work of the group that
        used the region last, KEEP_REGIONS groups back, is done."""
        if not self.keep_base:
            return None
        addr = round_up(self.keep_top, 64)
        n = rows * cols * dt.itemsize
        if addr + n > self.low.keep_bytes:
            return None
        self.keep_top = addr + n
        return Tile(Ref(Space.UB, self.keep_base[0] + addr), rows, cols, dt)

    def temp(self, rows: int, cols: int, dt: DT) -> Tile:
        """A tile in the open step's slot (opening one: the slot is the step's), or in the
        group's region when the value computed into it is one a later loop reuses."""
        self.open()
        if self.keep_for is not None:
            self.keep_for = None
            t = self.keep(rows, cols, dt)
            if t is not None:
                self.kept_tile = t
                return t
        slot = self.slot_base[(len(self.steps) - 1) % self.slots]
        for d in self.donors if self.donor_step is self.step else ():
            # a dead operand of the same shape in this step's slot
            if (d.ref.space == Space.UB and slot <= d.ref.off < slot + self.slot_size
                    and d.shape == (rows, cols) and d.strides == (cols, 1)
                    and dt.itemsize == d.dtype.itemsize):  # fmt: skip
                self.donors = []
                return Tile(d.ref, rows, cols, dt)
        addr = round_up(self.slot_top, 64)
        n = rows * cols * dt.itemsize
        if addr + n > self.slot_size:
            raise _TooBig
        self.slot_top = addr + n
        return Tile(Ref(Space.UB, slot + addr), rows, cols, dt)

    def open(self) -> Step:
        if self.step is None:
            self.step = Step(group=self.group_no)
            self.steps.append(self.step)
            self.slot_top = 0
            self.memo = {}
        return self.step

    def close(self) -> None:
        self.step = None

    # -- emission helpers
    def v(self, inst: Instr) -> None:
        self.open().compute.append(_as_row(inst))

    def const(self, value: float, kind: DT) -> Tile:
        key = (float(value), kind)
        t = self.consts.get(key)
        if t is None:
            addr = (self.const_top - 8) // 64 * 64
            if addr < self.persist_top:
                raise _TooBig
            self.const_top = addr
            t = Tile(Ref(Space.UB, addr), 1, 1, kind)
            self.prologue.append(VDup(t.dtype, t.ref, float(value), (1, 1), (1, 1)))
            self.consts[key] = t
        return t

    # -- broadcasting
    @staticmethod
    def view(t: Tile, rows: int, cols: int) -> Tile:
        sr, sc = t.strides
        if t.rows == 1 and rows > 1:
            sr = 0
        if t.cols == 1 and cols > 1:
            sc = 0
        return Tile(t.ref, rows, cols, t.dtype, sr, sc)

    def bin(self, op: BinOp, a: Val, b: Val, kind: DT | None = None) -> Val:
        """a op b (broadcast to the larger shape) into a fresh temp."""
        k = kind or a.kind
        r, c = max(a.tile.rows, b.tile.rows), max(a.tile.cols, b.tile.cols)
        dst = self.temp(r, c, k)
        va, vb = self.view(a.tile, r, c), self.view(b.tile, r, c)
        if op is BinOp.MUL and va == vb and k in (DT.F32, DT.F16, DT.BF16):
            # x * x as `vpows x 2`: x is read once, not twice (half its buffer-port bytes);
            # the same bits (the square is exact in f64 and rounded once, as vmul rounds)
            self.v(VScalar(BinOp.POW, k, dst.ref, va.ref, 2.0, dst.shape, dst.strides, va.strides))
            return Val(dst, k)
        self.v(VBin(op, k, dst.ref, va.ref, vb.ref, dst.shape, dst.strides, va.strides, vb.strides))
        return Val(dst, k)

    def scalar_op(self, op: BinOp, a: Val, imm: float) -> Val:
        """a op imm (`VScalar`) into a fresh temp."""
        t = a.tile
        dst = self.temp(t.rows, t.cols, a.kind)
        self.v(VScalar(op, a.kind, dst.ref, t.ref, imm, dst.shape, dst.strides, t.strides))
        return Val(dst, a.kind)

    def cmp(self, op: CmpOp, a: Val, b: Val) -> Val:
        r, c = max(a.tile.rows, b.tile.rows), max(a.tile.cols, b.tile.cols)
        dst = self.temp(r, c, DT.BOOL)
        va, vb = self.view(a.tile, r, c), self.view(b.tile, r, c)
        self.v(
            VCmp(op, a.kind, dst.ref, va.ref, vb.ref, dst.shape, dst.strides, va.strides,
                 vb.strides)
        )  # fmt: skip
        return Val(dst, DT.BOOL)

    def select(self, m: Val, a: Val, b: Val) -> Val:
        r = max(m.tile.rows, a.tile.rows, b.tile.rows)
        c = max(m.tile.cols, a.tile.cols, b.tile.cols)
        dst = self.temp(r, c, a.kind)
        vm, va, vb = (self.view(x.tile, r, c) for x in (m, a, b))
        self.v(
            VSel(a.kind, dst.ref, vm.ref, va.ref, vb.ref, dst.shape, dst.strides, vm.strides,
                 va.strides, vb.strides)
        )  # fmt: skip
        return Val(dst, a.kind)

    def un(self, op: UnOp, a: Val) -> Val:
        t = a.tile
        dst = self.temp(t.rows, t.cols, a.kind)
        self.v(VUn(op, a.kind, dst.ref, t.ref, dst.shape, dst.strides, t.strides))
        return Val(dst, a.kind)

    def cast(self, a: Val, to: DT) -> Val:
        """The primitives' CAST (`vcastt`: floats truncate to integers, integers wrap); to
        i8 it wraps through i8 and comes back as i16 (`_vk`)."""
        if a.kind == to:
            return a
        t = a.tile
        dst = self.temp(t.rows, t.cols, to)
        self.v(VCast(to, a.kind, dst.ref, t.ref, t.shape, dst.strides, t.strides,
                     CastMode.TRUNC))  # fmt: skip
        if to == DT.I8:
            return self.cast(Val(dst, to), DT.I16)
        return Val(dst, to)

    # -- expressions
    def ev(self, e: Expr, f: Frame) -> Val:
        got = self.memo.get(e)
        if got is None:
            key = self.reuse_key(e, f)
            got = None if key is None else self.reused.get(key)
            if got is None:
                got = self._ev(e, f, key)
                if key is not None and self.kept_tile is not None and got.tile == self.kept_tile:
                    self.reused[key] = got
            self.memo[e] = got
        return got

    def reuse_key(self, e: Expr, f: Frame) -> tuple[object, ...] | None:
        """Where `e` is a value a later inner loop of the group reuses (`lower_reuse.py`),
        the key it is kept under: its canonical form and the frame's points."""
        if self.inner is None or not isinstance(e, Alu):
            return None
        return self.low.reuse.key(e, self.inner, f)

    def _ev(self, e: Expr, f: Frame, keep: tuple[object, ...] | None = None) -> Val:
        low = self.low
        if isinstance(e, Const):
            k = _vk(_dt(e.dtype))
            return Val(self.const(float(e.value), k), k)
        if low.is_static(e) and e.dtype in (dtypes.int64, dtypes.int32, dtypes.bool_):
            return self.table(e, f)
        if isinstance(e, Var):
            if e.name in self.env:  # a Let, or inside a scan its accumulator's running value
                return self.env[e.name]
            if e.name in self.accs:
                return Val(self.finish_acc(e.name), self.accs[e.name].kind)
            if e.name in low.lets:
                return self.ev(low.lets[e.name], f)
            if e.name in low.argidx:
                t = self.args[low.argidx[e.name]]
                return Val(t, t.dtype)
            raise NpuUnsupported(f"npu: variable {e.name} has no value in kernel {low.ir.name}")
        if isinstance(e, Load):
            return self.load(e, f)
        return self.alu(e, f, keep)

    def table(self, e: Expr, f: Frame) -> Val:
        return lower_loads.table(self, e, f)

    def dma_in_table(self, t: Tile, off: int) -> Dma:
        return lower_loads.dma_in_table(self, t, off)

    def load(self, e: Load, f: Frame) -> Val:
        return lower_loads.load(self, e, f)

    def origin_box(self, guard: Expr, f: Frame) -> tuple[int, int] | None:
        return lower_loads.origin_box(self, guard, f)

    def widen(self, t: Tile) -> Val:
        return lower_loads.widen(self, t)

    def dma_scratch(self, t: Tile, off: int, into: bool) -> Dma:
        return lower_loads.dma_scratch(self, t, off, into)

    def prepare(self, stmts: tuple[Stmt, ...] | list[Stmt], f: Frame) -> None:
        return lower_loads.prepare(self, stmts, f)

    def scratch_out(self, st: Step, v: Val, n: int) -> int:
        return lower_loads.scratch_out(self, st, v, n)

    def gather(self, buf: int, sdt: DT, it: Tile, f: Frame) -> Tile:
        return lower_loads.gather(self, buf, sdt, it, f)

    def alu(self, e: Alu, f: Frame, keep: tuple[object, ...] | None = None) -> Val:
        mx = max_form(e)  # relu and its kin: one vmaxs, the compares never computed
        srcs = (mx[0],) if mx else e.srcs
        s = [self.ev(x, f) for x in srcs]
        self.keep_for, self.kept_tile = keep, None  # the op's result tile (`temp`)
        # operands read by this op alone: its result may overwrite one (`temp`)
        # (not for a stored value: the next loads into the slot would wait for its store)
        sole = () if e in self.low.stored else self.low.sole
        self.donors = [v.tile for x, v in zip(srcs, s, strict=True) if x in sole]
        self.donor_step = self.step
        try:
            return self.scalar_op(BinOp.MAX, s[0], mx[1]) if mx else self.alu_op(e, s)
        finally:
            self.keep_for, self.donors = None, []

    def alu_op(self, e: Alu, s: list[Val]) -> Val:
        op = e.op
        if op is Ops.CAST:
            return self.cast(s[0], _dt(e.dtype))
        k = s[-1].kind
        boolean = k == DT.BOOL
        if op is Ops.WHERE:
            return self.select(s[0], s[1], s[2])
        if op is Ops.CMPLT:
            return self.cmp(CmpOp.LT, s[0], s[1])
        if op is Ops.CMPEQ:
            return self.cmp(CmpOp.EQ, s[0], s[1])
        if boolean and op in _BOOL_BIN:
            return self.bin(_BOOL_BIN[op], s[0], s[1])
        if op in _BIN or op in _UN:
            out = self.bin(_BIN[op], s[0], s[1]) if op in _BIN else self.un(_UN[op], s[0])
            return self.cast(out, DT.I8) if e.dtype is dtypes.int8 else out
        raise NpuUnsupported(
            f"npu: {op.name} on {e.srcs[0].dtype.name} in kernel {self.low.ir.name} has no "
            "npu instruction (see docs/npu-backend.md)"
        )

    # -- accumulators
    def init_acc(self, s: Acc, rows: int) -> None:
        return lower_accs.init_acc(self, s, rows)

    def update(self, s: Update, f: Frame, outer_rows: int, whole: bool = False) -> None:
        return lower_accs.update(self, s, f, outer_rows, whole)

    def fold(self, acc: _AccState) -> None:
        return lower_accs.fold(self, acc)

    def finish_acc(self, name: str) -> Tile:
        return lower_accs.finish_acc(self, name)

    def scan(self, s: Update, f: Frame) -> None:
        return lower_accs.scan(self, s, f)

    def store(self, s: Store, f: Frame) -> None:
        return lower_stores.store(self, s, f)

    def store_val(self, s: Store, f: Frame, v: Val, boxes: list[tuple[int, int, int, int]]
                  ) -> None:  # fmt: skip
        return lower_stores.store_val(self, s, f, v, boxes)

    def in_slot(self, t: Tile) -> bool:
        return lower_stores.in_slot(self, t)

    def put(self, out: Tile, src: Tile, kind: DT) -> None:
        return lower_stores.put(self, out, src, kind)

    def guard_boxes(self, s: Store, f: Frame) -> list[tuple[int, int, int, int]]:
        return lower_stores.guard_boxes(self, s, f)

    def combine_old(self, s: Store, sdt: DT, src: Tile, dst: Ref, strides: tuple[int, int]
                    ) -> Val:  # fmt: skip
        return lower_stores.combine_old(self, s, sdt, src, dst, strides)

    def scatter_add(self, s: Store, f: Frame) -> None:
        return lower_stores.scatter_add(self, s, f)

    def sort_row(self, s: SortRow, f: Frame) -> None:
        return lower_stores.sort_row(self, s, f)

    # -- statements
    def run(self, body: tuple[Stmt, ...], f: Frame) -> None:
        """Statements in the outer frame `f` (rows x 1 points); inner loops become steps."""
        for s in body:
            if isinstance(s, Loop):
                if self.step is not None and (self.step.loads or self.step.stores):
                    self.close()  # else its vector work (identities) leads the loop's step
                self.loop(s, f)
                self.close()
            elif isinstance(s, Acc):
                self.init_acc(s, f.rows)
            elif isinstance(s, Let):
                self.prepare([s], f)
                self.let(s, f, keep=True)
            elif isinstance(s, Store):
                self.prepare([s], f)
                self.store(s, f)
            elif isinstance(s, Update):
                self.prepare([s], f)
                self.update(s, Frame(f.rows, 1, f.base, f.rstep, f.cstep), f.rows)
            elif isinstance(s, SortRow):
                self.sort_row(s, f)
            elif isinstance(s, Local):
                raise NpuUnsupported(f"npu: {type(s).__name__} in kernel {self.low.ir.name}")

    def line_loop(self, s: Loop, f: Frame) -> bool:
        return lower_accs.line_loop(self, s, f)

    def line_form(self, t: Store, f: Frame) -> Expr | None:
        return lower_accs.line_form(self, t, f)

    def line_store(self, t: Store, f: Frame, x: Expr, carries: dict[Store, Tile]) -> None:
        return lower_accs.line_store(self, t, f, x, carries)

    def let(self, s: Let, f: Frame, keep: bool) -> None:
        if s.value.dtype is dtypes.int64 or s.var in self.low.lets:
            return  # index math: substituted where it is used
        v = self.ev(s.value, f)
        if keep:  # lives across steps: copy out of the slot
            t = self.persist(v.tile.rows, v.tile.cols, v.tile.dtype)
            self.v(VUn(UnOp.COPY, t.dtype, t.ref, v.tile.ref, t.shape, t.strides, v.tile.strides))
            v = Val(t, v.kind)
        self.env[s.var] = v

    def loop(self, s: Loop, f: Frame) -> None:
        if _has_loop(s.body) and self.line_loop(s, f):
            return
        if _has_loop(s.body):  # an outer loop inside the frame: one value at a time
            self.group_level = False
            for i in range(s.extent):
                self.run(s.body, Frame(f.rows, f.cols, {**f.base, s.var: i}, f.rstep, f.cstep))
                self.close()
            return
        scans = _scanned(s)
        if self.group_level:
            self.inner = (s.var, s.extent)  # values shared with the group's other loops
        if f.rows == 1 and not scans:
            frames = _long_frames(f.base, s.var, s.extent, self.low.elems, self.low.width)
        else:
            cols = max(1, min(s.extent, self.low.elems // f.rows))
            frames = [
                Frame(f.rows, n, {**f.base, s.var: lo}, f.rstep, {s.var: 1})
                for lo, n in _blocks(s.extent, cols)
            ]
        saved = dict(self.env)
        for g in frames:
            self.prepare(s.body, g)
            self.open()
            for t in s.body:
                if isinstance(t, Let):
                    self.let(t, g, keep=False)
                elif isinstance(t, Store):
                    self.store(t, g)
                elif isinstance(t, Update) and t.var in scans:
                    self.scan(t, g)
                elif isinstance(t, Update):
                    self.update(t, g, f.rows, whole=len(frames) == 1)
                else:
                    raise NpuUnsupported(f"npu: {type(t).__name__} inside an inner loop")
            self.close()
            self.env = dict(saved)
        self.inner = None


def lower_ir(ir: KernelIR, cfg: NpuConfig) -> Compiled:
    """Lower `ir` for design `cfg`: a pure contraction through the GEMM generator, else
    as tiles, shrinking them until every step fits `ub`."""
    if _pure_contraction(ir) and all(buffer_regs(ir)):  # the generator: buffers in registers
        got = _gemm(ir, cfg)
        if got is not None:
            return got
    for s in ir.bufs:
        _dt(s.dtype)
    for d in ir.scalars:
        _dt(d)
    if ir.bufs[0].size == 0:
        return Compiled(
            ir.name, ((Finish(),),), np.zeros(16, np.int32), len(ir.bufs), ir.scalars, 0, 0
        )  # fmt: skip  (no elements: nothing to do)
    elems = min(1 << 15, cfg.ub.size // 4 // 12)
    slots = ROW_SLOTS
    while True:
        low = Lowering(ir, cfg, elems, slots)
        try:
            cores = low.lower()
        except _TooBig:
            if low.slots > SLOTS:  # a row kernel's steps: three slots of the old size first
                slots = SLOTS
                continue
            if elems == 1:
                raise NpuUnsupported(f"npu: kernel {ir.name} does not fit ub") from None
            elems = 1 << ((elems - 1).bit_length() - 1)  # a power of two below (halving)
            continue
        flops = 0
        spilled = 0 in low.regs
        return Compiled(
            ir.name, cores, low.table_bytes(), len(ir.bufs), ir.scalars, flops, elems,
            low.scratch_top, low.regs if spilled else (),
            relocations(cores) if spilled else (),
        )  # fmt: skip


# the lowering's parts, read once lower.py's names exist (they import them)
from anychip.backends.npu import lower_accs, lower_loads, lower_stores  # noqa: E402
from anychip.backends.npu.lower_kernel import Lowering, _gemm, _pure_contraction  # noqa: E402
