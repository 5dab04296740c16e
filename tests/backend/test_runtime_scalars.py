"""Python scalars are kernel arguments: a value that changes between calls (a learning rate,
a step count, a temperature) reuses the compiled kernel, and every launch computes with
the value it was given (checked against numpy and PyTorch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import anychip as ac
from anychip.runtime import eager_cache
from anychip.runtime.device import get_backend


def _programs(device: str) -> int:
    """Compiled programs the device holds (0 for `ref`, which compiles nothing)."""
    return len(getattr(get_backend(device), "programs", ()))


def test_a_changing_float_scalar_compiles_once(device: str) -> None:
    x0 = np.linspace(-1, 1, 37, dtype=np.float32)
    x = ac.tensor(x0, device=device)
    (x * 0.37 + 2.5).realize()  # warm: the kernel for this structure
    before = _programs(device)
    for t in np.linspace(0.1, 3.0, 25):
        got = (x * float(t) + 2.5 / float(t)).exp().numpy()
        want = np.exp(x0 * np.float32(t) + np.float32(2.5 / t))
        np.testing.assert_allclose(got, want, rtol=2e-6)
    assert _programs(device) - before <= 1  # one new structure (the division), not 25


def test_a_changing_int_scalar_compiles_once(device: str) -> None:
    a0 = np.arange(-20, 20, dtype=np.int64)
    a = ac.tensor(a0, device=device)
    (a + 7).realize()
    (a % 7).realize()
    before = _programs(device)
    for step in range(2, 40):
        np.testing.assert_array_equal((a + step).numpy(), a0 + step)
        np.testing.assert_array_equal((a % step).numpy(), np.mod(a0, step))  # torch: floor mod
    assert _programs(device) == before


def test_eager_cache_replays_with_the_new_value(device: str) -> None:
    """A graph seen before replays its plan; the plan must pass this graph's scalars."""
    x = ac.tensor(np.ones(8, np.float32), device=device)
    eager_cache.clear_cache()
    outs = [(x * s).sum().item() for s in (2.0, 3.0, 4.5)]
    assert outs == [16.0, 24.0, 36.0]
    assert eager_cache.cache_info()["hits"] >= 2


def test_two_scalars_of_one_value_stay_separate(device: str) -> None:
    x = ac.tensor(np.arange(4, dtype=np.float32), device=device)
    (x * 3.0 + 3.0).realize()
    got = (x * 2.0 + 5.0).numpy()  # same structure, the two values now differ
    np.testing.assert_array_equal(got, np.arange(4, dtype=np.float32) * 2 + 5)


def test_structural_constants_keep_their_meaning(device: str) -> None:
    x0 = np.array([-2.0, -0.0, 0.0, 3.0, np.inf, np.nan], np.float32)
    x = ac.tensor(x0, device=device)
    np.testing.assert_array_equal(x.relu().numpy(), np.maximum(x0, 0))
    np.testing.assert_array_equal((x * 1.0).numpy(), x0)
    np.testing.assert_array_equal(x.clamp(max=np.inf).numpy(), x0)
    np.testing.assert_array_equal((x + 0.25).numpy(), x0 + np.float32(0.25))


@pytest.mark.parametrize("sched", ["cosine", "step", "exponential"])
def test_lr_schedule_compiles_nothing_after_two_steps(device: str, sched: str) -> None:
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal((6, 3)).astype(np.float32)
    x0 = rng.standard_normal((8, 6)).astype(np.float32)
    y0 = rng.standard_normal((8, 3)).astype(np.float32)

    def make(lib: object, w: object) -> tuple[object, object]:
        opt = lib.optim.SGD([w], lr=0.1, momentum=0.9)  # type: ignore[attr-defined]
        s = lib.optim.lr_scheduler  # type: ignore[attr-defined]
        if sched == "cosine":
            return opt, s.CosineAnnealingLR(opt, T_max=10)
        if sched == "step":
            return opt, s.StepLR(opt, step_size=2, gamma=0.7)
        return opt, s.ExponentialLR(opt, gamma=0.93)

    w = ac.tensor(w0, device=device, requires_grad=True)
    tw = torch.tensor(w0, requires_grad=True)
    (opt, sch), (topt, tsch) = make(ac, w), make(torch, tw)
    x, y = ac.tensor(x0, device=device), ac.tensor(y0, device=device)
    tx, ty = torch.tensor(x0), torch.tensor(y0)
    counts = []
    for _ in range(12):
        for o, s, loss in (
            (opt, sch, lambda: ((x @ w - y) ** 2).mean()),
            (topt, tsch, lambda: ((tx @ tw - ty) ** 2).mean()),
        ):
            o.zero_grad()  # type: ignore[attr-defined]
            loss().backward()  # type: ignore[no-untyped-call]
            o.step()  # type: ignore[attr-defined]
            s.step()  # type: ignore[attr-defined]
        w.realize()
        counts.append(_programs(device))
    np.testing.assert_allclose(w.numpy(), tw.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert counts[-1] == counts[1], counts


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_variable_bags_compile_nothing_after_the_first_steps(device: str, mode: str) -> None:
    """A DLRM-style batch: 32 bags of 1-5 ids, other lengths every step. Bag widths and
    total lengths are laid out in size classes, so later steps reuse the kernels; values
    and table gradients match torch."""
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal((50, 8)).astype(np.float32)
    w, tw = ac.tensor(w0, device=device, requires_grad=True), torch.tensor(w0, requires_grad=True)
    counts = []
    for _ in range(8):
        lengths = rng.integers(1, 6, size=32)
        ids = rng.integers(0, 50, size=int(lengths.sum()))
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        out = ac.nn.functional.embedding_bag(
            ac.tensor(ids, device=device), w, ac.tensor(offsets, device=device), mode=mode
        )
        tout = torch.nn.functional.embedding_bag(
            torch.tensor(ids), tw, torch.tensor(offsets), mode=mode
        )
        (out * out).sum().backward()
        (tout * tout).sum().backward()
        np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-5, atol=1e-6)
        assert w.grad is not None and tw.grad is not None
        np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-5, atol=1e-5)
        counts.append(_programs(device))
    assert counts[-1] == counts[2], counts


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_jit_replays_variable_bags_laid_out_on_the_host(device: str, mode: str) -> None:
    """Ids padded to a fixed length with include_last_offset=True (the end of the last
    bag ends the batch): a jitted lookup replays its first capture for every batch, the
    host layout step running again on each batch's ids and offsets."""
    rng = np.random.default_rng(5)
    w0 = rng.standard_normal((40, 4)).astype(np.float32)
    w = ac.tensor(w0, device=device)

    @ac.jit
    def bags(ids: ac.Tensor, offsets: ac.Tensor) -> ac.Tensor:
        return ac.nn.functional.embedding_bag(ids, w, offsets, mode=mode, include_last_offset=True)

    captures = []
    capture = bags._capture
    bags._capture = lambda *a, **k: captures.append(1) or capture(*a, **k)  # type: ignore[method-assign]
    for _ in range(5):
        lengths = rng.integers(1, 4, size=10)
        lengths[rng.integers(10)] = 3  # the widest bag: max's (B, 4) slots every time
        n = int(lengths.sum())
        ids = np.zeros(32, np.int64)
        ids[:n] = rng.integers(0, 40, size=n)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        got = bags(ac.tensor(ids, device=device), ac.tensor(offsets, device=device))
        want = torch.nn.functional.embedding_bag(
            torch.tensor(ids[:n]),
            torch.tensor(w0),
            torch.tensor(offsets),
            mode=mode,
            include_last_offset=True,
        )
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-6)
    assert len(captures) == 1  # the first call captured, the other four replayed


def test_structural_zero_and_one_never_share_a_plan_with_other_values(device: str) -> None:
    # 0 and 1 are compiled into the code, other values are launch arguments: the eager
    # plan cache and the scheduler must agree on which is which, in any order of values
    x0 = np.array([-2.0, -0.0, 0.0, 0.5, 3.0], np.float32)
    x = ac.tensor(x0, device=device)
    for v in (0.0, 1.0, 2.5, 0.0, -0.0, 1.0, 3.0, 1.0, 0.0, -1.0):
        got = (x * v + v).maximum(ac.tensor(v, device=device)).numpy()
        want = np.maximum(x0 * np.float32(v) + np.float32(v), np.float32(v))
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
