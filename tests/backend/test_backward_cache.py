"""The backward cache (frontend/backward_cache.py): a repeated backward pass replays its
recorded plan instead of building the gradients' graph. Replayed passes against the
ordinary pass bit for bit (losses, dense and row gradients, parameters), against torch
and float64 numpy, with runtime scalars that change every step (a loss scale the rules
read, an exponent a rule turns into a constant of its own), and the passes it must leave
to the ordinary path (hooks, accumulation, retain_graph, in-place changes)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

import anychip as ac
from anychip.frontend import backward_cache
from anychip.optim import update_cache


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    backward_cache.clear_cache()
    update_cache.clear_cache()
    yield
    backward_cache._ON[0] = backward_cache.enabled()


def _hits() -> int:
    return backward_cache.cache_info()["hits"]


class _Bags(ac.nn.Module):
    """Two embedding bags (row gradients), one shared with the dense path, and an MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = ac.nn.EmbeddingBag(30, 4, mode="sum", include_last_offset=True)
        self.other = ac.nn.EmbeddingBag(20, 4, mode="mean", include_last_offset=True)
        self.fc = ac.nn.Linear(8, 8)
        self.out = ac.nn.Linear(8, 1)

    def forward(self, ids: Any, offs: Any, ids2: Any, offs2: Any) -> Any:
        h = ac.cat([self.emb(ids, offs), self.other(ids2, offs2)], 1)
        h = self.fc(h).relu() + self.fc(h)  # fc twice: its leaves get two contributions
        return self.out(h).reshape(-1)


def _batch(rng: np.random.Generator, device: str) -> list[Any]:
    out = []
    for rows in (30, 20):
        lengths = rng.integers(1, 4, 6)
        ids = rng.integers(0, rows, int(lengths.sum()))
        padded = np.zeros(32, np.int64)  # padded to one size class, as bench/dlrm.py
        padded[: ids.size] = ids
        offs = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        out += [ac.tensor(padded, device=device), ac.tensor(offs, device=device)]
    return out


def _train_bags(device: str, on: bool, steps: int = 10) -> tuple[list[float], list[Any], list[Any]]:
    """Losses, the last step's gradients (read before the update) and the parameters."""
    backward_cache._ON[0] = on
    ac.manual_seed(5)
    m = _Bags().to(device)
    opt = ac.optim.SGD(m.parameters(), lr=0.1)
    rng = np.random.default_rng(3)
    losses, grads = [], []
    for k in range(steps):
        opt.param_groups[0]["lr"] = 0.1 / (1 + k)  # a schedule: a tensor the update reads
        batch = _batch(rng, device)
        y = ac.tensor(rng.standard_normal(6).astype(np.float32), device=device)
        opt.zero_grad()
        # a loss scale that changes every step: a runtime scalar the rules read
        loss = ((m(*batch) - y) ** 2).mean() * (1.0 + k / 4)
        if k % 3 == 2:
            losses.append(loss.item())  # read before backward: the loss is computed
        loss.backward()
        grads = [p.grad.numpy().copy() for p in m.parameters()]
        opt.step()
        losses.append(loss.item())
    return losses, grads, [p.numpy() for p in m.parameters()]


def test_replayed_passes_match_the_ordinary_pass_bit_for_bit(device: str) -> None:
    """Backward passes and SGD steps (optim/update_cache.py) replayed, against the same
    training with both caches off."""
    on = _train_bags(device, True)
    hits, steps = _hits(), update_cache.cache_info()["hits"]
    off = _train_bags(device, False)
    assert hits >= 4  # replays happened (the passes with and without a read loss)
    assert steps >= 6
    assert on[0] == off[0]
    for got, want in zip(on[1] + on[2], off[1] + off[2], strict=True):
        np.testing.assert_array_equal(got, want)


def test_replayed_mlp_training_follows_torch(device: str) -> None:
    torch.manual_seed(0)
    theirs = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    ours = ac.nn.Sequential(ac.nn.Linear(5, 16), ac.nn.Tanh(), ac.nn.Linear(16, 1)).to(device)
    with ac.no_grad():
        for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
            p.copy_(ac.tensor(q.detach().numpy(), device=device))
    opt = ac.optim.Adam(ours.parameters(), lr=0.01)
    topt = torch.optim.Adam(theirs.parameters(), lr=0.01)
    rng = np.random.default_rng(0)
    for k in range(12):
        x = rng.standard_normal((8, 5)).astype(np.float32)
        y = rng.standard_normal((8, 1)).astype(np.float32)
        scale = 1.0 + 0.5 * k
        opt.zero_grad()
        loss = ((ours(ac.tensor(x, device=device)) - ac.tensor(y, device=device)) ** 2).mean()
        (loss * scale).backward()
        opt.step()
        topt.zero_grad()
        tl = ((theirs(torch.from_numpy(x)) - torch.from_numpy(y)) ** 2).mean()
        (tl * scale).backward()
        topt.step()
        np.testing.assert_allclose(loss.item(), tl.item(), rtol=1e-4)
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=1e-4, atol=1e-5)
    assert _hits() >= 8


def test_a_constant_a_rule_makes_follows_its_forward_value(device: str) -> None:
    """x ** p differentiates as p * x ** (p - 1): the rule makes the constant p - 1, which
    a recorded plan would hold as it was. A new p must not replay it."""
    x0 = np.array([1.5, 2.0, 0.5, 3.0])
    w = ac.nn.Parameter(ac.tensor(x0, dtype=ac.float64, device=device))
    records = 0
    for k in range(10):
        p = 2.5 + 0.25 * (k // 2)  # the same exponent twice in a row, then a new one
        w.grad = None
        ((w**p).sum() * 3.0).backward()
        np.testing.assert_allclose(w.grad.numpy(), 3.0 * p * x0 ** (p - 1), rtol=1e-12)
        records = backward_cache.cache_info()["records"]
    assert records >= 1  # the pass was recorded (its constant checked at each lookup)


def test_a_replayed_pass_frees_the_graph_as_torch() -> None:
    w = ac.nn.Parameter(ac.ones(3))
    for _ in range(4):
        w.grad = None
        loss = (w * w).sum()
        loss.backward()
    assert _hits() >= 1
    np.testing.assert_array_equal(w.grad.numpy(), [2.0, 2.0, 2.0])
    with pytest.raises(ac.AutogradError, match="a second time"):
        loss.backward()
    # a graph of linear ops saves nothing: torch lets it run backward again after a free
    for _ in range(4):
        w.grad = None
        loss = (w.reshape(3, 1).expand(3, 2) + w.reshape(3, 1)).sum()
        loss.backward()
    loss.backward()
    np.testing.assert_array_equal(w.grad.numpy(), [8.0, 8.0, 8.0])  # 4 a pass


def test_other_passes_take_the_ordinary_path(device: str) -> None:
    w = ac.nn.Parameter(ac.tensor([1.0, -2.0, 3.0], device=device))
    want = np.array([2.0, -4.0, 6.0])

    def loss() -> Any:
        return (w * w).sum()

    for _ in range(3):  # recorded, then replayed
        w.grad = None
        loss().backward()
    before = _hits()
    # accumulation into an existing gradient
    loss().backward()
    np.testing.assert_array_equal(w.grad.numpy(), 2 * want)
    # a hook doubles the gradient, at every pass
    handle = w.register_hook(lambda g: g * 2)
    for _ in range(2):
        w.grad = None
        loss().backward()
        np.testing.assert_array_equal(w.grad.numpy(), 2 * want)
    handle.remove()
    assert _hits() == before
    # retain_graph: the first pass may replay (keeping the graph), the second adds up
    w.grad = None
    value = loss()
    value.backward(retain_graph=True)
    value.backward()
    np.testing.assert_array_equal(w.grad.numpy(), 2 * want)
    before = _hits()
    # a value the graph saved, changed in place after the forward
    w.grad = None
    h = w * 1.0
    out = (h * h).sum()
    with ac.no_grad():
        h.add_(1.0)
    with pytest.raises(ac.AutogradError, match="modified in place"):
        out.backward()
    assert _hits() == before
    w.grad = None
    loss().backward()  # and the plain pass replays again
    np.testing.assert_array_equal(w.grad.numpy(), want)
    assert _hits() == before + 1


BINARY = {
    "add": lambda w, c: w + c,
    "sub": lambda w, c: w - c,
    "rsub": lambda w, c: c - w,
    "mul": lambda w, c: w * c,
    "div": lambda w, c: w / c,
    "rdiv": lambda w, c: c / w,
    "pow": lambda w, c: w**c,
    "rpow": lambda w, c: c**w,
    "maximum": lambda w, c: ac.maximum(w, ac.full_like(w, c)),
    "minimum": lambda w, c: ac.minimum(w, ac.full_like(w, c)),
    "fmod": lambda w, c: ac.fmod(w, c),
    "atan2": lambda w, c: ac.atan2(w, ac.full_like(w, c)),
    "where": lambda w, c: ac.where(w > 0.5, w, w * c),
    "clamp": lambda w, c: w.clamp(-c, c),
    "leaky_relu": lambda w, c: ac.nn.functional.leaky_relu(w - 1.0, c),
}


@pytest.mark.parametrize("name", sorted(BINARY))
def test_rules_make_no_constant_of_a_runtime_scalar(name: str) -> None:
    """What makes a recorded pass sound: the constants a derivative rule makes itself are
    the same whatever the value of a runtime scalar in the forward graph (a rule computes
    on that scalar's node, never on its number). Two values, the gradients' graphs built
    (not computed) and their own constants compared."""
    from anychip.frontend import autograd
    from anychip.ir.ops import Ops, runtime_scalar

    def made(value: float) -> list[Any]:
        w = ac.nn.Parameter(ac.tensor([[0.7, 1.3, 2.1], [0.4, 1.9, 0.9]]))
        out = BINARY[name](w, value)
        forward: set[int] = set()
        stack = [out.node]
        while stack:  # the forward graph's nodes
            n = stack.pop()
            if id(n) not in forward:
                forward.add(id(n))
                stack.extend(n.srcs)
        (g,) = autograd.grad(out.sum(), [w])
        consts, seen, stack = [], set(), [g.node]
        while stack:  # the gradient's graph, without the forward's nodes
            n = stack.pop()
            if id(n) in seen or id(n) in forward:
                continue
            seen.add(id(n))
            if n.op is Ops.CONST and runtime_scalar(n):
                consts.append(float(n.arg))
            stack.extend(n.srcs)
        return sorted(consts)

    assert made(0.3) == made(1.7)


def test_a_replayed_step_keeps_old_values_that_are_still_read(device: str) -> None:
    """A replayed SGD step writes into a parameter's buffer only while nothing else reads
    the old value: a lazy tensor made from it before the step keeps the old value, and
    without one the step updates the buffer in place."""
    from anychip.runtime import donate

    ac.manual_seed(1)
    m = ac.nn.Linear(4, 3).to(device)
    opt = ac.optim.SGD(m.parameters(), lr=0.5)
    x = ac.tensor(
        np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32), device=device
    )
    for _ in range(4):  # recorded, then replayed
        opt.zero_grad()
        m(x).square().sum().backward()
        opt.step()
    assert update_cache.cache_info()["hits"] >= 1
    opt.zero_grad()
    m(x).square().sum().backward()
    want = m.weight.numpy() - 0.5 * m.weight.grad.numpy()
    before = m.weight.numpy().copy()
    snapshot = m.weight * 1.0  # not computed yet: it reads the old value
    hits = update_cache.cache_info()["hits"]
    opt.step()
    assert update_cache.cache_info()["hits"] == hits + 1
    np.testing.assert_array_equal(snapshot.numpy(), before)
    np.testing.assert_allclose(m.weight.numpy(), want, rtol=1e-6)
    del snapshot
    opt.zero_grad()
    m(x).square().sum().backward()
    at, count = id(m.weight.node.arg), donate.donated_count()
    opt.step()  # nothing reads the old values: both parameters are updated in place
    if device == "cpu":
        assert id(m.weight.node.arg) == at and donate.donated_count() == count + 2


def test_the_environment_turns_the_caches_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """ANYCHIP_BACKWARD_CACHE=0 (read at import: `_ON`) leaves every pass and step to the
    ordinary path."""
    monkeypatch.setenv("ANYCHIP_BACKWARD_CACHE", "0")
    assert not backward_cache.enabled()
    monkeypatch.setenv("ANYCHIP_BACKWARD_CACHE", "1")
    assert backward_cache.enabled()
    backward_cache._ON[0] = False
    before = (_hits(), update_cache.cache_info()["hits"])
    w = ac.nn.Parameter(ac.ones(3))
    opt = ac.optim.SGD([w], lr=0.1)
    for _ in range(4):
        opt.zero_grad()
        (w * w).sum().backward()
        opt.step()
    assert (_hits(), update_cache.cache_info()["hits"]) == before
    np.testing.assert_allclose(w.numpy(), np.full(3, 0.8**4), rtol=1e-6)


class _Embed(ac.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.e = ac.nn.Embedding(20, 8)
        self.out = ac.nn.Linear(8, 1)

    def forward(self, x: Any) -> Any:
        return self.out(self.e(x).mean(1))


def _mlp(*middle: Any) -> Any:
    return ac.nn.Sequential(ac.nn.Linear(8, 16), *middle, ac.nn.Linear(16, 1))


def _conv() -> Any:
    conv = ac.nn.Conv2d(2, 4, 3, padding=1)
    return ac.nn.Sequential(conv, ac.nn.ReLU(), ac.nn.Flatten(), ac.nn.Linear(100, 1))


MODELS = {  # name: (model, input shape: None for ids)
    "dropout": (lambda: _mlp(ac.nn.ReLU(), ac.nn.Dropout(0.3)), (8,)),
    "batchnorm": (lambda: _mlp(ac.nn.BatchNorm1d(16), ac.nn.GELU()), (8,)),
    "embedding": (_Embed, None),
    "conv": (_conv, (2, 5, 5)),
}


def _train(name: str, device: str, on: bool, opt_name: str, clip: bool) -> list[Any]:
    backward_cache._ON[0] = on
    ac.manual_seed(0)
    make, shape = MODELS[name]
    m = make().to(device)
    opt = getattr(ac.optim, opt_name)(m.parameters(), lr=0.05)
    rng = np.random.default_rng(1)
    got: list[Any] = []
    for _ in range(6):
        if shape is None:
            x = ac.tensor(rng.integers(0, 20, (4, 3)), device=device)
        else:
            x = ac.tensor(rng.standard_normal((4, *shape)).astype(np.float32), device=device)
        y = ac.tensor(rng.standard_normal((4, 1)).astype(np.float32), device=device)
        opt.zero_grad()
        loss = ((m(x) - y) ** 2).mean()
        loss.backward()
        if clip:
            ac.nn.utils.clip_grad_norm_(m.parameters(), 0.5)
        opt.step()
        got.append(loss.item())
    return got + [t.numpy() for t in (*m.parameters(), *m.buffers())]


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("opt_name,clip", [("SGD", False), ("Adam", True)])
def test_models_train_the_same_with_the_caches(
    device: str, name: str, opt_name: str, clip: bool
) -> None:
    """Dropout (its masks drawn anew each step), batchnorm (running statistics updated in
    place), embeddings (row gradients), a convolution (a composite record: left to the
    ordinary pass), gradient clipping, Adam: with the caches and without, bit for bit."""
    before = _hits()
    on = _train(name, device, True, opt_name, clip)
    replayed = _hits() - before
    off = _train(name, device, False, opt_name, clip)
    assert on[:6] == off[:6]
    for a, b in zip(on[6:], off[6:], strict=True):
        np.testing.assert_array_equal(a, b)
    assert (replayed > 0) == (name != "conv")
