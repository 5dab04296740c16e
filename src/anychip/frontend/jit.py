"""`anychip.jit`: capture a function's kernel launches on its first call and replay them on
later calls with the same signature, skipping graph building, scheduling and compiling.

The capture is `runtime.dispatch`'s launch record; this module maps the function's tensors
(arguments, module parameters, optimizer state, gradients) onto the record's buffers.

Threads: a capture records only its own thread's launches, in-place updates and random
draws, so threads each running their own models and jitted functions do not disturb each
other; a jitted function's captures are shared by the threads calling it (under a lock).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from anychip.frontend import random as rng, rowgrad, tensor as tmod, views
from anychip.frontend.tensor import Tensor, is_grad_enabled
from anychip.ir.ops import Node, Ops
from anychip.runtime import device as devmod, dispatch, donate, realize as rt
from anychip.runtime.dispatch import JitError, Plan

R = TypeVar("R")
SIGNATURES_PER_FUNCTION = 64  # captures kept per function; all are dropped when full


def _flatten(x: Any, slots: list[Tensor], seen: dict[int, int]) -> Any:
    """A hashable description of `x`'s structure and non-tensor values; tensors found are
    appended to `slots` (each object once) and described by their slot index."""
    if isinstance(x, Tensor):
        return _flatten_all((x,), slots, seen)[0]
    t = type(x)
    if t is tuple or t is list:
        return (t, _flatten_all(x, slots, seen))
    if t is dict:
        return (dict, tuple(x), _flatten_all(x.values(), slots, seen))
    if t is float:
        return (float, x.hex())  # 0.0 and -0.0 differ; NaN equals NaN
    flat = getattr(x, "__jit_flatten__", None)
    if flat is not None:  # a batch holding tensors (anychip.rec's KeyedJaggedTensor)
        return (t, _flatten(flat(), slots, seen))
    members = getattr(x, "_members", None)
    if members is not None:  # an nn.Module
        names, tensors, modes = members()  # parameters, then buffers
        return ("module", id(x), names, _flatten_all(tensors, slots, seen), modes)
    if hasattr(x, "param_groups") and hasattr(x, "state"):  # an optimizer
        held, hypers = x.jit_hypers() if hasattr(x, "jit_hypers") else (frozenset(), [])
        shown = [
            {k: _Live(v) if (i, k) in held else v for k, v in g.items()}
            for i, g in enumerate(x.param_groups)
        ]
        groups = _flatten(shown, slots, seen)
        state = tuple(
            (_flatten(p, slots, seen), _flatten(s, slots, seen)) for p, s in x.state.items()
        )
        return ("optimizer", id(x), groups, state, _flatten_all(hypers, slots, seen))
    try:
        hash(x)
    except TypeError:
        return ("object", id(x))  # unhashable: the same object, whatever its contents
    return (t, x)


class _Live:
    """A hyperparameter an optimizer reads from a tensor it refreshes before each call
    (`Optimizer.jit_hypers`): equal to any other, so its value is out of the signature, but
    `_values` finds it, so a function that changes it (a scheduler stepped inside) is not
    replayed."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Live)

    def __hash__(self) -> int:
        return 0


def _values(structure: Any) -> Any:
    """The `_Live` values in `structure`, in order."""
    if type(structure) is _Live:
        return (structure.value,)
    if type(structure) is tuple:
        return tuple(v for x in structure for v in _values(x))
    return ()


def _flatten_all(xs: Iterable[Any], slots: list[Tensor], seen: dict[int, int]) -> tuple[Any, ...]:
    """`_flatten` of each of `xs`; a dense tensor (most items) without a call of its own."""
    out: list[Any] = []
    for x in xs:
        if isinstance(x, Tensor) and not x.is_sparse:
            j = seen.get(id(x))
            if j is None:
                j = seen[id(x)] = len(slots)
                slots.append(x)
            out.append(j)
        elif isinstance(x, Tensor):  # a row-sparse gradient: its indices and values
            parts = _flatten_all(x._parts(), slots, seen)  # type: ignore[attr-defined]
            out.append(("sparse", x.shape, x.is_coalesced(), parts))  # type: ignore[attr-defined]
        else:
            out.append(_flatten(x, slots, seen))
    return tuple(out)


def _slot_key(slots: list[Tensor]) -> tuple[Any, ...]:
    """Per slot: shape, dtype, device, requires_grad, and which earlier slot shares its
    buffer (aliasing changes which buffer a replay must read)."""
    owner: dict[int, int] = {}
    key = []
    for i, t in enumerate(slots):
        n = t.node
        if n.op is not Ops.BUFFER:
            t.realize()
            n = t.node
        key.append((n.shape, n.dtype, n.device, t.requires_grad, owner.setdefault(id(n.arg), i)))
    return tuple(key)


_NO_GRAD = _flatten(None, [], {})


def _structure(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, list[Tensor]]:
    """The arguments' structure and their tensors: argument tensors, then gradients; a
    row gradient (frontend/rowgrad.py) as its two buffers, which stay slots of their own
    (`_rows` finds them), so a replay hands the gradient back unmade too."""
    slots: list[Tensor] = []
    seen: dict[int, int] = {}
    structure = _flatten(args, slots, seen), _flatten(kwargs, slots, seen) if kwargs else None
    grads: list[Any] = []
    for t in slots[:]:
        g = t.grad
        if g is None:
            grads.append(_NO_GRAD)
            continue
        got = rowgrad.parts(g)
        if got is not None:
            pair = _flatten_all([Tensor._from_node(n) for n in got], slots, seen)
            grads.append(("rows", g.shape, g.dtype, pair))
        elif not g.is_sparse:  # a dense gradient (most): its slot, as `_flatten_all` gives
            j = seen.get(id(g))
            if j is None:
                j = seen[id(g)] = len(slots)
                slots.append(g)
            grads.append(j)
        else:
            grads.append(_flatten_all((g,), slots, seen)[0])
    return (structure, tuple(grads), tuple([t.requires_grad for t in slots])), slots


def _rows(structure: Any) -> list[tuple[int, int, int]]:
    """(slot, index slot, rows slot) of each row gradient in `_structure`'s result."""
    out = []
    for i, g in enumerate(structure[1]):
        if type(g) is tuple and g and g[0] == "rows":
            out.append((i, *g[3]))
    return out


def _gather(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, list[Tensor]]:
    """The call's signature (structure, tensor metadata, grad mode, default device) and its
    tensors (realised)."""
    structure, slots = _structure(args, kwargs)
    return (structure, _slot_key(slots), is_grad_enabled(), devmod.default_device()), slots


def _fast_key(args: tuple[Any, ...]) -> Any:
    """The signature of a call whose arguments are distinct realised tensors without
    gradients (the common inference call), cheaper than `_gather`; None for other calls."""
    key = []
    seen = set()
    for t in args:
        if not isinstance(t, Tensor) or t.grad is not None:
            return None
        n = t.node
        if n.op is not Ops.BUFFER or id(n.arg) in seen:
            return None
        seen.add(id(n.arg))
        key.append((n.shape, n.dtype, n.device, t.requires_grad))
    return (*key, is_grad_enabled(), devmod.default_device())


def _loose(key: Any, slots: list[Tensor]) -> Any:
    """`key` without the shapes of the slots holding row-sparse gradients' parts and row
    gradients' buffers (their sizes follow the batch that made them), or None when there
    are none. A capture that never reads those slots (the step starts with zero_grad)
    replays under it."""
    grads: list[Any] = [t.grad for t in slots if t.grad is not None and t.grad.is_sparse]
    parts = {id(p) for g in grads for p in g._parts()}
    rows = {j for _, a, b in _rows(key[0]) for j in (a, b)}  # row gradients' buffers too
    if not parts and not rows:
        return None
    metas = tuple(
        None if id(t) in parts or i in rows else m
        for i, (t, m) in enumerate(zip(slots, key[1], strict=True))
    )
    return (key[0], metas, *key[2:])


def _reads(plan: Plan, index: int) -> bool:
    return any(index in s.ins for s in plan.steps) or index in plan.outputs


def _template(x: Any, outs: list[Tensor]) -> Any:
    """`x` with each tensor replaced by its index in `outs` (wrapped, to tell it from ints)."""
    if isinstance(x, Tensor):
        outs.append(x)
        return _Out(len(outs) - 1)
    if type(x) in (tuple, list):
        return type(x)(_template(v, outs) for v in x)
    if type(x) is dict:
        return {k: _template(v, outs) for k, v in x.items()}
    return x


@dataclass(frozen=True)
class _Out:
    index: int


def _rebuild(tpl: Any, outs: list[Tensor]) -> Any:
    if type(tpl) is _Out:
        return outs[tpl.index]
    if type(tpl) in (tuple, list):
        return type(tpl)(_rebuild(v, outs) for v in tpl)
    if type(tpl) is dict:
        return {k: _rebuild(v, outs) for k, v in tpl.items()}
    return tpl


def _wrap(buf: Any, like: Node) -> Tensor:
    return Tensor._from_node(Node(Ops.BUFFER, like.dtype, like.shape, like.device, (), buf))


@dataclass
class _Capture:
    """One signature's record: the plan (inputs: slot buffers; outputs: returned tensors,
    then the new values of updated slots) and how to hand the results back."""

    plan: Plan
    template: Any
    metas: list[Node]  # shape/dtype/device of each plan output
    n_returned: int
    updated: list[int]  # slots whose value the function changed (in place or rebound)
    rows: list[tuple[int, int, int]]  # row gradients: (slot, index slot, rows slot)
    # (step, slot, size): the step may write into the slot's buffer (when of that size)
    gifts: list[tuple[int, int, int]]

    def replay(self, slots: list[Tensor]) -> Any:
        donated = donate.sole_steps(self.gifts, slots)
        bufs = self.plan.run([t.node.arg for t in slots], None, donated)
        return self.finish(slots, bufs)

    def finish(self, slots: list[Tensor], bufs: list[Any]) -> Any:
        k = self.n_returned
        for i, b, m in zip(self.updated, bufs[k:], self.metas[k:]):
            t, n = slots[i], slots[i].node
            if n.arg is not b or n.shape != m.shape:  # else written in place: the node stays
                t.node = Node(Ops.BUFFER, m.dtype, m.shape, m.device, (), b)
            t._vc.bump()
            if t._views:
                views.refresh(t)  # views of t see its new value
        for i, index, values in self.rows:  # the gradient scatters the new rows, unmade
            g = slots[i].grad
            if g is not None:
                rowgrad.rebuild(g, slots[index].node, slots[values].node)
        outs = [_wrap(b, m) for b, m in zip(bufs[:k], self.metas[:k])]
        return _rebuild(self.template, outs)


_LOCAL = threading.local()  # .guards: this thread's active capture guards (nested captures)


def capturing() -> bool:
    """Whether this thread is inside a jit capture (code whose host-side choices a replay
    would not repeat can refuse to run there)."""
    return bool(getattr(_LOCAL, "guards", None))


def _thread_guards(t: Tensor) -> None:
    for guard in getattr(_LOCAL, "guards", ()):
        guard(t)


# one hook for the process, installed once: it runs only the guards of the thread updating
tmod._ASSIGN_HOOKS.append(_thread_guards)


class _Guard:
    """Rejects in-place updates of tensors that are not the function's arguments."""

    def __init__(self, name: str, slots: list[Tensor]) -> None:
        self.name, self.ids = name, {id(t) for t in slots}
        self.start = next(tmod._SEQ)  # tensors made during the capture are its own

    def __call__(self, t: Tensor) -> None:
        if id(t) not in self.ids and t._seq < self.start:
            raise JitError(
                f"jit({self.name}): the function updates in place a tensor of shape "
                f"{t.shape}, dtype {t.dtype.name}, device {t.device} that is not one of its "
                "arguments; pass it (or the module or optimizer holding it) as an argument"
            )


class jit(Generic[R]):
    """Capture `fn`'s kernel launches on its first call with a given signature and replay
    them on later calls; results are detached tensors of the same structure.

    The signature is the shapes, dtypes, devices and requires_grad of the tensors in the
    arguments (also inside tuples, lists, dicts, nn.Modules, optimizers, objects with a
    `__jit_flatten__()` returning their tensors such as KeyedJaggedTensor, and their
    gradients), how they alias, and the other arguments by value. Replays do not rerun
    Python: values the function reads on the host (`.item()`, `.numpy()`, bounds checks)
    are guards, checked on each replay, and a call where one differs runs the function
    again; other data-dependent behaviour is the caller's responsibility, as with CUDA
    graphs. Tensors read from outside the arguments (globals, closures) are constants
    captured by the first call; non-tensor results too. Updates of argument tensors (an
    optimizer step, also when it rebinds optimizer state) are replayed in place; updates of
    other tensors and random draws inside the function raise JitError.

    >>> import anychip as ac
    >>> @ac.jit
    ... def f(a, b):
    ...     return (a * b + 1).relu()
    >>> x, y = ac.ones(3), ac.full((3,), 2.0)
    >>> f(x, y).tolist(), f(y, x).tolist()  # the second call replays the first's kernels
    ([3.0, 3.0, 3.0], [3.0, 3.0, 3.0])
    """

    def __init__(self, fn: Callable[..., R]) -> None:
        self.fn = fn
        self.captures: dict[Any, _Capture] = {}
        self.fast: dict[Any, _Capture] = {}  # the same captures, keyed by `_fast_key`
        self.loose: dict[Any, _Capture] = {}  # the same captures, keyed by `_loose`
        self._lock = threading.Lock()  # stores into the two dicts (reads are single lookups)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        fast = None if kwargs else _fast_key(args)
        cap = self.fast.get(fast) if fast is not None else None
        if cap is not None:
            try:
                return cap.replay(list(args))  # type: ignore[no-any-return]
            except dispatch.GuardFailed:
                pass
        key, slots = _gather(args, kwargs)
        cap = self.captures.get(key)
        if cap is None and self.loose:
            cap = self.loose.get(_loose(key, slots))
        if cap is not None:
            try:
                out = cap.replay(slots)
            except dispatch.GuardFailed:  # Python saw other values: run it again, uncached
                return self._capture(key, slots, args, kwargs, store=False)  # type: ignore[no-any-return]
        else:
            out = self._capture(key, slots, args, kwargs)
        if fast is not None:
            with self._lock:
                if key in self.captures:
                    self.fast[fast] = self.captures[key]
        return out  # type: ignore[no-any-return]

    def _capture(
        self, key: Any, slots: list[Tensor], args: Any, kwargs: Any, store: bool = True
    ) -> Any:
        name = getattr(self.fn, "__name__", "function")
        loose = _loose(key, slots)  # before the function replaces the gradients
        before = [(t.node, t._ctx) for t in slots]
        inputs = [t.node.arg for t in slots]
        state = rng.thread_uses()
        guard = _Guard(name, slots)
        guards = getattr(_LOCAL, "guards", None)
        if guards is None:
            guards = _LOCAL.guards = []
        guards.append(guard)
        try:
            with dispatch.recording() as rec:
                result = self.fn(*args, **kwargs)
                outs: list[Tensor] = []
                template = _template(result, outs)
                after_key, after = _structure(args, kwargs)
                same = after_key == key[0] and _values(after_key) == _values(key[0])
                # a row gradient's buffers are new tensors at each look: their nodes tell
                rows = _rows(after_key) if same else []
                pairs_at = {j for _, a, b in rows for j in (a, b)}
                updated = [
                    i
                    for i, (t, (node, _)) in enumerate(zip(after, before))
                    if same and (t.node is not node or (t is not slots[i] and i not in pairs_at))
                ]
                targets = [*outs, *(after[i] for i in updated)]
                bufs = rt.realize([t.node for t in targets])
        finally:
            guards.remove(guard)
        self._check(name, state, [(after[i], slots[i], before[i][1]) for i in updated])
        # shape, dtype and device only: the capture's buffers are not kept alive
        metas = [Node(t.node.op, t.node.dtype, t.node.shape, t.node.device) for t in targets]
        plan = dispatch.make_plan(rec, inputs, bufs)
        plan.own = True  # replays reuse buffers for the intermediates (runtime/replay.py)
        pairs = [(i, len(outs) + k) for k, i in enumerate(updated)]
        # with the buffer size: a slot whose shape the loose key leaves out (a sparse
        # gradient's part) may come with a buffer of another size, never written over
        marked = dispatch.donations(plan, inputs, pairs) if same else []
        gifts = [(at, i, inputs[i].size) for at, i in marked]
        cap = _Capture(plan, template, metas, len(outs), updated, rows, gifts)
        out = cap.finish(after if same else [], bufs)
        if store and same:  # the arguments kept their structure: later calls can replay
            with self._lock:
                if len(self.captures) >= SIGNATURES_PER_FUNCTION:
                    self.captures.clear()
                    self.fast.clear()
                    self.loose.clear()
                self.captures[key] = cap
                parts = [i for i, m in enumerate(loose[1]) if m is None] if loose else []
                if loose is not None and not any(_reads(plan, i) for i in parts):
                    self.loose[loose] = cap
        return out

    @staticmethod
    def _check(name: str, state: int, changed: list[tuple[Tensor, Tensor, Any]]) -> None:
        if rng.thread_uses() != state:  # this thread drew or reseeded during the capture
            raise JitError(
                f"jit({name}): the function draws random numbers, which a replay would "
                "repeat; draw them outside and pass them as arguments"
            )
        for t, old, ctx in changed:
            if t._ctx is not (ctx if t is old else None):
                raise JitError(
                    f"jit({name}): the function changes the autograd history of an argument "
                    f"(shape {t.shape}, dtype {t.dtype.name}); update it under anychip.no_grad()"
                )
