"""Adam and AdamW (decoupled weight decay), with amsgrad and maximize; the same update
rules, in the same order of floating-point operations, as torch.optim's single-tensor path."""

from __future__ import annotations

from typing import Any

from anychip.frontend.tensor import Tensor
from anychip.optim.optimizer import Optimizer, ParamsT, check_range, step_counter


class Adam(Optimizer):
    """m = lerp(m, g, 1 - beta1); v = beta2 v + (1 - beta2) g^2;
    p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps).

    >>> import anychip as ac
    >>> w = ac.nn.Parameter(ac.tensor([1.0, -1.0]))
    >>> opt = ac.optim.Adam([w], lr=0.1)
    >>> (w * w).sum().backward(); opt.step()
    >>> [round(v, 4) for v in w.tolist()]  # the first step moves each weight by lr
    [0.9, -0.9]
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
    ) -> None:
        check_range("learning rate", lr, 0.0)
        check_range("epsilon value", eps, 0.0)
        check_range("beta parameter at index 0", betas[0], 0.0, 1.0)
        check_range("beta parameter at index 1", betas[1], 0.0, 1.0)
        check_range("weight_decay value", weight_decay, 0.0)
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    def _update(self, group: dict[str, Any]) -> None:
        lr = self._hyper(group, "lr")  # a tensor: a schedule's new rate replays under jit
        (beta1, beta2), eps = group["betas"], group["eps"]
        wd = group["weight_decay"]
        for p in group["params"]:
            if p.grad is None:
                continue
            g: Tensor = -p.grad if group["maximize"] else p.grad
            state = self.state[p]
            if not state:
                state["step"] = step_counter(p)
                state["exp_avg"] = p.zeros_like()
                state["exp_avg_sq"] = p.zeros_like()
                if group["amsgrad"]:
                    state["max_exp_avg_sq"] = p.zeros_like()
            step = state["step"] = state["step"] + 1
            param = p._detached()
            if wd != 0:
                if group["decoupled_weight_decay"]:
                    param = param * (1 - lr * wd).to(p.dtype)
                else:
                    g = g + param * wd
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m = m + (g - m) * (1 - beta1)  # torch's lerp for weights below 0.5
            v = v * beta2 + g * (1 - beta2) * g
            state["exp_avg"], state["exp_avg_sq"] = m, v
            if group["amsgrad"]:
                v = state["max_exp_avg_sq"].maximum(v)
                state["max_exp_avg_sq"] = v
            # bias corrections from the step tensor, in float64 as torch computes them in
            # Python: the graph, and so the compiled kernels, are the same every step
            neg_step_size = (-lr / (1 - beta1**step)).to(p.dtype)
            denom = v.sqrt() / (1 - beta2**step).sqrt().to(p.dtype) + eps
            p._assign(param + m * neg_step_size / denom, "adam_step")


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr * weight_decay before the Adam step
    (Loshchilov and Hutter); weight_decay defaults to 0.01 as in PyTorch."""

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            maximize=maximize,
            decoupled_weight_decay=True,
        )
