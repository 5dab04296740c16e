"""The primitive op set and the graph node every tensor op builds.

Every Tensor op decomposes into these primitives; a backend implements only these (plus
the device contract). docs/primitives.md describes each one's meaning and rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any, TypeVar, dataclass_transform

from anychip.dtypes import DType


class Ops(Enum):
    # Members compare by identity (Enum defines no __eq__), so identity hashing agrees with
    # equality; it runs in C, where Enum's default hashes the name in Python, and every op
    # is hashed several times per eager op (rule lookups, op sets, structural cache keys).
    __hash__ = object.__hash__

    # sources
    BUFFER = auto()  # a realised device buffer; arg: runtime Buffer
    CONST = auto()  # one scalar broadcast to `shape`; arg: the value
    PARAM = auto()  # a kernel's i-th input buffer (only inside scheduled kernels); arg: i
    ARG = auto()  # a kernel's i-th runtime scalar (only inside scheduled kernels); arg: i
    # unary elementwise
    NEG = auto()
    SQRT = auto()
    EXP = auto()
    LOG = auto()
    SIN = auto()
    ERF = auto()
    FLOOR = auto()
    NOT = auto()  # logical not for bool, bitwise not for integers
    CAST = auto()  # arg: target DType (value conversion, C semantics, truncation to ints)
    # binary elementwise (both sources have the same shape and dtype)
    ADD = auto()
    MUL = auto()
    DIV = auto()  # true division for floats, truncating division for integers
    MOD = auto()  # remainder with the sign of the dividend (C fmod / %)
    POW = auto()
    MAX = auto()  # NaN-propagating
    MIN = auto()
    CMPLT = auto()  # -> bool
    CMPEQ = auto()  # -> bool
    AND = auto()
    OR = auto()
    XOR = auto()
    # ternary
    WHERE = auto()  # (cond: bool, a, b)
    # reductions; arg: sorted tuple of axes; the reduced axes stay with size 1
    SUM = auto()
    RMAX = auto()
    RMIN = auto()
    PROD = auto()
    CUMSUM = auto()  # inclusive prefix sum; arg: axis
    # movement; no data changes, only which element sits where
    RESHAPE = auto()  # arg: new shape
    PERMUTE = auto()  # arg: axis order
    EXPAND = auto()  # arg: new shape (size-1 axes broadcast)
    PAD = auto()  # arg: ((before, after), ...) per axis, filled with zero
    SHRINK = auto()  # arg: ((start, end), ...) per axis
    FLIP = auto()  # arg: tuple of axes to reverse
    # data-dependent
    GATHER = auto()  # (src, idx: int64); arg: axis. out[..i..] = src[..idx[..i..]..]
    SCATTER_ADD = auto()  # (base, idx: int64, src); arg: axis. out = base; out[..idx..] += src
    ARGSORT = auto()  # arg: (axis, descending[, k]); stable; -> int64 (first k along axis)
    # between devices
    COPY = auto()  # arg: target device name


UNARY = frozenset(
    {Ops.NEG, Ops.SQRT, Ops.EXP, Ops.LOG, Ops.SIN, Ops.ERF, Ops.FLOOR, Ops.NOT, Ops.CAST}
)
BINARY = frozenset(
    {
        Ops.ADD,
        Ops.MUL,
        Ops.DIV,
        Ops.MOD,
        Ops.POW,
        Ops.MAX,
        Ops.MIN,
        Ops.CMPLT,
        Ops.CMPEQ,
        Ops.AND,
        Ops.OR,
        Ops.XOR,
    }
)
ELEMENTWISE = UNARY | BINARY | {Ops.WHERE}
REDUCE = frozenset({Ops.SUM, Ops.RMAX, Ops.RMIN, Ops.PROD})
MOVEMENT = frozenset({Ops.RESHAPE, Ops.PERMUTE, Ops.EXPAND, Ops.PAD, Ops.SHRINK, Ops.FLIP})
SOURCES = frozenset({Ops.BUFFER, Ops.CONST, Ops.PARAM, Ops.ARG})


# Constants of these dtypes are runtime scalars: kernel arguments, not part of the code. A
# learning rate that reaches 0.0, a step count or a temperature changing every call must
# not compile a new kernel (docs/pipeline.md, "Runtime arguments"). Bool and half-precision
# constants (masks, rare in schedules) stay in the code.
RUNTIME_SCALAR_DTYPES = frozenset({"float32", "float64", "int32", "int64"})


def runtime_scalar(n: Node) -> bool:
    """Is `n` a constant whose value is a launch argument rather than part of the kernel?
    Every float and wide int constant but 0 and 1 (+0.0 and 1.0): those are structure
    (relu's max with 0, a mean's count floor of 1, a mask's fill), which code generators
    may fold; a learning rate or a step count that takes them compiles one variant more."""
    if n.op is not Ops.CONST or n.dtype.name not in RUNTIME_SCALAR_DTYPES:
        return False
    v = n.arg
    return not ((v == 0 and math.copysign(1.0, v) > 0) or v == 1)


_T = TypeVar("_T")


@dataclass_transform(frozen_default=True, eq_default=False, field_specifiers=(field,))
def _frozen_for_checkers(cls: type[_T]) -> type[_T]:
    """A dataclass that type checkers hold frozen (mypy rejects assigning its fields) but
    that is plain at run time: a frozen dataclass's __init__ sets each field through
    object.__setattr__, 3x slower, and eager mode builds every op's result node."""
    return dataclass(eq=False, slots=True, weakref_slot=True)(cls)


@_frozen_for_checkers
class Node:
    """One value in the lazy graph: `op` applied to `srcs` with `arg`.

    Nodes compare by identity: two equal-looking subgraphs are two computations. Nodes
    never change once made (mypy holds them frozen), except `realised`: the runtime's memo
    of the buffer holding the value once computed (see runtime.realize.buffer_of), not
    part of what the node means, so it is the one field set after construction.
    """

    op: Ops
    dtype: DType
    shape: tuple[int, ...]
    device: str
    srcs: tuple[Node, ...] = ()
    arg: Any = None
    realised: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def __repr__(self) -> str:
        arg = "" if self.arg is None or self.op is Ops.BUFFER else f", {self.arg!r}"
        return f"<{self.op.name} {self.dtype.name}{list(self.shape)}{arg}>"


def toposort(roots: list[Node]) -> list[Node]:
    """Every node reachable from `roots`, sources first (iterative, so deep graphs are fine)."""
    order: list[Node] = []
    seen: set[int] = set()
    stack: list[tuple[Node, bool]] = [(r, False) for r in reversed(roots)]
    while stack:
        n, done = stack.pop()
        if done:
            order.append(n)
            continue
        if id(n) in seen:
            continue
        seen.add(id(n))
        stack.append((n, True))
        stack.extend((s, False) for s in reversed(n.srcs) if id(s) not in seen)
    return order
