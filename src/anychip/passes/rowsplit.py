"""Row-reduction splitting: a unit-stride reduce loop folds into P independent partial
accumulators (a local array of 256 bytes) instead of one, then combines them in a tree.

`x.sum(-1)` for x (4096, 1024) lowers to `acc; for r [reduce]: acc <- x[i*1024 + r]`, which
C compilers vectorise with one vector accumulator: every add waits for the previous one.
This pass rewrites the loop to `local p[64]; p[:] = 0; for c [serial]: for j [vector]:
p[j] += x[i*1024 + c*64 + j]` (plus a tail `for j < n % 64`), then halves `p` pairwise
(`p[j] += p[j + h]`, h = 32, 16, ..., 1) and folds `p[0]` into `acc`: four independent
512-bit chains, combined in a fixed order, so results are the same on every run.
"""

from __future__ import annotations

from dataclasses import replace

from anychip import dtypes
from anychip.ir.kernel import (
    INDEX,
    Acc,
    Alu,
    BufDecl,
    BufRole,
    Expr,
    KernelIR,
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
)
from anychip.ir.ops import Ops
from anychip.passes.interchange import COMBINE, Rewriter, coefficient, local_dtype, start
from anychip.passes.simplify import simplify

CHUNK_BYTES = 256  # partials per row: 64 float32 = 4 AVX-512 / 8 AVX2 / 16 NEON vectors
MIN_LANES = 16  # at least one full vector of partials, whatever the dtype
# Reduce loops no parallel loop encloses and this long are split across threads by the C
# renderer (codegen/c.py, PARALLEL_WORK); a serial chunk loop would take that away.
THREADED_REDUCE = 1 << 15


def split_rows(k: KernelIR) -> KernelIR:
    """`k` with each unit-stride innermost reduce loop folded into partial accumulators.

    >>> from anychip.ir.kernel import *
    >>> from anychip.ir.ops import Ops
    >>> from anychip import dtypes
    >>> f32, i, r = dtypes.float32, Var("i", INDEX), Var("r", INDEX)
    >>> x = Load(1, alu(Ops.ADD, alu(Ops.MUL, i, const(128)), r), f32)
    >>> body = (Loop("i", 4, (Acc("a", Ops.SUM, f32),
    ...     Loop("r", 128, (Update("a", x),), LoopKind.REDUCE),
    ...     Store(0, i, Var("a", f32))), LoopKind.PARALLEL),)
    >>> bufs = (BufDecl("out", f32, 4, BufRole.OUT), BufDecl("x", f32, 512, BufRole.IN))
    >>> text = render_ir(split_rows(KernelIR("k", KernelKind.REDUCE, bufs, body)))
    >>> print("\\n".join(text.splitlines()[3:10]))
      b2: local float32[64] a_part
      for i in 0..4 [parallel]:
        acc a: float32 = identity(sum)
        local b2
        for j0 in 0..64 [vector]:
          b2[j0] = 0.0
        for c0 in 0..2 [serial]:
    """
    if k.contraction is not None:
        return k
    splitter = _Splitter(k)
    body = splitter.block(k.body, [])
    if not splitter.locals:
        return k
    return simplify(replace(k, bufs=k.bufs + tuple(splitter.locals), body=body))


class _Splitter(Rewriter):
    def block(self, body: tuple[Stmt, ...], outer: list[Loop]) -> tuple[Stmt, ...]:
        accs = {s.var: s for s in body if isinstance(s, Acc)}
        out: list[Stmt] = []
        for s in body:
            if not isinstance(s, Loop):
                out.append(s)
                continue
            mine = self.matches(s, accs, outer)
            if mine:
                out.extend(self.split(s, mine))
            else:
                out.append(replace(s, body=self.block(s.body, [*outer, s])))
        return tuple(out)

    # --- which loops ---------------------------------------------------------------
    def matches(self, s: Loop, accs: dict[str, Acc], outer: list[Loop]) -> list[Acc]:
        """The accumulators `s` updates when it is an innermost reduce loop over a
        contiguous row, long enough to split, whose accumulators live in this block;
        else an empty list."""
        if s.kind is not LoopKind.REDUCE or not all(_simple(x) for x in s.body):
            return []
        threads = not outer or s.extent >= THREADED_REDUCE
        if threads and not any(lp.kind is LoopKind.PARALLEL for lp in outer):
            return []  # left to the renderer's per-thread partials
        ups = [x for x in s.body if isinstance(x, Update)]
        if not ups or any(u.var not in accs for u in ups):
            return []
        mine = [accs[v] for v in dict.fromkeys(u.var for u in ups)]
        if any(a.dtype is dtypes.bool_ or a.op not in COMBINE for a in mine):
            return []
        if s.extent < _lanes(mine):
            return []  # shorter than one chunk: nothing to split
        names = {a.var for a in mine}
        rows = 0
        for x in s.body:
            for e in _exprs(x):
                if isinstance(e, Var) and e.name in names:
                    return []  # reads an accumulator it updates: order matters
                if isinstance(e, Load):
                    c = coefficient(e.index, s.var)
                    if c not in (0, 1):
                        return []  # gathered or strided: not a contiguous row
                    rows += c == 1
        return mine if rows else []

    # --- the rewrite ---------------------------------------------------------------
    def split(self, s: Loop, accs: list[Acc]) -> list[Stmt]:
        """Partials initialised, the chunk loop, the tail, the tree and the final fold."""
        lanes = _lanes(accs)
        full, tail = divmod(s.extent, lanes)
        bufs: dict[str, int] = {}
        out: list[Stmt] = []
        j = self.fresh("j")
        jv = Var(j, INDEX)
        for a in accs:
            bufs[a.var] = len(self.k.bufs) + len(self.locals)
            ld = local_dtype(a.dtype)
            self.locals.append(BufDecl(f"{a.var}_part", ld, lanes, BufRole.LOCAL))
            out.append(Local(bufs[a.var]))
        init = [Store(bufs[a.var], jv, start(a.op, local_dtype(a.dtype))) for a in accs]
        out.append(Loop(j, lanes, tuple(init), LoopKind.VECTOR))
        if full > 1:
            c = self.fresh("c")
            at = alu(Ops.ADD, alu(Ops.MUL, Var(c, INDEX), const(lanes)), jv)
            out.append(Loop(c, full, (self.fold(s, accs, bufs, j, lanes, at),)))
        else:
            out.append(self.fold(s, accs, bufs, j, lanes, jv))  # one chunk: no chunk loop
        if tail:
            out.append(self.fold(s, accs, bufs, j, tail, alu(Ops.ADD, const(full * lanes), jv)))
        out.extend(self.tree(accs, bufs, j, lanes))
        return out

    def fold(
        self, s: Loop, accs: list[Acc], bufs: dict[str, int], j: str, lanes: int, at: Expr
    ) -> Loop:
        """`for j in 0..lanes [vector]: part[j] op= value(r = at)`: the loop's updates
        become folds into the partials, its stores stay stores."""
        kinds = {a.var: a for a in accs}
        memo: dict[Expr, Expr] = {}  # equal values stay one object: computed once in C

        def sub(e: Expr) -> Expr:
            hit = memo.get(e)
            if hit is not None:
                return hit
            new: Expr = e
            if isinstance(e, Var) and e.name == s.var:
                new = at
            elif isinstance(e, Alu):
                new = Alu(e.op, tuple(sub(x) for x in e.srcs), e.dtype)
            elif isinstance(e, Load):
                valid = None if e.valid is None else sub(e.valid)
                new = Load(e.buf, sub(e.index), e.dtype, valid)
            memo[e] = new
            return new

        body: list[Stmt] = []
        jv = Var(j, INDEX)
        for x in s.body:
            if isinstance(x, Update):
                a = kinds[x.var]
                v = sub(x.value)
                ld = local_dtype(a.dtype)
                v = v if ld is a.dtype else alu(Ops.CAST, v, dtype=ld)
                body.append(Store(bufs[a.var], jv, v, COMBINE[a.op]))
            else:
                assert isinstance(x, Store)
                valid = None if x.valid is None else sub(x.valid)
                body.append(Store(x.buf, sub(x.index), sub(x.value), x.combine, valid))
        return Loop(j, lanes, tuple(body), LoopKind.VECTOR)

    def tree(self, accs: list[Acc], bufs: dict[str, int], j: str, lanes: int) -> list[Stmt]:
        """Pairwise halving of the partials (a fixed order), then `acc <- part[0]`."""
        out: list[Stmt] = []
        jv = Var(j, INDEX)
        h = lanes
        while h > 1:
            lo, h = h // 2, (h + 1) // 2  # part[j] op= part[j + h] for j < lo (odd sizes too)
            folds = []
            for a in accs:
                b, ld = bufs[a.var], local_dtype(a.dtype)
                other = Load(b, alu(Ops.ADD, jv, const(h)), ld)
                folds.append(Store(b, jv, other, COMBINE[a.op]))
            out.append(Loop(j, lo, tuple(folds), LoopKind.VECTOR))
        last: list[Stmt] = []
        for a in accs:
            v: Expr = Load(bufs[a.var], jv, local_dtype(a.dtype))
            last.append(Update(a.var, v if v.dtype is a.dtype else alu(Ops.CAST, v, dtype=a.dtype)))
        out.append(Loop(j, 1, tuple(last), LoopKind.SERIAL))
        return out


def _lanes(accs: list[Acc]) -> int:
    return max(CHUNK_BYTES // max(local_dtype(a.dtype).itemsize for a in accs), MIN_LANES)


def _simple(x: Stmt) -> bool:
    """Updates and plain stores only: an innermost loop the pass knows how to fold."""
    return isinstance(x, Update) or (isinstance(x, Store) and x.combine is None)


def _exprs(x: Stmt) -> list[Expr]:
    if isinstance(x, Update):
        return walk_exprs(x.value)
    assert isinstance(x, Store)
    valid = walk_exprs(x.valid) if x.valid is not None else []
    return walk_exprs(x.index) + walk_exprs(x.value) + valid
