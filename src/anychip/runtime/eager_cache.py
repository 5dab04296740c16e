"""The eager cache: a graph shaped like one realised before (the same ops, shapes, dtypes and
devices over other buffers; runtime scalars of other values) replays that graph's recorded
plan (`dispatch.Plan`) on its own leaves, so an op seen before is never scheduled or
compiled again. `structure` computes the key in one iterative walk; `cached_realize` is
the door `runtime.realize.realize` goes through.

Threads: the cache is shared by all threads (plans are immutable once stored, and stores
are under a lock).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from anychip.ir.ops import Node, Ops, runtime_scalar
from anychip.runtime.device import Buffer
from anychip.runtime.dispatch import LAUNCH, Plan, Recorder, _walked, make_plan, recording

CACHE_LIMIT = 4096  # structural keys kept; the cache is cleared when full (plans are cheap)


@dataclass
class _Entry:
    plan: Plan  # outputs: the roots' buffers, then other nodes the kernels materialised
    positions: list[int]  # for each plan output, the node's position in the walk order


_CACHE: dict[tuple[Any, ...], _Entry] = {}
_CACHE_LOCK = threading.Lock()  # stores and clears; lookups are single dict reads
_stats = {"hits": 0, "misses": 0}  # approximate under threads (unlocked counters)
_LOCAL = threading.local()  # .watch: a list this thread's realisations append their walk to
# realize.buffer_of, set by runtime/realize.py: `structure` reads its answer inline
_BUFFER_OF: list[Callable[[Node], Buffer | None] | None] = [None]


def structure(
    roots: list[Node], buffer_of: Callable[[Node], Buffer | None]
) -> tuple[tuple[Any, ...], list[Buffer], list[Node], set[int]] | None:
    """The structural key of the unrealised graph above `roots`, the realised leaves' buffers
    (the plan's inputs, in first-seen order), the nodes in key order and the key positions of
    leaves. None when the graph moves data between devices (not cached)."""
    if len(roots) == 1:
        one = _one_op(roots[0], buffer_of)
        if one is not None:
            return one
    key: list[Any] = []
    order: list[Node] = []
    # node -> key position; -1 while its sources are walked. Nodes and buffers hash by
    # identity (eq=False dataclasses): keyed by themselves, no id() call per lookup. The
    # dicts go with this frame, before donation counts the nodes' references.
    index: dict[Node, int] = {}
    leaves: list[Buffer] = []
    leaf_slot: dict[Buffer, int] = {}
    leaf_pos: set[int] = set()
    stack = roots[::-1]
    # iterative post-order (deep graphs are fine); the hot path of every eager realise, so
    # bound methods are hoisted out of the loop and sources are looked up by `map` (no
    # comprehension frame, no len() calls)
    pop, push, seen, emit, place = stack.pop, stack.append, index.get, key.append, order.append
    got = index.__getitem__
    # a leaf's buffer is `buffer_of(n)`; realize's (the one caller on this path) is read
    # inline, a call per node less
    inline = buffer_of is _BUFFER_OF[0]
    BUFFER, COPY, CONST = Ops.BUFFER, Ops.COPY, Ops.CONST  # locals: no enum lookups
    k = 0  # len(key), counted
    while stack:
        n = pop()
        pos = seen(n)
        if pos is None:
            op = n.op
            buf = n.arg if op is BUFFER else (n.realised if inline else buffer_of(n))
            if buf is not None:  # a leaf: which buffer slot, not how it was computed
                j = leaf_slot.get(buf)
                if j is None:
                    j = leaf_slot[buf] = len(leaves)
                    leaves.append(buf)
                index[n] = k
                leaf_pos.add(k)
                emit((j, n.dtype, n.shape, n.device))
                place(n)
                k += 1
                continue
            srcs = n.srcs
            if srcs:  # its sources first: visited again once they are placed
                if op is COPY:
                    return None
                index[n] = -1
                push(n)
                for s in srcs:
                    if s not in index:
                        push(s)
                continue
        elif pos != -1:
            continue
        # placed now: a node without sources at once (constants), others on their return
        index[n] = k
        op, arg = n.op, n.arg
        if op is CONST and runtime_scalar(n):  # a launch argument, not structure
            arg = "runtime scalar"
        elif type(arg) is float:
            arg = arg.hex()  # 0.0 vs -0.0, NaN
        emit((op, n.dtype, n.shape, n.device, arg, tuple(map(got, n.srcs))))
        place(n)
        k += 1
    key.append(tuple(map(got, roots)))
    return tuple(key), leaves, order, leaf_pos


def _one_op(
    root: Node, buffer_of: Callable[[Node], Buffer | None]
) -> tuple[tuple[Any, ...], list[Buffer], list[Node], set[int]] | None:
    """`structure` of the commonest eager graph, one op on buffers (`(a + b).realize()`),
    without the general walk; None for any other graph."""
    srcs = root.srcs
    if not srcs or root.op is Ops.COPY or any(s.op is not Ops.BUFFER for s in srcs):
        return None
    if buffer_of(root) is not None:
        return None
    leaves: list[Buffer] = []
    parts = []
    for s in srcs:
        j = next((i for i, b in enumerate(leaves) if b is s.arg), len(leaves))
        if j == len(leaves):
            leaves.append(s.arg)
        parts.append((j, s.dtype, s.shape))
    arg = root.arg.hex() if type(root.arg) is float else root.arg
    key = ("one op", root.op, root.dtype, root.shape, root.device, arg, tuple(parts))
    return key, leaves, [*srcs, root], set(range(len(srcs)))


def cached_realize(
    nodes: list[Node],
    slow: Callable[[list[Node]], list[Buffer]],
    buffer_of: Callable[[Node], Buffer | None],
    remember: Callable[[Node, Buffer], None],
) -> list[Buffer]:
    """realize(nodes) through the structural cache: a graph shaped like one realised before
    replays that plan on its own leaves; otherwise `slow` (schedule, compile, launch) runs
    and its launches become the plan for next time. `remember(node, buf)` records that
    buf holds node's value."""
    if len(nodes) == 1 and nodes[0].op is Ops.BUFFER:  # already a buffer: nothing to run
        return [nodes[0].arg]
    st = structure(nodes, buffer_of)
    if st is None:
        return slow(nodes)
    key, leaves, order, leaf_pos = st
    watch = getattr(_LOCAL, "watch", None)
    if watch is not None:  # frontend/backward_cache.py records what this realisation ran
        watch.append(st)
    try:
        entry = _CACHE.get(key)
    except TypeError:  # an unhashable op argument: not cacheable
        with _walked(None):
            return slow(nodes)
    if entry is not None:
        _stats["hits"] += 1
        try:
            bufs = entry.plan.run(leaves, order)
        except KeyboardInterrupt as e:  # what was computed stays computed (see Plan.run)
            env = getattr(e, "anychip_plan_env", [])
            for pos, slot in zip(entry.positions, entry.plan.outputs):
                if slot < len(env) and pos not in leaf_pos:
                    remember(order[pos], env[slot])
            raise
        for pos, buf in zip(entry.positions, bufs):
            if pos not in leaf_pos:
                remember(order[pos], buf)
        return bufs[: len(nodes)]
    _stats["misses"] += 1
    with recording() as rec, _walked(rec):
        out = slow(nodes)
    _store(key, rec, leaves, order, leaf_pos, nodes, out, buffer_of)
    return out


def _store(
    key: tuple[Any, ...],
    rec: Recorder,
    leaves: list[Buffer],
    order: list[Node],
    leaf_pos: set[int],
    nodes: list[Node],
    out: list[Buffer],
    buffer_of: Callable[[Node], Buffer | None],
) -> None:
    """Cache the recorded launches as the plan for `key` (if they are replayable)."""
    if rec.host_reads or any(s.kind is not LAUNCH for s in rec.steps):
        return
    where = {id(n): i for i, n in enumerate(order)}
    positions = [where[id(n)] for n in nodes]
    extra = [
        (i, b)
        for i, n in enumerate(order)
        if i not in leaf_pos
        and (b := buffer_of(n)) is not None
        and id(n) not in set(map(id, nodes))
    ]
    plan = make_plan(rec, leaves, [*out, *(b for _, b in extra)], where)
    if plan.consts:  # it read a buffer that is not a leaf: don't guess, don't cache
        return
    if any(s.kind is LAUNCH and s.out < len(leaves) for s in plan.steps):
        return  # it wrote over a leaf it could not check again at a replay

    with _CACHE_LOCK:
        if len(_CACHE) >= CACHE_LIMIT:
            _CACHE.clear()
        _CACHE[key] = _Entry(plan, positions + [i for i, _ in extra])


@contextlib.contextmanager
def watching() -> Iterator[list[tuple[Any, ...]]]:
    """The walks (`structure`'s answers) of this thread's realisations inside the block,
    for callers that record what a realisation ran (frontend/backward_cache.py)."""
    seen: list[tuple[Any, ...]] = []
    _LOCAL.watch = seen
    try:
        yield seen
    finally:
        _LOCAL.watch = None


def watched_plan(
    seen: list[tuple[Any, ...]],
) -> tuple[_Entry, list[Buffer], list[Node], set[int]] | None:
    """The cached entry of the one realisation `watching` saw, with its walk's leaves,
    nodes and leaf positions; None when there were several, or its plan is not only
    launches on the plan's inputs (constants, a jit plan's own buffers, host steps)."""
    if len(seen) != 1:
        return None
    key, leaves, order, leaf_pos = seen[0]
    try:
        entry = _CACHE.get(key)
    except TypeError:  # an unhashable op argument: never cached
        return None
    if entry is None:
        return None
    plan = entry.plan
    if plan.consts or plan.own or any(s.kind is not LAUNCH for s in plan.steps):
        return None
    return entry, leaves, order, leaf_pos


def clear_cache() -> None:
    """Forget every cached plan (compiled programs stay in the backends' caches)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def cache_info() -> dict[str, int]:
    """{'hits', 'misses', 'size'} of the eager structural cache."""
    return {**_stats, "size": len(_CACHE)}
