"""`anychip.autograd`, as `torch.autograd`: `grad` (gradients without touching `.grad`,
higher derivatives with `create_graph=True`) and `backward`.

>>> import anychip as ac
>>> x = ac.tensor([1.0, 2.0], requires_grad=True)
>>> (g,) = ac.autograd.grad((x ** 3).sum(), x, create_graph=True)
>>> ac.autograd.grad(g.sum(), x)[0].tolist()  # d2/dx2 of x^3 = 6x
[6.0, 12.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from anychip.frontend.autograd import grad
from anychip.frontend.function import Function, FunctionCtx
from anychip.frontend.gradcheck import GradcheckError, gradcheck, gradgradcheck
from anychip.frontend.hooks import RemovableHandle
from anychip.frontend.tensor import Tensor, enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from anychip.frontend.torch_api import inference_mode


def backward(
    tensors: Tensor | Sequence[Tensor],
    grad_tensors: Any = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
) -> None:
    """`tensors[i].backward(grad_tensors[i])` for each output, into the leaves' `.grad`."""
    outs = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    gs = grad_tensors if isinstance(grad_tensors, (list, tuple)) else [grad_tensors] * len(outs)
    for i, (t, g) in enumerate(zip(outs, gs, strict=True)):
        keep = retain_graph or create_graph or i < len(outs) - 1
        t.backward(g, retain_graph=keep, create_graph=create_graph)


__all__ = [
    "Function",
    "FunctionCtx",
    "GradcheckError",
    "RemovableHandle",
    "backward",
    "enable_grad",
    "grad",
    "gradcheck",
    "gradgradcheck",
    "inference_mode",
    "is_grad_enabled",
    "no_grad",
    "set_grad_enabled",
]
