"""Row-sparse gradients in graph terms: the host step's unique ids against numpy, and the
graphs of a sparse backward and optimizer step, which must hold no value the size of the
table but the table itself and the scatters writing into it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import anychip as ac
from anychip.frontend.embedding import unique_slots
from anychip.ir.ops import Node, Ops
from anychip.rec import RowWiseAdagrad

ROWS, DIM = 1000, 8


def _nodes(roots: list[Node]) -> list[Node]:
    out, seen, stack = [], set(), list(roots)
    while stack:
        n = stack.pop()
        if id(n) not in seen:
            seen.add(id(n))
            out.append(n)
            stack.extend(n.srcs)
    return out


@pytest.mark.parametrize(
    ("low", "high", "rows"), [(0, 50, 60), (-3, 70_000, 60), (0, 90_000, 80_000)]
)
def test_unique_slots_against_numpy(low: int, high: int, rows: int) -> None:
    # ids in the table (a narrow sort key), out of its range, and a table too tall for one
    rng = np.random.default_rng(0)
    ids = rng.integers(low, high, 40)
    ids[-5:] = rows  # padding: one past the table
    got = unique_slots(ids, rows)
    uniq, inv = got[:40], got[40:]
    want = np.unique(ids)
    np.testing.assert_array_equal(uniq[: want.size], want)
    assert (uniq[want.size :] == rows).all()
    np.testing.assert_array_equal(uniq[inv], ids)  # every id finds its slot


def _sparse_grad() -> tuple[ac.Tensor, Any]:
    w = ac.nn.Parameter(ac.randn(ROWS, DIM))
    ids = ac.tensor([[3, 999, 3], [7, 7, 0]])
    ac.nn.functional.embedding_bag(ids, w, mode="sum", sparse=True).pow(2).sum().backward()
    return w, w.grad


def test_backward_builds_nothing_the_size_of_the_table() -> None:
    w, g = _sparse_grad()
    assert g.is_sparse and g.shape == (ROWS, DIM)
    idx, vals = g._parts()
    assert idx.shape == (6,) and vals.shape == (6, DIM)  # slots: the ids read, not the rows
    graph = _nodes([idx.node, vals.node])
    assert not [n for n in graph if n.shape == (ROWS, DIM) and n is not w.node]
    np.testing.assert_array_equal(g._indices().numpy(), [[0, 3, 7, 999]])


OPTS: dict[str, Callable[[list[Any]], Any]] = {
    "sgd": lambda ps: ac.optim.SGD(ps, lr=0.1),
    "adagrad": lambda ps: ac.optim.Adagrad(ps, lr=0.1),
    "sparse_adam": lambda ps: ac.optim.SparseAdam(ps, lr=0.1),
    "rowwise_adagrad": lambda ps: RowWiseAdagrad(ps, lr=0.1),
}


@pytest.mark.parametrize("name", list(OPTS))
def test_step_touches_the_table_only_by_scatters(name: str) -> None:
    """Every value of the table's shape in the step's graph is the table, its state, or a
    scatter into them: the update is computed over the gradient's rows only."""
    w, _ = _sparse_grad()
    opt = OPTS[name]([w])
    opt._realize = lambda: None  # keep the step's graph lazy to look at it
    opt.step()
    state = [v for v in opt.state[w].values() if isinstance(v, ac.Tensor)]
    roots = [w.node] + [v.node for v in state]
    big = [n for n in _nodes(roots) if n.numel >= ROWS and n.shape[:1] == (ROWS,)]
    assert big and all(n.op in (Ops.SCATTER_ADD, Ops.BUFFER, Ops.CONST) for n in big), {
        n.op for n in big
    }
    assert w.node.op is Ops.SCATTER_ADD
