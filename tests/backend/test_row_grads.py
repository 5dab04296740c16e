"""Dense embedding gradients kept as their rows (frontend/rowgrad.py) against torch's dense
gradients: the value read after backward and after the step, plain SGD adding the rows
into the table, the dense paths (momentum, weight decay, maximize, Adam, a gradient
changed in place, accumulation over two backward calls), and a jitted step."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import anychip as ac
from anychip.frontend import rowgrad

TOL = {"rtol": 1e-5, "atol": 1e-6}
ROWS, DIM = 12, 3


def _batches(n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(ids, offsets with the last one, upstream gradient) per batch: repeated ids, so rows
    gather several contributions."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        lengths = rng.integers(0, 4, 5)
        ids = rng.integers(0, ROWS, int(lengths.sum())).astype(np.int64)
        offs = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        out.append((ids, offs, rng.standard_normal((5, DIM)).astype(np.float32)))
    return out


def _pair(device: str, mode: str = "sum") -> tuple[Any, Any]:
    w0 = np.random.default_rng(1).standard_normal((ROWS, DIM)).astype(np.float32)
    ours = ac.nn.EmbeddingBag(ROWS, DIM, mode=mode, include_last_offset=True).to(device)
    theirs = torch.nn.EmbeddingBag(ROWS, DIM, mode=mode, include_last_offset=True)
    with ac.no_grad():
        ours.weight.copy_(ac.tensor(w0, device=device))
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(w0))
    return ours, theirs


def _loss(model: Any, lib: Any, ids: np.ndarray, offs: np.ndarray, gy: np.ndarray, dev: Any) -> Any:
    if lib is torch:
        return (model(torch.from_numpy(ids), torch.from_numpy(offs)) * torch.from_numpy(gy)).sum()
    t = [ac.tensor(a, device=dev) for a in (ids, offs, gy)]
    return (model(t[0], t[1]) * t[2]).sum()


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_sgd_adds_the_rows_and_the_gradient_reads_dense(device: str, mode: str) -> None:
    ours, theirs = _pair(device, mode)
    opt, topt = (
        ac.optim.SGD(ours.parameters(), lr=0.5),
        torch.optim.SGD(theirs.parameters(), lr=0.5),
    )
    for ids, offs, gy in _batches(4):
        opt.zero_grad()
        topt.zero_grad()
        _loss(ours, ac, ids, offs, gy, device).backward()
        _loss(theirs, torch, ids, offs, gy, None).backward()
        assert rowgrad.parts(ours.weight.grad) is not None  # kept as rows
        opt.step()
        topt.step()
        assert rowgrad.parts(ours.weight.grad) is not None  # the step did not make it
        np.testing.assert_allclose(ours.weight.numpy(), theirs.weight.detach().numpy(), **TOL)
        np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), **TOL)


@pytest.mark.parametrize(
    "kind", ["momentum", "weight_decay", "maximize", "adam", "changed", "accumulated"]
)
def test_dense_paths_stay_right(device: str, kind: str) -> None:
    ours, theirs = _pair(device)
    kw: dict[str, Any] = {"lr": 0.1}
    if kind in ("momentum", "weight_decay", "maximize"):
        kw[kind] = {"momentum": 0.9, "weight_decay": 0.01, "maximize": True}[kind]
    make = (lambda lib: lib.optim.Adam) if kind == "adam" else (lambda lib: lib.optim.SGD)
    opt, topt = make(ac)(ours.parameters(), **kw), make(torch)(theirs.parameters(), **kw)
    data = _batches(6, seed=2)
    for k in range(0, 6, 2):
        opt.zero_grad()
        topt.zero_grad()
        for ids, offs, gy in data[k : k + (2 if kind == "accumulated" else 1)]:
            _loss(ours, ac, ids, offs, gy, device).backward()
            _loss(theirs, torch, ids, offs, gy, None).backward()
        if kind == "changed":  # an in-place change of the gradient reaches the step
            ours.weight.grad.mul_(-3.0)
            theirs.weight.grad.mul_(-3.0)
        opt.step()
        topt.step()
        np.testing.assert_allclose(ours.weight.numpy(), theirs.weight.detach().numpy(), **TOL)
    np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), **TOL)


def _sgd_step(model: Any, opt: Any, ids: Any, offs: Any, gy: Any) -> Any:
    opt.zero_grad()
    loss = (model(ids, offs) * gy).sum()
    loss.backward()
    opt.step()
    return loss


def test_jitted_step_replays_rows_and_hands_back_the_gradient(device: str) -> None:
    ours, theirs = _pair(device)
    opt, topt = (
        ac.optim.SGD(ours.parameters(), lr=0.3),
        torch.optim.SGD(theirs.parameters(), lr=0.3),
    )

    step = ac.jit(_sgd_step)  # a capture of its own for each test

    # one id count, so every call after the second replays the capture
    data = [(ids[:4], np.minimum(offs, 4), gy) for ids, offs, gy in _batches(30, seed=3)]
    data = [d for d in data if d[0].size == 4][:6]
    assert len(data) == 6
    for ids, offs, gy in data:
        loss = step(ours, opt, *(ac.tensor(a, device=device) for a in (ids, offs, gy)))
        topt.zero_grad()
        tloss = _loss(theirs, torch, ids, offs, gy, None)
        tloss.backward()
        topt.step()
        assert abs(loss.item() - tloss.item()) <= 1e-5 * (1 + abs(tloss.item()))
        np.testing.assert_allclose(ours.weight.numpy(), theirs.weight.detach().numpy(), **TOL)
        np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), **TOL)
    assert len(step.captures) == 1


def test_zero_grad_without_none_keeps_rows(device: str) -> None:
    # zero_grad(set_to_none=False) leaves +0.0 gradients: the next backward's rows are
    # the gradient exactly (0 + a scatter into +0.0 is that scatter), still kept as rows
    ours, theirs = _pair(device)
    opt, topt = (
        ac.optim.SGD(ours.parameters(), lr=0.2),
        torch.optim.SGD(theirs.parameters(), lr=0.2),
    )
    for ids, offs, gy in _batches(4, seed=5):
        opt.zero_grad(set_to_none=False)
        topt.zero_grad(set_to_none=False)
        _loss(ours, ac, ids, offs, gy, device).backward()
        _loss(theirs, torch, ids, offs, gy, None).backward()
        assert rowgrad.parts(ours.weight.grad) is not None
        opt.step()
        topt.step()
        np.testing.assert_allclose(ours.weight.numpy(), theirs.weight.detach().numpy(), **TOL)
        got = ours.weight.grad.numpy()
        np.testing.assert_allclose(got, theirs.weight.grad.numpy(), **TOL)
        assert not np.signbit(got[got == 0]).any()  # +0.0 where no id landed, as torch's


def test_long_jitted_run_follows_torch(device: str) -> None:
    # 300 jitted SGD steps of bags with repeated ids: row gradients added step after step
    # stay with torch's dense gradients (rounding would show as a drift)
    ours, theirs = _pair(device)
    opt, topt = (
        ac.optim.SGD(ours.parameters(), lr=0.05),
        torch.optim.SGD(theirs.parameters(), lr=0.05),
    )

    step = ac.jit(_sgd_step)  # a capture of its own for each test

    rng = np.random.default_rng(9)
    offs = np.arange(0, 17, 4)  # four bags of four ids
    for _ in range(300):
        ids = rng.integers(0, ROWS, 16)
        gy = rng.standard_normal((4, DIM)).astype(np.float32)
        step(ours, opt, *(ac.tensor(a, device=device) for a in (ids, offs, gy)))
        topt.zero_grad()
        _loss(theirs, torch, ids, offs, gy, None).backward()
        topt.step()
    np.testing.assert_allclose(
        ours.weight.numpy(), theirs.weight.detach().numpy(), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), **TOL)
