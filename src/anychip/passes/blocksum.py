"""Accurate float sums: no accumulator adds more than a short run of terms on its own.

A float32 accumulator that adds n terms one after another is wrong by up to n/2 units in
the last place of the total: 2**25 ones stop at 16777216, and the mean of 5*10**7 copies of
1.1 came out 1.0706. This pass splits every long chain of additions into blocks: each block
sums at most BLOCK terms (SCALAR_BLOCK for a scalar accumulator, which targets spread over
vector lanes) into a fresh partial, and the partial is folded into the total with
compensation (TwoSum: the rounding error of each fold is kept in a second accumulator and
added back at the end). The total is then as accurate as pairwise summation or better:
the error of one block plus a few units in the last place, whatever the length.

`for r in 0..N [reduce]: a <- x[r]` becomes

    acc c                                  # the compensation: the folds' rounding errors
    for rb in 0..N/256 [reduce]:
      acc p                                # this block's partial
      for ri in 0..256 [reduce]: p <- x[rb*256 + ri]
      t = a + p; e = TwoSum error of (a, p); c <- e; a <- p
    (a last, shorter block for N % 256)
    a <- c

and lane accumulators (`local acc[64]` of column tiles and row partials, or an output row
that a middle-axis reduction adds into) get the same per lane, with local arrays for the
partials and the compensation. Only the innermost chain is blocked: the fold is one
compensated step per block, so a block of 32 lane terms costs a few percent more.
Running sums (cumsum's scans) longer than SCALAR_BLOCK get the same treatment (`scan`,
`scan_rows`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from anychip import dtypes
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
    stmt_exprs,
    walk_exprs,
    walk_stmts,
)
from anychip.ir.ops import Ops
from anychip.passes.interchange import Rewriter, coefficient
from anychip.passes.reuse import substitute_stmt
from anychip.passes.rowsplit import CHUNK_BYTES, MIN_LANES
from anychip.passes.simplify import linear, simplify

BLOCK = 32  # terms a lane accumulator (one element of a local or output row) adds per block
SCALAR_BLOCK = 256  # a scalar accumulator's block: up to 16 vector lanes of 16 terms
FLOATS = (dtypes.float32, dtypes.float64)  # halves' accumulators round on every read


@dataclass
class _Target:
    """One accumulation to block: a scalar accumulator (`acc`) or, for lanes, the buffer
    and index that a vector loop over `lane` adds into."""

    dtype: dtypes.DType
    acc: str | None = None
    buf: int | None = None
    index: Expr | None = None
    lane: Loop | None = None


def block_sums(k: KernelIR) -> KernelIR:
    """`k` with long float sums blocked and folded with compensation.

    >>> from anychip.ir.kernel import *
    >>> from anychip.ir.ops import Ops
    >>> from anychip import dtypes
    >>> f32, r = dtypes.float32, Var("r", INDEX)
    >>> x = Load(1, alu(Ops.MUL, r, const(2)), f32)  # strided: rows go to rowsplit
    >>> body = (Acc("a", Ops.SUM, f32), Loop("r", 1024, (Update("a", x),), LoopKind.REDUCE),
    ...     Store(0, const(0), Var("a", f32)))
    >>> bufs = (BufDecl("out", f32, 1, BufRole.OUT), BufDecl("x", f32, 2048, BufRole.IN))
    >>> text = render_ir(block_sums(KernelIR("k", KernelKind.REDUCE, bufs, body)))
    >>> print("\\n".join(text.splitlines()[3:8]))
      acc a: float32 = identity(sum)
      acc comp0: float32 = identity(sum)
      for r_b0 in 0..4 [reduce]:
        acc part0: float32 = identity(sum)
        for blk0 in 0..256 [reduce]:
    """
    if k.contraction is not None:
        return k
    b = _Blocker(k)
    body = b.block(k.body, {})
    if body == k.body:
        return k
    return simplify(replace(k, bufs=k.bufs + tuple(b.locals), body=body))


class _Blocker(Rewriter):
    def block(self, body: tuple[Stmt, ...], accs: dict[str, Acc]) -> tuple[Stmt, ...]:
        accs = dict(accs)
        out: list[Stmt] = []
        for s in body:
            if isinstance(s, Acc):
                accs[s.var] = s
            if not isinstance(s, Loop):
                out.append(s)
                continue
            scan = self.scan(s, accs) or self.scan_rows(s)
            if scan is not None:
                out.extend(scan)
                continue
            nest = self.nest(s, accs)
            if nest is None:
                out.append(replace(s, body=self.block(s.body, accs)))
            else:
                out.extend(nest)
        return tuple(out)

    # --- which loops ---------------------------------------------------------------
    def nest(self, root: Loop, accs: dict[str, Acc]) -> list[Stmt] | None:
        """The rewrite of `root` when it is a chain of serial/reduce loops whose innermost
        one adds long runs into float sums declared outside it, else None."""
        path = _path(root)
        if not path:
            return None
        last = path[-1]
        lanes = [x for x in last.body if isinstance(x, Loop)]
        inner = {s.var for s in walk_stmts((root,)) if isinstance(s, Loop | Let | Acc)}
        reads = _reads(root)
        targets: list[_Target] = []
        if not lanes:
            for u in last.body:
                a = accs.get(u.var) if isinstance(u, Update) else None
                if a is None or a.op is not Ops.SUM or a.dtype not in FLOATS:
                    continue
                if a.var not in reads and all(t.acc != a.var for t in targets):
                    targets.append(_Target(a.dtype, acc=a.var))
            limit = _row_block(last, targets) if len(path) == 1 else SCALAR_BLOCK
        else:
            lane = lanes[0]
            for st in lane.body:
                t = self.lane_target(st, lane, inner, reads)
                if t is not None and all(x.buf != t.buf for x in targets):
                    targets.append(t)
            limit = BLOCK
        targets = [t for t in targets if not _folds_above(path, t)]
        chain = math.prod(lp.extent for lp in path)
        if not targets or chain <= limit:
            return None
        return self.rewrite(root, path, targets, limit)

    def lane_target(
        self, st: Stmt, lane: Loop, inner: set[str], reads: set[object]
    ) -> _Target | None:
        if not isinstance(st, Store) or st.combine is not Ops.ADD or st.valid is not None:
            return None
        d = self.k.bufs[st.buf].dtype
        if d not in FLOATS or st.buf in reads:
            return None
        names = {x.name for x in walk_exprs(st.index) if isinstance(x, Var)}
        if names & (inner - {lane.var}) or coefficient(st.index, lane.var) in (0, None):
            return None  # the element depends on the chain, or lanes share one element
        return _Target(d, buf=st.buf, index=st.index, lane=lane)

    def scan(self, lp: Loop, accs: dict[str, Acc]) -> list[Stmt] | None:
        """A running sum (cumsum: `a <- x[s]; out[s] = a` in a long serial loop) in blocks of
        BLOCK: within a block a fresh partial runs from 0 and each value written is (the
        compensated total before the block) + partial; the partial is then folded into the
        total with compensation. Two adds per element, as before."""
        if lp.kind is not LoopKind.SERIAL or lp.extent <= SCALAR_BLOCK:
            return None
        if any(isinstance(x, Loop | Acc | Local) for x in lp.body):
            return None
        ups = [i for i, x in enumerate(lp.body) if isinstance(x, Update)]
        if len(ups) != 1:
            return None
        u = lp.body[ups[0]]
        assert isinstance(u, Update)
        a = accs.get(u.var)
        if a is None or a.op is not Ops.SUM or a.dtype not in FLOATS:
            return None
        if a.var in _reads(replace(lp, body=lp.body[: ups[0] + 1])) or a.var not in _reads(lp):
            return None  # not a scan: the total is read before it is added to, or never
        t = _Target(a.dtype, acc=a.var)
        comp = self.comp(t)
        assert isinstance(comp, str)
        full, tail = divmod(lp.extent, BLOCK)
        out: list[Stmt] = [Acc(comp, Ops.SUM, a.dtype)]
        for first, n, loop_var in ((None, BLOCK, self.fresh(lp.var + "_b")), (full, tail, None)):
            if not n or (first is None and not full):
                continue
            start = (
                alu(Ops.MUL, Var(loop_var, INDEX), const(BLOCK))
                if loop_var
                else const(full * BLOCK)
            )
            body = self.scan_block(lp, u, t, comp, start, n)
            var = loop_var or self.fresh(lp.var + "_t")
            out.append(Loop(var, full if loop_var else 1, tuple(body), LoopKind.SERIAL))
        j = self.fresh("j")
        out.append(Loop(j, 1, (Update(a.var, Var(comp, a.dtype)),), LoopKind.SERIAL))
        return out

    def scan_block(
        self, lp: Loop, u: Update, t: _Target, comp: str, start: Expr, n: int
    ) -> list[Stmt]:
        assert t.acc is not None
        d = t.dtype
        base, part, run = self.fresh("base"), self.fresh("part"), self.fresh("run")
        vi = self.fresh("blk")
        at = alu(Ops.ADD, start, Var(vi, INDEX))
        body: list[Stmt] = []
        for x in lp.body:
            x = substitute_stmt(x, lp.var, at)
            if isinstance(x, Update):
                body += [Update(part, x.value), Let(run, alu(Ops.ADD, Var(base, d), Var(part, d)))]
            elif body and any(isinstance(y, Let) and y.var == run for y in body):
                body.append(substitute_stmt(x, t.acc, Var(run, d)))
            else:
                body.append(x)
        head: list[Stmt] = [Let(base, alu(Ops.ADD, Var(t.acc, d), Var(comp, d)))]
        head.append(Acc(part, Ops.SUM, d))
        return [*head, Loop(vi, n, tuple(body), LoopKind.SERIAL), *self.fold(t, part, comp)]

    def scan_rows(self, lp: Loop) -> list[Stmt] | None:
        """A running sum down rows (`out[s] = out[s - 1] + x[s]` across a vector loop of
        lanes, cumsum over a non-innermost axis) as a compensated running total per lane in
        local arrays, each row written as total + compensation."""
        if lp.kind is not LoopKind.SERIAL or lp.extent <= SCALAR_BLOCK or len(lp.body) != 1:
            return None
        lane = lp.body[0]
        if not isinstance(lane, Loop) or lane.kind is not LoopKind.VECTOR or len(lane.body) != 1:
            return None
        st = lane.body[0]
        d = self.k.bufs[st.buf].dtype if isinstance(st, Store) else None
        if not isinstance(st, Store) or st.combine is not None or d not in FLOATS:
            return None
        v = st.value
        if not (isinstance(v, Alu) and v.op is Ops.ADD and isinstance(v.srcs[0], Load)):
            return None
        prev, x = v.srcs
        assert isinstance(prev, Load)
        step = coefficient(st.index, lp.var)
        (ti, ci), (tp, cp) = linear(st.index), linear(prev.index)
        if prev.buf != st.buf or not step or ti != tp or cp != ci - step:
            return None
        if st.buf in _reads(replace(lane, body=(Store(st.buf, st.index, x),))):
            return None  # the new term reads the output too: not a plain running sum
        assert d is not None
        probe = _Target(d, buf=st.buf, index=st.index, lane=lane)
        run, comp = self.local(probe, "run"), self.local(probe, "comp")
        lv = Var(lane.var, INDEX)
        zero = Const(0.0, d)
        init: list[Stmt] = [Store(run, lv, zero), Store(comp, lv, zero)]
        lets, err = self.two_sum(Load(run, lv, d), x, d)
        total = Var(lets[0].var, d)
        step_body: tuple[Stmt, ...] = (
            *lets,
            Store(comp, lv, err, Ops.ADD),
            Store(run, lv, total),
            Store(st.buf, st.index, alu(Ops.ADD, total, Load(comp, lv, d)), None, st.valid),
        )
        rows = replace(lp, body=(replace(lane, body=step_body),))
        return [Local(run), Local(comp), replace(lane, body=tuple(init)), rows]

    # --- the rewrite ---------------------------------------------------------------
    def rewrite(
        self, root: Loop, path: list[Loop], targets: list[_Target], limit: int
    ) -> list[Stmt]:
        """Compensation declared before `root`, the blocked loop inside, the correction
        after."""
        comps = [self.comp(t) for t in targets]
        suffix = 1
        depth = len(path) - 1
        while suffix * path[depth].extent <= limit:
            suffix *= path[depth].extent
            depth -= 1
        per = max(1, limit // suffix)  # iterations of path[depth] in one block
        blocked = self.split(path[depth], per, targets, comps)
        new_root = _replace_loop(root, path[depth], blocked)
        before: list[Stmt] = []
        after: list[Stmt] = []
        for t, c in zip(targets, comps):
            if t.acc is not None:
                assert isinstance(c, str)
                before.append(Acc(c, Ops.SUM, t.dtype))
                j = self.fresh("j")  # an update must sit in a loop (the verifier's rule)
                after.append(Loop(j, 1, (Update(t.acc, Var(c, t.dtype)),), LoopKind.SERIAL))
            else:
                assert isinstance(c, int) and t.lane is not None and t.buf is not None
                lv = Var(t.lane.var, INDEX)
                zero = Const(0.0, t.dtype)
                before += [Local(c), replace(t.lane, body=(Store(c, lv, zero),))]
                add = Store(t.buf, t.index or lv, Load(c, lv, t.dtype), Ops.ADD)
                after.append(replace(t.lane, body=(add,)))
        if isinstance(new_root, list):
            return [*before, *new_root, *after]
        return [*before, new_root, *after]

    def comp(self, t: _Target) -> str | int:
        if t.acc is not None:
            return self.fresh("comp")
        return self.local(t, "comp")

    def local(self, t: _Target, what: str) -> int:
        assert t.lane is not None and t.buf is not None
        i = len(self.k.bufs) + len(self.locals)
        name = f"{self.k.bufs[t.buf].name}_{what}"
        self.locals.append(BufDecl(name, t.dtype, t.lane.extent, BufRole.LOCAL))
        return i

    def split(
        self, lp: Loop, per: int, targets: list[_Target], comps: list[str | int]
    ) -> list[Stmt]:
        """`lp` as whole blocks of `per` iterations (and a last, shorter one)."""
        full, tail = divmod(lp.extent, per)
        out: list[Stmt] = []
        if full:
            vb = self.fresh(lp.var + "_b")
            start = alu(Ops.MUL, Var(vb, INDEX), const(per))
            body = self.one_block(lp, start, per, targets, comps)
            out.append(Loop(vb, full, tuple(body), lp.kind))
        if tail:  # in a loop of one: updates sit in loops (the verifier's rule)
            body = self.one_block(lp, const(full * per), tail, targets, comps)
            out.append(Loop(self.fresh(lp.var + "_t"), 1, tuple(body), LoopKind.SERIAL))
        return out

    def one_block(
        self, lp: Loop, start: Expr, n: int, targets: list[_Target], comps: list[str | int]
    ) -> list[Stmt]:
        """Fresh partials, `n` iterations of `lp` from `start` adding into them, then each
        partial folded into its total with compensation."""
        vi = self.fresh("blk")
        at = alu(Ops.ADD, start, Var(vi, INDEX))
        parts: dict[int, str | int] = {}
        out: list[Stmt] = []
        for i, t in enumerate(targets):
            if t.acc is not None:
                parts[i] = self.fresh("part")
                out.append(Acc(str(parts[i]), Ops.SUM, t.dtype))
            else:
                assert t.lane is not None
                parts[i] = self.local(t, "block")
                lv = Var(t.lane.var, INDEX)
                out += [
                    Local(int(parts[i])),
                    replace(t.lane, body=(Store(int(parts[i]), lv, Const(0.0, t.dtype)),)),
                ]
        body = tuple(_redirect(substitute_stmt(x, lp.var, at), targets, parts) for x in lp.body)
        out.append(Loop(vi, n, body, lp.kind))
        for i, t in enumerate(targets):
            out.extend(self.fold(t, parts[i], comps[i]))
        return out

    def fold(self, t: _Target, part: str | int, comp: str | int) -> list[Stmt]:
        """total += part, its rounding error (TwoSum, branch-free) added to comp."""
        if t.acc is not None:
            total: Expr = Var(t.acc, t.dtype)
            p: Expr = Var(str(part), t.dtype)
            lets, err = self.two_sum(total, p, t.dtype)
            return [*lets, Update(str(comp), err), Update(t.acc, p)]
        assert t.lane is not None and t.buf is not None and t.index is not None
        lv = Var(t.lane.var, INDEX)
        total = Load(t.buf, t.index, t.dtype)
        p = Load(int(part), lv, t.dtype)
        lets, err = self.two_sum(total, p, t.dtype)
        s = lets[0].var
        stores = [Store(int(comp), lv, err, Ops.ADD), Store(t.buf, t.index, Var(s, t.dtype))]
        return [replace(t.lane, body=(*lets, *stores))]

    def two_sum(self, a: Expr, b: Expr, d: dtypes.DType) -> tuple[list[Let], Expr]:
        """Lets for s = a + b and the exact error (a + b) - s, Knuth's TwoSum."""
        s, bv, av = self.fresh("sum"), self.fresh("bv"), self.fresh("av")
        sv, bvv, avv = Var(s, d), Var(bv, d), Var(av, d)
        lets = [
            Let(s, alu(Ops.ADD, a, b)),
            Let(bv, alu(Ops.ADD, sv, alu(Ops.NEG, a))),
            Let(av, alu(Ops.ADD, sv, alu(Ops.NEG, bvv))),
        ]
        err = alu(Ops.ADD, alu(Ops.ADD, a, alu(Ops.NEG, avv)), alu(Ops.ADD, b, alu(Ops.NEG, bvv)))
        return lets, err


def _row_block(lp: Loop, targets: list[_Target]) -> int:
    """A scalar accumulator's block: rowsplit (which runs next) folds a contiguous row
    block into lanes of partials (256 bytes of them), so such a block may be BLOCK terms
    per lane long; other loops are spread over vector lanes by the target (SCALAR_BLOCK)."""
    if not targets:
        return SCALAR_BLOCK
    rows = 0
    for x in lp.body:
        if not (isinstance(x, Update) or (isinstance(x, Store) and x.combine is None)):
            return SCALAR_BLOCK  # rowsplit folds updates and plain stores only
        for e in stmt_exprs(x):
            for y in walk_exprs(e):
                if isinstance(y, Load):
                    c = coefficient(y.index, lp.var)
                    if c not in (0, 1):
                        return SCALAR_BLOCK  # strided or gathered: not a row
                    rows += c == 1
    if not rows:
        return SCALAR_BLOCK
    lanes = max(CHUNK_BYTES // max(t.dtype.itemsize for t in targets), MIN_LANES)
    return max(SCALAR_BLOCK, BLOCK * lanes)


def _path(root: Loop) -> list[Loop]:
    """The serial/reduce loops from `root` down while each holds exactly one such loop
    (and lets, stores, updates); empty unless the chain ends in updates or one vector loop."""
    path: list[Loop] = []
    cur: Loop | None = root
    while cur is not None:
        if cur.kind not in (LoopKind.SERIAL, LoopKind.REDUCE):
            return []
        path.append(cur)
        loops = [x for x in cur.body if isinstance(x, Loop)]
        if any(isinstance(x, Acc | Local) for x in cur.body) or len(loops) > 1:
            return []
        if not loops:
            return path
        nxt = loops[0]
        if nxt.kind is LoopKind.VECTOR:
            inner = any(isinstance(x, Loop) for x in nxt.body)
            return [] if inner else path
        cur = nxt
    return path


def _reads(root: Loop) -> set[object]:
    """Accumulator names and buffers read anywhere in `root`."""
    out: set[object] = set()
    for s in walk_stmts((root,)):
        for e in stmt_exprs(s):
            for x in walk_exprs(e):
                if isinstance(x, Var):
                    out.add(x.name)
                elif isinstance(x, Load):
                    out.add(x.buf)
    return out


def _folds_above(path: list[Loop], t: _Target) -> bool:
    """Whether `t` is also added to outside the innermost loop of the chain."""
    for lp in path[:-1]:
        for x in lp.body:
            if isinstance(x, Update) and x.var == t.acc:
                return True
            if isinstance(x, Store) and t.buf is not None and x.buf == t.buf:
                return True
    return False


def _replace_loop(root: Loop, old: Loop, new: list[Stmt]) -> Loop | list[Stmt]:
    if root is old:
        return new
    body: list[Stmt] = []
    for x in root.body:
        if isinstance(x, Loop):
            r = _replace_loop(x, old, new)
            body.extend(r if isinstance(r, list) else [r])
        else:
            body.append(x)
    return replace(root, body=tuple(body))


def _redirect(s: Stmt, targets: list[_Target], parts: dict[int, str | int]) -> Stmt:
    """Statement `s` with each target's additions going to its block partial instead."""
    if isinstance(s, Loop):
        return replace(s, body=tuple(_redirect(x, targets, parts) for x in s.body))
    for i, t in enumerate(targets):
        if isinstance(s, Update) and s.var == t.acc:
            return Update(str(parts[i]), s.value)
        if isinstance(s, Store) and s.buf == t.buf and s.combine is Ops.ADD and t.lane:
            return Store(int(parts[i]), Var(t.lane.var, INDEX), s.value, Ops.ADD)
    return s
