"""Buffer donation: a kernel whose output replaces a realised value that nothing can read
afterwards writes into that value's buffer instead of a new one (docs/donation.md).

Two questions, asked apart: *may* this kernel write over input j (`donor`, from the kernel
alone: each output element reads input j's element at the same place, or j is a scatter's
base), and *can* anything still read input j's old value (`unreferenced`, from reference
counts: the node and its buffer are held only by the graph being computed). An optimizer
step (`p.sub_(lr * g)`, a row scatter into a table) then updates in place, while an alias
kept alive (`old = p.clone()` unrealised, a value saved for backward) keeps the copy.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from anychip.ir.kernel import KernelKind
from anychip.ir.ops import ELEMENTWISE, Node, Ops

# Donation on or off (ANYCHIP_DONATE=0: every kernel writes a new buffer, as before).
ENABLED = os.environ.get("ANYCHIP_DONATE", "1") != "0"
_stats = {"donated": 0}


def donated_count() -> int:
    """How many launches wrote into a donated buffer (process-wide; tests and benches)."""
    return _stats["donated"]


def count(n: int = 1) -> None:
    _stats["donated"] += n


def donors(ast: Node, kind: KernelKind) -> tuple[int, ...]:
    """The inputs j (PARAM j of a kernel's `ast`) whose buffer the output may be written
    into. A SCATTER's base when nothing else in the kernel reads it (the indexed writes
    then touch only their rows); an ELEMENTWISE kernel's inputs of the output's shape and
    dtype read only through elementwise ops (output element i reads input element i
    alone, before writing it).

    >>> import anychip as ac
    >>> from anychip.runtime.realize import plan
    >>> a, b = ac.ones(4).realize(), ac.ones(2, 4).realize()
    >>> item = plan([(a * 2 + b[1]).node])[0]
    >>> js = donors(item.kernel.ast, item.kernel.kind)
    >>> [item.ins[j] is a.node.arg for j in js]  # b is read through a slice: only a qualifies
    [True]
    """
    if ast.op is Ops.SCATTER_ADD and kind is KernelKind.SCATTER:
        base = scatter_base(ast)
        if base is None or base.dtype != ast.dtype or base.numel != ast.numel:
            return ()
        j = base.arg
        return () if _reads_param(ast.srcs[1:], j) else (int(j),)
    if kind is not KernelKind.ELEMENTWISE or ast.op not in ELEMENTWISE:
        return ()
    clean: dict[int, Node] = {}  # PARAMs reached through elementwise ops only
    dirty: set[int] = set()  # PARAM indices reached through anything else
    stack: list[tuple[Node, bool]] = [(ast, True)]
    seen: set[tuple[int, bool]] = set()
    while stack:
        n, ok = stack.pop()
        if (id(n), ok) in seen:
            continue
        seen.add((id(n), ok))
        if n.op is Ops.PARAM:
            if ok:
                clean[n.arg] = n
            else:
                dirty.add(n.arg)
            continue
        keep = ok and n.op in ELEMENTWISE and n.shape == ast.shape
        stack.extend((s, keep) for s in n.srcs)
    return tuple(
        int(j)
        for j in sorted(clean)
        if j not in dirty and clean[j].dtype == ast.dtype and clean[j].shape == ast.shape
    )


def scatter_base(ast: Node) -> Node | None:
    """The PARAM a scatter kernel's base is, seen through reshapes (which keep the
    row-major order of its elements: `index_put_(..., accumulate=True)` scatters into
    rows of the flattened tensor), or None."""
    base = ast.srcs[0]
    while base.op is Ops.RESHAPE:
        base = base.srcs[0]
    return base if base.op is Ops.PARAM else None


def _reads_param(roots: tuple[Node, ...], j: Any) -> bool:
    stack, seen = list(roots), set()
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if n.op is Ops.PARAM and n.arg == j:
            return True
        stack.extend(n.srcs)
    return False


def refs(x: object) -> int:
    """References to `x` from outside this call (sys.getrefcount less its argument's)."""
    return sys.getrefcount(x) - 2  # the parameter and getrefcount's own argument


Checks = tuple[tuple[Node, int], ...]  # nodes whose references a replay checks, and counts


def choose(
    items: list[Any], roots: list[Node], buffer_of: Any, held: int | None
) -> dict[int, tuple[int, Checks]]:
    """{item position: (input j, checks)} for the scheduled items (passes/schedule.py
    ScheduleItem) that may write their output into input j's buffer: `donors` allows it,
    the input is a realised value of the output's size and dtype, no later item reads its
    buffer and no reshape shares it, and nothing outside the graph above `roots` holds its
    node, its buffer, or an unrealised node that reads it. `held`: how many lists of the
    caller's walk hold each node and leaf buffer besides (None: don't donate). `checks`
    are the input's node and the unrealised nodes reading it, each with how often the
    graph's nodes list it as a source: a replay of the same graph donates when those
    counts are again all their references (`clear`)."""
    if held is None or not ENABLED:
        return {}
    cands: list[tuple[int, int]] = []
    for k, it in enumerate(items):
        kernel = it.kernel
        if kernel is not None and kernel.kind in (KernelKind.ELEMENTWISE, KernelKind.SCATTER):
            cands += [(k, j) for j in donors(kernel.ast, kernel.kind)]
    if not cands:
        return {}
    last, shared, readers = _uses(items, buffer_of)
    outs = {id(it.out) for it in items}
    graph = _Graph(roots, buffer_of)
    gifts: dict[int, tuple[int, Checks]] = {}
    taken: set[int] = set()
    for k, j in cands:
        if k in gifts:
            continue  # an earlier input of this kernel was given
        it = items[k]
        m = it.inputs[j]
        b = buffer_of(m)
        if b is None or id(b) in taken or id(b) in shared or last.get(id(b)) != k:
            continue
        if b.size != it.out.numel or b.dtype != it.out.dtype or b.device != it.out.device:
            continue
        # holders of m: the graph's nodes reading it, the items listing it, the walk's
        # lists, `graph.nodes` (m is a leaf: not there) and the local `m` here
        if refs(m) != graph.count(m) + readers[id(m)] + held + 1:
            continue
        # holders of b: m, the walk's leaf list and the local `b` here
        if refs(b) != 1 + held + 1:
            continue
        ancestors = graph.private_readers(m, outs, held)
        if ancestors is None:
            continue
        gifts[k] = (j, ((m, graph.count(m)), *ancestors))
        taken.add(id(b))
    return gifts


def _uses(items: list[Any], buffer_of: Any) -> tuple[dict[int, int], set[int], dict[int, int]]:
    """By id: the last item reading each buffer, the buffers a reshape (kernel None) hands
    on, and how many items list each node as an input. (A function of its own: its loop
    variables must not hold a node or buffer while `choose` counts references.)"""
    last: dict[int, int] = {}
    shared: set[int] = set()
    readers: dict[int, int] = {}
    for k, it in enumerate(items):
        for n in it.inputs:
            readers[id(n)] = readers.get(id(n), 0) + 1
            b = buffer_of(n)
            if b is not None:
                last[id(b)] = k
                if it.kernel is None:
                    shared.add(id(b))
    return last, shared, readers


class _Graph:
    """The unrealised graph above some roots: each node once (`nodes`), how often each node
    appears among their sources (`counts`) and who reads whom, by position (`parents`)."""

    def __init__(self, roots: list[Node], buffer_of: Any) -> None:
        self.nodes: list[Node] = []
        self.counts: dict[int, int] = {}
        self.parents: dict[int, list[int]] = {}
        at: dict[int, int] = {}
        stack = list(roots)
        while stack:
            n = stack.pop()
            if id(n) in at or buffer_of(n) is not None:
                continue
            at[id(n)] = len(self.nodes)
            self.nodes.append(n)
            for s in n.srcs:
                self.counts[id(s)] = self.counts.get(id(s), 0) + 1
                self.parents.setdefault(id(s), []).append(at[id(n)])
                stack.append(s)
        del n

    def count(self, n: Node) -> int:
        return self.counts.get(id(n), 0)

    def private_readers(self, m: Node, outs: set[int], held: int) -> Checks | None:
        """The unrealised nodes reading `m` (through others) that stay unrealised after
        the schedule (not in `outs`), with their counts, if each is held only by this
        graph (nothing can recompute from m's buffer later); else None."""
        todo = list(self.parents.get(id(m), ()))
        seen: set[int] = set()
        found: list[tuple[Node, int]] = []
        while todo:
            i = todo.pop()
            if i in seen:
                continue
            seen.add(i)
            x = self.nodes[i]
            if id(x) in outs:
                continue  # computed now: realised, it forgets its sources
            # holders: its readers in the graph, `self.nodes`, the walk's list, local `x`
            if refs(x) != self.count(x) + 1 + held + 1:
                return None
            found.append((x, self.count(x)))
            todo.extend(self.parents.get(id(x), ()))
        return tuple(found)


def sole(t: Any) -> bool:
    """Whether tensor `t`'s realised value is held by `t` alone: its node is a BUFFER node
    referenced only by `t`, and the buffer only by that node (no view, alias, saved value,
    lazy reader or other tensor sharing it), and no capture records this thread's launches.
    A jit replay then writes `t`'s new value into that buffer."""
    from anychip.runtime.dispatch import walk_holders  # dispatch imports this module

    return ENABLED and walk_holders() is not None and _held_alone(t, None)


def sole_steps(gifts: list[tuple[int, int, int]], slots: list[Any]) -> frozenset[int]:
    """The steps of `gifts` ((step, slot index, buffer size)) whose slot tensor is `sole`
    and whose buffer has that size: a jit replay's donations, the thread checked once."""
    from anychip.runtime.dispatch import walk_holders  # dispatch imports this module

    if not gifts or not ENABLED or walk_holders() is None:
        return frozenset()
    return frozenset([at for at, i, size in gifts if _held_alone(slots[i], size)])


def _held_alone(t: Any, size: int | None) -> bool:
    n = t.node
    if n.op is not Ops.BUFFER or refs(n) != 2:  # t's slot and the local `n`
        return False
    b = n.arg
    return refs(b) == 2 and (size is None or b.size == size)  # n's arg and the local `b`


def clear(nodes: list[Node], checks: tuple[tuple[int, int], ...], buf: Any) -> bool:
    """At a replay of the eager cache's plan (runtime/dispatch.py): whether the checked
    nodes (by position in the replayed graph's walk `nodes`) are again held only by the
    graph (their counts) and the walk, and `buf` (the donor input's buffer) only by its
    node, the walk's leaf list and the replay's slots."""

    if _dispatch.walk_holders() is None:
        return False
    for pos, n in checks:
        if refs(nodes[pos]) != n + 1:  # + the walk's list
            return False
    return refs(buf) == 4  # its node, the leaf list, the replay's slots, the local `buf`


# imported last: dispatch imports this module, so the module object may be half made here;
# `clear` reads `_dispatch.walk_holders` when called (a local import costs ~1 us a call)
from anychip.runtime import dispatch as _dispatch  # noqa: E402
