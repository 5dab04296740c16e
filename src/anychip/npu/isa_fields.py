"""The instruction set's field types: units, memory spaces, element types, operation codes,
addresses (`Ref`), and the overlap test of strided boxes. The formats that use them, and
their binary code, are in `npu/isa.py`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

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
    U8 = 8
    I16 = 9
    U32 = 10
    U64 = 11

    @property
    def itemsize(self) -> int:
        return (4, 2, 2, 4, 1, 1, 8, 8, 1, 2, 4, 8)[self]

    @property
    def storage(self) -> np.dtype[Any]:
        """The numpy dtype holding the bits (uint16 for bf16, uint8 for bool)."""
        return np.dtype(_STORAGE[self])

    @property
    def is_float(self) -> bool:
        return self in (DT.F32, DT.F16, DT.BF16, DT.F64)

    @property
    def is_int(self) -> bool:
        return self in (DT.I32, DT.I8, DT.I64, DT.U8, DT.I16, DT.U32, DT.U64)


_STORAGE = (np.float32, np.float16, np.uint16, np.int32, np.int8, np.uint8, np.int64, np.float64,
            np.uint8, np.int16, np.uint32, np.uint64)  # fmt: skip


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


class IndexDT(IntEnum):
    """The index type of a `gather` / `scatter_add` (`gather64`, `scatter_add64`: i64)."""

    I32 = 0
    I64 = 1

    @property
    def dtype(self) -> DT:
        return DT.I64 if self == IndexDT.I64 else DT.I32


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
