"""Loop-invariant hoisting: values an inner loop computes that do not depend on it (a bag's
row id in embedding_bag, a row's base offset) become `Let`s just before the loop.

C compilers often keep such gathered loads inside a vectorised loop (as per-lane gathers);
computed once before the loop they are plain scalars.
"""

from __future__ import annotations

from dataclasses import replace

from anychip.ir.kernel import (
    Acc,
    Alu,
    Expr,
    KernelIR,
    Let,
    Load,
    Loop,
    Stmt,
    Store,
    Update,
    Var,
    walk_stmts,
)


def hoist(k: KernelIR) -> KernelIR:
    """`k` with loop-invariant loads (and what they feed) computed before their loop.

    >>> from anychip.ir.kernel import *
    >>> from anychip import dtypes
    >>> i64, f32 = dtypes.int64, dtypes.float32
    >>> row = Load(1, Var("b", INDEX), i64)
    >>> inner = Loop("d", 4, (Store(0, alu(Ops.ADD, alu(Ops.MUL, Var("b", INDEX), const(4)),
    ...     Var("d", INDEX)), Load(2, alu(Ops.ADD, row, Var("d", INDEX)), f32)),))
    >>> bufs = (BufDecl("out", f32, 8, BufRole.OUT), BufDecl("i", i64, 2, BufRole.IN),
    ...     BufDecl("t", f32, 16, BufRole.IN))
    >>> k = hoist(KernelIR("k", KernelKind.ELEMENTWISE, bufs, (Loop("b", 2, (inner,)),)))
    >>> print(render_ir(k).splitlines()[-3])
        h0: int64 = b1[b]
    """
    if k.contraction is not None:
        return k
    return replace(k, body=_Hoister(k).block(k.body))


class _Hoister:
    def __init__(self, k: KernelIR) -> None:
        self.k = k
        self.count = 0

    def block(self, body: tuple[Stmt, ...]) -> tuple[Stmt, ...]:
        out: list[Stmt] = []
        for s in body:
            if isinstance(s, Loop):
                lets, loop = self.loop(replace(s, body=self.block(s.body)))
                out.extend(lets)
                out.append(loop)
            else:
                out.append(s)
        return tuple(out)

    def loop(self, s: Loop) -> tuple[list[Let], Loop]:
        """Lets to place before `s`, and `s` reading them."""
        if s.extent <= 0:
            return [], s  # a loop that never runs must not start reading memory
        inner = walk_stmts(s.body)
        variant = {s.var} | {x.var for x in inner if isinstance(x, Loop | Let | Acc | Update)}
        written = {x.buf for x in inner if isinstance(x, Store)}
        found: dict[Expr, str] = {}
        lets: list[Let] = []
        facts: dict[int, tuple[bool, bool]] = {}  # id(e) -> (loop-invariant, holds a load)
        done: dict[int, Expr] = {}  # id(e) -> e rewritten: shared values are visited once

        def visit(e: Expr) -> Expr:
            hit = done.get(id(e))
            if hit is not None:
                return hit
            invariant, load = _facts(e, variant, written, facts)
            out = e
            if invariant and load:  # only values holding a load are worth a name
                name = found.get(e)
                if name is None:
                    name = found[e] = f"h{self.count}"
                    self.count += 1
                    lets.append(Let(name, e))
                out = Var(name, e.dtype)
            elif isinstance(e, Alu):
                out = replace(e, srcs=tuple(visit(x) for x in e.srcs))
            elif isinstance(e, Load):
                valid = None if e.valid is None else visit(e.valid)
                out = replace(e, index=visit(e.index), valid=valid)
            done[id(e)] = out
            return out

        body = tuple(self.stmt(x, visit) for x in s.body)
        return lets, replace(s, body=body)

    def stmt(self, s: Stmt, visit: object) -> Stmt:
        assert callable(visit)
        if isinstance(s, Let | Update):
            return replace(s, value=visit(s.value))
        if isinstance(s, Store):
            valid = None if s.valid is None else visit(s.valid)
            return replace(s, index=visit(s.index), value=visit(s.value), valid=valid)
        return s  # nested loops were done on their own; sorts keep their bases


def _facts(
    e: Expr, variant: set[str], written: set[int], memo: dict[int, tuple[bool, bool]]
) -> tuple[bool, bool]:
    """(does `e` not depend on the loop, does it hold a load), bottom-up over the DAG with
    each shared sub-expression computed once (a tree walk per node is exponential)."""
    stack = [e]
    while stack:
        x = stack[-1]
        if id(x) in memo:
            stack.pop()
            continue
        kids = _children(x)
        todo = [c for c in kids if id(c) not in memo]
        if todo:
            stack.extend(todo)
            continue
        stack.pop()
        invariant = all(memo[id(c)][0] for c in kids)
        load = any(memo[id(c)][1] for c in kids)
        if isinstance(x, Var) and x.name in variant:
            invariant = False
        if isinstance(x, Load):
            load = True
            invariant = invariant and x.buf not in written
        memo[id(x)] = (invariant, load)
    return memo[id(e)]


def _children(e: Expr) -> tuple[Expr, ...]:
    if isinstance(e, Alu):
        return e.srcs
    if isinstance(e, Load):
        return (e.index,) if e.valid is None else (e.index, e.valid)
    return ()
