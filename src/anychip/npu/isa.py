"""The chip's instruction set: every instruction format as a frozen dataclass, and its binary code.

What each instruction does is defined by `npu/simulator.py`; what it costs by `npu/timing.py`.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar

from anychip.npu.errors import IllegalInstruction

# the field types are part of the instruction set: `isa.DT`, `isa.Ref`, ... (re-exported)
from anychip.npu.isa_fields import (
    DT as DT,
    I2 as I2,
    I3 as I3,
    NUM_FLAGS as NUM_FLAGS,
    NUM_REGS as NUM_REGS,
    ONCHIP as ONCHIP,
    VECTOR_SPACES as VECTOR_SPACES,
    BinOp as BinOp,
    CastMode as CastMode,
    CmpOp as CmpOp,
    Cond as Cond,
    IndexDT as IndexDT,
    RedOp as RedOp,
    Ref as Ref,
    SOp as SOp,
    Space as Space,
    Unit as Unit,
    UnOp as UnOp,
    overlapping as overlapping,
)


class Instr:
    """Base of every instruction format. `MNEMONIC` names formats without an `op` field."""

    MNEMONIC: ClassVar[str] = ""

    @property
    def unit(self) -> Unit:
        """The unit whose queue executes this instruction."""
        raise NotImplementedError

    def check(self) -> None:
        """Raises IllegalInstruction when a field breaks the format's rules."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, tuple) and f.name in ("shape", "pad") and min(v) < 1:
                self._bad(f"{f.name} {v} must be >= 1 in every dimension")
            if f.name in ("rd", "ra", "rb", "rs") and not 0 <= v < NUM_REGS:
                self._bad(f"register r{v} does not exist")
        self.check()

    def _bad(self, why: str) -> typing.NoReturn:
        raise IllegalInstruction(f"npu: illegal {mnemonic(self)}: {why}")


def _no_overlap(inst: Instr, shape: tuple[int, ...], strides: tuple[int, ...]) -> None:
    if overlapping(shape, strides):
        inst._bad(
            f"destination elements overlap (shape {shape}, strides {strides}): "
            "which write lands would be unspecified"
        )


def _need(inst: Instr, ref: Ref, spaces: tuple[Space, ...], role: str) -> None:
    if ref.space not in spaces:
        names = "/".join(s.name.lower() for s in spaces)
        inst._bad(f"{role} must be in {names}, got {ref.space.name.lower()}")


# ---- data movement (dma_in: everything not written to DRAM; dma_out: writes to DRAM) -----
@dataclass(frozen=True)
class Dma(Instr):
    """Copy a (n0, n1, n2) box of elements between strided views; pad the destination box.

    Element (i, j, l) moves from src + (i*ss0 + j*ss1 + l*ss2)*size to the same index of dst.
    The destination box is `pad` (>= shape); its elements outside `shape` get `pad_value`.
    """

    MNEMONIC: ClassVar[str] = "dma"
    dtype: DT
    dst: Ref
    src: Ref
    shape: I3
    dst_strides: I3
    src_strides: I3
    pad: I3
    pad_value: float = 0.0

    @property
    def unit(self) -> Unit:
        return Unit.DMA_OUT if self.dst.space == Space.DRAM else Unit.DMA_IN

    def check(self) -> None:
        if self.dst.space == Space.DRAM and self.src.space == Space.DRAM:
            self._bad("device memory to device memory copies are not supported")
        if any(p < s for p, s in zip(self.pad, self.shape, strict=True)):
            self._bad(f"pad {self.pad} must be >= shape {self.shape}")
        if self.dst.space == Space.DRAM and self.pad != self.shape:
            self._bad("padding is only for copies into on-chip buffers")
        _no_overlap(self, self.pad, self.dst_strides)


@dataclass(frozen=True)
class Gather(Instr):
    """dst row i = `row_len` elements at table + index[i]*table_stride (elements); dma_in.

    `index` holds `count` int32 (`gather64`: int64) row numbers in an on-chip buffer (an
    embedding lookup).
    """

    dtype: DT
    dst: Ref
    table: Ref
    index: Ref
    count: int
    row_len: int
    table_stride: int
    dst_stride: int
    table_rows: int
    op: IndexDT = IndexDT.I32

    @property
    def unit(self) -> Unit:
        return Unit.DMA_IN

    def check(self) -> None:
        _need(self, self.table, (Space.DRAM,), "table")
        _need(self, self.dst, ONCHIP, "dst")
        _need(self, self.index, ONCHIP, "index")
        if min(self.count, self.row_len, self.table_rows) < 1:
            self._bad("count, row_len and table_rows must be >= 1")
        if self.table_stride < self.row_len or self.dst_stride < self.row_len:
            self._bad("table_stride and dst_stride must be >= row_len")


@dataclass(frozen=True)
class ScatterAdd(Instr):
    """table row index[i] += `row_len` elements of src row i, for i in order; dma_out.

    Repeated indices accumulate every row (an embedding gradient). `index` holds `count`
    int32 (`scatter_add64`: int64) row numbers on chip; the table is in device memory.
    """

    dtype: DT
    table: Ref
    src: Ref
    index: Ref
    count: int
    row_len: int
    table_stride: int
    src_stride: int
    table_rows: int
    op: IndexDT = IndexDT.I32

    @property
    def unit(self) -> Unit:
        return Unit.DMA_OUT

    def check(self) -> None:
        _need(self, self.table, (Space.DRAM,), "table")
        _need(self, self.src, ONCHIP, "src")
        _need(self, self.index, ONCHIP, "index")
        if self.dtype in (DT.BOOL, DT.I8):
            self._bad(f"dtype {self.dtype.name.lower()} cannot be added")
        if min(self.count, self.row_len, self.table_rows) < 1:
            self._bad("count, row_len and table_rows must be >= 1")
        if self.table_stride < self.row_len or self.src_stride < self.row_len:
            self._bad("table_stride and src_stride must be >= row_len")


# ---- matrix unit ------------------------------------------------------------------------
@dataclass(frozen=True)
class Mma(Instr):
    """acc (m, n) [+]= a (m, k) @ b (k, n); b is stored (n, k) when trans_b=1. Dense tiles.

    f32/fp16/bf16 inputs accumulate in f32, int8 inputs in i32 (wrapping).
    """

    MNEMONIC: ClassVar[str] = "mma"
    dtype: DT
    acc: Ref
    a: Ref
    b: Ref
    m: int
    n: int
    k: int
    accumulate: int = 1
    trans_b: int = 0

    @property
    def unit(self) -> Unit:
        return Unit.MATRIX

    def check(self) -> None:
        _need(self, self.a, (Space.L0A,), "a")
        _need(self, self.b, (Space.L0B,), "b")
        _need(self, self.acc, (Space.L0C,), "acc")
        if self.dtype not in (DT.F16, DT.BF16, DT.I8, DT.F32):
            self._bad(f"dtype {self.dtype.name.lower()} is not a matrix input type")
        if (
            min(self.m, self.n, self.k) < 1
            or self.accumulate not in (0, 1)
            or self.trans_b not in (0, 1)
        ):
            self._bad("m, n, k must be >= 1; accumulate and trans_b 0 or 1")


# ---- vector unit: 2-D operands (rows, cols), element (i, j) at X + (i*sr + j*sc)*size ----
class _Vec(Instr):
    @property
    def unit(self) -> Unit:
        return Unit.VECTOR

    def check(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, Ref):
                _need(self, v, VECTOR_SPACES, f.name)
        dtypes = [getattr(self, n) for n in ("dtype", "dst_dtype", "src_dtype") if hasattr(self, n)]
        if not isinstance(self, VCast) and DT.I8 in dtypes:
            self._bad("i8 is not a vector type (vcast converts to and from it)")
        shape: I2 = getattr(self, "shape")  # noqa: B009 - every vector format has one
        if isinstance(self, VReduce):
            shape = (shape[0], 1) if self.axis == 1 else (1, shape[1])
        _no_overlap(self, shape, getattr(self, "dst_strides"))  # noqa: B009


@dataclass(frozen=True)
class VBin(_Vec):
    """dst = a op b elementwise; a stride of 0 broadcasts a row or a column."""

    op: BinOp
    dtype: DT
    dst: Ref
    a: Ref
    b: Ref
    shape: I2
    dst_strides: I2
    a_strides: I2
    b_strides: I2


@dataclass(frozen=True)
class VScalar(_Vec):
    """dst = a op imm elementwise (imm rounded to dtype first)."""

    op: BinOp
    dtype: DT
    dst: Ref
    a: Ref
    imm: float
    shape: I2
    dst_strides: I2
    a_strides: I2


@dataclass(frozen=True)
class VScalarR(_Vec):
    """dst = a op (the scalar in register rs) elementwise: rs's low bytes as dtype (a float
    as its bit pattern), read when the scalar unit dispatches the instruction."""

    op: BinOp
    dtype: DT
    dst: Ref
    a: Ref
    rs: int
    shape: I2
    dst_strides: I2
    a_strides: I2


@dataclass(frozen=True)
class VUn(_Vec):
    """dst = f(a) elementwise: exp, log, tanh, sigmoid, gelu, rsqrt, sqrt, relu, ..."""

    op: UnOp
    dtype: DT
    dst: Ref
    a: Ref
    shape: I2
    dst_strides: I2
    a_strides: I2


@dataclass(frozen=True)
class VReduce(_Vec):
    """axis=1: dst (rows, 1) = reduce over columns; axis=0: dst (1, cols) over rows."""

    op: RedOp
    dtype: DT
    axis: int
    dst: Ref
    a: Ref
    shape: I2
    dst_strides: I2
    a_strides: I2

    def check(self) -> None:
        if self.axis not in (0, 1):
            self._bad(f"axis must be 0 or 1, got {self.axis}")
        super().check()


@dataclass(frozen=True)
class VScan(_Vec):
    """dst = the inclusive prefix sums of a along `axis` (1: along each row, 0: down each
    column); dst has a's shape (`CUMSUM`)."""

    MNEMONIC: ClassVar[str] = "vcumsum"
    dtype: DT
    axis: int
    dst: Ref
    a: Ref
    shape: I2
    dst_strides: I2
    a_strides: I2

    def check(self) -> None:
        if self.axis not in (0, 1):
            self._bad(f"axis must be 0 or 1, got {self.axis}")
        if self.dtype == DT.BOOL:
            self._bad("bool has no sums (cast to i32 first)")
        super().check()


@dataclass(frozen=True)
class VSort(_Vec):
    """dst (i32) = the stable sort order of each row of a (`ARGSORT` along the last axis):
    ascending puts NaN last, descending first; -0.0 ties 0.0."""

    MNEMONIC: ClassVar[str] = "vargsort"
    dtype: DT
    descending: int
    dst: Ref
    a: Ref
    shape: I2
    dst_strides: I2
    a_strides: I2

    def check(self) -> None:
        if self.descending not in (0, 1):
            self._bad(f"descending must be 0 or 1, got {self.descending}")
        super().check()


@dataclass(frozen=True)
class VCast(_Vec):
    """dst (dst_dtype) = a (src_dtype) converted. `vcast` (op ROUND): round to nearest even,
    saturating to ints; `vcastt` (op TRUNC): toward zero to ints, integers wrap."""

    dst_dtype: DT
    src_dtype: DT
    dst: Ref
    a: Ref
    shape: I2
    dst_strides: I2
    a_strides: I2
    op: CastMode = CastMode.ROUND


@dataclass(frozen=True)
class VCmp(_Vec):
    """dst (bool mask: 1 where true, else 0) = a op b elementwise; NaN compares unequal."""

    op: CmpOp
    dtype: DT
    dst: Ref
    a: Ref
    b: Ref
    shape: I2
    dst_strides: I2
    a_strides: I2
    b_strides: I2


@dataclass(frozen=True)
class VCmpS(_Vec):
    """dst (bool mask) = a op imm elementwise (imm rounded to dtype first)."""

    op: CmpOp
    dtype: DT
    dst: Ref
    a: Ref
    imm: float
    shape: I2
    dst_strides: I2
    a_strides: I2


@dataclass(frozen=True)
class VSel(_Vec):
    """dst = a where mask (bool) else b, elementwise: a bit-exact select (`where`)."""

    MNEMONIC: ClassVar[str] = "vsel"
    dtype: DT
    dst: Ref
    mask: Ref
    a: Ref
    b: Ref
    shape: I2
    dst_strides: I2
    mask_strides: I2
    a_strides: I2
    b_strides: I2


@dataclass(frozen=True)
class VDup(_Vec):
    """dst = imm in every element (imm rounded to dtype)."""

    MNEMONIC: ClassVar[str] = "vdup"
    dtype: DT
    dst: Ref
    imm: float
    shape: I2
    dst_strides: I2


@dataclass(frozen=True)
class VIota(_Vec):
    """dst[i, j] = R[rs] + base + i * row_step + j * col_step, converted to dtype: loop
    indices as values (masks such as i < j, one-hot rows, padding validity)."""

    MNEMONIC: ClassVar[str] = "viota"
    dtype: DT
    dst: Ref
    rs: int
    base: int
    row_step: int
    col_step: int
    shape: I2
    dst_strides: I2


# ---- synchronisation --------------------------------------------------------------------
class _Flag(Instr):
    src: Unit
    dst: Unit
    flag: int

    def check(self) -> None:
        if Unit.SCALAR in (self.src, self.dst) or self.src == self.dst:
            self._bad("flags connect two different non-scalar units")
        if not 0 <= self.flag < NUM_FLAGS:
            self._bad(f"flag {self.flag} out of range 0..{NUM_FLAGS - 1}")


@dataclass(frozen=True)
class SetFlag(_Flag):
    """In src's queue: once all earlier src work is complete, count up flag (src, dst, flag)."""

    MNEMONIC: ClassVar[str] = "setf"
    src: Unit
    dst: Unit
    flag: int

    @property
    def unit(self) -> Unit:
        return self.src


@dataclass(frozen=True)
class WaitFlag(_Flag):
    """In dst's queue: wait until flag (src, dst, flag) is above zero, then count it down."""

    MNEMONIC: ClassVar[str] = "waitf"
    src: Unit
    dst: Unit
    flag: int

    @property
    def unit(self) -> Unit:
        return self.dst


@dataclass(frozen=True)
class Barrier(Instr):
    """Every unit of the core finishes all earlier work before any starts later work."""

    MNEMONIC: ClassVar[str] = "barrier"

    @property
    def unit(self) -> Unit:
        return Unit.SCALAR


@dataclass(frozen=True)
class GBarrier(Instr):
    """Every core of the launch finishes all earlier work before any core starts later work."""

    MNEMONIC: ClassVar[str] = "gbarrier"

    @property
    def unit(self) -> Unit:
        return Unit.SCALAR


@dataclass(frozen=True)
class Finish(Instr):
    """End of the core's program: a barrier, then the core stops."""

    MNEMONIC: ClassVar[str] = "finish"

    @property
    def unit(self) -> Unit:
        return Unit.SCALAR


# ---- scalar unit: 64-bit integer registers, address arithmetic, branches ---------------
class _Scalar(Instr):
    @property
    def unit(self) -> Unit:
        return Unit.SCALAR


@dataclass(frozen=True)
class SMov(_Scalar):
    """rd = imm."""

    MNEMONIC: ClassVar[str] = "smov"
    rd: int
    imm: int


@dataclass(frozen=True)
class SAlu(_Scalar):
    """rd = ra op rb."""

    op: SOp
    rd: int
    ra: int
    rb: int


@dataclass(frozen=True)
class SAluI(_Scalar):
    """rd = ra op imm."""

    op: SOp
    rd: int
    ra: int
    imm: int


@dataclass(frozen=True)
class SLoad(_Scalar):
    """rd = the element of `dtype` at `src`: integers and bool by value (sign-extended),
    floats as their bit pattern. Waits for every queue of the core to drain first."""

    MNEMONIC: ClassVar[str] = "sld"
    dtype: DT
    rd: int
    src: Ref


@dataclass(frozen=True)
class SStore(_Scalar):
    """The element of `dtype` at `dst` = rs's low bits (itemsize bytes). Waits for every
    queue of the core to drain first."""

    MNEMONIC: ClassVar[str] = "sst"
    dtype: DT
    dst: Ref
    rs: int


@dataclass(frozen=True)
class Branch(_Scalar):
    """If `ra cond rb`, continue at instruction index `target` of this core."""

    cond: Cond
    ra: int
    rb: int
    target: int

    def check(self) -> None:
        if self.target < 0:
            self._bad(f"target {self.target} must be >= 0")


# ---- opcodes: one byte names the format and its op ---------------------------------------
def _table() -> list[tuple[str, type[Instr], IntEnum | None]]:
    """Version 1's opcodes 0..51 keep their numbers; what version 2 added follows them."""
    rows: list[tuple[str, type[Instr], IntEnum | None]] = []
    cls: type[Instr]
    rows += [("dma", Dma, None), ("gather", Gather, IndexDT.I32), ("mma", Mma, None)]
    bin1, un1, red1, s1 = list(BinOp)[:6], list(UnOp)[:12], list(RedOp)[:2], list(SOp)[:6]
    rows += [("v" + o.name.lower(), VBin, o) for o in bin1]
    rows += [("v" + o.name.lower() + "s", VScalar, o) for o in bin1]
    rows += [("v" + o.name.lower(), VUn, o) for o in un1]
    rows += [("vr" + o.name.lower(), VReduce, o) for o in red1]
    rows.append(("vcast", VCast, CastMode.ROUND))
    for cls in (VDup, SetFlag, WaitFlag, Barrier, Finish, SMov):
        rows.append((cls.MNEMONIC, cls, None))
    rows += [("s" + o.name.lower(), SAlu, o) for o in s1]
    rows += [("s" + o.name.lower() + "i", SAluI, o) for o in s1]
    rows += [("b" + o.name.lower(), Branch, o) for o in Cond]
    # version 2
    rows += [("v" + o.name.lower(), VBin, o) for o in list(BinOp)[6:]]
    rows += [("v" + o.name.lower() + "s", VScalar, o) for o in list(BinOp)[6:]]
    rows += [("v" + o.name.lower(), VUn, o) for o in list(UnOp)[12:]]
    rows += [("vr" + o.name.lower(), VReduce, o) for o in list(RedOp)[2:]]
    rows += [("vcmp" + o.name.lower(), VCmp, o) for o in CmpOp]
    rows += [("vcmp" + o.name.lower() + "s", VCmpS, o) for o in CmpOp]
    rows += [("vsel", VSel, None), ("vcastt", VCast, CastMode.TRUNC)]
    rows += [("s" + o.name.lower(), SAlu, o) for o in list(SOp)[6:]]
    rows += [("s" + o.name.lower() + "i", SAluI, o) for o in list(SOp)[6:]]
    rows += [("sld", SLoad, None), ("sst", SStore, None)]
    rows.append(("scatter_add", ScatterAdd, IndexDT.I32))
    for cls in (VScan, VSort, GBarrier):
        rows.append((cls.MNEMONIC, cls, None))
    rows += [("v" + o.name.lower() + "r", VScalarR, o) for o in BinOp]
    rows += [("gather64", Gather, IndexDT.I64), ("scatter_add64", ScatterAdd, IndexDT.I64)]
    rows.append(("viota", VIota, None))
    return rows


OPCODES = _table()
BY_MNEMONIC = {name: (i, cls, op) for i, (name, cls, op) in enumerate(OPCODES)}
_OPCODE_OF = {(cls, op): i for i, (_, cls, op) in enumerate(OPCODES)}
assert len(BY_MNEMONIC) == len(OPCODES) < 256


def op_field(cls: type[Instr]) -> str | None:
    """The name of the field the mnemonic carries (`op` or `cond`), if any."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    return next((n for n in ("op", "cond") if n in names), None)


def opcode(inst: Instr) -> int:
    f = op_field(type(inst))
    return _OPCODE_OF[(type(inst), getattr(inst, f) if f else None)]


def mnemonic(inst: Instr) -> str:
    return OPCODES[opcode(inst)][0]


def operand_fields(cls: type[Instr]) -> list[tuple[str, Any]]:
    """(name, type) of the fields written after the mnemonic, in order."""
    hints = typing.get_type_hints(cls)
    skip = op_field(cls)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(cls) if f.name != skip]  # type: ignore[arg-type]
