"""anychip.jit and the eager dispatch cache on every device: replays give the values numpy
and PyTorch compute, signatures recapture, guards and rejections behave as documented."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import anychip as ac
from anychip import nn
from anychip.runtime import eager_cache

RS = np.random.default_rng(0)


def rand(*shape: int) -> np.ndarray:
    return RS.standard_normal(shape).astype(np.float32)


def test_replay_matches_numpy_on_new_inputs(device: str) -> None:
    @ac.jit
    def f(a: ac.Tensor, b: ac.Tensor) -> ac.Tensor:
        return (a * b + 1).relu().sum(dim=1)

    for _ in range(4):
        x, y = rand(3, 5), rand(3, 5)
        got = f(ac.tensor(x, device=device), ac.tensor(y, device=device))
        np.testing.assert_allclose(got.numpy(), np.maximum(x * y + 1, 0).sum(1), rtol=1e-5)
        assert got.device == device
    assert len(f.captures) == 1


def test_new_signature_recaptures(device: str) -> None:
    @ac.jit
    def f(a: ac.Tensor, k: float) -> ac.Tensor:
        return a * k

    for shape, k in [((4,), 2.0), ((2, 3), 2.0), ((4,), -0.0), ((4,), 2.0), ((4,), 3.0)]:
        x = np.abs(rand(*shape)) + 1
        got = f(ac.tensor(x, device=device), k).numpy()
        np.testing.assert_array_equal(got, x * np.float32(k))
        np.testing.assert_array_equal(np.signbit(got), np.signbit(x * np.float32(k)))
    assert len(f.captures) == 4  # (4,) 2.0 replayed once
    xi = ac.tensor([1, 2], device=device)  # another dtype
    assert f(xi, 2.0).dtype is ac.float32 and f(xi, 2.0).tolist() == [2.0, 4.0]


def test_structured_results_and_aliasing(device: str) -> None:
    @ac.jit
    def f(pair: tuple[ac.Tensor, ac.Tensor], scale: int) -> dict[str, object]:
        a, b = pair
        return {"sum": [a + b, scale], "diff": (a - b,)}

    x, y = rand(3), rand(3)
    for _ in range(2):
        out = f((ac.tensor(x, device=device), ac.tensor(y, device=device)), 7)
        np.testing.assert_allclose(out["sum"][0].numpy(), x + y, rtol=1e-6)
        assert out["sum"][1] == 7
        np.testing.assert_allclose(out["diff"][0].numpy(), x - y, rtol=1e-6)
    t = ac.tensor(x, device=device)
    out = f((t, t), 7)  # both arguments one buffer: not the (a, b) capture
    np.testing.assert_allclose(out["diff"][0].numpy(), np.zeros(3))
    np.testing.assert_allclose(out["sum"][0].numpy(), 2 * x, rtol=1e-6)


def _torch_twin(model: nn.Module) -> torch.nn.Sequential:
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    with torch.no_grad():
        for tp, ap in zip(net.parameters(), model.parameters()):
            tp.copy_(torch.from_numpy(ap.numpy()))
    return net


def test_training_step_matches_torch(device: str) -> None:
    ac.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).to(device)
    opt = ac.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    net = _torch_twin(model)
    topt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)

    @ac.jit
    def step(model: nn.Module, opt: ac.optim.SGD, x: ac.Tensor, y: ac.Tensor) -> ac.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    for _ in range(6):
        x, y = rand(5, 4), RS.integers(0, 3, 5)
        loss = step(model, opt, ac.tensor(x, device=device), ac.tensor(y, device=device))
        topt.zero_grad()
        tloss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
        tloss.backward()
        topt.step()
        assert loss.item() == pytest.approx(tloss.item(), rel=1e-5, abs=1e-6)
    for ap, tp in zip(model.parameters(), net.parameters()):
        np.testing.assert_allclose(ap.numpy(), tp.detach().numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ap.grad.numpy(), tp.grad.numpy(), rtol=1e-4, atol=1e-5)
    assert len(step.captures) >= 1  # steps 3.. replay (1 and 2 change the optimizer state)


@pytest.mark.parametrize(
    "make",
    [
        lambda ps, m: m.Adam(ps, lr=0.05, amsgrad=True),
        lambda ps, m: m.AdamW(ps, lr=0.05, weight_decay=0.1),
        lambda ps, m: m.Adagrad(ps, lr=0.1, lr_decay=0.01),
    ],
    ids=["adam", "adamw", "adagrad"],
)
def test_step_counting_optimizers_replay(device: str, make: Any) -> None:
    # the step count is a tensor (as in torch), so the signature stops changing after the
    # first step creates the state: later steps replay, with per-step bias corrections
    ac.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).to(device)
    net = _torch_twin(model)
    opt, topt = make(model.parameters(), ac.optim), make(net.parameters(), torch.optim)

    @ac.jit
    def step(model: nn.Module, opt: Any, x: ac.Tensor) -> ac.Tensor:
        opt.zero_grad()
        loss = (model(x) ** 2).mean()
        loss.backward()
        opt.step()
        return loss

    for _ in range(8):
        x = rand(5, 4)
        loss = step(model, opt, ac.tensor(x, device=device))
        topt.zero_grad()
        tloss = (net(torch.from_numpy(x)) ** 2).mean()
        tloss.backward()
        topt.step()
        assert loss.item() == pytest.approx(tloss.item(), rel=1e-5, abs=1e-6)
    for ap, tp in zip(model.parameters(), net.parameters()):
        np.testing.assert_allclose(ap.numpy(), tp.detach().numpy(), rtol=1e-5, atol=1e-6)
    # the first call creates the state (a new signature: not kept), the second is captured
    # and steps 3..8 replay it; an int step count would have made one signature per step
    assert len(step.captures) == 1
    assert float(opt.state[next(model.parameters())]["step"]) == 8


def test_lookups_with_new_indices_replay(device: str) -> None:
    # the bounds check reads one flag, not the indices' range: other valid ids replay the
    # capture (the Python body does not run again); a bad id still raises
    runs = []

    @ac.jit
    def bags(w: ac.Tensor, ids: ac.Tensor, offs: ac.Tensor) -> ac.Tensor:
        runs.append(1)
        return ac.nn.functional.embedding_bag(ids, w, offs, mode="sum")

    table = rand(50, 8)
    w, offs = ac.tensor(table, device=device), ac.tensor(np.arange(0, 12, 3), device=device)
    for seed in range(4):
        ids = np.random.default_rng(seed).integers(0, 50, 12)
        out = bags(w, ac.tensor(ids, device=device), offs)
        want = table[ids].reshape(4, 3, 8).sum(1)
        np.testing.assert_allclose(out.numpy(), want, rtol=1e-5, atol=1e-6)
    assert len(runs) == 1
    with pytest.raises(ac.IndexOutOfRange, match="index 50 is out of range"):
        bags(w, ac.tensor(np.full(12, 50), device=device), offs)


def test_host_reads_are_guards(device: str) -> None:
    @ac.jit
    def f(a: ac.Tensor) -> ac.Tensor:
        return a * 2 if a.sum().item() > 0 else a * 3

    for x in ([1.0, 2.0], [1.0, 2.0], [-1.0, -2.0], [3.0, 1.0], [-5.0, 1.0]):
        want = np.array(x) * (2 if sum(x) > 0 else 3)
        np.testing.assert_allclose(f(ac.tensor(x, device=device)).numpy(), want)


def test_bounds_checks_still_run_on_replay(device: str) -> None:
    @ac.jit
    def loss(logits: ac.Tensor, target: ac.Tensor) -> ac.Tensor:
        return nn.functional.cross_entropy(logits, target)

    logits = ac.tensor(rand(4, 3), device=device)
    for _ in range(2):
        loss(logits, ac.tensor([0, 1, 2, 1], device=device))
    with pytest.raises(IndexError, match="out of bounds"):
        loss(logits, ac.tensor([0, 1, 5, 1], device=device))


def test_rejects_random_draws(device: str) -> None:
    @ac.jit
    def noisy(a: ac.Tensor) -> ac.Tensor:
        return a + ac.rand(*a.shape, device=device)

    with pytest.raises(ac.JitError, match="random"):
        noisy(ac.zeros(3, device=device))


def test_rejects_updates_of_non_arguments(device: str) -> None:
    w = ac.zeros(3, device=device)

    @ac.jit
    def bump(a: ac.Tensor) -> ac.Tensor:
        w.add_(a)
        return w

    with pytest.raises(ac.JitError, match="not one of its arguments"):
        bump(ac.ones(3, device=device))


def test_in_place_update_of_an_argument_replays(device: str) -> None:
    @ac.jit
    def accumulate(acc: ac.Tensor, x: ac.Tensor) -> None:
        acc.add_(x * 2)
        buf = ac.zeros(2, device=device)
        buf.add_(x)  # a tensor made inside the function may be updated
        acc.add_(buf)

    acc = ac.zeros(2, device=device)
    for i in range(4):
        accumulate(acc, ac.tensor([1.0, float(i)], device=device))
    assert acc.tolist() == [12.0, 18.0]  # 3 * sum of x


def test_eager_cache_reuses_plans(device: str) -> None:
    a, b = ac.tensor(rand(16), device=device), ac.tensor(rand(16), device=device)
    (a + b).realize()
    before = eager_cache.cache_info()
    for _ in range(3):
        x, y = rand(16), rand(16)
        got = (ac.tensor(x, device=device) + ac.tensor(y, device=device)).numpy()
        np.testing.assert_allclose(got, x + y, rtol=1e-6)
    after = eager_cache.cache_info()
    assert after["hits"] >= before["hits"] + 3
    x = ac.tensor(np.abs(rand(4)) + 1, device=device)
    assert np.signbit((x * -0.0).numpy()).all() and not np.signbit((x * 0.0).numpy()).any()


@pytest.mark.skipif(len(ac.devices()) < 2, reason="needs a second device")
def test_copies_between_devices_replay(device: str) -> None:
    other = next(d for d in ac.devices() if d != device)

    @ac.jit
    def f(a: ac.Tensor) -> ac.Tensor:
        return (a.to(other) * 2).to(device) + a

    for _ in range(3):
        x = rand(4)
        np.testing.assert_allclose(f(ac.tensor(x, device=device)).numpy(), 3 * x, rtol=1e-6)
