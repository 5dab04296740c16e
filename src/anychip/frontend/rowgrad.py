"""Dense gradients of embedding tables, kept as their rows until something reads them.

The gradient of a table looked up by `take` (nn.Embedding, nn.EmbeddingBag without
`sparse=True`) is dense, as in PyTorch, but it is zero outside the rows a batch touched:
a scatter-add of N gradient rows into a zero table. Computing it writes the whole table
(20K rows for 1K touched), and an SGD step then reads it whole again. `backward` instead
computes the N rows and their row indices, and leaves `.grad` as the lazy scatter of
those two buffers (a *row gradient*): anything that reads it (printing it, a norm, Adam)
computes the dense value then, the same value, while plain SGD (no momentum or weight
decay) adds the scaled rows into the table in place, one row scatter, and the dense
gradient is never made. `anychip.jit` carries a row gradient as its two buffers.

>>> import anychip as ac
>>> emb = ac.nn.Embedding(5, 2)
>>> emb(ac.tensor([1, 3, 1])).sum().backward()
>>> parts(emb.weight.grad) is not None, emb.weight.grad.tolist()[1]
(True, [2.0, 2.0])
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

from anychip.ir.ops import Node, Ops

if TYPE_CHECKING:
    from anychip.frontend.tensor import Tensor


# how a (N, 1) index column is seen from the buffer under it: (op, dtype, shape, device,
# arg) of each RESHAPE or SHRINK, from the buffer up (empty: the column is the buffer)
Chain = tuple[tuple[Ops, object, tuple[int, ...], str, object], ...]


@dataclass(frozen=True, slots=True)
class _Rows:
    """A row gradient: `node` the scatter of `rows` (N, D) at the index column that
    `chain` makes of buffer `index` (a jagged layout's ids row: no copy), with the zero
    `base` and the `expand` of the column it was made with (a realised node forgets its
    sources, so they are kept here)."""

    ref: weakref.ref[Tensor]
    node: Node
    base: Node
    expand: Node
    index: Node
    chain: Chain
    rows: Node


# id(gradient) -> its rows, while the gradient lives
_KEPT: dict[int, _Rows] = {}
_VIEWS = (Ops.RESHAPE, Ops.SHRINK)


def _scatter_rows(n: Node) -> bool:
    """Whether `n` scatters rows into a zero table: SCATTER_ADD along axis 0 of a 2-d +0.0
    constant, the index a (N, 1) column expanded to (N, D)."""
    if n.op is not Ops.SCATTER_ADD or n.arg != 0 or len(n.shape) != 2:
        return False
    base, index, _ = n.srcs
    if base.op is not Ops.CONST or base.arg != 0 or math.copysign(1.0, base.arg) < 0:
        return False
    return index.op is Ops.EXPAND and index.srcs[0].shape[1:] == (1,)


def eligible(g: Tensor) -> bool:
    """Whether `backward` may keep gradient `g` as its rows (a scatter of rows into a zero
    table, not yet computed)."""
    return not g.is_sparse and _scatter_rows(g.node)


def zero_constant(g: Tensor, like: Tensor) -> bool:
    """Whether `g` is an unmade +0.0 constant of `like`'s shape and dtype (what
    `zero_grad(set_to_none=False)` leaves)."""
    n = g.node
    if g.is_sparse or n.op is not Ops.CONST or n.shape != like.shape or n.dtype != like.dtype:
        return False
    return n.arg == 0 and math.copysign(1.0, n.arg) > 0


def sources(g: Tensor) -> tuple[Node, Node, Chain]:
    """What an eligible gradient scatters, to realise: the buffer its index column views
    (or the column itself when it is computed), its rows, and the view chain between."""
    column, rows = g.node.srcs[1].srcs[0], g.node.srcs[2]
    chain = []
    n = column
    while n.op in _VIEWS and n.srcs:
        chain.append((n.op, n.dtype, n.shape, n.device, n.arg))
        n = n.srcs[0]
    if n.op is not Ops.BUFFER:  # computed: the column is realised
        return column, rows, ()
    return n, rows, tuple(reversed(chain))


def _kept(g: Tensor) -> _Rows | None:
    """`g`'s rows while its value is still theirs: unmade, or made from them unchanged."""
    e = _KEPT.get(id(g))
    if e is None or e.ref() is not g:
        return None
    n = g.node
    return e if n is e.node or (n.op is Ops.BUFFER and n.arg is e.node.realised) else None


def parts(g: Tensor) -> tuple[Node, Node] | None:
    """(index buffer, rows (N, D)), both realised, of row gradient `g`; None when `g` is
    not one (or changed since)."""
    e = _kept(g)
    return None if e is None else (e.index, e.rows)


def scatter_parts(g: Tensor) -> tuple[Node, Node] | None:
    """(the expanded index column, rows) that `add_rows` scatters for row gradient `g`;
    None when `g` is not one (or changed since)."""
    e = _kept(g)
    return None if e is None else (e.expand, e.rows)


def rebuild(g: Tensor, index: Node, rows: Node, chain: Chain | None = None) -> None:
    """Make `g` (eligible, or a row gradient) the scatter of realised `rows` at the column
    `chain` makes of buffer `index` (None: the chain `g` was made with)."""
    e = _KEPT.get(id(g))
    if e is not None and e.ref() is not g:  # another tensor's, whose id g took over
        e = None
    if e is not None:
        base, expand, was = e.base, e.expand, e.chain
    else:
        base, expand, was = g.node.srcs[0], g.node.srcs[1], ()
    chain = was if chain is None else chain
    column = index
    for op, dtype, shape, device, arg in chain:
        column = Node(op, dtype, shape, device, (column,), arg)  # type: ignore[arg-type]
    n = g.node
    at = Node(Ops.EXPAND, expand.dtype, expand.shape, expand.device, (column,), expand.arg)
    g.node = Node(Ops.SCATTER_ADD, n.dtype, n.shape, n.device, (base, at, rows), 0)
    key = id(g)

    def gone(ref: weakref.ref[Tensor]) -> None:
        if getattr(_KEPT.get(key), "ref", None) is ref:
            _KEPT.pop(key, None)

    ref = e.ref if e is not None else weakref.ref(g, gone)
    _KEPT[key] = _Rows(ref, g.node, base, at, index, chain, rows)


def add_rows(p: Tensor, g: Tensor, scale: Tensor) -> Tensor | None:
    """p + g * scale as a row scatter into p (`scale` a scalar tensor), or None where `g`
    is not a row gradient of p's shape and dtype."""
    from anychip.frontend.tensor import Tensor

    e = _kept(g)
    if e is None or g.shape != p.shape or g.dtype != p.dtype:
        return None
    rows = Tensor._from_node(e.rows) * scale
    return p._detached()._prim(Ops.SCATTER_ADD, Tensor._from_node(e.expand), rows, arg=0)
