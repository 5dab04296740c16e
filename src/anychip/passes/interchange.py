"""Column-reduction interchange: a reduction whose loads stride along the reduced axis but
are contiguous along an output axis is tiled along that output axis and reduced tile-wise.

`x.sum(0)` for x (256, 512) lowers to `for i [parallel]: acc; for r [reduce]: acc <-
x[r*512 + i]; out[i] = acc`, whose inner loop strides by 512 and cannot use SIMD. This pass
rewrites it to `for t [parallel]: local a[64]; a[:] = 0; for r [serial]: for l [vector]:
a[l] += x[r*512 + t*64 + l]; for l [vector]: out[t*64 + l] = a[l]` (plus a tail tile when 64
does not divide 512): every inner loop is unit-stride. Each output element still folds its
values in the same order, one after another, so results match the scalar loop's class.
"""

from __future__ import annotations

from dataclasses import replace

from anychip import dtypes
from anychip.dtypes import DType
from anychip.ir.kernel import (
    INDEX,
    Acc,
    Alu,
    BufDecl,
    BufRole,
    Const,
    Expr,
    KernelIR,
    Let,
    Load,
    Local,
    Loop,
    LoopKind,
    Stmt,
    Store,
    Update,
    Var,
    alu,
    const,
    walk_exprs,
    walk_stmts,
)
from anychip.ir.ops import Ops
from anychip.passes.lower import identity
from anychip.passes.simplify import linear, simplify

TILE_BYTES = 256  # accumulators per tile: 64 float32 = 4 AVX-512 / 8 AVX2 / 16 NEON vectors
MIN_LANES = 8  # output axes shorter than this keep the scalar loop (and its threads)
COMBINE = {Ops.SUM: Ops.ADD, Ops.PROD: Ops.MUL, Ops.RMAX: Ops.MAX, Ops.RMIN: Ops.MIN}
HALVES = (dtypes.float16, dtypes.bfloat16)


def interchange(k: KernelIR) -> KernelIR:
    """`k` with column reductions tiled along their contiguous output axis.

    >>> from anychip.ir.kernel import *
    >>> from anychip.ir.ops import Ops
    >>> from anychip import dtypes
    >>> f32, i, r = dtypes.float32, Var("i", INDEX), Var("r", INDEX)
    >>> x = Load(1, alu(Ops.ADD, alu(Ops.MUL, r, const(512)), i), f32)
    >>> body = (Loop("i", 512, (Acc("a", Ops.SUM, f32),
    ...     Loop("r", 256, (Update("a", x),), LoopKind.REDUCE),
    ...     Store(0, i, Var("a", f32))), LoopKind.PARALLEL),)
    >>> bufs = (BufDecl("out", f32, 512, BufRole.OUT), BufDecl("x", f32, 256 * 512, BufRole.IN))
    >>> print(render_ir(interchange(KernelIR("k", KernelKind.REDUCE, bufs, body))))
    kernel k [reduce]
      b0: out float32[512] out
      b1: in float32[131072] x
      b2: local float32[64] a_tile
      for tile0 in 0..8 [parallel]:
        local b2
        for lane0 in 0..64 [vector]:
          b2[lane0] = 0.0
        for r in 0..256 [serial]:
          for lane0 in 0..64 [vector]:
            b2[lane0] add= b1[((lane0 + (r * 512)) + (tile0 * 64))]
        for lane0 in 0..64 [vector]:
          b0[(lane0 + (tile0 * 64))] = b2[lane0]
    """
    if k.contraction is not None:
        return k
    tiler = _Tiler(k)
    body = tiler.block(k.body)
    if not tiler.locals:
        return k
    return simplify(replace(k, bufs=k.bufs + tuple(tiler.locals), body=body))


def coefficient(e: Expr, var: str) -> int | None:
    """d e / d var when `e` is affine in `var` (other terms may be anything), else None."""
    terms, _ = linear(e)
    coef = 0
    for t, c in terms.items():
        if isinstance(t, Var) and t.name == var:
            coef += c
        elif any(isinstance(x, Var) and x.name == var for x in walk_exprs(t)):
            return None
    return coef


def local_dtype(d: DType) -> DType:
    """Halves accumulate in float32, as a scalar accumulator of theirs does."""
    return dtypes.float32 if d in HALVES else d


def start(op: Ops, d: DType) -> Const:
    """The identity of reduction `op` in dtype `d` (bool: any starts False, all True)."""
    if d is dtypes.bool_:
        return Const(op is not Ops.RMAX and op is not Ops.SUM, d)
    return identity(op, d)


class Rewriter:
    """What a pass adding loops and Local buffers to kernel `k` keeps: names not yet used
    by a loop, let or accumulator (`fresh`), and the Local buffers it declared."""

    def __init__(self, k: KernelIR) -> None:
        self.k = k
        self.locals: list[BufDecl] = []
        used = [s for s in walk_stmts(k.body) if isinstance(s, Loop | Let | Acc)]
        self.used = {s.var for s in used}

    def fresh(self, prefix: str) -> str:
        n = 0
        while f"{prefix}{n}" in self.used:
            n += 1
        self.used.add(f"{prefix}{n}")
        return f"{prefix}{n}"


class _Tiler(Rewriter):
    def block(self, body: tuple[Stmt, ...]) -> tuple[Stmt, ...]:
        out: list[Stmt] = []
        for s in body:
            if isinstance(s, Loop) and self.matches(s):
                out.extend(self.tile(s))
            elif isinstance(s, Loop):
                out.append(replace(s, body=self.block(s.body)))
            else:
                out.append(s)
        return tuple(out)

    # --- which loops ---------------------------------------------------------------
    def matches(self, s: Loop) -> bool:
        """A parallel loop over accumulators, reduce-loop nests updating them and plain
        stores, whose reduce loads are column-like: unit stride along `s`, strided along
        the innermost reduced axis."""
        if s.kind is not LoopKind.PARALLEL or s.extent < MIN_LANES:
            return False
        nests = [x for x in s.body if isinstance(x, Loop)]
        if not nests or not all(_reduce_nest(n) for n in nests):
            return False
        if not all(isinstance(x, Acc | Loop) or _plain_store(x) for x in s.body):
            return False
        accs = {x.var for x in s.body if isinstance(x, Acc)}
        columns = 0
        for nest in nests:
            for inner, u in _updates(nest):
                if u.var not in accs:
                    return False
                for x in walk_exprs(u.value):
                    if not isinstance(x, Load) or coefficient(x.index, s.var) == 0:
                        continue
                    cv, cr = coefficient(x.index, s.var), coefficient(x.index, inner)
                    if cv != 1 or cr is None or abs(cr) == 1:
                        return False  # gathered, strided along s, or a row: leave it
                    columns += cr != 0
        stores = [x for x in s.body if isinstance(x, Store)]
        return columns > 0 and all(coefficient(x.index, s.var) == 1 for x in stores)

    # --- the rewrite ---------------------------------------------------------------
    def tile(self, s: Loop) -> list[Stmt]:
        """The tile loop over whole tiles (parallel) and the tail tile after it."""
        accs = [x for x in s.body if isinstance(x, Acc)]
        lanes = max(TILE_BYTES // max(local_dtype(a.dtype).itemsize for a in accs), 16)
        full, tail = divmod(s.extent, lanes)
        if full <= 1:
            full, tail, lanes = 1, 0, s.extent  # one tile (under two of them) beats a tail
        out: list[Stmt] = []
        if full == 1:
            out.extend(self.tile_body(s, accs, const(0), lanes))
        elif full:
            t = self.fresh("tile")
            base = alu(Ops.MUL, Var(t, INDEX), const(lanes))
            out.append(Loop(t, full, self.tile_body(s, accs, base, lanes), LoopKind.PARALLEL))
        if tail:
            out.extend(self.tile_body(s, accs, const(full * lanes), tail))
        return out

    def tile_body(self, s: Loop, accs: list[Acc], base: Expr, lanes: int) -> tuple[Stmt, ...]:
        """One tile of `lanes` output elements from `base` on, each accumulator a local
        array of its own (the tail tile gets separate ones: it shares the block)."""
        bufs: dict[str, int] = {}
        for a in accs:
            bufs[a.var] = len(self.k.bufs) + len(self.locals)
            decl = BufDecl(f"{a.var}_tile", local_dtype(a.dtype), lanes, BufRole.LOCAL)
            self.locals.append(decl)
        lane = self.fresh("lane")
        lv = Var(lane, INDEX)
        at = alu(Ops.ADD, base, lv)
        kinds = {a.var: a for a in accs}

        def sub(e: Expr) -> Expr:
            if isinstance(e, Var) and e.name == s.var:
                return at
            if isinstance(e, Var) and e.name in kinds:
                a = kinds[e.name]
                v: Expr = Load(bufs[a.var], lv, local_dtype(a.dtype))
                return v if v.dtype is a.dtype else alu(Ops.CAST, v, dtype=a.dtype)
            if isinstance(e, Alu):
                return Alu(e.op, tuple(sub(x) for x in e.srcs), e.dtype)
            if isinstance(e, Load):
                valid = None if e.valid is None else sub(e.valid)
                return Load(e.buf, sub(e.index), e.dtype, valid)
            return e

        def lanes_of(stmts: list[Stmt]) -> Loop:
            return Loop(lane, lanes, tuple(stmts), LoopKind.VECTOR)

        def fold(u: Update) -> Store:
            a = kinds[u.var]
            v = sub(u.value)
            ld = local_dtype(a.dtype)
            v = v if ld is a.dtype else alu(Ops.CAST, v, dtype=ld)
            return Store(bufs[a.var], lv, v, COMBINE[a.op])

        def nest(n: Loop) -> Loop:
            body: list[Stmt] = []
            for x in n.body:
                if isinstance(x, Loop):
                    body.append(nest(x))
                elif body and isinstance(body[-1], Loop) and body[-1].var == lane:
                    assert isinstance(x, Update)
                    body[-1] = lanes_of([*body[-1].body, fold(x)])
                else:
                    assert isinstance(x, Update)
                    body.append(lanes_of([fold(x)]))
            return Loop(n.var, n.extent, tuple(body), LoopKind.SERIAL)

        out: list[Stmt] = []
        for x in s.body:
            if isinstance(x, Acc):
                ident = start(x.op, local_dtype(x.dtype))
                out += [Local(bufs[x.var]), lanes_of([Store(bufs[x.var], lv, ident)])]
            elif isinstance(x, Loop):
                out.append(nest(x))
            else:
                assert isinstance(x, Store)
                st = Store(x.buf, sub(x.index), sub(x.value))
                if out and isinstance(out[-1], Loop) and out[-1].var == lane:
                    out[-1] = lanes_of([*out[-1].body, st])
                else:
                    out.append(lanes_of([st]))
        return tuple(out)


def _plain_store(s: Stmt) -> bool:
    return isinstance(s, Store) and s.combine is None and s.valid is None


def _reduce_nest(s: Loop) -> bool:
    """Only reduce loops and accumulator updates, all the way down."""
    if s.kind is not LoopKind.REDUCE:
        return False
    return all(isinstance(x, Update) or (isinstance(x, Loop) and _reduce_nest(x)) for x in s.body)


def _updates(s: Loop) -> list[tuple[str, Update]]:
    """Each update in a reduce nest with the innermost loop variable around it."""
    out: list[tuple[str, Update]] = []
    for x in s.body:
        if isinstance(x, Loop):
            out += _updates(x)
        elif isinstance(x, Update):
            out.append((s.var, x))
    return out
