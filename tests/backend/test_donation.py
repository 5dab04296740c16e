"""Buffer donation (runtime/donate.py): optimizer steps update parameters and their state in
place, eagerly, under replayed eager plans and under anychip.jit, with values equal to
torch's; an alias still able to read the old value (an unrealised clone, a lazy expression,
a value saved for backward) turns donation off and keeps the old value."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch

import anychip as ac
from anychip.rec import RowWiseAdagrad
from anychip.runtime import donate
from anychip.runtime.device import get_backend
from anychip.runtime.realize import buffer_of

F32 = np.float32


def handle(t: ac.Tensor) -> Any:
    """The memory of t's value (kept by the caller, it is never recycled for another)."""
    t.realize()
    buf = buffer_of(t.node)
    assert buf is not None
    return buf.handle


@contextmanager
def allocations(device: str) -> Iterator[list[int]]:
    """Sizes (elements) of every buffer the device allocates inside the block."""
    backend = get_backend(device)
    sizes: list[int] = []
    plain = backend.allocate

    def counted(size: int, dtype: Any) -> Any:
        sizes.append(size)
        return plain(size, dtype)

    backend.allocate = counted  # type: ignore[method-assign]
    try:
        yield sizes
    finally:
        del backend.allocate


# --- dense optimizers against torch ----------------------------------------------------
DENSE: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "sgd": (
        lambda p: ac.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
    ),
    "nesterov": (
        lambda p: ac.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True),
    ),
    "adam": (
        lambda p: ac.optim.Adam(p, lr=0.05),
        lambda p: torch.optim.Adam(p, lr=0.05),
    ),
    "adamw": (
        lambda p: ac.optim.AdamW(p, lr=0.05, weight_decay=0.1),
        lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1),
    ),
    "adagrad": (
        lambda p: ac.optim.Adagrad(p, lr=0.1),
        lambda p: torch.optim.Adagrad(p, lr=0.1),
    ),
    "rmsprop": (
        lambda p: ac.optim.RMSprop(p, lr=0.01, momentum=0.5),
        lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.5),
    ),
}


def _data() -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(3)
    w = rng.standard_normal((6, 5)).astype(F32)
    b = rng.standard_normal(5).astype(F32)
    return w, b, [rng.standard_normal((4, 6)).astype(F32) for _ in range(5)]


def _torch_dense(name: str) -> tuple[np.ndarray, np.ndarray]:
    w0, b0, xs = _data()
    w, b = torch.nn.Parameter(torch.tensor(w0)), torch.nn.Parameter(torch.tensor(b0))
    opt = DENSE[name][1]([w, b])
    for x in xs:
        opt.zero_grad()
        (torch.tensor(x) @ w + b).tanh().pow(2).sum().backward()
        opt.step()
    return w.detach().numpy(), b.detach().numpy()


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name", sorted(DENSE))
def test_dense_optimizers_match_torch_and_update_in_place(
    device: str, name: str, jit: bool
) -> None:
    w0, b0, xs = _data()
    w = ac.nn.Parameter(ac.tensor(w0, device=device))
    b = ac.nn.Parameter(ac.tensor(b0, device=device))
    opt = DENSE[name][0]([w, b])

    def step(w: ac.Tensor, b: ac.Tensor, opt: Any, x: ac.Tensor) -> ac.Tensor:
        opt.zero_grad()
        loss = (x @ w + b).tanh().pow(2).sum()
        loss.backward()  # the loss stays alive through the step, as in a training loop
        opt.step()
        return loss

    run = ac.jit(step) if jit else step
    same = []
    for x in xs:
        before = handle(w)
        run(w, b, opt, ac.tensor(x, device=device))
        same.append(handle(w) is before)
    tw, tb = _torch_dense(name)
    np.testing.assert_allclose(w.numpy(), tw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.numpy(), tb, rtol=1e-5, atol=1e-6)
    # eager: once the state exists; jit: in the steady state (calls 0 and 1 capture: the
    # optimizer's state changes the signature; SGD's first momentum buffer is the gradient)
    assert all(same[3:] if jit else same[1:]), same


# --- sparse optimizers ---------------------------------------------------------------
ROWS, DIM = 40, 4


def _bags() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    out = []
    for _ in range(5):
        ids = rng.integers(0, ROWS // 2, 10).astype(np.int64)
        ids[:2] = ids[2]  # a row repeated in the batch
        offs = np.array([0, 2, 5, 5, 8], np.int64)
        out.append((ids, offs, rng.standard_normal((5, DIM)).astype(F32)))
    return out


def _table() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((ROWS, DIM)).astype(F32)


SPARSE: dict[str, tuple[Callable[..., Any], Callable[..., Any] | None]] = {
    "sgd": (lambda p: ac.optim.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    "adagrad": (lambda p: ac.optim.Adagrad(p, lr=0.1), lambda p: torch.optim.Adagrad(p, lr=0.1)),
    "sparse_adam": (
        lambda p: ac.optim.SparseAdam(p, lr=0.05),
        lambda p: torch.optim.SparseAdam(p, lr=0.05),
    ),
    "rowwise_adagrad": (lambda p: RowWiseAdagrad(p, lr=0.1), None),
}


def _rowwise_reference() -> np.ndarray:
    """RowWiseAdagrad in float64 numpy: sum[r] += mean(g_r^2); w_r -= lr g_r / (sqrt + eps)."""
    w = _table().astype(np.float64)
    acc = np.zeros(ROWS)
    for ids, offs, target in _bags():
        bag = np.searchsorted(offs, np.arange(len(ids)), side="right") - 1
        g = np.zeros_like(w)
        np.add.at(g, ids, 2 * target[bag].astype(np.float64))  # d/dw of sum(pooled * t * 2)/2
        rows = np.unique(ids)
        acc[rows] += (g[rows] ** 2).mean(1)
        w[rows] -= 0.1 * g[rows] / (np.sqrt(acc[rows])[:, None] + 1e-10)
    return w


def _torch_sparse(name: str) -> np.ndarray:
    make = SPARSE[name][1]
    if make is None:
        return _rowwise_reference()
    table = torch.nn.EmbeddingBag(ROWS, DIM, mode="sum", sparse=True)
    with torch.no_grad():
        table.weight.copy_(torch.tensor(_table()))
    opt = make(list(table.parameters()))
    for ids, offs, target in _bags():
        opt.zero_grad()
        (table(torch.tensor(ids), torch.tensor(offs)) * torch.tensor(target) * 2).sum().backward()
        opt.step()
    return table.weight.detach().numpy()


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name", sorted(SPARSE))
def test_sparse_optimizers_scatter_into_the_table(device: str, name: str, jit: bool) -> None:
    table = ac.nn.EmbeddingBag(ROWS, DIM, mode="sum", sparse=True, device=device)
    with ac.no_grad():
        table.weight.copy_(ac.tensor(_table(), device=device))
    opt = SPARSE[name][0](list(table.parameters()))

    def step(table: Any, opt: Any, ids: ac.Tensor, offs: ac.Tensor, t: ac.Tensor) -> ac.Tensor:
        opt.zero_grad()
        loss = (table(ids, offs) * t * 2).sum()
        loss.backward()
        opt.step()
        return loss

    run = ac.jit(step) if jit else step
    same, big = [], []
    for ids, offs, target in _bags():
        args = [ac.tensor(a, device=device) for a in (ids, offs, target)]
        before = handle(table.weight)
        with allocations(device) as sizes:
            run(table, opt, *args)
            table.weight.realize()
        same.append(handle(table.weight) is before)
        big.append(sum(s >= ROWS * DIM for s in sizes))
    np.testing.assert_allclose(table.weight.numpy(), _torch_sparse(name), rtol=2e-5, atol=2e-6)
    assert all(same[3:] if jit else same[1:]), same
    assert big[3:] == [0] * len(big[3:]), big  # no table-sized buffer once steps repeat


# --- aliases keep the old value --------------------------------------------------------
def _sgd_step(p: ac.Tensor, lr: float = 0.5) -> None:
    with ac.no_grad():
        p.sub_(p.grad * lr)


def test_donation_skipped_while_a_lazy_reader_or_clone_is_alive(device: str) -> None:
    p = ac.nn.Parameter(ac.tensor(np.arange(6, dtype=F32).reshape(2, 3), device=device))
    p.grad = ac.ones(2, 3, device=device)
    old = p.detach().numpy().copy()
    for make in (lambda: p.clone(), lambda: p * 1, lambda: p.detach().clone()[1]):
        _sgd_step(p)  # nothing else holds p's value: in place
        before, kept, old = handle(p), make(), p.detach().numpy().copy()
        _sgd_step(p)
        p.realize()
        assert handle(p) is not before  # the reader still needs the old buffer
        want = old if kept.shape == old.shape else old[1]
        np.testing.assert_array_equal(kept.numpy(), want)
        np.testing.assert_array_equal(p.numpy(), old - 0.5)


def test_views_follow_the_update_as_in_torch(device: str) -> None:
    p = ac.nn.Parameter(ac.zeros(3, 2, device=device))
    tp = torch.zeros(3, 2)
    p.grad = ac.ones(3, 2, device=device)
    row, alias = p[1], p.detach()
    trow, talias = tp[1], tp.detach()
    for _ in range(3):
        _sgd_step(p)
        tp.sub_(torch.ones(3, 2) * 0.5)
    np.testing.assert_array_equal(row.numpy(), trow.numpy())
    np.testing.assert_array_equal(alias.numpy(), talias.numpy())


def test_a_changed_saved_value_still_raises(device: str) -> None:
    w = ac.nn.Parameter(ac.tensor([1.0, 2.0, 3.0], device=device))
    x = ac.nn.Parameter(ac.tensor([4.0, 5.0, 6.0], device=device))
    y = (w * x).sum()
    with ac.no_grad():
        w.mul_(10)
    w.realize()
    with pytest.raises(ac.AutogradError, match="modified in place"):
        y.backward()  # as torch: the record needs the old w


def test_a_value_kept_by_its_own_record_is_not_overwritten(device: str) -> None:
    x = ac.tensor([1.0, -2.0, 3.0], device=device, requires_grad=True)
    h = x * 2
    h.realize()
    h.mul_(h)  # its record keeps the old h (torch refuses this): it must not be donated
    h.realize()
    h.sum().backward()
    assert x.grad is not None
    np.testing.assert_allclose(x.grad.numpy(), [8.0, -16.0, 24.0])  # d (2x)^2 / dx


@pytest.mark.parametrize("keep", ["clone", "lazy"])
def test_jit_replay_keeps_an_alias_alive_between_calls(device: str, keep: str) -> None:
    p = ac.nn.Parameter(ac.zeros(4, device=device))

    @ac.jit
    def bump(p: ac.Tensor) -> None:
        with ac.no_grad():
            p.add_(1.0)

    for _ in range(3):
        bump(p)
    held = p.clone() if keep == "clone" else p + 0
    before = handle(p)
    bump(p)
    assert handle(p) is not before
    np.testing.assert_array_equal(held.numpy(), [3.0] * 4)
    np.testing.assert_array_equal(p.numpy(), [4.0] * 4)
    before = handle(p)
    bump(p)  # nothing holds the old value now: in place again
    assert handle(p) is before
    np.testing.assert_array_equal(p.numpy(), [5.0] * 4)


# --- random interleavings against numpy --------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_random_interleavings_match_numpy(device: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (5, 3)
    t = ac.tensor(np.zeros(shape, F32), device=device)
    ref = np.zeros(shape, F32)
    kept: list[tuple[ac.Tensor, np.ndarray]] = []  # (tensor, its value when made)
    views: list[tuple[ac.Tensor, int]] = []  # rows of t: follow t
    for _ in range(30):
        op = rng.integers(0, 8)
        k = float(rng.integers(1, 4))
        if op == 0:
            t.add_(k)
            ref += k
        elif op == 1:
            t.mul_(k)
            ref *= k
        elif op == 2:
            idx = rng.integers(0, shape[0], 3)
            src = rng.standard_normal((3, shape[1])).astype(F32)
            t.index_add_(0, ac.tensor(idx, device=device), ac.tensor(src, device=device))
            np.add.at(ref, idx, src)
        elif op == 3:
            kept.append((t.clone() if rng.random() < 0.5 else t * 1, ref.copy()))
        elif op == 4:
            r = int(rng.integers(0, shape[0]))
            views.append((t[r], r))
        elif op == 5:
            t.realize()
        elif op == 6 and kept:
            kept.pop(int(rng.integers(0, len(kept))))
        elif op == 7:
            np.testing.assert_allclose(t.numpy(), ref, rtol=1e-6)
    np.testing.assert_allclose(t.numpy(), ref, rtol=1e-6)
    for v, want in kept:
        np.testing.assert_allclose(v.numpy(), want, rtol=1e-6)
    for row, r in views:
        np.testing.assert_allclose(row.numpy(), ref[r], rtol=1e-6)


# --- threads --------------------------------------------------------------------------
def test_threads_each_donate_their_own_parameters(device: str) -> None:
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def train(k: int) -> None:
        try:
            p = ac.nn.Parameter(ac.full((8,), float(k), device=device))
            opt = ac.optim.SGD([p], lr=0.1, momentum=0.5)

            @ac.jit
            def step(p: ac.Tensor, opt: Any) -> None:
                opt.zero_grad()
                (p * p).sum().backward()
                opt.step()

            for _ in range(6):
                step(p, opt)
            results[k] = p.numpy()
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=train, args=(k,)) for k in range(1, 4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    for k, got in results.items():
        p, buf = np.float64(k), 0.0
        for i in range(6):
            g = 2 * p
            buf = g if i == 0 else 0.5 * buf + g
            p = p - 0.1 * buf
        np.testing.assert_allclose(got, np.full(8, p), rtol=1e-5)


def test_donation_can_be_turned_off(device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(donate, "ENABLED", False)
    p = ac.nn.Parameter(ac.zeros(4, device=device))
    p.grad = ac.ones(4, device=device)
    for _ in range(3):
        before = handle(p)
        _sgd_step(p)
        assert handle(p) is not before
    np.testing.assert_array_equal(p.numpy(), [-1.5] * 4)


def test_index_put_accumulate_scatters_into_the_tensor(device: str) -> None:
    w = ac.zeros(4, 3, 2, device=device)
    want = np.zeros((4, 3, 2), F32)
    i, j = np.array([0, 3, 0]), np.array([1, 2, 1])
    for step in range(3):
        w.realize()
        before = handle(w)
        v = np.full((3, 2), step + 1.0, F32)
        w.index_put_((ac.tensor(i, device=device), ac.tensor(j, device=device)),
                     ac.tensor(v, device=device), accumulate=True)  # fmt: skip
        np.add.at(want, (i, j), v)
        w.realize()
        assert handle(w) is before
    np.testing.assert_array_equal(w.numpy(), want)


# --- Ctrl-C while a kernel writes over its input -------------------------------------------
CHILD = """
import sys
import numpy as np
import anychip as ac
x = ac.zeros(2**24, device=sys.argv[1]).realize()
done = 0
print("running", flush=True)
try:
    while True:
        x.add_(1.0)
        x.realize()
        done += 1
except KeyboardInterrupt:
    pass
v = x.numpy()
print(done, v.min(), v.max(), flush=True)
"""


@pytest.mark.slow
def test_ctrl_c_never_leaves_a_donated_update_half_done(device: str) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    # tiny chunks: the cpu kernel adding 1 runs as many calls, Ctrl-C lands between them
    env = {**os.environ, "PYTHONPATH": os.path.abspath(src), "ANYCHIP_CHUNK_WORK": "65536"}
    p = subprocess.Popen(
        [sys.executable, "-c", CHILD, device], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # even if ignored here
    )  # fmt: skip
    try:
        assert p.stdout is not None
        assert p.stdout.readline() == b"running\n", p.stderr.read() if p.stderr else ""
        time.sleep(2.0)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 0, err.decode()
    done, lo, hi = (float(v) for v in out.split())
    assert lo == hi  # every element updated the same number of times
    assert hi in (done, done + 1)  # an update interrupted after its write counts once
    # (without the cpu launcher finishing donated chunks, lo < hi: a half-done update)


def test_a_jit_replay_whose_guard_fails_leaves_its_arguments_unchanged(device: str) -> None:
    p = ac.nn.Parameter(ac.zeros(3, device=device))

    @ac.jit
    def step(p: ac.Tensor, flag: ac.Tensor) -> ac.Tensor:
        with ac.no_grad():
            p.add_(1.0)
        p.realize()  # the update runs before the host read below
        return p * (2.0 if flag.item() > 0 else 3.0)  # a guard of every replay

    on, off = ac.tensor(1.0, device=device), ac.tensor(0.0, device=device)
    for k, flag in enumerate((on, on, on, on, off, on)):  # off: the guard fails, runs again
        out = step(p, flag)
        np.testing.assert_array_equal(p.numpy(), [k + 1.0] * 3)  # one update per call
        np.testing.assert_array_equal(out.numpy(), [(k + 1.0) * (2 if flag is on else 3)] * 3)


def test_a_value_only_autograd_holds_is_not_overwritten(device: str) -> None:
    x = ac.tensor([1.0, 2.0, 3.0], device=device, requires_grad=True)
    out = x * ac.tensor([4.0, 5.0, 6.0], device=device)  # the record alone keeps the factor
    out.realize()  # an elementwise kernel that could write over the factor's buffer
    out.backward(ac.ones(3, device=device))
    assert x.grad is not None
    np.testing.assert_array_equal(x.grad.numpy(), [4.0, 5.0, 6.0])
