"""Reverse-mode autograd over the tape that `Tensor._prim` records.

The derivative rules themselves live beside each primitive in `ir/primitives.py`; this
module only walks the tape in reverse and sums cotangents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from anychip.errors import AutogradError, ShapeError, describe
from anychip.frontend.hooks import SAVES, call_hooks, free_graph, is_freed
from anychip.ir.primitives import RULES

if TYPE_CHECKING:
    from anychip.frontend.tensor import Tensor


def _tape(root: Tensor) -> list[Tensor]:
    """Tensors with a recorded op reachable from root, consumers before producers."""
    order: list[Tensor] = []
    seen: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:
        t, done = stack.pop()
        if done:
            order.append(t)
            continue
        if id(t) in seen or t._ctx is None:
            continue
        seen.add(id(t))
        stack.append((t, True))
        stack.extend((s, False) for s in t._ctx.srcs if s.requires_grad and id(s) not in seen)
    return order[::-1]


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
    gos = grad_outputs if isinstance(grad_outputs, (list, tuple)) else [grad_outputs] * len(outs)
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
    from anychip.frontend.tensor import realize_together

    retain = create_graph if retain_graph is None else retain_graph
    leaves = _run(root, gradient, None, True, retain, create_graph)
    if not create_graph:
        grads = [t.grad for t in leaves if t is not None and t.grad is not None]
        realize_together([root, *grads])


def _run(
    root: Tensor,
    gradient: Tensor | None,
    wanted: list[Tensor] | None,
    accumulate: bool,
    retain_graph: bool = True,
    create_graph: bool = False,
) -> list[Tensor | None]:
    from anychip.frontend.tensor import Tensor, enable_grad, no_grad

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
    grads: dict[int, Tensor] = {id(root): gradient if create_graph else gradient.detach()}
    grads[id(root)] = grads[id(root)].to(root.dtype)
    results: dict[int, Tensor] = {}
    leaves: dict[int, Tensor] = {}  # leaf id -> leaf, its total cotangent in grads
    want = {id(w) for w in wanted} if wanted is not None else None
    tape = _tape(root)

    def keep(t: Tensor) -> Tensor:  # create_graph: differentiate through the forward values
        return t if create_graph else t.detach()

    with enable_grad() if create_graph else no_grad():
        for t in tape:
            g = grads.pop(id(t), None)
            ctx = t._ctx
            if g is None or ctx is None:
                continue
            if is_freed(ctx):
                raise AutogradError(
                    "backward: trying to backward through the graph a second time (the "
                    f"{ctx.op.name} of shape {t.shape} saved values that the first backward "
                    "freed); pass retain_graph=True to the first backward"
                )
            g = call_hooks(t, g)
            if want is not None and id(t) in want:
                results[id(t)] = g
            for s, v in zip(ctx.srcs, ctx.versions):
                if s.requires_grad and s._version != v:
                    raise AutogradError(
                        f"backward: a tensor of shape {s.shape} needed by {ctx.op.name} was "
                        "modified in place after it was used; clone it before changing it"
                    )
            vjp = RULES[ctx.op].vjp
            assert vjp is not None
            cots = vjp(g, keep(t), tuple(keep(s) for s in ctx.srcs), ctx.arg)
            for s, c in zip(ctx.srcs, cots):
                if c is None or not s.requires_grad:
                    continue
                if s._ctx is None:  # a leaf: its hooks see the total of this pass, as torch
                    leaves[id(s)] = s
                grads[id(s)] = grads[id(s)] + c if id(s) in grads else c
        for key, s in leaves.items():
            c = call_hooks(s, grads.pop(key))
            if want is None:
                s.grad = c if s.grad is None else s.grad + c
            else:
                results[key] = c
        if root._ctx is None and id(root) in grads:  # backward from a leaf itself
            c = call_hooks(root, grads.pop(id(root)))
            if want is None:
                root.grad = c if root.grad is None else root.grad + c
                leaves[id(root)] = root
            else:
                results[id(root)] = c
    if not retain_graph:
        free_graph(t for t in tape if t._ctx is not None and t._ctx.op in SAVES)
    if wanted is None:
        return list(leaves.values())  # the leaves whose .grad changed
    return [results.get(id(w)) for w in wanted]
