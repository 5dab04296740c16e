"""SparseAdam: Adam that moves only the rows a step's gradient touches (lazy Adam), as
torch.optim.SparseAdam does for embedding tables.

Here gradients are dense tensors: a row (index along dim 0) counts as touched when any of
its gradient elements is nonzero. Sparse gradient tensors come with a later issue.
"""

from __future__ import annotations

from typing import Any

from anychip.optim.optimizer import Optimizer, ParamsT, check_range, step_counter


class SparseAdam(Optimizer):
    """For the touched rows only: m += (1 - beta1)(g - m); v += (1 - beta2)(g^2 - v);
    p -= lr sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps). Other rows keep their
    values and moments.

    >>> import anychip as ac
    >>> w = ac.nn.Parameter(ac.zeros(3, 2))
    >>> opt = ac.optim.SparseAdam([w], lr=0.1)
    >>> w[ac.tensor([1])].sum().backward(); opt.step()
    >>> [round(v, 4) for v in w.sum(1).tolist()]  # only row 1 moved
    [0.0, -0.2, 0.0]
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        maximize: bool = False,
    ) -> None:
        check_range("learning rate", lr, 0.0)
        check_range("epsilon value", eps, 0.0)
        check_range("beta parameter at index 0", betas[0], 0.0, 1.0)
        check_range("beta parameter at index 1", betas[1], 0.0, 1.0)
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "maximize": maximize}
        super().__init__(params, defaults)

    def _update(self, group: dict[str, Any]) -> None:
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        for p in group["params"]:
            if p.grad is None:
                continue
            g = -p.grad if group["maximize"] else p.grad
            state = self.state[p]
            if not state:
                state["step"] = step_counter(p)
                state["exp_avg"] = p.zeros_like()
                state["exp_avg_sq"] = p.zeros_like()
            step = state["step"] = state["step"] + 1
            # (rows, 1, ...): a row is touched when any element of its gradient is nonzero
            touched = (g != 0).any(tuple(range(1, g.ndim)), keepdim=True) if g.ndim else g != 0
            m_old, v_old = state["exp_avg"], state["exp_avg_sq"]
            m = m_old + (g - m_old) * (1 - beta1)
            v = v_old + (g * g - v_old) * (1 - beta2)
            state["exp_avg"] = m.where(touched, m_old)
            state["exp_avg_sq"] = v.where(touched, v_old)
            step_size = (lr * (1 - beta2**step).sqrt() / (1 - beta1**step)).to(p.dtype)
            delta = m / (v.sqrt() + eps) * -step_size
            p._assign(p._detached() + delta.where(touched, 0.0), "sparse_adam_step")
