"""SparseAdam: Adam that moves only the rows a step's gradient touches (lazy Adam), as
torch.optim.SparseAdam does for embedding tables.

A row-sparse gradient (a table looked up with `sparse=True`, docs/sparse.md) is coalesced,
and its rows' moments and weights are gathered, updated and scattered back: no dense
gradient or update of the table. A dense gradient still works (torch refuses it): a row
counts as touched when any of its gradient elements is nonzero.
"""

from __future__ import annotations

from typing import Any

from anychip.frontend.sparse import gather_rows, scatter_rows
from anychip.frontend.tensor import Tensor
from anychip.optim.optimizer import Optimizer, ParamsT, check_range, step_counter
from anychip.optim.rowstate import sync_row_state

_MOMENTS = ("exp_avg", "exp_avg_sq")


class SparseAdam(Optimizer):
    """For the touched rows only: m += (1 - beta1)(g - m); v += (1 - beta2)(g^2 - v);
    p -= lr sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps). Other rows keep their
    values and moments; t counts the optimizer's steps, as in torch.

    >>> import anychip as ac
    >>> w = ac.nn.Parameter(ac.zeros(3, 2))
    >>> opt = ac.optim.SparseAdam([w], lr=0.1)
    >>> ac.nn.functional.embedding(ac.tensor([1]), w, sparse=True).sum().backward(); opt.step()
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
        lr = self._hyper(group, "lr")  # a tensor: a schedule's new rate replays under jit
        (beta1, beta2), eps = group["betas"], group["eps"]
        for p in group["params"]:
            if p.grad is None:
                continue
            g = -p.grad if group["maximize"] else p.grad
            state = self.state[p]
            if not state:
                state["step"] = step_counter(p)
                state["exp_avg"] = p.zeros_like()
                state["exp_avg_sq"] = p.zeros_like()
            sync_row_state(state, p, _MOMENTS)
            step = state["step"] = state["step"] + 1
            step_size = (lr * (1 - beta2**step).sqrt() / (1 - beta1**step)).to(p.dtype)
            if g.is_sparse:
                _sparse_step(p, g, state, step_size, (beta1, beta2), eps)
            else:
                _dense_step(p, g, state, step_size, (beta1, beta2), eps)


def _sparse_step(
    p: Tensor,
    g: Tensor,
    state: dict[str, Any],
    step_size: Tensor,
    betas: tuple[float, float],
    eps: float,
) -> None:
    """torch's SparseAdam on the coalesced rows: each of m, v and p is one scatter of the
    rows' changes, computed from the gathered rows (slots past the real rows point out of
    the table: they read zeros and write nothing)."""
    beta1, beta2 = betas
    idx, vals = g.coalesce()._parts()  # type: ignore[attr-defined]
    m_old, v_old = gather_rows(state["exp_avg"], idx), gather_rows(state["exp_avg_sq"], idx)
    dm = (vals - m_old) * (1 - beta1)  # (n, D)
    dv = (vals * vals - v_old) * (1 - beta2)
    state["exp_avg"] = scatter_rows(state["exp_avg"], idx, dm)
    state["exp_avg_sq"] = scatter_rows(state["exp_avg_sq"], idx, dv)
    delta = (dm + m_old) / ((dv + v_old).sqrt() + eps) * -step_size
    p._assign(scatter_rows(p._detached(), idx, delta), "sparse_adam_step")


def _dense_step(
    p: Tensor,
    g: Tensor,
    state: dict[str, Any],
    step_size: Tensor,
    betas: tuple[float, float],
    eps: float,
) -> None:
    """A dense gradient: rows (index along dim 0) with any nonzero element are touched."""
    beta1, beta2 = betas
    touched = (g != 0).any(tuple(range(1, g.ndim)), keepdim=True) if g.ndim else g != 0
    m_old, v_old = state["exp_avg"], state["exp_avg_sq"]
    m = m_old + (g - m_old) * (1 - beta1)
    v = v_old + (g * g - v_old) * (1 - beta2)
    state["exp_avg"] = m.where(touched, m_old)
    state["exp_avg_sq"] = v.where(touched, v_old)
    delta = m / (v.sqrt() + eps) * -step_size
    p._assign(p._detached() + delta.where(touched, 0.0), "sparse_adam_step")
