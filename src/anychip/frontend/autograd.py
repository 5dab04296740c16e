"""Reverse-mode autograd over the tape that `Tensor._prim` records.

The tape is a graph of `Ctx` records (PyTorch's grad_fn nodes): each holds what its
primitive's derivative rule reads, as it was when the op ran, and edges to its sources'
own records, so changing a tensor in place later never rewires history that already
used it. The derivative rules live beside each primitive in `ir/primitives.py`; this
module walks the records in reverse and sums cotangents.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Union

from anychip.errors import AutogradError, ShapeError, describe
from anychip.frontend import hooks, rowgrad
from anychip.frontend.hooks import SAVES, call_hooks, grad_rule
from anychip.ir.ops import Node, Ops
from anychip.ir.primitives import RULES
from anychip.runtime import eager_cache

if TYPE_CHECKING:
    from anychip.frontend.tensor import Tensor

# creation order of tensors and records; in-place rewiring compares these
SEQ = itertools.count()


class Version:
    """A version counter, shared by a tensor and all its views (as PyTorch's): every in-place
    change bumps `n`; `seq` is when (in `SEQ` order) it last changed."""

    __slots__ = ("n", "seq")

    def __init__(self) -> None:
        self.n, self.seq = 0, next(SEQ)

    def bump(self) -> None:
        self.n += 1
        self.seq = next(SEQ)


# an edge to a source's history: its record, the leaf tensor itself, or None (no gradient)
Parent = Union["Ctx", "Tensor", None]


class Ctx:
    """How a tensor was made: `op` on sources whose values (graph nodes) and versions are
    kept as they were then, and the output's value and version. Backward reads the kept
    values; a rule that reads a source (or output) changed in place since raises, as in
    PyTorch, because the value it needs was overwritten."""

    __slots__ = (
        "__weakref__",
        "arg",
        "freed",
        "nodes",
        "op",
        "out",
        "out_n",
        "out_vc",
        "parents",
        "seq",
        "vcs",
        "versions",
    )

    def __init__(
        self, op: Ops, srcs: tuple[Tensor, ...], nodes: tuple[Node, ...], arg: Any, out: Tensor
    ) -> None:
        self.op, self.arg = op, arg
        # the sources' values, (s.node for s in srcs), in a tuple of the record's own: the
        # caller's is also the output node's sources, which its realisation lets go of,
        # and buffer donation counts the record's references (runtime/donate.py)
        self.nodes = (*nodes,)
        # made for every differentiable op: the one- and two-source cases spelled out, the
        # rest one plain loop; a source's version counter is made here when it has none (as
        # the `_vc` property)
        n = len(srcs)
        self.parents: tuple[Parent, ...]
        if n == 1:
            (a,) = srcs
            va = a._ver
            if va is None:
                va = a._ver = Version()
            self.vcs, self.versions = [va], [va.n]
            self.parents = (((a._ctx or a) if a.requires_grad else None),)
        elif n == 2:
            a, b = srcs
            va = a._ver
            if va is None:
                va = a._ver = Version()
            vb = b._ver  # read after: a and b may be one tensor (x * x)
            if vb is None:
                vb = b._ver = Version()
            self.vcs, self.versions = [va, vb], [va.n, vb.n]
            self.parents = (
                (a._ctx or a) if a.requires_grad else None,
                (b._ctx or b) if b.requires_grad else None,
            )
        else:
            vcs: list[Version] = []
            versions: list[int] = []
            parents: list[Parent] = []
            for s in srcs:
                vc = s._ver
                if vc is None:
                    vc = s._ver = Version()
                vcs.append(vc)
                versions.append(vc.n)
                parents.append((s._ctx or s) if s.requires_grad else None)
            self.vcs, self.versions, self.parents = vcs, versions, tuple(parents)
        vc = out._ver
        if vc is None:
            vc = out._ver = Version()
        self.out, self.out_vc, self.out_n = out.node, vc, vc.n
        self.seq = next(SEQ)
        self.freed = False  # a backward without retain_graph released what it saved

    def rule(self) -> Any:
        """The derivative rule: `vjp(g, out, srcs, arg) -> cotangents of srcs`."""
        return RULES[self.op].vjp


_KEPT = Version()  # never bumped: reads of a kept value that no in-place change can touch


def accept_reads(value: Tensor, vc: Version) -> None:
    """An in-place op is about to bump `vc`: the records it made itself to compute `value`
    (those made since vc last changed, that read a tensor of vc at its current version) read
    the value kept in the record, which no later change touches, so they stay valid:
    `h.mul_(h)` differentiates as h_old * h_old (PyTorch refuses it)."""
    ctx = value._ctx
    if ctx is None:
        return
    stack, seen = [ctx], set()
    while stack:
        c = stack.pop()
        if id(c) in seen or c.seq < vc.seq:
            continue
        seen.add(id(c))
        for i, s in enumerate(c.vcs):
            if s is vc and c.versions[i] == vc.n:
                c.vcs[i], c.versions[i] = _KEPT, 0
        stack.extend(p for p in c.parents if isinstance(p, Ctx))


def _order(root: Ctx) -> list[Ctx]:
    """Records reachable from root, consumers before producers (iterative). Records hash
    by identity: the set holds them, no id() per lookup."""
    order: list[Ctx] = []
    seen: set[Ctx] = set()
    stack: list[tuple[Ctx, bool]] = [(root, False)]
    pop, push, add, emit = stack.pop, stack.append, seen.add, order.append
    while stack:
        c, done = pop()
        if done:
            emit(c)
            continue
        if c in seen:
            continue
        add(c)
        push((c, True))
        for p in c.parents:  # records (Ctx and its subclasses: Function outputs), not leaves
            if isinstance(p, Ctx) and p not in seen:
                push((p, False))
    return order[::-1]


def _reaches(node: Node, targets: dict[int, str], stop: set[int]) -> str | None:
    """The target `node`'s graph reads, walking only the part a derivative rule just built
    (the rule's inputs in `stop` end the walk)."""
    stack, seen = [node], set()
    while stack:
        n = stack.pop()
        if id(n) in targets:
            return targets[id(n)]
        if id(n) in seen or id(n) in stop or n.op is Ops.BUFFER:
            continue
        seen.add(id(n))
        stack.extend(n.srcs)
    return None


def _with_history(node: Node, parent: Parent) -> Tensor:
    """A tensor of a kept value that differentiates into `parent` (create_graph)."""
    from anychip.frontend.tensor import Tensor

    if parent is None:
        return Tensor._from_node(node)
    if not isinstance(parent, Ctx):
        return parent if parent.node is node else Tensor._from_node(node)
    t = Tensor._from_node(node)
    t.requires_grad, t._ctx = True, parent
    return t


def _vjp(ctx: Ctx, g: Tensor, create_graph: bool = False) -> tuple[Tensor | None, ...]:
    """Cotangents for ctx's sources. A source or output changed in place since the op ran
    is passed as a placeholder; a cotangent that needs one is an error (as in PyTorch).
    With `create_graph` the kept values carry their history, so the cotangents do too."""

    if ctx.freed:
        raise AutogradError(
            "backward: trying to backward through the graph a second time (the "
            f"{ctx.op.name} of shape {ctx.out.shape} saved values that the first backward "
            "freed); pass retain_graph=True to the first backward"
        )

    vjp = ctx.rule()
    assert vjp is not None
    fresh = ctx.out_vc.n == ctx.out_n
    for vc, then in zip(ctx.vcs, ctx.versions):
        fresh = fresh and vc.n == then
    if fresh and not create_graph:  # the common case (nothing changed in place): cheap
        make = _tensor.Tensor._from_node
        srcs = tuple([make(n) for n in ctx.nodes])
        return tuple(vjp(g, make(ctx.out), srcs, ctx.arg))
    stale: dict[int, str] = {}

    def value(node: Node, vc: Any, then: int, what: str) -> Tensor:
        if vc.n == then:
            return _tensor.Tensor._from_node(node)
        hole = Node(Ops.CONST, node.dtype, node.shape, node.device, (), 0)
        stale[id(hole)] = (
            f"{what} of shape {node.shape}, dtype {node.dtype.name}, is at version {vc.n}; "
            f"expected version {then}"
        )
        return _tensor.Tensor._from_node(hole)

    out = value(ctx.out, ctx.out_vc, ctx.out_n, "its output")
    srcs = tuple(
        value(n, vc, v, f"input {i}")
        for i, (n, vc, v) in enumerate(zip(ctx.nodes, ctx.vcs, ctx.versions))
    )
    if create_graph and not stale:
        srcs = tuple(_with_history(n, p) for n, p in zip(ctx.nodes, ctx.parents))
        out = _with_history(ctx.out, ctx)
    cots = vjp(g, out, srcs, ctx.arg)
    if stale:
        stop = {id(g.node)} | {id(t.node) for t in (out, *srcs) if id(t.node) not in stale}
        for p, c in zip(ctx.parents, cots):
            bad = _reaches(c.node, stale, stop) if p is not None and c is not None else None
            if bad is not None:
                raise AutogradError(
                    f"backward: a tensor needed by {ctx.op.name} was modified in place after "
                    f"it was used ({bad}); clone it before changing it"
                )
    return tuple(cots)


def grad(
    outputs: Tensor | Sequence[Tensor],
    inputs: Tensor | Sequence[Tensor],
    grad_outputs: Any = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    allow_unused: bool | None = None,
) -> Any:
    """d(outputs)/d(inputs) without touching `.grad`, as `torch.autograd.grad`: a tuple
    with one gradient per input (None for an input that outputs do not depend on, which
    torch allows only with `allow_unused=True`). With `create_graph` the gradients are
    themselves differentiable (second derivatives)."""
    from anychip.frontend.tensor import Tensor

    outs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    ins = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    gos = grad_outputs if isinstance(grad_outputs, list | tuple) else [grad_outputs] * len(outs)
    retain = create_graph if retain_graph is None else retain_graph
    total: list[Tensor | None] = [None] * len(ins)
    for i, (out, go) in enumerate(zip(outs, gos, strict=True)):
        last = i == len(outs) - 1  # free the graph only after the last output used it
        got = _run(out, go, ins, False, retain or not last, create_graph)
        total = [a if b is None else b if a is None else a + b for a, b in zip(total, got)]
    if not allow_unused and any(g is None for g in total):
        raise AutogradError(
            "grad: one of the differentiated tensors appears to not have been used in the "
            "graph; set allow_unused=True if this is the desired behavior"
        )
    return tuple(total)


def backward(
    root: Tensor,
    gradient: Tensor | None = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
) -> None:
    """Accumulate d(root)/d(leaf) into each leaf's `.grad`, computed now with `root` itself
    in one schedule (as PyTorch computes them here): the forward values both need are
    computed once, and a later `root.realize()` or optimizer step finds them ready.
    Without `retain_graph` the graph is freed as in torch: a second backward through an
    op that saved tensors raises."""
    from anychip.frontend.tensor import Tensor, realize_together

    retain = create_graph if retain_graph is None else retain_graph
    # a pass shaped like one run before replays its plan (backward_cache.py)
    probe = backward_cache.probe(root) if gradient is None and not create_graph else None
    if probe is not None:
        if root.node.numel != 1:
            _seed(root, None)  # its error: an implicit gradient needs a scalar
        rec = backward_cache.lookup(probe)
        if rec is not None:
            backward_cache.replay(root, probe, rec, retain)
            return
    leaves = _run(root, gradient, None, True, retain, create_graph)
    if create_graph:
        return
    pairs = [(t, t.grad) for t in leaves if t is not None and t.grad is not None]
    rows: list[tuple[Tensor, Tensor]] = []  # kept as their rows (rowgrad.py)
    dense: list[tuple[Tensor, Tensor]] = []
    for leaf, g in pairs:
        (rows if rowgrad.eligible(g) else dense).append((leaf, g))
    found = [rowgrad.sources(g) for _, g in rows]
    made = [(Tensor._from_node(index), Tensor._from_node(values)) for index, values, _ in found]
    together = [root, *(g for _, g in dense), *(t for pair in made for t in pair)]
    if probe is None or not backward_cache.sighted(probe):
        realize_together(together)
    else:  # a second sighting: record the pass
        before = [t.node for t in together]
        scatters = [g.node for _, g in rows]
        with eager_cache.watching() as seen:
            realize_together(together)
        backward_cache.record(
            probe,
            seen,
            (root, before[0]),
            [(leaf, g, n) for (leaf, g), n in zip(dense, before[1:])],
            [
                (leaf, index, index_node, values, values_node, chain, scatter)
                for (leaf, _), (index, values), (index_node, values_node, chain), scatter in zip(
                    rows, made, found, scatters, strict=True
                )
            ],
        )
    for (_, g), (index, values), (_, _, chain) in zip(rows, made, found, strict=True):
        rowgrad.rebuild(g, index.node, values.node, chain)


def _seed(root: Tensor, gradient: Tensor | None, create_graph: bool = False) -> Tensor:
    from anychip.frontend.tensor import Tensor

    if not root.requires_grad:
        raise AutogradError(
            "backward: the tensor does not require grad and has no grad_fn "
            f"(shape {root.shape}, dtype {root.dtype.name}, device {root.device})"
        )
    if gradient is None:
        if root.numel() != 1:
            raise AutogradError(
                f"backward: grad can be implicitly created only for scalar outputs; got "
                f"shape {root.shape}, dtype {root.dtype.name}, device {root.device} "
                "(pass `gradient=`)"
            )
        gradient = Tensor._const(1.0, root.dtype, root.shape, root.device)
    elif not isinstance(gradient, Tensor):
        gradient = Tensor(gradient, dtype=root.dtype, device=root.device)
    if gradient.shape != root.shape:
        raise ShapeError(
            f"backward: gradient of shape {gradient.shape} does not match the "
            f"output's shape {root.shape} (output, gradient: {describe(root, gradient)})"
        )
    if create_graph:
        return gradient.to(root.dtype)
    return Tensor._from_node(gradient.node).to(root.dtype)


def _run(
    root: Tensor,
    gradient: Tensor | None,
    wanted: list[Tensor] | None,
    accumulate: bool,
    retain_graph: bool = True,
    create_graph: bool = False,
) -> list[Tensor | None]:
    from anychip.frontend.tensor import enable_grad, no_grad

    g0 = _seed(root, gradient, create_graph)
    results: dict[int, Tensor] = {}  # by id of a wanted leaf or record
    totals: dict[int, tuple[Tensor, Tensor]] = {}  # leaf id -> (leaf, its summed cotangent)
    # a wanted non-leaf is identified by its record now, a leaf by itself
    want = {id(w._ctx or w) for w in wanted} if wanted is not None else None

    def to_leaf(leaf: Tensor, c: Tensor) -> None:
        if leaf.requires_grad:
            got = totals.get(id(leaf))
            totals[id(leaf)] = (leaf, c if got is None else got[1] + c)

    order: list[Ctx] = []
    with enable_grad() if create_graph else no_grad():
        if root._ctx is None:  # a leaf differentiated by itself
            to_leaf(root, g0)
        else:
            # by record (records hash by identity); the hook and rule tables are asked only
            # when not empty (most backward passes have neither)
            grads: dict[Ctx, Tensor] = {root._ctx: g0}
            order = _order(root._ctx)
            pop, hooked, ruled = grads.pop, hooks.HOOKS, hooks.RULES
            for ctx in order:
                g = pop(ctx, None)
                if g is None:
                    continue
                if hooked:
                    g = call_hooks(ctx, g)
                if want is not None and id(ctx) in want:
                    results[id(ctx)] = g
                # a sparse lookup's own rule
                rule = None if create_graph or ctx.freed or not ruled else grad_rule(ctx)
                cots = _vjp(ctx, g, create_graph) if rule is None else (rule(g), None)
                for p, c in zip(ctx.parents, cots):
                    if c is None or p is None:
                        continue
                    if isinstance(p, Ctx):
                        got = grads.get(p)
                        grads[p] = c if got is None else got + c
                    else:
                        to_leaf(p, c)
        # a leaf's hooks see the total of this pass, and .grad gets it once (torch's order)
        leaves: list[Tensor | None] = []
        for key, (leaf, c) in totals.items():
            c = call_hooks(leaf, c)
            if want is None:
                old = leaf.grad
                # zero_grad(set_to_none=False) left a +0.0 constant: 0 + a row gradient is
                # the row gradient, exactly (a scatter into +0.0 never yields -0.0)
                fresh = old is None or (rowgrad.zero_constant(old, c) and rowgrad.eligible(c))
                leaf.grad = c if fresh else old + c  # type: ignore[operator]
                leaves.append(leaf)
            elif key in want:
                results[key] = c
    if not retain_graph:
        free(order)
    if wanted is None:
        return leaves  # the leaves whose .grad changed
    return [results.get(id(w._ctx or w)) for w in wanted]


def free(order: list[Ctx]) -> None:
    """Free the graph of a pass without retain_graph, as torch does: records of ops that
    saved values are marked (a second backward through them raises), and plain records
    forget their values (`_forget`)."""
    shapes: dict[tuple[Any, ...], Node] = {}  # one placeholder per shape for the pass
    for ctx in order:
        if ctx.op in SAVES:
            ctx.freed = True
        if type(ctx) is Ctx:
            _forget(ctx, shapes)


def _forget(ctx: Ctx, shapes: dict[tuple[Any, ...], Node]) -> None:
    """Drop the values a plain record kept, keeping their shapes, dtypes and devices: a
    freed record never reads them again, and the linear ops' rules (the ones a second
    backward may run) read only those. As torch frees saved tensors: the values' buffers
    can go, or be donated to an in-place update (runtime/donate.py). `shapes` holds the
    placeholders made so far (records of one pass share them: nothing reads their value)."""
    kept = []
    for n in (*ctx.nodes, ctx.out):
        key = (n.dtype, n.shape, n.device)
        hole = shapes.get(key)
        if hole is None:
            hole = shapes[key] = Node(Ops.CONST, n.dtype, n.shape, n.device, (), 0)
        kept.append(hole)
    ctx.out = kept.pop()
    ctx.nodes = tuple(kept)


class _Composite(Ctx):
    """A record whose derivative is its composite's own rule (see `composite`)."""

    __slots__ = ("vjp",)
    vjp: Any

    def rule(self) -> Any:
        return self.vjp


def composite(value: Tensor, srcs: tuple[Tensor, ...], vjp: Any, arg: Any) -> Tensor:
    """`value` (computed from srcs outside autograd) as one record whose derivative is
    `vjp(g, out, srcs, arg)`, a rule written like the primitives' (`ir/primitives.py`):
    for composites whose primitive-by-primitive derivative costs more than a direct one
    (a convolution's input gradient: shifted slices summed, not a window scatter). The
    record keeps srcs' values and versions as a primitive's does; srcs without
    requires_grad (saved intermediates) get no gradient."""
    from anychip.frontend.tensor import Tensor, is_grad_enabled

    out = Tensor._from_node(value.node)
    if is_grad_enabled() and any(s.requires_grad for s in srcs):
        out.requires_grad = True
        ctx = _Composite(
            Ops.MUL, srcs, tuple(t.node for t in srcs), arg, out
        )  # MUL: a record that saves its sources
        ctx.vjp = vjp
        out._ctx = ctx
    return out


# imported last: anychip.frontend.tensor imports this module (directly or not), so the
# module object may be half made here; the functions above read `_tensor.X` when called,
# where a local import would cost about a microsecond a call (hundreds per training step)
from anychip.frontend import backward_cache, tensor as _tensor  # noqa: E402
