"""RMSprop: scale each step by a running root mean square of the gradients; the same update
rule, in the same order of floating-point operations, as torch.optim.RMSprop."""

from __future__ import annotations

from typing import Any

from anychip.frontend.tensor import Tensor
from anychip.optim.optimizer import Optimizer, ParamsT, check_range, step_counter


class RMSprop(Optimizer):
    """v = alpha v + (1 - alpha) g^2; p -= lr g / (sqrt(v) + eps) (with momentum: a buffer
    b = momentum b + g / (sqrt(v) + eps), p -= lr b; centered: v minus the mean gradient^2).

    >>> import anychip as ac
    >>> w = ac.nn.Parameter(ac.tensor([1.0]))
    >>> opt = ac.optim.RMSprop([w], lr=0.01, alpha=0.0)
    >>> (w * 2).sum().backward(); opt.step()
    >>> round(w.item(), 4)  # v = g^2, so the step is lr * sign(g)
    0.99
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        check_range("learning rate", lr, 0.0)
        check_range("epsilon value", eps, 0.0)
        check_range("momentum value", momentum, 0.0)
        check_range("weight_decay value", weight_decay, 0.0)
        check_range("alpha value", alpha, 0.0)
        defaults = {
            "lr": lr,
            "alpha": alpha,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "centered": centered,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def _update(self, group: dict[str, Any]) -> None:
        lr = self._hyper(group, "lr")  # a tensor: a schedule's new rate replays under jit
        alpha, momentum = group["alpha"], group["momentum"]
        for p in group["params"]:
            if p.grad is None:
                continue
            g: Tensor = -p.grad if group["maximize"] else p.grad
            state = self.state[p]
            if not state:
                state["step"] = step_counter(p)
                state["square_avg"] = p.zeros_like()
                if momentum > 0:
                    state["momentum_buffer"] = p.zeros_like()
                if group["centered"]:
                    state["grad_avg"] = p.zeros_like()
            state["step"] = state["step"] + 1
            param = p._detached()
            if group["weight_decay"] != 0:
                g = g + param * group["weight_decay"]
            v = state["square_avg"] = state["square_avg"] * alpha + g * (1 - alpha) * g
            if group["centered"]:
                ga = state["grad_avg"]
                ga = state["grad_avg"] = ga + (g - ga) * (1 - alpha)  # torch's lerp
                avg = (v - ga * ga).sqrt() + group["eps"]
            else:
                avg = v.sqrt() + group["eps"]
            if momentum > 0:
                buf = state["momentum_buffer"] = state["momentum_buffer"] * momentum + g / avg
                p._assign(param + buf * (-lr).to(p.dtype), "rmsprop_step")
            else:
                p._assign(param + g * (-lr).to(p.dtype) / avg, "rmsprop_step")
