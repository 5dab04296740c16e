"""A Python macro-assembler for the chip: tiles, buffer allocation, flag rings and loops.

Kernels are Python functions that call a `Builder` per core; `Ring` turns N-slot pipelines
(double buffering) into the matching setf/waitf pairs, and `DramLayout` places device data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from anychip.npu.config import NpuConfig
from anychip.npu.errors import IllegalInstruction
from anychip.npu.isa import (
    DT,
    NUM_FLAGS,
    NUM_REGS,
    Barrier,
    BinOp,
    Branch,
    Cond,
    Dma,
    Finish,
    Gather,
    Instr,
    Mma,
    RedOp,
    Ref,
    SAluI,
    SetFlag,
    SMov,
    SOp,
    Space,
    Unit,
    UnOp,
    VBin,
    VCast,
    VDup,
    VReduce,
    VScalar,
    VUn,
    WaitFlag,
)
from anychip.npu.program import DataDecl, Program

T = TypeVar("T")


@dataclass(frozen=True)
class Tile:
    """A (rows, cols) view of `dtype` elements at `ref`: element (i, j) at ref + i*sr + j*sc.

    >>> t = Tile(Ref(Space.UB, 0), 4, 8, DT.F32)
    >>> t.strides, t.sub(1, 2, 2, 3).ref.off
    ((8, 1), 40)
    """

    ref: Ref
    rows: int
    cols: int
    dtype: DT
    row_stride: int = -1  # -1: dense rows (cols elements apart)
    col_stride: int = 1

    @property
    def strides(self) -> tuple[int, int]:
        return (self.cols if self.row_stride < 0 else self.row_stride, self.col_stride)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.cols)

    @property
    def nbytes(self) -> int:
        return self.rows * self.cols * self.dtype.itemsize

    def sub(self, r0: int, c0: int, rows: int, cols: int) -> Tile:
        """The (rows, cols) part starting at element (r0, c0)."""
        sr, sc = self.strides
        off = self.ref.off + (r0 * sr + c0 * sc) * self.dtype.itemsize
        return Tile(dataclasses.replace(self.ref, off=off), rows, cols, self.dtype, sr, sc)

    def bcast_rows(self, rows: int) -> Tile:
        """This (1, cols) tile read as (rows, cols): every row the same."""
        return Tile(self.ref, rows, self.cols, self.dtype, 0, self.col_stride)

    def bcast_cols(self, cols: int) -> Tile:
        """This (rows, 1) tile read as (rows, cols): every column the same."""
        return Tile(self.ref, self.rows, cols, self.dtype, self.strides[0], 0)

    def as_dtype(self, dtype: DT) -> Tile:
        """The same bytes' start read as dense `dtype` elements (for vcast destinations)."""
        return Tile(self.ref, self.rows, self.cols, dtype)


def round_up(x: int, m: int) -> int:
    return -(-x // m) * m


class Builder:
    """Emits one core's instructions. Allocates on-chip buffers, flags and registers.

    >>> from anychip.npu.config import PROFILES
    >>> b = Builder(PROFILES["edge"])
    >>> x = b.tile(Space.UB, 2, 4, DT.F32)
    >>> _ = b.vdup(x, 1.0); b.finish()
    >>> [type(i).__name__ for i in b.code]
    ['VDup', 'Finish']
    """

    def __init__(self, config: NpuConfig, core: int = 0) -> None:
        self.config = config
        self.core = core
        self.code: list[Instr] = []
        self._top: dict[Space, int] = {s: 0 for s in Space if s != Space.DRAM}
        self._next_flag: dict[tuple[Unit, Unit], int] = {}
        self._next_reg = 3  # r1, r2: core index and core count

    def emit(self, inst: T) -> T:
        self.code.append(inst)  # type: ignore[arg-type]
        return inst

    # ---- resources ---------------------------------------------------------------------
    def alloc(self, space: Space, nbytes: int, align: int = 64) -> Ref:
        """`nbytes` of an on-chip buffer; IllegalInstruction when the buffer is full."""
        if space == Space.DRAM:
            raise IllegalInstruction("npu builder: place device data with DramLayout, not alloc")
        size = self.config.buffer(space.name.lower()).size
        addr = round_up(self._top[space], align)
        if addr + nbytes > size:
            raise IllegalInstruction(
                f"npu builder: {nbytes} more bytes do not fit {space.name.lower()} "
                f"({addr} of {size} bytes in use) on design {self.config.name!r}"
            )
        self._top[space] = addr + nbytes
        return Ref(space, addr)

    def free_bytes(self, space: Space, align: int = 64) -> int:
        size = self.config.buffer(space.name.lower()).size
        return max(0, size - round_up(self._top[space], align))

    def tile(self, space: Space, rows: int, cols: int, dtype: DT) -> Tile:
        """A fresh dense (rows, cols) tile in an on-chip buffer."""
        return Tile(self.alloc(space, rows * cols * dtype.itemsize), rows, cols, dtype)

    def flag(self, *pairs: tuple[Unit, Unit]) -> int:
        """A flag id unused so far by every (src, dst) pair given."""
        f = max(self._next_flag.get(p, 0) for p in pairs)
        if f >= NUM_FLAGS:
            raise IllegalInstruction(
                f"npu builder: out of flags for {pairs} ({NUM_FLAGS} per pair)"
            )
        for p in pairs:
            self._next_flag[p] = f + 1
        return f

    def reg(self) -> int:
        """A fresh scalar register."""
        if self._next_reg >= NUM_REGS:
            raise IllegalInstruction(f"npu builder: out of scalar registers ({NUM_REGS})")
        self._next_reg += 1
        return self._next_reg - 1

    # ---- data movement -----------------------------------------------------------------
    def load(
        self, dst: Tile, src: Ref | int, rows: int, cols: int, ld: int, pad_value: float = 0.0
    ) -> Dma:
        """DRAM (rows, cols) at `src` (row pitch `ld` elements) -> top-left of dense `dst`;
        the rest of `dst` is filled with `pad_value`."""
        src = src if isinstance(src, Ref) else Ref(Space.DRAM, src)
        if rows > dst.rows or cols > dst.cols:
            raise IllegalInstruction(
                f"npu builder: a ({rows}, {cols}) load does not fit the {dst.shape} tile"
            )
        box, pad = (1, rows, cols), (1, dst.rows, dst.cols)
        return self.emit(
            Dma(dst.dtype, dst.ref, src, box, (0, *dst.strides), (0, ld, 1), pad, pad_value)
        )

    def store(
        self, dst: Ref | int, ld: int, src: Tile, rows: int | None = None, cols: int | None = None
    ) -> Dma:
        """Top-left (rows, cols) of `src` -> DRAM at `dst` with row pitch `ld` elements."""
        dst = dst if isinstance(dst, Ref) else Ref(Space.DRAM, dst)
        shape = (1, src.rows if rows is None else rows, src.cols if cols is None else cols)
        return self.emit(Dma(src.dtype, dst, src.ref, shape, (0, ld, 1), (0, *src.strides), shape))

    def copy(self, dst: Tile, src: Tile) -> Dma:
        """An on-chip copy of `src` into `dst` (same shape), on the dma_in engine."""
        shape = (1, src.rows, src.cols)
        return self.emit(
            Dma(src.dtype, dst.ref, src.ref, shape, (0, *dst.strides), (0, *src.strides), shape)
        )

    def gather(
        self, dst: Tile, table: Ref | int, index: Ref, count: int, table_rows: int, ld: int
    ) -> Gather:
        """dst row i = table row index[i] (`dst.cols` elements; table rows `ld` apart)."""
        table = table if isinstance(table, Ref) else Ref(Space.DRAM, table)
        return self.emit(
            Gather(
                dst.dtype, dst.ref, table, index, count, dst.cols, ld, dst.strides[0], table_rows
            )
        )

    # ---- compute -----------------------------------------------------------------------
    def mma(self, acc: Tile, a: Tile, b: Tile, accumulate: bool, trans_b: bool = False) -> Mma:
        """acc (m, n) [+]= a (m, k) @ b (k, n) (b (n, k) when trans_b); tiles must be dense."""
        m, k = a.shape
        n = acc.cols
        if acc.rows != m or b.shape != ((n, k) if trans_b else (k, n)):
            raise IllegalInstruction(
                f"npu builder: mma shapes do not agree: acc {acc.shape}, a {a.shape}, "
                f"b {b.shape}{' (transposed)' if trans_b else ''}"
            )
        return self.emit(
            Mma(a.dtype, acc.ref, a.ref, b.ref, m, n, k, int(accumulate), int(trans_b))
        )

    def vbin(self, op: BinOp, dst: Tile, a: Tile, b: Tile) -> VBin:
        return self.emit(
            VBin(op, dst.dtype, dst.ref, a.ref, b.ref, dst.shape, dst.strides, a.strides, b.strides)
        )

    def vscalar(self, op: BinOp, dst: Tile, a: Tile, imm: float) -> VScalar:
        return self.emit(
            VScalar(op, dst.dtype, dst.ref, a.ref, float(imm), dst.shape, dst.strides, a.strides)
        )

    def vun(self, op: UnOp, dst: Tile, a: Tile) -> VUn:
        return self.emit(VUn(op, dst.dtype, dst.ref, a.ref, dst.shape, dst.strides, a.strides))

    def vreduce(self, op: RedOp, dst: Tile, a: Tile, axis: int) -> VReduce:
        """axis=1: dst (rows, 1) per row of a; axis=0: dst (1, cols) per column."""
        return self.emit(
            VReduce(op, a.dtype, axis, dst.ref, a.ref, a.shape, dst.strides, a.strides)
        )

    def vcast(self, dst: Tile, a: Tile) -> VCast:
        return self.emit(VCast(dst.dtype, a.dtype, dst.ref, a.ref, a.shape, dst.strides, a.strides))

    def vdup(self, dst: Tile, imm: float) -> VDup:
        return self.emit(VDup(dst.dtype, dst.ref, float(imm), dst.shape, dst.strides))

    # ---- synchronisation and control ---------------------------------------------------
    def set(self, src: Unit, dst: Unit, flag: int) -> None:
        if src != dst:  # a unit's own queue is in order already
            self.emit(SetFlag(src, dst, flag))

    def wait(self, src: Unit, dst: Unit, flag: int) -> None:
        if src != dst:
            self.emit(WaitFlag(src, dst, flag))

    def barrier(self) -> None:
        self.emit(Barrier())

    def finish(self) -> None:
        self.emit(Finish())

    @contextmanager
    def loop(self, count: int) -> Iterator[int]:
        """A counted loop in the instruction stream; yields the register holding 0..count-1."""
        i, n = self.reg(), self.reg()
        self.emit(SMov(i, 0))
        self.emit(SMov(n, count))
        top = len(self.code)
        yield i
        self.emit(SAluI(SOp.ADD, i, i, 1))
        self.emit(Branch(Cond.LT, i, n, top))

    def build(self) -> tuple[Instr, ...]:
        if not self.code or not isinstance(self.code[-1], Finish):
            self.finish()
        return tuple(self.code)


class Ring:
    """N slots flowing through a pipeline of units, e.g. dma_in -> vector -> dma_out.

    `enter(stage)` emits the wait that makes the slot safe for that stage's unit and returns
    the slot; `leave(stage)` emits the setf handing it on (the last stage frees it for the
    first). Slots are used round-robin, so counting flags pair up in order.
    """

    def __init__(self, b: Builder, units: Sequence[Unit], slots: Sequence[Any]) -> None:
        self.b, self.units, self.slots = b, list(units), list(slots)
        pairs = [(units[s], units[(s + 1) % len(units)]) for s in range(len(units))]
        self.flag = b.flag(*[p for p in pairs if p[0] != p[1]])
        self.uses = [0] * len(units)

    def enter(self, stage: int) -> Any:
        use = self.uses[stage]
        self.uses[stage] += 1
        if stage > 0:
            self.b.wait(self.units[stage - 1], self.units[stage], self.flag)
        elif use >= len(self.slots):  # the slot's previous trip must have left the last stage
            self.b.wait(self.units[-1], self.units[0], self.flag)
        return self.slots[use % len(self.slots)]

    def leave(self, stage: int) -> None:
        """Hands the slot `stage` holds on to the next stage (the last stage frees it)."""
        if len(self.units) > 1:
            self.b.set(self.units[stage], self.units[(stage + 1) % len(self.units)], self.flag)

    def drain(self) -> None:
        """Waits in the first unit for every slot still owed back by the last stage, so
        each setf the ring emitted is matched by a waitf (a clean end of the pipeline)."""
        owed = min(self.uses[0], len(self.slots))
        for _ in range(owed if len(self.units) > 1 else 0):
            self.b.wait(self.units[-1], self.units[0], self.flag)
        self.uses[0] += owed


def pipeline(
    b: Builder,
    units: Sequence[Unit],
    slots: Sequence[Any],
    items: Sequence[T],
    stages: Sequence[Callable[[Any, T], None]],
) -> None:
    """Software-pipelines `items` through `stages` (stage s runs on units[s]) over a ring of
    `slots`: stage 0 (the loads) runs len(slots) - 1 items ahead of the later stages, so with
    two or more slots loads overlap compute and stores (double or triple buffering).

    >>> from anychip.npu.config import PROFILES
    >>> bld = Builder(PROFILES["edge"])
    >>> pipeline(bld, [Unit.DMA_IN, Unit.VECTOR], [0, 1], [10, 20, 30],
    ...          [lambda s, i: None, lambda s, i: None])
    >>> [type(i).__name__ for i in bld.code][:4]
    ['SetFlag', 'SetFlag', 'WaitFlag', 'SetFlag']
    """
    if len(stages) != len(units) or not slots:
        raise IllegalInstruction("npu builder: pipeline needs one stage per unit and a slot")
    ring = Ring(b, units, slots)
    ahead = len(slots) - 1
    for i in range(len(items) + ahead):
        if i < len(items):
            stages[0](ring.enter(0), items[i])
            ring.leave(0)
        j = i - ahead
        if j >= 0:
            for s in range(1, len(units)):
                stages[s](ring.enter(s), items[j])
                ring.leave(s)
    ring.drain()


class DramLayout:
    """Places named arrays in device memory one after another (64-byte aligned).

    >>> lay = DramLayout()
    >>> x = lay.add("x", DT.F16, (3, 5)); y = lay.add("y", DT.F32, (2,), init="none")
    >>> (x.addr, y.addr, len(lay.decls))
    (0, 64, 2)
    """

    def __init__(self, align: int = 64) -> None:
        self.align = align
        self.top = 0
        self.decls: list[DataDecl] = []

    def add(self, name: str, dtype: DT, shape: tuple[int, ...], init: str = "random") -> DataDecl:
        """Declares `name`: inputs default to init='random', outputs should say 'none'."""
        decl = DataDecl(name, round_up(self.top, self.align), dtype, tuple(shape), init)
        self.top = decl.addr + decl.nbytes
        self.decls.append(decl)
        return decl


def program(builders: Sequence[Builder], data: Sequence[DataDecl] = ()) -> Program:
    """The Program of one builder per core (core i = builders[i]).

    >>> from anychip.npu.config import PROFILES
    >>> program([Builder(PROFILES["edge"])]).cores
    ((Finish(),),)
    """
    return Program(tuple(b.build() for b in builders), tuple(data))
