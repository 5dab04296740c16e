"""Reverse-mode autograd over the tape that `Tensor._prim` records.

The derivative rules themselves live beside each primitive in `ir/primitives.py`; this
module only walks the tape in reverse and sums cotangents.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anychip.errors import AutogradError, ShapeError, describe
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
    outputs: Tensor, inputs: list[Tensor], grad_outputs: Tensor | None = None
) -> list[Tensor | None]:
    """d(outputs)/d(inputs) without touching `.grad` (like `torch.autograd.grad`)."""
    return _run(outputs, grad_outputs, inputs, accumulate=False)


def backward(root: Tensor, gradient: Tensor | None = None) -> None:
    """Accumulate d(root)/d(leaf) into each leaf's `.grad`, computed now with `root` itself
    in one schedule (as PyTorch computes them here): the forward values both need are
    computed once, and a later `root.realize()` or optimizer step finds them ready."""
    from anychip.frontend.tensor import realize_together

    leaves = _run(root, gradient, None, accumulate=True)
    realize_together([root, *(t.grad for t in leaves if t is not None and t.grad is not None)])


def _run(
    root: Tensor, gradient: Tensor | None, wanted: list[Tensor] | None, accumulate: bool
) -> list[Tensor | None]:
    from anychip.frontend.tensor import Tensor, no_grad

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
    grads: dict[int, Tensor] = {id(root): gradient.detach().to(root.dtype)}
    results: dict[int, Tensor] = {}
    leaves: dict[int, Tensor] = {}  # whose .grad this call changed
    want = {id(w) for w in wanted} if wanted is not None else None
    with no_grad():
        for t in _tape(root):
            g = grads.pop(id(t), None)
            ctx = t._ctx
            if g is None or ctx is None:
                continue
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
            cots = vjp(g, t.detach(), tuple(s.detach() for s in ctx.srcs), ctx.arg)
            for s, c in zip(ctx.srcs, cots):
                if c is None or not s.requires_grad:
                    continue
                if s._ctx is None:  # a leaf
                    if want is None:
                        s.grad = c if s.grad is None else s.grad + c
                        leaves[id(s)] = s
                    else:
                        results[id(s)] = results[id(s)] + c if id(s) in results else c
                else:
                    grads[id(s)] = grads[id(s)] + c if id(s) in grads else c
    if wanted is None:
        return list(leaves.values())  # the leaves whose .grad changed
    return [results.get(id(w)) for w in wanted]
