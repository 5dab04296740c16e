"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay;
the same update rule as torch.optim.SGD. A row-sparse gradient (a table looked up with
`sparse=True`) updates only its rows, as torch does: without momentum or weight decay."""

from __future__ import annotations

from typing import Any

from anychip.errors import ArgumentError
from anychip.frontend import rowgrad
from anychip.frontend.sparse import scatter_rows
from anychip.frontend.tensor import Tensor
from anychip.optim.optimizer import Optimizer, ParamsT, check_range


class SGD(Optimizer):
    """g = grad + weight_decay * p; with momentum, buf = momentum * buf + (1 - dampening)
    * g (buf = g on the first step) and g = buf (or g + momentum * buf with nesterov);
    then p -= lr * g.

    >>> import anychip as ac
    >>> w = ac.nn.Parameter(ac.tensor([1.0]))
    >>> opt = ac.optim.SGD([w], lr=0.1, momentum=0.9)
    >>> for _ in range(2):
    ...     opt.zero_grad(); (w * 2).sum().backward(); opt.step()
    >>> round(w.item(), 4)  # 1 - 0.1*2 - 0.1*(0.9*2 + 2)
    0.42
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        check_range("learning rate", lr, 0.0)
        check_range("momentum value", momentum, 0.0)
        check_range("weight_decay value", weight_decay, 0.0)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ArgumentError("Nesterov momentum requires a momentum and zero dampening")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    _TENSOR_HYPERS = ("lr",)

    def _cacheable(self, group: dict[str, Any]) -> bool:
        return bool(group["momentum"] == 0)  # a momentum buffer is state

    def _takes_rows(self, group: dict[str, Any], grad: Tensor) -> bool:
        plain = group["momentum"] == 0 and group["weight_decay"] == 0 and not group["maximize"]
        return plain and rowgrad.parts(grad) is not None

    def _update(self, group: dict[str, Any]) -> None:
        lr = self._hyper(group, "lr")  # a tensor: a schedule's new rate replays under jit
        mom, damp = group["momentum"], group["dampening"]
        wd, nesterov = group["weight_decay"], group["nesterov"]
        steps: dict[Any, Tensor] = {}  # -lr in each parameter dtype, made once per group
        for p in group["params"]:
            if p.grad is None:
                continue
            g = -p.grad if group["maximize"] else p.grad
            if g.is_sparse:
                _sparse_step(p, g, lr, mom, wd)
                continue
            neg = steps.get(p.dtype)
            if neg is None:
                neg = steps[p.dtype] = (-lr).to(p.dtype)
            if wd == 0 and mom == 0:  # an embedding's gradient rows: added into p's rows
                rows = rowgrad.add_rows(p, g, neg)
                if rows is not None:
                    p._assign(rows, "sgd_step")
                    continue
            if wd != 0:
                g = g + p._detached() * wd
            if mom != 0:
                state = self.state[p]
                buf = state.get("momentum_buffer")
                # g * 1.0 is g exactly: no op for the usual dampening of 0
                buf = g if buf is None else buf * mom + (g * (1 - damp) if damp else g)
                state["momentum_buffer"] = buf
                g = g + buf * mom if nesterov else buf
            # p + g * (-lr), as torch's p.add_(g, alpha=-lr): one multiply, one add
            p._assign(p._detached() + g * neg, "sgd_step")


def _sparse_step(p: Tensor, g: Tensor, lr: Tensor, momentum: float, weight_decay: float) -> None:
    """p[rows] -= lr * values: one scatter kernel; duplicate rows add up, so an uncoalesced
    gradient needs no coalescing."""
    if momentum != 0 or weight_decay != 0:
        raise ArgumentError(
            f"SGD: sparse gradients (of the table of shape {p.shape}) are supported only "
            f"without momentum and weight_decay (got momentum={momentum}, "
            f"weight_decay={weight_decay})"
        )
    idx, vals = g._parts()  # type: ignore[attr-defined]
    p._assign(scatter_rows(p._detached(), idx, vals * (-lr).to(p.dtype)), "sgd_step")
