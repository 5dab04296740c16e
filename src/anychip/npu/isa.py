"""The chip's instruction set: every instruction format as a frozen dataclass, and its binary code.

What each instruction does is defined by `npu/simulator.py`; what it costs by `npu/timing.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar

import numpy as np

from anychip.npu.errors import IllegalInstruction

NUM_REGS = 32  # scalar registers r0..r31; r0 always reads 0
NUM_FLAGS = 16  # flag ids per (source unit, destination unit) pair


class Unit(IntEnum):
    """The five units of a core; each but the scalar unit has its own instruction queue."""

    SCALAR = 0
    DMA_IN = 1
    DMA_OUT = 2
    MATRIX = 3
    VECTOR = 4


class Space(IntEnum):
    """Memories: device memory (DRAM) and the on-chip buffers of the core."""

    DRAM = 0
    L1 = 1
    L0A = 2
    L0B = 3
    L0C = 4
    UB = 5


class DT(IntEnum):
    """Element types. bf16 is stored as its 16-bit pattern; bool as one byte, 0 or 1."""

    F32 = 0
    F16 = 1
    BF16 = 2
    I32 = 3
    I8 = 4
    BOOL = 5
    I64 = 6
    F64 = 7

    @property
    def itemsize(self) -> int:
        return (4, 2, 2, 4, 1, 1, 8, 8)[self]

    @property
    def storage(self) -> np.dtype[Any]:
        """The numpy dtype holding the bits (uint16 for bf16, uint8 for bool)."""
        return np.dtype(_STORAGE[self])

    @property
    def is_float(self) -> bool:
        return self in (DT.F32, DT.F16, DT.BF16, DT.F64)

    @property
    def is_int(self) -> bool:
        return self in (DT.I32, DT.I8, DT.I64)


_STORAGE = (np.float32, np.float16, np.uint16, np.int32, np.int8, np.uint8, np.int64, np.float64)


class BinOp(IntEnum):
    ADD = 0
    SUB = 1
    MUL = 2
    DIV = 3
    MAX = 4
    MIN = 5
    AND = 6  # from here on: ISA version 2 (opcodes appended after the first table)
    OR = 7
    XOR = 8
    SHL = 9
    SHR = 10
    POW = 11
    MOD = 12


class UnOp(IntEnum):
    EXP = 0
    LOG = 1
    TANH = 2
    SIGMOID = 3
    GELU = 4
    RSQRT = 5
    SQRT = 6
    RELU = 7
    NEG = 8
    ABS = 9
    RECIP = 10
    COPY = 11
    NOT = 12  # version 2
    SIN = 13
    COS = 14
    ERF = 15
    FLOOR = 16
    CEIL = 17
    ROUND = 18
    TRUNC = 19
    SIGN = 20
    LOG1P = 21
    EXPM1 = 22


class RedOp(IntEnum):
    SUM = 0
    MAX = 1
    MIN = 2  # version 2
    PROD = 3


class CmpOp(IntEnum):
    """Vector comparisons: each writes a bool mask (one byte, 0 or 1)."""

    EQ = 0
    NE = 1
    LT = 2
    LE = 3
    GT = 4
    GE = 5


class CastMode(IntEnum):
    """`vcast` rounds to nearest even and saturates; `vcastt` truncates (C and numpy casts)."""

    ROUND = 0
    TRUNC = 1


class SOp(IntEnum):
    ADD = 0
    SUB = 1
    MUL = 2
    DIV = 3  # floor division, like Python's //
    MIN = 4
    MAX = 5
    AND = 6  # version 2
    OR = 7
    XOR = 8
    SHL = 9  # shift counts are taken modulo 64
    SHR = 10  # arithmetic (sign-filling)


class Cond(IntEnum):
    EQ = 0
    NE = 1
    LT = 2
    GE = 3


ONCHIP = (Space.L1, Space.L0A, Space.L0B, Space.L0C, Space.UB)
VECTOR_SPACES = (Space.UB, Space.L0C)
I2 = tuple[int, int]
I3 = tuple[int, int, int]


@dataclass(frozen=True)
class Ref:
    """A byte address: `R[reg] + off` in memory `space`. Text form `ub:r3+1024` or `ub:1024`."""

    space: Space
    off: int
    reg: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.reg < NUM_REGS:
            raise IllegalInstruction(
                f"npu: register r{self.reg} does not exist (r0..r{NUM_REGS - 1})"
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


@functools.lru_cache(maxsize=4096)
def overlapping(shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    """True when two elements of a strided box (element strides) share an address.

    >>> overlapping((4, 8), (8, 1)), overlapping((4, 8), (0, 1)), overlapping((2, 3), (2, -1))
    (False, True, True)
    """
    strides = tuple(abs(s) for s in strides)  # a reversed dimension holds the same offsets
    reach = 0  # offset of the last element of the dimensions nested inside this one
    for s, n in sorted((s, n) for n, s in zip(shape, strides, strict=True) if n > 1):
        if s <= reach:  # not nested: count the distinct offsets (a big box: assume overlap)
            if math.prod(shape) > 1 << 22:
                return True
            offs = np.zeros(1, np.int64)
            for n2, s2 in zip(shape, strides, strict=True):
                offs = (offs[:, None] + np.arange(n2, dtype=np.int64) * s2).ravel()
            return bool(np.unique(offs).size < offs.size)
        reach += (n - 1) * s
    return False


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

    `index` holds `count` int32 row numbers in an on-chip buffer (an embedding lookup).
    """

    MNEMONIC: ClassVar[str] = "gather"
    dtype: DT
    dst: Ref
    table: Ref
    index: Ref
    count: int
    row_len: int
    table_stride: int
    dst_stride: int
    table_rows: int

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
    int32 row numbers on chip; the table is in device memory.
    """

    MNEMONIC: ClassVar[str] = "scatter_add"
    dtype: DT
    table: Ref
    src: Ref
    index: Ref
    count: int
    row_len: int
    table_stride: int
    src_stride: int
    table_rows: int

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
    for cls in (Dma, Gather, Mma):
        rows.append((cls.MNEMONIC, cls, None))
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
    for cls in (SLoad, SStore, ScatterAdd):
        rows.append((cls.MNEMONIC, cls, None))
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
