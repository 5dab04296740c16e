"""Optimizers on row-sparse gradients against torch (SGD, Adagrad, SparseAdam with
sparse=True embedding bags) and RowWiseAdagrad against float64 numpy, over several steps
with ids repeated within a batch: only the batch's rows move, state follows them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import anychip as ac
from anychip.optim import rowstate
from anychip.rec import RowWiseAdagrad

ROWS, DIM = 30, 4
I64 = np.int64


def _batches(n: int = 4) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(ids, offsets, target): 6 bags over 12 ids, ids repeated within a batch."""
    rng = np.random.default_rng(5)
    out = []
    for _ in range(n):
        ids = rng.integers(0, ROWS // 2, 12).astype(I64)
        ids[:3] = ids[3]  # repeats
        offs = np.array([0, 1, 3, 6, 6, 9], I64)
        out.append((ids, offs, rng.standard_normal((6, DIM)).astype(np.float32)))
    return out


def _w0() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((ROWS, DIM)).astype(np.float32)


def _train(lib: Any, make: Callable[..., Any], device: str | None, mode: str = "sum") -> Any:
    """Tables after training with `make(params)` over _batches() (torch or anychip)."""
    kw: dict[str, Any] = {"mode": mode, "sparse": True}
    if lib is torch:
        bag = torch.nn.EmbeddingBag(ROWS, DIM, _weight=torch.tensor(_w0()), **kw)
    else:
        bag = ac.nn.EmbeddingBag(ROWS, DIM, _weight=ac.tensor(_w0()), **kw).to(device)
    opt = make([bag.weight])
    for ids, offs, y in _batches():
        t = (lambda a: torch.tensor(a)) if lib is torch else (lambda a: ac.tensor(a, device=device))
        opt.zero_grad()
        ((bag(t(ids), t(offs)) - t(y)) ** 2).sum().backward()
        assert bag.weight.grad.is_sparse
        opt.step()
    return bag.weight.detach().numpy(), opt


OPTIMIZERS: dict[str, Callable[[Any], Callable[..., Any]]] = {
    "sgd": lambda m: lambda ps: m.SGD(ps, lr=0.05),
    "sgd_maximize": lambda m: lambda ps: m.SGD(ps, lr=0.05, maximize=True),
    "adagrad": lambda m: lambda ps: m.Adagrad(ps, lr=0.3),
    "adagrad_decay_init": lambda m: (
        lambda ps: m.Adagrad(ps, lr=0.3, lr_decay=0.1, initial_accumulator_value=0.5)
    ),
    "sparse_adam": lambda m: lambda ps: m.SparseAdam(ps, lr=0.1),
    "sparse_adam_maximize": lambda m: lambda ps: m.SparseAdam(ps, lr=0.1, maximize=True),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_matches_torch(device: str, name: str, mode: str) -> None:
    got, _ = _train(ac, OPTIMIZERS[name](ac.optim), device, mode)
    want, _ = _train(torch, OPTIMIZERS[name](torch.optim), None, mode)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
    untouched = np.setdiff1d(np.arange(ROWS), np.concatenate([b[0] for b in _batches()]))
    np.testing.assert_array_equal(got[untouched], _w0()[untouched])


def _rowwise_numpy(lr: float, eps: float, wd: float = 0.0, decay: float = 0.0) -> np.ndarray:
    """RowWiseAdagrad (TorchRec / FBGEMM exact row-wise Adagrad) in float64 on the same
    batches, the gradient of sum((bag sums - y)^2) worked out by hand."""
    w = _w0().astype(np.float64)
    acc = np.zeros(ROWS)
    for step, (ids, offs, y) in enumerate(_batches(), 1):
        bag = np.searchsorted(offs, np.arange(ids.size), side="right") - 1
        out = np.zeros((offs.size, DIM))
        np.add.at(out, bag, w[ids])
        g_out = 2 * (out - y)
        grad = np.zeros_like(w)
        np.add.at(grad, ids, g_out[bag])
        rows = np.unique(ids)
        g = grad[rows] + wd * w[rows]
        acc[rows] += (g * g).mean(1)
        clr = lr / (1 + (step - 1) * decay)
        w[rows] -= clr * g / (np.sqrt(acc[rows])[:, None] + eps)
    return w


@pytest.mark.parametrize("wd,decay", [(0.0, 0.0), (0.1, 0.2)], ids=["plain", "wd_decay"])
def test_rowwise_adagrad_matches_float64(device: str, wd: float, decay: float) -> None:
    make = lambda ps: RowWiseAdagrad(ps, lr=0.2, eps=1e-8, weight_decay=wd, lr_decay=decay)  # noqa: E731
    got, opt = _train(ac, make, device)
    np.testing.assert_allclose(got, _rowwise_numpy(0.2, 1e-8, wd, decay), rtol=1e-5, atol=1e-5)
    (state,) = opt.state.values()
    assert state["sum"].shape == (ROWS,)  # one accumulator per row


def test_rowwise_adagrad_dense_gradient_touches_every_row(device: str) -> None:
    w = ac.tensor(_w0(), device=device, requires_grad=True)
    opt = RowWiseAdagrad([w], lr=0.1)
    (w**3).sum().backward()
    opt.step()
    g = 3 * _w0().astype(np.float64) ** 2
    want = _w0() - 0.1 * g / (np.sqrt((g * g).mean(1))[:, None] + 1e-10)
    np.testing.assert_allclose(w.numpy(), want, rtol=1e-5, atol=1e-6)


def test_sparse_adam_dense_gradient_still_works(device: str) -> None:
    w = ac.tensor(np.ones((3, 2), np.float32), device=device, requires_grad=True)
    opt = ac.optim.SparseAdam([w], lr=0.1)
    (w[1] * 2).sum().backward()
    opt.step()
    np.testing.assert_allclose(w.numpy(), [[1, 1], [0.9, 0.9], [1, 1]], rtol=1e-5)


def test_sgd_momentum_refuses_sparse_gradients(device: str) -> None:
    w = ac.tensor(_w0(), device=device, requires_grad=True)
    opt = ac.optim.SGD([w], lr=0.1, momentum=0.9)
    ac.nn.functional.embedding(ac.tensor([1, 2], device=device), w, sparse=True).sum().backward()
    with pytest.raises(ac.errors.ArgumentError, match=r"sparse gradients.*momentum"):
        opt.step()


def test_adagrad_weight_decay_refuses_sparse_gradients(device: str) -> None:
    w = ac.tensor(_w0(), device=device, requires_grad=True)
    opt = ac.optim.Adagrad([w], lr=0.1, weight_decay=0.1)
    ac.nn.functional.embedding(ac.tensor([1, 2], device=device), w, sparse=True).sum().backward()
    with pytest.raises(ac.errors.ArgumentError, match=r"weight_decay.*sparse"):
        opt.step()


def _fresh_row_steps(make: Callable[..., Any], device: str) -> np.ndarray:
    """Rows 1 and 2 of a (4, 2) zero table after two steps of gradient 1 on both, row 1
    reset through anychip.optim.rowstate (a table handing it to a new id) in between."""
    w = ac.tensor(np.zeros((4, 2), np.float32), device=device, requires_grad=True)
    opt = make([w])

    def step() -> None:
        opt.zero_grad()
        ids = ac.tensor([1, 2], device=device)
        ac.nn.functional.embedding(ids, w, sparse=True).sum().backward()
        opt.step()

    step()
    rowstate.reset_rows(w, [1])
    with ac.no_grad():
        w[1] = 0.0
    step()
    return w.numpy()[1:3, 0]


def test_recycled_rows_start_afresh(device: str) -> None:
    """A reset row loses its optimizer state: its next step is a first step again."""
    got = _fresh_row_steps(lambda ps: RowWiseAdagrad(ps, lr=0.5), device)
    # fresh: 0.5 * 1 / sqrt(1); kept: 0.5 + 0.5 / sqrt(2)
    np.testing.assert_allclose(got, [-0.5, -0.5 - 0.5 / np.sqrt(2)], rtol=1e-5)
    got = _fresh_row_steps(lambda ps: ac.optim.SparseAdam(ps, lr=0.5), device)
    # t = 2 for both rows (torch counts steps per table); a fresh row's moments are one
    # gradient's: lr sqrt(1 - b2^2) / (1 - b1^2) * (1 - b1) / sqrt(1 - b2); a kept row: lr
    b1, b2 = 0.9, 0.999
    fresh = 0.5 * np.sqrt(1 - b2**2) / (1 - b1**2) * (1 - b1) / np.sqrt(1 - b2)
    np.testing.assert_allclose(got, [-fresh, -1.0], rtol=1e-4)
