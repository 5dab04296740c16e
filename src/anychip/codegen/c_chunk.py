"""Chunked C kernels: a long kernel runs as several calls, each over a range of its heaviest
top-level loop, so the host gets control back between calls (Ctrl-C stops it within a chunk).

The rule: a kernel's cost is the number of expression nodes its statements evaluate, summed
over all loop iterations (`cost`: elements x ops). A kernel costing at least
`MIN_CHUNKS * chunk_work()` is chunked: its costliest top-level loop is cut into ranges of
about `chunk_work()` cost each (`ANYCHIP_CHUNK_WORK`, default `CHUNK_WORK`). Smaller
kernels are rendered and launched exactly as before (one call, no extra arguments).

A chunked function takes three more arguments, after the runtime scalars:
`int64_t lo_, int64_t hi_` (the range of the chunk loop this call runs) and `char *st_`
(`Chunking.state_bytes` of zeroed scratch the launcher keeps across the calls of one launch).
Statements before the chunk loop run in every call when they only declare (`Let`; `Acc` and
`Local` live in `st_` so their values carry over), the others only in the call with
`lo_ == 0`; statements after it only in the call that ends the loop. A reduction whose
threads keep per-thread partials keeps them in `st_` too, so each thread's running sum is
one long compensated chain, as in one call.

When one iteration of that loop alone costs more than MIN_CHUNKS chunks (2 rows of 2^30
summed, a cumsum over 4 long rows) and its heaviest inner loop can use the threads (or
the outer loop has at most FEW iterations), the chunk loop is that inner loop instead:
each call runs one iteration `o_` of the outer loop (`lo_` and `hi_` then count from
`o_ * inner extent`), with the same rules one level down.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from anychip.codegen.c import CRenderer, _Block
from anychip.errors import ArgumentError
from anychip.ir.kernel import (
    Acc,
    KernelIR,
    Let,
    Load,
    Local,
    Loop,
    LoopKind,
    SortRow,
    Stmt,
    Store,
    Var,
    stmt_exprs,
    walk_exprs,
    walk_stmts,
)

CHUNK_WORK = 1 << 24  # cost per chunk: ~10-60 ms of one core's work at 0.3-2 ns per node
MIN_CHUNKS = 4  # kernels under MIN_CHUNKS * chunk_work() are never chunked (no overhead)
FEW = 8  # an outer loop this short may run one iteration per call though its inner is serial
GEMM_WORK = 256  # a GEMM's multiply-adds per unit of chunk work: ~8 GFLOP chunks by default
ENV = "ANYCHIP_CHUNK_WORK"
_ALIGN = 64  # bytes: each value kept in the state starts on a cache line


def chunk_work() -> int:
    """Cost per chunk: `ANYCHIP_CHUNK_WORK` (a whole number >= 1) or `CHUNK_WORK`."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return CHUNK_WORK
    if not (raw.isdigit() and int(raw) >= 1):
        raise ArgumentError(f"{ENV}={raw!r}: a whole number >= 1 expected (cost per chunk)")
    return int(raw)


def cost(body: tuple[Stmt, ...]) -> int:
    """Expression nodes the statements evaluate, over every iteration (at least 1 each).

    >>> from anychip.ir.kernel import *
    >>> from anychip import dtypes
    >>> x = Load(1, Var("i", INDEX), dtypes.float32)
    >>> cost((Loop("i", 1000, (Store(0, Var("i", INDEX), x),)),))  # i, b1[i] and its i
    3000
    """
    total = 0
    for s in body:
        if isinstance(s, Loop):
            total += s.extent * cost(s.body)
        elif isinstance(s, SortRow):
            total += s.n * max(1, s.n.bit_length())
        else:
            total += max(1, sum(len(walk_exprs(e)) for e in stmt_exprs(s)))
    return total


@dataclass(frozen=True, slots=True)
class Chunking:
    """How a launcher calls a chunked kernel: for each of `outer` iterations o, ranges of
    `step` iterations of `extent` (passed as o * extent + the range), with `state_bytes` of
    zeroed scratch shared by all the calls."""

    extent: int
    step: int
    state_bytes: int
    outer: int = 1


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    """Where to chunk: `path` holds the chunk loop's position in the kernel body, or the
    outer loop's and then the chunk loop's position in its body; `step` its iterations per
    call."""

    path: tuple[int, ...]
    step: int


def choose(k: KernelIR, work: int) -> ChunkPlan | None:
    """Where to chunk `k`, or None when it is cheap or its structure does not allow it."""
    if cost(k.body) < MIN_CHUNKS * work:
        return None
    written = {s.buf for s in walk_stmts(k.body) if isinstance(s, Store)}
    accs = frozenset(s.var for s in walk_stmts(k.body) if isinstance(s, Acc))
    top = _heaviest(k.body)
    if top is None or top[1].extent < 2 or not _safe_prologue(k.body[: top[0]], accs, written):
        return None
    at, loop, c = top
    inner = _heaviest(loop.body)
    if c // loop.extent > MIN_CHUNKS * work and inner is not None and inner[1].extent >= 2:
        at2, loop2, c2 = inner  # one iteration of `loop` is long: chunk inside it?
        # run one outer iteration per call only where that keeps the threads busy, or where
        # the outer loop is too short to feed many anyway (4 long rows of a cumsum)
        threads = loop2.kind is not LoopKind.SERIAL or loop.kind is LoopKind.SERIAL
        threads = threads or loop.extent <= FEW
        step2 = max(1, work * loop2.extent // max(c2, 1))
        dominant = 2 * c2 * loop.extent >= c  # the inner loop is most of the work
        safe = _safe_prologue(loop.body[:at2], accs, written)
        if threads and step2 < loop2.extent and dominant and safe:
            return ChunkPlan((at, at2), step2)
    step = max(1, work * loop.extent // max(c, 1))
    return ChunkPlan((at,), step) if step < loop.extent else None


def _heaviest(body: tuple[Stmt, ...]) -> tuple[int, Loop, int] | None:
    """(position, loop, cost) of the costliest loop directly in `body`."""
    loops = [(cost((s,)), i, s) for i, s in enumerate(body) if isinstance(s, Loop)]
    if not loops:
        return None
    c, at, loop = max(loops, key=lambda x: (x[0], x[1]))
    return at, loop, c


def split_count(count: int, unit: int, work: int) -> int | None:
    """Items per chunk when `count` items (GEMM rows or batch entries) of `unit`
    multiply-adds each run in chunks of about GEMM_WORK * work: a divisor of `count`, so
    every chunk is the same GEMM. None when the product is small or no divisor comes
    within 16x of the target (it then runs in one call).

    >>> split_count(4096, 4096 * 4096, 1 << 24)  # a 4096^3 product: 256 rows per call
    256
    """
    target = GEMM_WORK * work
    if count < 2 or count * unit < MIN_CHUNKS * target:
        return None
    small = [d for d in range(1, math.isqrt(count) + 1) if count % d == 0]
    divisors = {*small, *(count // d for d in small)} - {count}
    best = min(divisors, key=lambda d: abs(math.log(d * unit / target)))
    return best if target / 16 <= best * unit <= target * 16 else None


def _safe_prologue(body: tuple[Stmt, ...], accs: frozenset[str], written: set[int]) -> bool:
    """Lets before the chunk loop are recomputed by every call: they must not read an
    accumulator or a buffer the kernel writes (their value could differ by then)."""
    for s in body:
        if not isinstance(s, Let):
            continue
        for e in walk_exprs(s.value):
            if isinstance(e, Var) and e.name in accs:
                return False
            if isinstance(e, Load) and e.buf in written:
                return False
    return True


class ChunkedCRenderer(CRenderer):
    """The C renderer, chunking kernels that cost at least MIN_CHUNKS * chunk_work();
    after `render`, `chunking` says how to launch the result (None: one plain call)."""

    def __init__(self) -> None:
        super().__init__()
        self.chunking: Chunking | None = None
        self._plan: ChunkPlan | None = None
        self._loop: Loop | None = None  # the chunk loop
        self._state = 0
        self._saved: list[list[tuple[str, str, int]]] = []  # per level: (acc, C type, offset)
        self._returned = False
        self._nt = 0

    def render(self, k: KernelIR, name: str | None = None) -> str:
        self.chunking, self._loop, self._state, self._saved = None, None, 0, []
        self._plan = choose(k, chunk_work())
        self._returned = False
        src = super().render(k, name)
        if self._loop is not None and self._plan is not None:
            outer = k.body[self._plan.path[0]]
            n = outer.extent if len(self._plan.path) > 1 and isinstance(outer, Loop) else 1
            self.chunking = Chunking(self._loop.extent, self._plan.step, max(self._state, 8), n)
        return src

    def signature(self, k: KernelIR, name: str) -> str:
        sig = super().signature(k, name)
        if self._plan is None:
            return sig
        extra = "int64_t lo_, int64_t hi_, char *restrict st_"
        return sig[:-1] + (", " if sig[-2] != "(" else "") + extra + ")"

    def _slot(self, nbytes: int) -> int:
        """Offset of `nbytes` of fresh state."""
        at = self._state
        self._state += -(-nbytes // _ALIGN) * _ALIGN
        return at

    def top(self, k: KernelIR) -> None:
        if self._plan is None:
            super().top(k)
            return
        self.blocks.append(_Block())
        if len(self._plan.path) > 1:  # lo_ and hi_ count from o_ * the chunk loop's extent
            outer = k.body[self._plan.path[0]]
            assert isinstance(outer, Loop)
            inner = outer.body[self._plan.path[1]]
            assert isinstance(inner, Loop)
            self.emit(f"const int64_t o_ = lo_ / {inner.extent};")
            self.emit(f"lo_ -= o_ * {inner.extent}; hi_ -= o_ * {inner.extent};")
            self._level(k.body, self._plan.path, "(o_ == 0 && lo_ == 0)")
        else:
            self._level(k.body, self._plan.path, "(lo_ == 0)")
        self.blocks.pop()

    def _level(self, body: tuple[Stmt, ...], path: tuple[int, ...], first: str) -> None:
        """Render `body` around the loop at path[0]: `first` is true in the first call that
        runs this body (its side effects happen then, its accumulators start there)."""
        at = path[0]
        loop = body[at]
        assert isinstance(loop, Loop)
        self._saved.append([])
        for s in body[:at]:
            self._prologue(s, first)
        rest = body[at + 1 :]
        if len(path) == 1:
            self._loop = loop
            self.stmt(loop)
            if not self._returned and (rest or any(self._saved)):
                self._leave(f"hi_ < {loop.extent}", self._saved)
        else:  # this call runs iteration o_ of the outer loop only
            self.emit("{")
            self.blocks.append(_Block())
            self.emit(f"const int64_t {loop.var} = o_;")
            inner = loop.body[path[1]]
            assert isinstance(inner, Loop)
            self._level(loop.body, path[1:], "(lo_ == 0)")
            self.blocks.pop()
            self.emit("}")
            if rest or self._saved[0]:  # what follows runs after the last outer iteration
                more = f"o_ < {loop.extent - 1} || hi_ < {inner.extent}"
                self._leave(more, self._saved[:1])
        for s in rest:
            self.stmt(s)
        self._saved.pop()

    def _prologue(self, s: Stmt, first: str) -> None:
        if isinstance(s, Acc):
            self.acc_ops[s.var] = s
            self.forget(s.var)
            t = self.vtype(s.dtype)
            off = self._slot(8)
            self._saved[-1].append((s.var, t, off))
            ident = self.identity(s.op, s.dtype)
            self.emit(f"{t} {s.var} = {first} ? {ident} : *({t} *)(st_ + {off});")
        elif isinstance(s, Local):
            b = self.bufs[s.buf]
            t = self.stype(b.dtype)
            off = self._slot(max(b.size, 1) * b.dtype.itemsize)
            self.emit(f"{t} *restrict b{s.buf} = ({t} *)(st_ + {off});")
        elif isinstance(s, Let):
            self.stmt(s)
        else:  # side effects: once, in the first call
            self.block((s,), [f"if {first} {{"])

    def _leave(self, more: str, saved: list[list[tuple[str, str, int]]], extra: str = "") -> None:
        """While `more` (more calls follow): keep the accumulators in the state, return."""
        self.emit(f"if ({more}) {{")
        for var, t, off in (x for level in saved for x in level):
            self.emit(f"  *({t} *)(st_ + {off}) = {var};")
        if extra:
            self.emit(f"  {extra}")
        self.emit("  return;")
        self.emit("}")

    def loop_range(self, s: Loop) -> tuple[str, str]:
        if s is self._loop:
            return "lo_", "hi_"
        return super().loop_range(s)

    # a reduction over the chunk loop keeps its per-thread partials in the state
    def partials(self, s: Loop, accs: list[str]) -> None:
        if s is not self._loop:
            super().partials(s, accs)
            return
        self._nt = self._slot(8)
        self.emit(f"int64_t nt_ = lo_ ? *(int64_t *)(st_ + {self._nt}) : 1;")
        for a in accs:
            acc = self.acc_ops[a]
            t = self.vtype(acc.dtype)
            off = self._slot(64 * 8)
            self.emit(f"{t} *restrict {a}_part = ({t} *)(st_ + {off});")
            ident = self.identity(acc.op, acc.dtype)
            self.emit(f"if (lo_ == 0) for (int t_ = 0; t_ < 64; t_++) {a}_part[t_] = {ident};")

    def thread_start(self, s: Loop, acc: str) -> str:
        return f"{acc}_part[t_]" if s is self._loop else super().thread_start(s, acc)

    def before_combine(self, s: Loop) -> None:
        if s is self._loop:
            nt = f"*(int64_t *)(st_ + {self._nt}) = nt_;"
            self._leave(f"hi_ < {s.extent}", self._saved, nt)
            self._returned = True
