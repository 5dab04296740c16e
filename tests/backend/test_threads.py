"""Threads: separate models trained at once in separate threads, each with its own jitted
step, give what the same runs give one after another (issue 9, item 8); per-thread
workspaces are freed with their thread (item 11)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

import anychip as ac
from anychip import nn

THREADS = 4
STEPS = 6


class Net(nn.Module):
    """An MLP over dense features plus an embedding bag of ids (its table's gradient kept as
    rows, frontend/rowgrad.py, under plain SGD)."""

    def __init__(self) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(50, 4, mode="sum", include_last_offset=True)
        self.mlp = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))

    def forward(self, x: ac.Tensor, ids: ac.Tensor, offs: ac.Tensor) -> ac.Tensor:
        out: ac.Tensor = self.mlp(x + self.bag(ids, offs))
        return out


def make_model(k: int, device: str) -> tuple[nn.Module, Any]:
    ac.manual_seed(k)
    model = Net().to(device)
    ps = list(model.parameters())
    if k % 3 == 0:
        return model, ac.optim.Adam(ps, lr=0.05)
    return model, ac.optim.SGD(ps, lr=0.1, momentum=0.9 if k % 3 == 1 else 0.0)


def train(model: nn.Module, opt: Any, k: int, device: str, start: Any = None) -> list[Any]:
    @ac.jit
    def step(model: nn.Module, opt: Any, x: Any, ids: Any, offs: Any, y: Any) -> ac.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x, ids, offs), y)
        loss.backward()
        opt.step()
        return loss

    rng = np.random.default_rng(100 + k)
    if start is not None:
        start.wait()  # all threads capture at the same time
    losses = []
    offs = np.arange(0, 17, 2)  # eight bags of two ids
    for _ in range(STEPS):
        x = rng.standard_normal((8, 4)).astype(np.float32)
        ids = rng.integers(0, 50, 16)
        y = rng.integers(0, 3, 8)
        args = [ac.tensor(a, device=device) for a in (x, ids, offs, y)]
        losses.append(step(model, opt, *args))
    return [np.array([t.item() for t in losses])] + [p.numpy() for p in model.parameters()]


def test_four_threads_train_their_own_jitted_models(device: str) -> None:
    alone = [train(*make_model(k, device), k, device) for k in range(THREADS)]
    models = [make_model(k, device) for k in range(THREADS)]
    results: list[Any] = [None] * THREADS
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker(k: int) -> None:
        try:
            results[k] = train(*models[k], k, device, start)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for k in range(THREADS):
        for got, want in zip(results[k], alone[k]):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_a_capture_ignores_other_threads_random_draws(device: str) -> None:
    # another thread drawing random numbers during a capture is not this function's draw
    stop = threading.Event()

    def drawer() -> None:
        while not stop.is_set():
            ac.rand(4)

    @ac.jit
    def f(a: ac.Tensor) -> ac.Tensor:
        return (a * 2).exp().sum()

    t = threading.Thread(target=drawer)
    t.start()
    try:
        for i in range(20):
            x = np.full(5, 0.1 * i, np.float32)
            got = f(ac.tensor(x, device=device)).item()
            assert got == pytest.approx(float(np.exp(2 * x.astype(np.float64)).sum()), rel=1e-5)
    finally:
        stop.set()
        t.join()


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status")


def test_matmul_workspaces_are_freed_with_their_thread() -> None:
    if "cpu" not in ac.devices():
        pytest.skip("the per-thread GEMM workspace is the cpu backend's")
    a = ac.tensor(np.ones((128, 128), np.float32), device="cpu")
    b = a + 0

    def work() -> None:
        np.testing.assert_array_equal((a @ b).numpy()[0, :2], [128.0, 128.0])

    def many(n: int) -> None:
        for _ in range(n):
            t = threading.Thread(target=work)
            t.start()
            t.join()

    many(20)  # warm: kernels built, pools and arenas at their steady size
    before = rss_mb()
    many(300)
    # each thread's workspace is ~70 KB here: kept, 300 threads would grow RSS by ~20 MB
    assert rss_mb() - before < 6
