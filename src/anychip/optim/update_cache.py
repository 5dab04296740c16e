"""The update cache: an optimizer step shaped like one taken before replays that step's
recorded plan, without building the update's graph again (as frontend/backward_cache.py
does for backward passes).

`Optimizer.step()` builds each parameter's update as a lazy graph (`_update`), assigns it
in place, then computes every update in one schedule through the eager cache. In a
training loop the parameters, their gradients and the hyperparameters have the same
shapes at every step, so the graph and the plan are the same too. The key is the
structure of what the update reads (`eager_cache.structure` over the parameters, their
gradients, which of those are row gradients, and the hyperparameter tensors), the
optimizer's class and its groups' other hyperparameters by value. A step is recorded at
its second sighting, after the ordinary step ran: the plan, where each of its inputs sits
among what the key walked, and which output is each parameter's new value.

A replay runs the plan and assigns each new value in place (`Tensor._assign`, as the
ordinary step: the version counter, views and jit hooks see the same). A parameter's
update writes into its own buffer, as the ordinary step's does, only while nothing else
holds its old value (no other tensor, view or saved graph: their references are counted),
else into a new buffer.

Only optimizers that say their `_update` of a group reads nothing but those
(`Optimizer._cacheable`, with the hyperparameters it reads as tensors in `_TENSOR_HYPERS`)
take it, and only in the plain case:
no closure, no per-parameter state, parameters that are realised bases (not views), dense
gradients realised or row gradients, one device, nothing recording or watching launches.
`ANYCHIP_BACKWARD_CACHE=0` turns it off with the backward cache.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from anychip.frontend import backward_cache, rowgrad
from anychip.frontend.tensor import Tensor, no_grad
from anychip.ir.ops import Node, Ops
from anychip.runtime import dispatch, eager_cache
from anychip.runtime.device import Buffer
from anychip.runtime.realize import buffer_of

if TYPE_CHECKING:
    from anychip.optim.optimizer import Optimizer

_RECORDS = backward_cache.Records()


@dataclass
class Probe:
    """A step's key, the parameters it updates (those with a gradient), and the walk of
    what the update reads (nodes, leaf buffers)."""

    key: tuple[Any, ...]
    params: list[Tensor]
    order: list[Node]
    leaves: list[Buffer]
    olds: list[Buffer]  # each parameter's buffer before the step


@dataclass(frozen=True)
class _Record:
    plan: dispatch.Plan
    inputs: list[int]  # per plan input, the walk's leaf it is
    width: int
    literals: list[tuple[int, Node]]  # (plan walk position, constant the update made)
    outs: list[int]  # per updated parameter, the plan output with its new value
    donors: list[tuple[int, int]]  # (step, updated parameter) of each donating step


def probe(opt: Optimizer) -> Probe | None:
    """The key of `opt.step()` now, or None where the step is not the plain case."""
    cls = type(opt)
    if not backward_cache._ON[0] or dispatch._observed():
        return None
    if any(opt.state.get(p) for p in opt.state):
        return None
    tensor_hypers = opt._TENSOR_HYPERS
    roots: list[Node] = []
    params: list[Tensor] = []
    shape: list[Any] = [cls]
    for group in opt.param_groups:
        if not opt._cacheable(group):
            return None
        hypers = tuple((k, v) for k, v in group.items() if k != "params" and k not in tensor_hypers)
        flags = []
        for p in group["params"]:
            g = p.grad
            if g is None:
                flags.append(0)
                continue
            if p._view is not None or p.node.op is not Ops.BUFFER or g.is_sparse:
                return None
            rows = rowgrad.scatter_parts(g)  # what an update adding rows reads
            if rows is None and g.node.op is not Ops.BUFFER:
                return None
            flags.append(1 if rows is None else 2)
            roots += (p.node, g.node) if rows is None else (p.node, *rows)
            params.append(p)
        for name in tensor_hypers:  # made anew when its value changed (Optimizer._hyper)
            roots.append(opt._hyper(group, name).node)
        shape.append((hypers, tuple(flags)))
    if not params:
        return None
    st = eager_cache.structure(roots, buffer_of)
    if st is None:
        return None
    skey, leaves, order, _ = st
    return Probe((skey, tuple(shape)), params, order, leaves, [p.node.arg for p in params])


def lookup(p: Probe) -> _Record | None:
    rec: _Record | None = _RECORDS.get(p.key)
    return rec


def sighted(p: Probe) -> bool:
    """Whether to record p's step this time: at its second sighting."""
    return _RECORDS.sighted(p.key)


def _sole(p: Tensor, order: list[Node], leaves: list[Buffer]) -> bool:
    """Whether nothing but `p` holds its value: its node only by p and the walk's order
    (and this call), its buffer only by that node and the walk's leaves (and this call)."""
    node = p.node
    # references: p.node, `order`, `node` here, getrefcount's argument
    if sys.getrefcount(node) != 4:
        return False
    # references: node.arg, `leaves`, `olds`, getrefcount's argument
    return sys.getrefcount(node.arg) == 4


def replay(p: Probe, rec: _Record) -> None:
    """Run the recorded plan and assign each parameter its new value, as `step` would."""
    _RECORDS.stats["hits"] += 1
    gifts = frozenset(at for at, k in rec.donors if _sole(p.params[k], p.order, p.leaves))
    nodes: list[Any] = [None] * rec.width
    for cpos, node in rec.literals:
        nodes[cpos] = node
    leaves = p.leaves
    bufs = rec.plan.run([leaves[i] for i in rec.inputs], nodes, gifts)
    with no_grad():
        for param, k in zip(p.params, rec.outs):
            n = param.node
            value = Node(Ops.BUFFER, n.dtype, n.shape, n.device, (), bufs[k])
            param._assign(Tensor._from_node(value), "step")


def record(p: Probe, seen: list[tuple[Any, ...]], before: list[Node]) -> None:
    """Store the step just run, from its one realisation `seen`, given each updated
    parameter's node before that realisation (its lazy new value)."""
    watched = eager_cache.watched_plan(seen)
    if watched is None:
        return
    entry, leaves_c, order_c, _ = watched
    plan = entry.plan
    slot = {id(b): i for i, b in enumerate(p.leaves)}
    inputs = [slot.get(id(b)) for b in leaves_c]
    if any(i is None for i in inputs):
        return
    walked = {id(n) for n in p.order}
    literals = []
    for s in plan.steps:
        for cpos, _ in s.scalars:
            if cpos < 0:
                continue
            if id(order_c[cpos]) in walked:  # a runtime scalar of what the key walked
                return
            literals.append((cpos, order_c[cpos]))
    out_of = {id(order_c[cpos]): k for k, cpos in enumerate(entry.positions)}
    outs = [out_of.get(id(n)) for n in before]
    if any(k is None for k in outs):
        return
    # a donating step writes into an input: which parameter's buffer that is
    owner = {id(b): k for k, b in enumerate(p.olds)}
    donors = []
    for at, s in enumerate(plan.steps):
        if s.checks:
            if s.donor >= len(leaves_c):
                return
            k = owner.get(id(leaves_c[s.donor]))
            if k is None:
                return
            donors.append((at, k))
    # the walk-order list a replay passes: the recorded constants, None elsewhere (a
    # donation check reading None fails: only the steps chosen in `replay` donate)
    width = len(order_c)
    found = [k for k in outs if k is not None]
    rec = _Record(plan, [i for i in inputs if i is not None], width, literals, found, donors)
    _RECORDS.store(p.key, rec)


def clear_cache() -> None:
    _RECORDS.clear()


def cache_info() -> dict[str, int]:
    """{'hits', 'records', 'size'} of the update cache."""
    return _RECORDS.info()
