"""Autograd's side tables: gradient hooks on tensors (`register_hook`, `retain_grad`) and the
freeing of a graph after `backward` without `retain_graph`, as in PyTorch.

Tensors have fixed slots, so hooks live here keyed by the tensor's id (with a weak
reference to drop the entry when the tensor dies); a freed op is marked in its record.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from anychip.ir.ops import Ops

if TYPE_CHECKING:
    from anychip.frontend.autograd import Ctx
    from anychip.frontend.tensor import Tensor

Hook = Callable[["Tensor"], "Tensor | None"]

# the ops whose backward reads saved values; the linear ones (add, sum, reshape, ...) keep
# nothing, and torch lets a graph of only those run backward twice
SAVES = frozenset(Ops) - {
    Ops.ADD,
    Ops.NEG,
    Ops.SUM,
    Ops.CUMSUM,
    Ops.CAST,
    Ops.COPY,
    Ops.RESHAPE,
    Ops.PERMUTE,
    Ops.EXPAND,
    Ops.PAD,
    Ops.SHRINK,
    Ops.FLIP,
}

# hooks of a leaf are kept by the tensor, of a computed tensor by its record (Ctx): the
# gradient backward computes for the record is the tensor's
HOOKS: dict[int, tuple[weakref.ref[Any], dict[int, Hook]]] = {}
_NEXT = [0]


class RemovableHandle:
    """What `register_hook` returns: `.remove()` takes the hook off again."""

    def __init__(self, tensor_id: int, key: int) -> None:
        self._tensor_id, self._key = tensor_id, key

    def remove(self) -> None:
        entry = HOOKS.get(self._tensor_id)
        if entry is not None:
            entry[1].pop(self._key, None)
            if not entry[1]:  # none left: backward passes need not look (backward_cache.py)
                HOOKS.pop(self._tensor_id, None)


def register_hook(t: Tensor, hook: Hook) -> RemovableHandle:
    """Call `hook(grad)` whenever a backward pass computes t's gradient; a hook that
    returns a tensor replaces the gradient."""
    owner: Any = t._ctx if t._ctx is not None else t
    tid = id(owner)
    entry = HOOKS.get(tid)
    if entry is None or entry[0]() is not owner:
        # the table bound to the callback: it may run at exit, after module globals go
        ref = weakref.ref(owner, lambda _, table=HOOKS: table.pop(tid, None))
        entry = HOOKS[tid] = (ref, {})
    _NEXT[0] += 1
    entry[1][_NEXT[0]] = hook
    return RemovableHandle(tid, _NEXT[0])


def call_hooks(t: Tensor | Ctx, grad: Tensor) -> Tensor:
    """grad after the hooks of t (a leaf tensor or a record), in the order registered."""
    entry = HOOKS.get(id(t))
    if entry is None or entry[0]() is not t:
        return grad
    for hook in list(entry[1].values()):
        out = hook(grad)
        if out is not None:
            grad = out
    return grad


# records whose gradient for their first source is made by a function instead of the
# primitive's rule: a sparse lookup's GATHER gives its table a row-sparse gradient
RULES: dict[int, tuple[weakref.ref[Any], Callable[[Tensor], Tensor]]] = {}


def set_grad_rule(ctx: Ctx, rule: Callable[[Tensor], Tensor]) -> None:
    """Backward gives ctx's first source `rule(g)` (g: the output's cotangent) and its other
    sources nothing (`frontend/sparse.py`'s lookups; graphs built with create_graph use
    the primitive's own rule)."""
    key = id(ctx)
    RULES[key] = (weakref.ref(ctx, lambda _, table=RULES: table.pop(key, None)), rule)


def grad_rule(ctx: Ctx) -> Callable[[Tensor], Tensor] | None:
    entry = RULES.get(id(ctx))
    return entry[1] if entry is not None and entry[0]() is ctx else None


def retain_grad(t: Tensor) -> None:
    """Keep a non-leaf tensor's gradient in `.grad` after backward (a hook that stores it)."""
    if t.is_leaf:
        return

    def store(g: Tensor) -> None:
        t.grad = g if t.grad is None else t.grad + g

    register_hook(t, store)
