"""Tables reading the same bags share one host layout step (frontend/embedding.py
`_laid_out`): under `anychip.jit` the plan lays each (ids, offsets) out once, every replay
on a new batch is right, and a layout made outside a capture is never baked into it."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

import anychip as ac
from anychip.runtime import dispatch

ROWS, BATCH, IDS = 30, 5, 16


def batch(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 4, BATCH)
    ids = np.zeros(IDS, np.int64)
    ids[: lengths.sum()] = rng.integers(0, ROWS, lengths.sum())
    return ids, np.concatenate([[0], np.cumsum(lengths)])


def pooled(table: np.ndarray, ids: np.ndarray, offs: np.ndarray) -> np.ndarray:
    return np.stack([table[ids[a:b]].sum(0) for a, b in itertools.pairwise(offs)])


class TwoTables(ac.nn.Module):
    """A feature read by a first-order (dim 1) and a second-order (dim 4) table, as DeepFM."""

    def __init__(self) -> None:
        super().__init__()
        kw: dict[str, Any] = {"mode": "sum", "include_last_offset": True}
        self.wide = ac.nn.EmbeddingBag(ROWS, 1, **kw)
        self.deep = ac.nn.EmbeddingBag(ROWS, 4, **kw)

    def forward(self, ids: ac.Tensor, offs: ac.Tensor) -> ac.Tensor:
        return ac.cat([self.wide(ids, offs), self.deep(ids, offs)], 1)


def expected(net: TwoTables, ids: np.ndarray, offs: np.ndarray) -> np.ndarray:
    w, d = net.wide.weight.numpy(), net.deep.weight.numpy()
    return np.concatenate([pooled(w, ids, offs), pooled(d, ids, offs)], 1)


def test_one_layout_step_for_two_tables(device: str) -> None:
    net = TwoTables().to(device)
    fn = ac.jit(lambda ids, offs: net(ids, offs))
    for seed in range(4):  # capture, then replays on other batches
        ids, offs = batch(seed)
        got = fn(ac.tensor(ids, device=device), ac.tensor(offs, device=device))
        np.testing.assert_allclose(got.numpy(), expected(net, ids, offs), rtol=1e-6, atol=1e-6)
    (cap,) = fn.captures.values()
    assert sum(s.kind == dispatch.HOST for s in cap.plan.steps) == 1


def test_layout_made_outside_a_capture_is_not_reused_in_it(device: str) -> None:
    net = TwoTables().to(device)
    ids0, offs0 = batch(0)
    first = (ac.tensor(ids0, device=device), ac.tensor(offs0, device=device))
    net(*first).realize()  # eager: lays out these very tensors
    fn = ac.jit(lambda ids, offs: net(ids, offs))
    fn(*first)  # the capture must record its own layout step
    ids1, offs1 = batch(1)
    got = fn(ac.tensor(ids1, device=device), ac.tensor(offs1, device=device))
    np.testing.assert_allclose(got.numpy(), expected(net, ids1, offs1), rtol=1e-6, atol=1e-6)


def test_ids_changed_in_place_are_laid_out_again(device: str) -> None:
    net = TwoTables().to(device)
    ids, offs = batch(2)
    t_ids, t_offs = ac.tensor(ids, device=device), ac.tensor(offs, device=device)
    net(t_ids, t_offs).realize()
    t_ids.add_(1).clamp_(max=ROWS - 1)
    got = net(t_ids, t_offs).numpy()
    np.testing.assert_allclose(
        got, expected(net, np.minimum(ids + 1, ROWS - 1), offs), rtol=1e-6, atol=1e-6
    )
