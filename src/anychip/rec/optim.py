"""Row-wise optimizers for embedding tables: one state value per row, as FBGEMM's and
TorchRec's fused table-batched embeddings keep.

`RowWiseAdagrad` follows TorchRec's `torchrec.optim.RowWiseAdagrad` (the same update as
FBGEMM's EXACT_ROWWISE_ADAGRAD): a row's accumulator grows by the mean over the row of
its squared gradient, and the whole row moves with one rate. With a row-sparse gradient
(`EmbeddingBag(sparse=True)`) only the batch's rows are gathered, updated and scattered.
"""

from __future__ import annotations

from typing import Any

from anychip.errors import ShapeError, describe
from anychip.frontend.sparse import gather_rows, scatter_rows
from anychip.frontend.tensor import Tensor
from anychip.optim.optimizer import Optimizer, ParamsT, check_range, step_counter
from anychip.optim.rowstate import sync_row_state


class RowWiseAdagrad(Optimizer):
    """Per row r of a table (R, D), with g_r its gradient row (g_r + weight_decay * w_r
    with L2 weight decay):

        sum[r] += mean(g_r ** 2)                       # state "sum": (R,)
        w_r    -= clr * g_r / (sqrt(sum[r]) + eps)      # clr = lr / (1 + (t - 1) lr_decay)

    Rows a sparse gradient does not touch keep their weights and sums; a dense gradient
    touches every row (as TorchRec's). Tables that grow or recycle rows keep their state
    in line through `anychip.optim.rowstate`.

    >>> import anychip as ac
    >>> w = ac.nn.Parameter(ac.zeros(3, 2))
    >>> opt = RowWiseAdagrad([w], lr=0.5)
    >>> rows = ac.nn.functional.embedding(ac.tensor([1]), w, sparse=True)
    >>> (rows * ac.tensor([3.0, 4.0])).sum().backward()
    >>> opt.step(); [round(v, 4) for v in w[1].tolist()]  # 0.5 * g / sqrt(12.5)
    [-0.4243, -0.5657]
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 0.01,
        eps: float = 1e-10,
        *,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        maximize: bool = False,
    ) -> None:
        check_range("learning rate", lr, 0.0)
        check_range("epsilon value", eps, 0.0)
        check_range("lr_decay value", lr_decay, 0.0)
        check_range("weight_decay value", weight_decay, 0.0)
        check_range("initial_accumulator_value", initial_accumulator_value, 0.0)
        defaults = {
            "lr": lr,
            "eps": eps,
            "lr_decay": lr_decay,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def _update(self, group: dict[str, Any]) -> None:
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.ndim < 1:
                raise ShapeError(
                    f"RowWiseAdagrad: parameters need rows (at least 1-d), got {describe(p)}"
                )
            g: Tensor = -p.grad if group["maximize"] else p.grad
            state = self.state[p]
            if not state:
                state["step"] = step_counter(p)
                init = group["initial_accumulator_value"]
                state["sum"] = Tensor._const(init, p.dtype, (p.shape[0],), p.device)
            sync_row_state(state, p, ("sum",))
            step = state["step"] = state["step"] + 1
            decay = group["lr_decay"]  # from the step tensor: one kernel for every step
            neg_clr = (-group["lr"] / (1 + (step - 1) * decay)).to(p.dtype) if decay else None
            rate = -group["lr"] if neg_clr is None else neg_clr
            if g.is_sparse:
                idx, vals = g.coalesce()._parts()  # type: ignore[attr-defined]
                _rows_step(p, state, idx, vals, rate, group)
            else:
                _rows_step(p, state, None, g, rate, group)


def _rows_step(
    p: Tensor,
    state: dict[str, Any],
    idx: Tensor | None,
    g: Tensor,
    rate: Any,
    group: dict[str, Any],
) -> None:
    """The update of rows `idx` (n,) whose gradient rows are g (n, *rest); idx None: every
    row, g dense. Slots out of the table (a sparse gradient's padding) read zeros and
    write nothing."""
    w = p._detached() if idx is None else gather_rows(p._detached(), idx)
    if group["weight_decay"] != 0:
        g = g + w * group["weight_decay"]
    axes = tuple(range(1, g.ndim))
    sq = (g * g).mean(axes) if axes else g * g  # (n,)
    if idx is None:
        total = state["sum"] = state["sum"] + sq
    else:
        # the new sums read back (ids are unique: old + sq exactly), so nothing but the
        # scatter reads the old sums and it can update them in place
        state["sum"] = scatter_rows(state["sum"], idx, sq)
        total = gather_rows(state["sum"], idx)
    std = (total.sqrt() + group["eps"]).reshape(total.shape + (1,) * len(axes))
    delta = g * rate / std
    new = p._detached() + delta if idx is None else scatter_rows(p._detached(), idx, delta)
    p._assign(new, "rowwise_adagrad_step")
