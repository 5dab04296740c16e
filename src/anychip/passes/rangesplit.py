"""Index-set splitting: a loop whose body compares its variable with constants (a
concatenation picks its source by `i < 6`, `5 < i & i < 22`..., a pad tests `0 <= i - p`)
becomes one loop per range between those constants, in order. In each range every such
comparison is known, so the selects and guarded loads fold away (`simplify`): a `cat` of
twelve (B, 16) tensors copies each part with plain loads, where the whole loop computed
twelve selects and a guarded load of every part per element.

Only loops inside another loop are split (the outermost loop stays one: chunked launches
split it into calls), never reduction loops (their accumulation order is a pass's to
choose), and at most MAX_PIECES ranges a loop.
"""

from __future__ import annotations

from dataclasses import replace

from anychip.ir.kernel import (
    INDEX,
    Alu,
    KernelIR,
    Loop,
    LoopKind,
    Stmt,
    Var,
    alu,
    const,
    stmt_exprs,
    walk_exprs,
    walk_stmts,
)
from anychip.ir.ops import Ops
from anychip.passes.reuse import substitute_block
from anychip.passes.simplify import affine, simplify

MAX_PIECES = 16


def split_ranges(k: KernelIR) -> KernelIR:
    """`k` with loops split at the constants their variable is compared with.

    >>> from anychip.ir.kernel import *
    >>> from anychip import dtypes
    >>> f32, i = dtypes.float32, Var("i", INDEX)
    >>> pick = alu(Ops.WHERE, alu(Ops.CMPLT, i, const(2), dtype=dtypes.bool_),
    ...     Load(1, i, f32), Load(2, alu(Ops.ADD, i, const(-2)), f32))
    >>> body = (Loop("r", 3, (Loop("i", 5, (Store(0, i, pick),)),)),)
    >>> bufs = (BufDecl("o", f32, 5, BufRole.OUT), BufDecl("a", f32, 2, BufRole.IN),
    ...     BufDecl("b", f32, 3, BufRole.IN))
    >>> k = split_ranges(KernelIR("k", KernelKind.ELEMENTWISE, bufs, body))
    >>> print("\\n".join(render_ir(k).splitlines()[-4:]))
        for i in 0..2 [serial]:
          b0[i] = b1[i]
        for i in 0..3 [serial]:
          b0[(i + 2)] = b2[i]
    """
    if k.contraction is not None:
        return k
    body = tuple(_top(s) for s in k.body)
    if body == k.body:
        return k
    return simplify(replace(k, body=body))


def _top(s: Stmt) -> Stmt:
    """An outermost statement: its nested loops may split, itself not."""
    if isinstance(s, Loop):
        return replace(s, body=_block(s.body))
    return s


def _block(body: tuple[Stmt, ...]) -> tuple[Stmt, ...]:
    out: list[Stmt] = []
    for s in body:
        if isinstance(s, Loop):
            out.extend(_split(replace(s, body=_block(s.body))))
        else:
            out.append(s)
    return tuple(out)


def _split(loop: Loop) -> list[Stmt]:
    if loop.kind is LoopKind.REDUCE or loop.extent < 2:
        return [loop]
    cuts = sorted(_cuts(loop))
    if not cuts or len(cuts) + 1 > MAX_PIECES:
        return [loop]
    pieces: list[Stmt] = []
    for lo, hi in zip([0, *cuts], [*cuts, loop.extent]):
        shifted = alu(Ops.ADD, Var(loop.var, INDEX), const(lo)) if lo else None
        body = loop.body if shifted is None else substitute_block(loop.body, loop.var, shifted)
        pieces.append(replace(loop, extent=hi - lo, body=body))
    return pieces


def _cuts(loop: Loop) -> set[int]:
    """Where the comparisons of loop's variable with constants change value, inside
    (0, extent)."""
    v, cuts = loop.var, set()
    seen: set[int] = set()
    for s in walk_stmts(loop.body):
        for root in stmt_exprs(s):
            for e in walk_exprs(root):
                if id(e) in seen or not isinstance(e, Alu) or e.op is not Ops.CMPLT:
                    continue
                seen.add(id(e))
                at = _cut(e, v)
                if at is not None and 0 < at < loop.extent:
                    cuts.add(at)
    return cuts


def _cut(e: Alu, v: str) -> int | None:
    """The first value of `v` from which `e` (a < b) changes, when one side is `v + c`
    and the other a constant."""
    a, b = affine(e.srcs[0]), affine(e.srcs[1])
    if a is None or b is None:
        return None
    if a[0] == {v: 1} and not b[0]:  # v + ca < cb: true below cb - ca
        return b[1] - a[1]
    if b[0] == {v: 1} and not a[0]:  # ca < v + cb: true from ca - cb + 1
        return a[1] - b[1] + 1
    return None
