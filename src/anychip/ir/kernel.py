"""The kernel IR: what one scheduled kernel does, as loops, index math, loads and stores.

Target-neutral on purpose: loops carry markers (parallel, vector, reduce) that a CPU maps
to OpenMP and SIMD, a GPU to its grid and lanes, an accelerator to tiles in its scratchpad.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from anychip import dtypes
from anychip.dtypes import DType
from anychip.ir.ops import Ops

INDEX = dtypes.int64  # the dtype of every index expression and loop variable


class KernelKind(Enum):
    """What shape of work a kernel is; the scheduler picks it, targets may specialise on it."""

    ELEMENTWISE = "elementwise"  # one value per output element (gathers included)
    REDUCE = "reduce"  # the output is a reduction (plus fused prologue and epilogue)
    ROW = "row"  # reductions whose results broadcast back over the rows they reduced
    CONTRACTION = "contraction"  # sum over a product of two operands: a (batched) matmul
    SCATTER = "scatter"  # SCATTER_ADD: base copied, then source added at indexed places
    SCAN = "scan"  # CUMSUM along one axis
    SORT = "sort"  # ARGSORT along one axis


class LoopKind(Enum):
    SERIAL = "serial"
    PARALLEL = "parallel"  # iterations are independent: threads, grid blocks, cores
    VECTOR = "vector"  # iterations are independent and contiguous: SIMD lanes
    REDUCE = "reduce"  # iterations only meet in accumulators (any order, same result class)


class BufRole(Enum):
    OUT = "out"
    IN = "in"
    LOCAL = "local"  # kernel-private scratch: stack array, shared memory, scratchpad


# --- expressions -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Const:
    value: Any
    dtype: DType


@dataclass(frozen=True, slots=True)
class Var:
    """A loop variable, a `Let` name or an accumulator."""

    name: str
    dtype: DType


@dataclass(frozen=True, slots=True)
class Load:
    """buf[index]; where `valid` is given and false, the value is 0 and memory is not read."""

    buf: int
    index: Expr
    dtype: DType
    valid: Expr | None = None


@dataclass(frozen=True, slots=True)
class Alu:
    """A primitive's arithmetic (`Ops` NEG..WHERE, CAST) on scalar sources; for CAST,
    `dtype` is the target. Index math uses the same ops on INDEX (DIV and MOD truncate)."""

    op: Ops
    srcs: tuple[Expr, ...]
    dtype: DType


Expr = Const | Var | Load | Alu


# --- statements ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Loop:
    """for var in range(extent): body."""

    var: str
    extent: int
    body: tuple[Stmt, ...]
    kind: LoopKind = LoopKind.SERIAL


@dataclass(frozen=True, slots=True)
class Let:
    """Bind `Var(var, value.dtype)` to a value for the rest of the enclosing block."""

    var: str
    value: Expr


@dataclass(frozen=True, slots=True)
class Acc:
    """Declare accumulator `var`, starting at the identity of `op` (SUM, RMAX, RMIN, PROD)."""

    var: str
    op: Ops
    dtype: DType


@dataclass(frozen=True, slots=True)
class Update:
    """acc = op(acc, value), with the op its `Acc` declared."""

    var: str
    value: Expr


@dataclass(frozen=True, slots=True)
class Store:
    """buf[index] = value, or buf[index] = combine(buf[index], value) when combine is set
    (a read-modify-write: atomic on targets that run its loop in parallel). Where `valid`
    is given and false, nothing is written."""

    buf: int
    index: Expr
    value: Expr
    combine: Ops | None = None
    valid: Expr | None = None


@dataclass(frozen=True, slots=True)
class SortRow:
    """dst[dst_base + i*dst_stride] = the stable argsort of the n keys at
    src[src_base + i*src_stride] (NaN last ascending, first descending, as `ref`); with `k`
    set, only its first k positions are written (i < k: top-k, no full sort needed)."""

    dst: int
    dst_base: Expr
    dst_stride: int
    src: int
    src_base: Expr
    src_stride: int
    n: int
    descending: bool
    k: int | None = None


@dataclass(frozen=True, slots=True)
class Local:
    """Buffer `buf` (a `BufRole.LOCAL` one) comes into existence here, uninitialised, private
    to this run of the enclosing block (a stack array per thread, registers or shared memory
    per GPU block, a scratchpad tile) and ends with the block. Read and written with
    `Load` / `Store` like any buffer."""

    buf: int


Stmt = Loop | Let | Acc | Update | Store | SortRow | Local


@dataclass(frozen=True, slots=True)
class BufDecl:
    name: str
    dtype: DType
    size: int
    role: BufRole


@dataclass(frozen=True, slots=True)
class Operand:
    """One matmul operand as a strided view of a buffer: element (batch..., r, c) sits at
    offset + sum(batch_i * batch_strides_i) + r*rows + c*cols."""

    buf: int
    dtype: DType
    offset: int
    batch_strides: tuple[int, ...]
    rows: int
    cols: int


@dataclass(frozen=True, slots=True)
class ContractionSpec:
    """out[batch..., m, n] = sum_k a[batch..., m, k] * b[batch..., k, n] in `acc` precision,
    every operand a strided view (strides may be 0 for broadcast). This is what a
    matmul generator needs; the kernel's loop body stays as the generic fallback.

    `k_dims` (extent, b stride) per loop, outermost first, when B's K is several loops
    that do not fold into one stride (an implicit-GEMM convolution: K = C x kh x kw read
    straight from the padded input; A's K still one stride, a.cols); `n_dims` likewise for
    B's columns (a convolution's weight gradient, columns C x kh x kw; out's columns one
    stride). Both when B is read from an unpadded input (N = H' x W', output rows and
    columns; out's columns still one stride); empty otherwise, b.rows / b.cols then the
    innermost loop's stride. `b_bounds` (k loop, n loop, lo, hi), indices into k_dims and
    n_dims: B's element is 0 (its load guarded, not read) unless lo <= the k loop's index +
    the n loop's index < hi, a convolution's zero padding."""

    batch: tuple[int, ...]
    m: int
    n: int
    k: int
    a: Operand
    b: Operand
    out: Operand
    acc: DType
    k_dims: tuple[tuple[int, int], ...] = ()
    n_dims: tuple[tuple[int, int], ...] = ()
    b_bounds: tuple[tuple[int, int, int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class KernelIR:
    """One kernel: buffers (bufs[0] is the output), runtime scalar arguments (scalar i is
    `Var(arg_name(i), scalars[i])`, bound for the whole kernel, its value given at each
    launch) and a body of statements. `alias` i: bufs[i] (an input) is the same memory
    as the output bufs[0] (a donated buffer): every element of it the kernel reads, it
    reads before writing that element."""

    name: str
    kind: KernelKind
    bufs: tuple[BufDecl, ...]
    body: tuple[Stmt, ...]
    contraction: ContractionSpec | None = field(default=None)
    scalars: tuple[DType, ...] = ()
    alias: int | None = None


def arg_name(i: int) -> str:
    """The name of runtime scalar argument `i` inside a kernel."""
    return f"arg{i}"


# --- helpers used by every pass --------------------------------------------------------
def const(value: Any, dtype: DType = INDEX) -> Const:
    return Const(value, dtype)


def alu(op: Ops, *srcs: Expr, dtype: DType | None = None) -> Alu:
    return Alu(op, tuple(srcs), dtype if dtype is not None else srcs[-1].dtype)


def walk_exprs(e: Expr) -> list[Expr]:
    """Every sub-expression of `e`, `e` included (pre-order)."""
    out: list[Expr] = []
    stack: list[Expr] = [e]
    while stack:
        x = stack.pop()
        out.append(x)
        if isinstance(x, Alu):
            stack.extend(reversed(x.srcs))
        elif isinstance(x, Load):
            stack.append(x.index)
            if x.valid is not None:
                stack.append(x.valid)
    return out


def stmt_exprs(s: Stmt) -> list[Expr]:
    """The expressions a statement reads directly (not those of nested loops)."""
    if isinstance(s, Let | Update):
        return [s.value]
    if isinstance(s, Store):
        return [s.index, s.value] + ([s.valid] if s.valid is not None else [])
    if isinstance(s, SortRow):
        return [s.dst_base, s.src_base]
    return []


def walk_stmts(body: tuple[Stmt, ...]) -> list[Stmt]:
    """Every statement, nested ones included, in program order."""
    out: list[Stmt] = []
    for s in body:
        out.append(s)
        if isinstance(s, Loop):
            out.extend(walk_stmts(s.body))
    return out


# --- printer ---------------------------------------------------------------------------
def fmt(e: Expr) -> str:
    """A compact infix form of an expression, for the printer and error messages."""
    if isinstance(e, Const):
        return repr(e.value)
    if isinstance(e, Var):
        return e.name
    if isinstance(e, Load):
        guard = f" if {fmt(e.valid)}" if e.valid is not None else ""
        return f"b{e.buf}[{fmt(e.index)}{guard}]"
    sym = _INFIX.get(e.op)
    if sym is not None and len(e.srcs) == 2:
        return f"({fmt(e.srcs[0])} {sym} {fmt(e.srcs[1])})"
    if e.op is Ops.CAST:
        return f"{e.dtype.name}({fmt(e.srcs[0])})"
    return f"{e.op.name.lower()}({', '.join(fmt(s) for s in e.srcs)})"


_INFIX = {
    Ops.ADD: "+",
    Ops.MUL: "*",
    Ops.DIV: "/",
    Ops.MOD: "%",
    Ops.CMPLT: "<",
    Ops.CMPEQ: "==",
    Ops.AND: "&",
    Ops.OR: "|",
    Ops.XOR: "^",
}


def _print_body(body: tuple[Stmt, ...], depth: int, lines: list[str]) -> None:
    pad = "  " * depth
    for s in body:
        if isinstance(s, Loop):
            lines.append(f"{pad}for {s.var} in 0..{s.extent} [{s.kind.value}]:")
            _print_body(s.body, depth + 1, lines)
        elif isinstance(s, Let):
            lines.append(f"{pad}{s.var}: {s.value.dtype.name} = {fmt(s.value)}")
        elif isinstance(s, Acc):
            lines.append(f"{pad}acc {s.var}: {s.dtype.name} = identity({s.op.name.lower()})")
        elif isinstance(s, Update):
            lines.append(f"{pad}{s.var} <- {fmt(s.value)}")
        elif isinstance(s, Store):
            op = "=" if s.combine is None else f"{s.combine.name.lower()}="
            guard = f" if {fmt(s.valid)}" if s.valid is not None else ""
            lines.append(f"{pad}b{s.buf}[{fmt(s.index)}] {op} {fmt(s.value)}{guard}")
        elif isinstance(s, Local):
            lines.append(f"{pad}local b{s.buf}")
        else:
            order = "desc" if s.descending else "asc"
            lines.append(
                f"{pad}b{s.dst}[{fmt(s.dst_base)} + i*{s.dst_stride}] = argsort_{order}("
                f"b{s.src}[{fmt(s.src_base)} + i*{s.src_stride}], i < {s.n})"
                + (f"[:{s.k}]" if s.k is not None else "")
            )


def render_ir(k: KernelIR) -> str:
    """Human-readable text of a kernel (what ANYCHIP_DEBUG=2 prints).

    >>> from anychip.ir.kernel import *
    >>> from anychip import dtypes
    >>> k = KernelIR("k", KernelKind.ELEMENTWISE,
    ...     (BufDecl("out", dtypes.float32, 4, BufRole.OUT),),
    ...     (Loop("i", 4, (Store(0, Var("i", INDEX), const(1.0, dtypes.float32)),)),))
    >>> print(render_ir(k).splitlines()[-1].strip())
    b0[i] = 1.0
    """
    lines = [f"kernel {k.name} [{k.kind.value}]"]
    for i, b in enumerate(k.bufs):
        lines.append(f"  b{i}: {b.role.value} {b.dtype.name}[{b.size}] {b.name}")
    for i, d in enumerate(k.scalars):
        lines.append(f"  {arg_name(i)}: runtime {d.name}")
    if k.alias is not None:
        lines.append(f"  b{k.alias} is b0 (donated)")
    if k.contraction is not None:
        c = k.contraction
        lines.append(f"  contraction: batch {c.batch} m {c.m} n {c.n} k {c.k} acc {c.acc.name}")
    _print_body(k.body, 1, lines)
    return "\n".join(lines)


# --- interval arithmetic on index expressions -------------------------------------------
Ranges = dict[str, tuple[int, int]]  # loop variable -> (lowest, highest) value, inclusive


def bounds(e: Expr, ranges: Ranges) -> tuple[int, int] | None:
    """Inclusive (lo, hi) of an integer expression given loop ranges; None if unknown
    (data-dependent loads, non-index vars, ops without a rule)."""
    if isinstance(e, Const):
        return (int(e.value), int(e.value)) if isinstance(e.value, int | bool) else None
    if isinstance(e, Var):
        return ranges.get(e.name)
    if not isinstance(e, Alu):
        return None
    if e.op is Ops.WHERE:
        a, b = bounds(e.srcs[1], ranges), bounds(e.srcs[2], ranges)
        return (min(a[0], b[0]), max(a[1], b[1])) if a and b else None
    if e.op in (Ops.CMPLT, Ops.CMPEQ, Ops.AND, Ops.OR) and e.dtype is dtypes.bool_:
        return (0, 1)
    srcs = [bounds(s, ranges) for s in e.srcs]
    if any(s is None for s in srcs):
        return None
    if e.op is Ops.NEG:
        lo, hi = srcs[0]  # type: ignore[misc]
        return -hi, -lo
    if len(srcs) != 2:
        return None
    (alo, ahi), (blo, bhi) = srcs  # type: ignore[misc]
    if e.op is Ops.ADD:
        return alo + blo, ahi + bhi
    if e.op is Ops.MUL:
        c = (alo * blo, alo * bhi, ahi * blo, ahi * bhi)
        return min(c), max(c)
    if e.op is Ops.DIV and blo == bhi and blo > 0 and alo >= 0:
        return alo // blo, ahi // blo
    if e.op is Ops.MOD and blo == bhi and blo > 0 and alo >= 0:
        return (alo, ahi) if ahi < blo else (0, blo - 1)
    if e.op is Ops.MAX:
        return max(alo, blo), max(ahi, bhi)
    if e.op is Ops.MIN:
        return min(alo, blo), min(ahi, bhi)
    return None
