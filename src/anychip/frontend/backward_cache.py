"""The backward cache: `loss.backward()` of a graph shaped like one differentiated before
replays that pass's recorded plan on this graph's buffers, without building the
gradients' graph again.

A backward pass walks the tape (autograd.py), calls each record's derivative rule to build
the gradients as a lazy graph, then computes loss and gradients in one schedule through
the eager cache (runtime/eager_cache.py), which walks that whole graph again for its
structural key. In a training loop the tape and the forward graph have the same shape at
every step, with other buffers and runtime scalars, so the gradients' graph and its plan
are the same too: the rules' work and the walk of their graph are done once.

The key here is the forward graph's structure (`eager_cache.structure` over every value the
tape holds, so it says which node each record holds) and the tape's (each record's op and
parents, which leaves get gradients). A pass is recorded at its second sighting, after the
ordinary pass ran: the eager cache's plan for it, where each of the plan's inputs and
runtime scalars sits in the forward walk, and what becomes of each output (a forward
value the pass computed, the loss, a leaf's dense gradient, or the two parts of a row
gradient, frontend/rowgrad.py). A runtime scalar of the forward graph (a loss scale, an
exponent) is read from this pass's node at its position; a constant a rule makes of its
own (the 0.5 of a tie split) is kept from the recording. That is sound because a rule
never reads a value in Python: it computes on its inputs as graph nodes, with its op's
argument, shapes and dtypes (`x ** p` differentiates through the node `p - 1`, not the
number); tests/backend/test_backward_cache.py checks this for every elementwise op.

Only the plain case is taken: the implicit gradient of a scalar, no `create_graph`, no
hooks or custom gradient rules anywhere, every leaf's `.grad` None (after `zero_grad()`),
every record a primitive's (no `autograd.Function` or composite) unchanged in place since,
nothing recording or watching launches (`anychip.jit` capturing, the profiler,
ANYCHIP_DEBUG), and a plan of launches only, without donation checks. Anything else, and
`ANYCHIP_BACKWARD_CACHE=0`, runs the ordinary pass. Either way the leaves' gradients, the
loss and the forward values computed are the same buffers computed by the same kernels.

Threads: records are immutable once stored (stores under a lock); a pass reads one dict.
"""

from __future__ import annotations

import operator
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from anychip.frontend import hooks, rowgrad
from anychip.frontend.hooks import SAVES
from anychip.ir.ops import Node, Ops
from anychip.runtime import dispatch, eager_cache
from anychip.runtime.device import Buffer
from anychip.runtime.realize import buffer_of, remember

if TYPE_CHECKING:
    from anychip.frontend.autograd import Ctx
    from anychip.frontend.tensor import Tensor

LIMIT = 256  # records kept (and 16x as many hashes of passes sighted); cleared when full


class Records:
    """Records by key, and how often keys were sighted before one was recorded (by hash:
    a collision only records a pass a sighting early); shared by all threads (stores under
    a lock, records immutable). The backward cache's, and optim/update_cache.py's."""

    def __init__(self) -> None:
        self.records: dict[tuple[Any, ...], Any] = {}
        self.seen: dict[int, int] = {}
        self.lock = threading.Lock()
        self.stats = {"hits": 0, "records": 0}  # approximate under threads

    def get(self, key: tuple[Any, ...]) -> Any:
        try:
            return self.records.get(key)
        except TypeError:  # an unhashable op argument or hyperparameter
            return None

    def sighted(self, key: tuple[Any, ...]) -> bool:
        """Whether to record `key`'s pass this time: at its second sighting (one not
        replayable then is not tried again)."""
        try:
            h = hash(key)
        except TypeError:
            return False
        n = self.seen.get(h, 0)
        with self.lock:
            if len(self.seen) >= 16 * LIMIT:
                self.seen.clear()
            self.seen[h] = n + 1
        return n == 1

    def store(self, key: tuple[Any, ...], rec: Any) -> None:
        with self.lock:
            if len(self.records) >= LIMIT:
                self.records.clear()
            self.records[key] = rec
        self.stats["records"] += 1

    def clear(self) -> None:
        with self.lock:
            self.records.clear()
            self.seen.clear()

    def info(self) -> dict[str, int]:
        return {**self.stats, "size": len(self.records)}


_RECORDS = Records()


def enabled() -> bool:
    """Whether backward passes may replay records (ANYCHIP_BACKWARD_CACHE, default 1)."""
    return os.environ.get("ANYCHIP_BACKWARD_CACHE", "1").strip() not in ("0", "false", "no", "off")


_ON = [enabled()]


@dataclass
class Probe:
    """What a backward pass's key is made from: the records (consumers first), the leaves
    by number, and the forward walk (nodes, leaf buffers, leaf positions)."""

    key: tuple[Any, ...]
    order: list[Ctx]
    leaves: list[Tensor]
    forder: list[Node]
    fleaves: list[Buffer]


# where a realised tensor's value comes from: ("out", plan output) or ("fwd", forward position)
Role = tuple[str, int]
Meta = tuple[Any, tuple[int, ...], str]  # dtype, shape, device


@dataclass(frozen=True)
class _Rows:
    """A row gradient's recipe (frontend/rowgrad.py): its index buffer and rows, the view
    chain over the index, the zero table and the expand it scatters with."""

    leaf: int
    index: Role
    index_meta: Meta
    values: int
    values_meta: Meta
    chain: rowgrad.Chain
    base: tuple[Meta, Any]
    expand: tuple[Meta, Any]
    meta: Meta


@dataclass(frozen=True)
class _Record:
    plan: dispatch.Plan
    inputs: list[int]  # per plan input, the forward leaf it is
    width: int  # length of the walk-order list the plan reads runtime scalars from
    scalars: list[tuple[int, int]]  # (plan walk position, forward position)
    literals: list[tuple[int, Node]]  # (plan walk position, constant a rule made)
    remember: list[tuple[int, int]]  # (plan output, forward position) computed values
    root: int  # the plan output holding the loss (-1: it was computed before)
    dense: list[tuple[int, int, Meta, int]]  # (leaf, output, meta, earlier entry sharing it)
    rows: list[_Rows]
    # per record of the tape, what freeing the graph leaves in it (autograd.free): whether
    # it is marked freed, and placeholders of its values (made once, shared by the passes)
    holes: list[tuple[bool, tuple[Node, ...], Node]]


_SEQ_OF = operator.attrgetter("seq")


def probe(root: Tensor) -> Probe | None:
    """The key of `root.backward()` with its parts, or None where the pass is not the
    plain case (see the module's doc)."""
    from anychip.frontend.autograd import Ctx

    if not _ON[0] or hooks.HOOKS or hooks.RULES or dispatch._observed():
        return None
    first = root._ctx
    if first is None:
        return None
    # the records reachable from the loss, consumers first: made later than what they
    # read, so by creation order, newest first (one visit each, then a sort)
    seen = {first}
    stack = [first]
    while stack:
        for p in stack.pop().parents:
            if isinstance(p, Ctx) and p not in seen:
                seen.add(p)
                stack.append(p)
    order = sorted(seen, key=_SEQ_OF, reverse=True)
    where = {c: i for i, c in enumerate(order)}
    roots = [root.node]
    tape: list[Any] = []
    leaves: list[Tensor] = []
    numbers: dict[int, int] = {}
    for c in order:
        if type(c) is not Ctx or c.freed or c.out_vc.n != c.out_n:
            return None
        for vc, then in zip(c.vcs, c.versions):
            if vc.n != then:
                return None
        roots += c.nodes
        roots.append(c.out)
        parents: list[int] = []
        for p in c.parents:
            if p is None:
                parents.append(-1)
            elif isinstance(p, Ctx):
                parents.append(where[p])
            else:
                j = numbers.get(id(p))
                if j is None:
                    if p.grad is not None or not p.requires_grad:
                        return None
                    j = numbers[id(p)] = len(leaves)
                    leaves.append(p)
                parents.append(-2 - j)
        tape.append((c.op, tuple(parents)))
    st = eager_cache.structure(roots, buffer_of)
    if st is None:
        return None
    skey, fleaves, forder, _ = st
    return Probe((skey, tuple(tape)), order, leaves, forder, fleaves)


def lookup(p: Probe) -> _Record | None:
    """The record of p's pass, if one was made."""
    rec: _Record | None = _RECORDS.get(p.key)
    return rec


def sighted(p: Probe) -> bool:
    """Whether to record p's pass this time: at its second sighting."""
    return _RECORDS.sighted(p.key)


def replay(root: Tensor, p: Probe, rec: _Record, retain_graph: bool) -> None:
    """Do what the ordinary pass would: gradients into the leaves' `.grad`, loss and the
    forward values the plan computes realised, the graph freed unless retain_graph."""
    from anychip.frontend.tensor import Tensor

    _RECORDS.stats["hits"] += 1
    if not retain_graph:  # autograd.free, with the record's placeholders
        for ctx, (saves, kept, out) in zip(p.order, rec.holes):
            if saves:
                ctx.freed = True
            ctx.nodes, ctx.out = kept, out
    nodes: list[Any] = [None] * rec.width
    forder = p.forder
    for cpos, fpos in rec.scalars:
        nodes[cpos] = forder[fpos]
    for cpos, node in rec.literals:
        nodes[cpos] = node
    fleaves = p.fleaves
    bufs = rec.plan.run([fleaves[i] for i in rec.inputs], nodes)
    for k, fpos in rec.remember:
        remember(forder[fpos], bufs[k])
    if rec.root >= 0:
        n = root.node
        root.node = Node(Ops.BUFFER, n.dtype, n.shape, n.device, (), bufs[rec.root])
    made: list[Tensor] = []
    leaves = p.leaves
    for leaf, k, (dt, shape, dev), same in rec.dense:
        g = (
            made[same]
            if same >= 0
            else Tensor._from_node(Node(Ops.BUFFER, dt, shape, dev, (), bufs[k]))
        )
        made.append(g)
        leaves[leaf].grad = g
    for r in rec.rows:
        kind, at = r.index
        if kind == "out":
            dt, shape, dev = r.index_meta
            index = Node(Ops.BUFFER, dt, shape, dev, (), bufs[at])
        else:
            index = forder[at]
        dt, shape, dev = r.values_meta
        values = Node(Ops.BUFFER, dt, shape, dev, (), bufs[r.values])
        (bdt, bshape, bdev), barg = r.base
        (edt, eshape, edev), earg = r.expand
        base = Node(Ops.CONST, bdt, bshape, bdev, (), barg)
        at_rows = Node(Ops.EXPAND, edt, eshape, edev, (), earg)  # its source: rebuild's
        dt, shape, dev = r.meta
        g = Tensor._from_node(Node(Ops.SCATTER_ADD, dt, shape, dev, (base, at_rows, values), 0))
        leaves[r.leaf].grad = g
        rowgrad.rebuild(g, index, values, r.chain)


def record(
    p: Probe,
    seen: list[tuple[Any, ...]],
    root: tuple[Tensor, Node],
    dense: list[tuple[Tensor, Tensor, Node]],
    rows: list[tuple[Tensor, Tensor, Node, Tensor, Node, rowgrad.Chain, Node]],
) -> None:
    """Store the pass just run, from its one realisation `seen`: the loss (tensor, node
    before), each dense gradient (leaf, gradient, node before) and each row gradient (leaf,
    index tensor and node before, rows tensor and node before, chain, the gradient's
    scatter node before); nothing when the pass is not replayable as one plan."""
    watched = eager_cache.watched_plan(seen)
    if watched is None:
        return
    entry, leaves_c, order_c, leaf_pos_c = watched
    plan = entry.plan
    if any(s.checks for s in plan.steps):  # a donation check reads the gradients' graph
        return
    fpos = {id(n): i for i, n in enumerate(p.forder)}
    fleaf = {id(b): i for i, b in enumerate(p.fleaves)}
    inputs = [fleaf.get(id(b)) for b in leaves_c]
    if any(i is None for i in inputs):
        return
    scalars, literals = [], []
    width = len(order_c)  # the walk-order list a replay passes (None where nothing is read)
    for s in plan.steps:
        for cpos, _ in s.scalars:
            if cpos < 0:
                continue
            node = order_c[cpos]
            f = fpos.get(id(node))
            if f is None:
                literals.append((cpos, node))
            else:
                scalars.append((cpos, f))
    out_of = {id(order_c[cpos]): k for k, cpos in enumerate(entry.positions)}
    kept = []
    for k, cpos in enumerate(entry.positions):
        f = fpos.get(id(order_c[cpos]))
        if cpos not in leaf_pos_c and f is not None:
            kept.append((k, f))

    def role(node: Node) -> Role | None:
        k = out_of.get(id(node))
        if k is not None:
            return ("out", k)
        f = fpos.get(id(node))
        return ("fwd", f) if f is not None and node.op is Ops.BUFFER else None

    def meta(t: Tensor) -> Meta:
        return (t.node.dtype, t.node.shape, t.node.device)

    numbers = {id(t): i for i, t in enumerate(p.leaves)}
    got = role(root[1])  # ("fwd", _): the loss was read before (`loss.item()`)
    if got is None:
        return
    dense_rec: list[tuple[int, int, Meta, int]] = []
    first: dict[int, int] = {}
    for leaf, g, before in dense:
        r = role(before)
        if r is None or r[0] != "out" or id(leaf) not in numbers:
            return
        same = first.setdefault(id(g), len(dense_rec))
        dense_rec.append((numbers[id(leaf)], r[1], meta(g), same if same < len(dense_rec) else -1))
    rows_rec = []
    for leaf, index, index_before, values, values_before, chain, scatter in rows:
        ri, rv = role(index_before), role(values_before)
        if ri is None or rv is None or rv[0] != "out" or id(leaf) not in numbers:
            return
        base, expand = scatter.srcs[0], scatter.srcs[1]
        rows_rec.append(
            _Rows(
                numbers[id(leaf)],
                ri,
                meta(index),
                rv[1],
                meta(values),
                chain,
                ((base.dtype, base.shape, base.device), base.arg),
                ((expand.dtype, expand.shape, expand.device), expand.arg),
                (scatter.dtype, scatter.shape, scatter.device),
            )
        )
    if len({id(leaf) for leaf, *_ in rows}) != len(rows):
        return
    shapes: dict[Meta, Node] = {}  # one placeholder per shape, as autograd.free makes

    def hole(n: Node) -> Node:
        key = (n.dtype, n.shape, n.device)
        got = shapes.get(key)
        if got is None:
            got = shapes[key] = Node(Ops.CONST, n.dtype, n.shape, n.device, (), 0)
        return got

    holes = [(c.op in SAVES, tuple(map(hole, c.nodes)), hole(c.out)) for c in p.order]
    rec = _Record(
        plan,
        [i for i in inputs if i is not None],
        width,
        scalars,
        literals,
        kept,
        got[1] if got[0] == "out" else -1,
        dense_rec,
        rows_rec,
        holes,
    )
    _RECORDS.store(p.key, rec)


def clear_cache() -> None:
    """Forget every record (the eager cache's plans stay)."""
    _RECORDS.clear()


def cache_info() -> dict[str, int]:
    """{'hits', 'records', 'size'} of the backward cache."""
    return _RECORDS.info()
