"""Adagrad: per-element learning rates from the running sum of squared gradients; the same
update rule as torch.optim.Adagrad, also for row-sparse gradients (only their rows move)."""

from __future__ import annotations

from typing import Any

from anychip.errors import ArgumentError
from anychip.frontend.sparse import gather_rows, scatter_rows
from anychip.frontend.tensor import Tensor
from anychip.optim.optimizer import Optimizer, ParamsT, check_range, step_counter
from anychip.optim.rowstate import sync_row_state


class Adagrad(Optimizer):
    """sum += g^2; p -= lr / (1 + (t - 1) lr_decay) * g / (sqrt(sum) + eps).

    >>> import anychip as ac
    >>> w = ac.nn.Parameter(ac.tensor([1.0]))
    >>> opt = ac.optim.Adagrad([w], lr=0.5)
    >>> (w * 3).sum().backward(); opt.step()
    >>> round(w.item(), 4)
    0.5
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        *,
        maximize: bool = False,
    ) -> None:
        check_range("learning rate", lr, 0.0)
        check_range("lr_decay value", lr_decay, 0.0)
        check_range("weight_decay value", weight_decay, 0.0)
        check_range("initial_accumulator_value", initial_accumulator_value, 0.0)
        check_range("epsilon value", eps, 0.0)
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "eps": eps,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def _update(self, group: dict[str, Any]) -> None:
        for p in group["params"]:
            if p.grad is None:
                continue
            g: Tensor = -p.grad if group["maximize"] else p.grad
            state = self.state[p]
            if not state:
                state["step"] = step_counter(p)
                state["sum"] = Tensor._const(
                    group["initial_accumulator_value"], p.dtype, p.shape, p.device
                )
            sync_row_state(state, p, ("sum",))
            step = state["step"] = state["step"] + 1
            param = p._detached()
            # the decayed rate varies per step (from the step tensor), the rate per schedule
            # (a tensor the optimizer refreshes): neither is in the graph as a value
            lr, decay = self._hyper(group, "lr"), group["lr_decay"]
            neg_clr = (-lr / (1 + (step - 1) * decay) if decay else -lr).to(p.dtype)
            if g.is_sparse:
                _sparse_step(p, g, state, neg_clr, group)
                continue
            if group["weight_decay"] != 0:
                g = g + param * group["weight_decay"]
            state["sum"] = state["sum"] + g * g
            std = state["sum"].sqrt() + group["eps"]
            p._assign(param + g * neg_clr / std, "adagrad_step")


def _sparse_step(
    p: Tensor, g: Tensor, state: dict[str, Any], neg_clr: Tensor, group: dict[str, Any]
) -> None:
    """torch's sparse Adagrad on the gradient's rows only: sum[rows] += g^2, then
    p[rows] += (g / (sqrt(sum[rows]) + eps)) * -clr; gather, compute, scatter (fused)."""
    if group["weight_decay"] != 0:
        raise ArgumentError(
            f"Adagrad: weight_decay={group['weight_decay']} is not compatible with sparse "
            f"gradients (of the parameter of shape {p.shape})"
        )
    idx, vals = g.coalesce()._parts()  # type: ignore[attr-defined]
    state["sum"] = scatter_rows(state["sum"], idx, vals * vals)
    # (n, D): the touched rows' new sums, read back (ids are unique: old + g^2 exactly),
    # so nothing but the scatter reads the old sums and it can update them in place
    total = gather_rows(state["sum"], idx)
    delta = vals / (total.sqrt() + group["eps"]) * neg_clr
    p._assign(scatter_rows(p._detached(), idx, delta), "adagrad_step")
