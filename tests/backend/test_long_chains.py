"""Long lazy chains realise on every device: no recursion limit in scheduling, lowering,
the kernel-IR passes, code generation or autograd (issue 9, item 4)."""

from __future__ import annotations

import numpy as np
import pytest

import anychip as ac


@pytest.mark.slow
def test_100k_lazy_adds(device: str) -> None:
    x = ac.zeros(4, device=device)
    one = ac.ones(4, device=device)
    for _ in range(100_000):
        x = x + one
    np.testing.assert_array_equal(x.numpy(), np.full(4, 100_000.0, np.float32))


def test_400_adds_then_item(device: str) -> None:
    # the reproducer: RecursionError in passes/simplify.py on cpu
    x = ac.zeros((), device=device)
    one = ac.ones((), device=device)
    for _ in range(400):
        x = x + one
    assert x.item() == 400.0


def test_running_loss_over_1000_steps(device: str) -> None:
    w = ac.tensor([1.0, 2.0, 3.0], device=device, requires_grad=True)
    running = ac.zeros((), device=device)
    for _ in range(1000):
        loss = (w * w).sum()  # 14 each step
        loss.backward()
        running = running + loss.detach()
    assert running.item() == 14_000.0
    np.testing.assert_allclose(w.grad.numpy(), 1000 * 2 * np.array([1.0, 2.0, 3.0]), rtol=1e-6)


def test_inplace_ema_over_1000_steps(device: str) -> None:
    rng = np.random.default_rng(0)
    v = rng.standard_normal(8).astype(np.float32)
    ema = ac.zeros(8, device=device)
    src = ac.tensor(v, device=device)
    want = np.zeros(8, np.float64)
    with ac.no_grad():
        for _ in range(1000):
            ema.mul_(0.99).add_(src * 0.01)
            want = want * 0.99 + v.astype(np.float64) * 0.01
    np.testing.assert_allclose(ema.numpy(), want, rtol=1e-4, atol=1e-5)


def test_backward_through_a_5000_op_chain(device: str) -> None:
    w = ac.tensor([0.5, -1.0], device=device, requires_grad=True)
    x = w
    for _ in range(5000):
        x = x * 1.0 + 0.001
    x.sum().backward()
    np.testing.assert_allclose(x.numpy(), [5.5, 4.0], rtol=1e-4)
    np.testing.assert_array_equal(w.grad.numpy(), [1.0, 1.0])


def test_shared_activation_chain_matches_numpy(device: str) -> None:
    # y appears several times per step: compiled as a tree this was exponential
    y = ac.tensor(np.linspace(-1, 1, 6, dtype=np.float32), device=device)
    want = np.linspace(-1, 1, 6).astype(np.float64)
    for _ in range(6):
        y = ac.where(y > 0.1, y, -y).sigmoid() * y.tanh() + y
        w = np.where(want > 0.1, want, -want)
        want = 1 / (1 + np.exp(-w)) * np.tanh(want) + want
    np.testing.assert_allclose(y.numpy(), want, rtol=2e-5, atol=1e-6)
