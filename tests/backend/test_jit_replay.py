"""Replays of jitted training steps (runtime/replay.py: own buffers for intermediates, direct
launches): values after N steps match PyTorch, new shapes recapture, a changed learning
rate replays the same capture, nested and concurrent replays stay right."""

from __future__ import annotations

import itertools
import threading
from typing import Any

import numpy as np
import pytest
import torch

import anychip as ac
from anychip.runtime.device import get_backend

ROWS, DIM, BATCH = 40, 4, 6


def programs(device: str) -> int:
    return len(getattr(get_backend(device), "programs", ()))


def bags(seed: int, batch: int = BATCH) -> tuple[np.ndarray, np.ndarray]:
    """Ids padded to 2 * batch + 4 and batch+1 offsets of bags of 1-2 ids (padded as
    bench/dlrm.py pads, so batches of one size share a signature)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 3, batch)
    ids = np.zeros(2 * batch + 4, np.int64)
    ids[: lengths.sum()] = rng.integers(0, ROWS, lengths.sum())
    return ids, np.concatenate([[0], np.cumsum(lengths)])


def build(lib: Any, sparse: bool, momentum: float = 0.0) -> tuple[Any, Any]:
    """An embedding bag and an MLP on dense features, with the same weights in both libs."""
    nn = lib.nn

    class Net(nn.Module):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.EmbeddingBag(
                ROWS, DIM, mode="sum", include_last_offset=True, sparse=sparse
            )
            self.mlp = nn.Sequential(nn.Linear(3, DIM), nn.ReLU())
            self.top = nn.Linear(2 * DIM, 1)

        def forward(self, ids: Any, offs: Any, x: Any) -> Any:
            return self.top(lib.cat([self.emb(ids, offs), self.mlp(x)], 1)).reshape(-1)

    net = Net()
    rng = np.random.default_rng(1)
    for _, p in sorted(net.named_parameters()):
        p.data = lib.tensor(rng.standard_normal(tuple(p.shape)).astype(np.float32) * 0.3)
    return net, lib.optim.SGD(net.parameters(), lr=0.1, momentum=momentum)


def torch_steps(sparse: bool, batches: list[Any], lrs: list[float], momentum: float) -> Any:
    net, opt = build(torch, sparse, momentum)
    for (ids, offs, x, y), lr in zip(batches, lrs):
        opt.param_groups[0]["lr"] = lr
        opt.zero_grad()
        # torch's sparse backward wants only the bags' ids (no padding past the last offset)
        out = net(torch.from_numpy(ids[: offs[-1]]), torch.from_numpy(offs), torch.tensor(x))
        torch.nn.functional.binary_cross_entropy_with_logits(out, torch.tensor(y)).backward()
        opt.step()
    return dict(net.named_parameters())


def data(n: int, batch: int = BATCH) -> list[Any]:
    rng = np.random.default_rng(7)
    out = []
    for k in range(n):
        ids, offs = bags(k, batch)
        x = rng.standard_normal((batch, 3)).astype(np.float32)
        out.append((ids, offs, x, rng.integers(0, 2, batch).astype(np.float32)))
    return out


def step(model: Any, opt: Any, ids: Any, offs: Any, x: Any, y: Any) -> Any:
    opt.zero_grad()
    loss = ac.nn.functional.binary_cross_entropy_with_logits(model(ids, offs, x), y)
    loss.backward()
    opt.step()
    return loss


@pytest.mark.parametrize(("sparse", "momentum"), [(False, 0.0), (False, 0.9), (True, 0.0)])
def test_training_steps_match_torch(device: str, sparse: bool, momentum: float) -> None:
    # a replay runs on every new batch: the parameters after 8 steps are torch's
    batches = data(8)
    net, opt = build(ac, sparse, momentum)
    net.to(device)
    jitted = ac.jit(step)
    for ids, offs, x, y in batches:
        args = [ac.tensor(a, device=device) for a in (ids, offs, x, y)]
        jitted(net, opt, *args)
    want = torch_steps(sparse, batches, [0.1] * 8, momentum)
    for name, p in net.named_parameters():
        np.testing.assert_allclose(p.numpy(), want[name].detach().numpy(), rtol=1e-4, atol=1e-5)
    assert len(jitted.captures) <= 3  # no grads, then grads (and momentum buffers) exist


def test_new_batch_size_recaptures(device: str) -> None:
    net, opt = build(ac, sparse=False)
    net.to(device)
    jitted = ac.jit(step)
    sizes = [BATCH, BATCH, BATCH, 2 * BATCH, 2 * BATCH, BATCH]
    batches = [data(k + 1, n)[k] for k, n in enumerate(sizes)]
    for ids, offs, x, y in batches:
        loss = jitted(net, opt, *[ac.tensor(a, device=device) for a in (ids, offs, x, y)])
        assert loss.shape == ()
    ref, ref_opt = build(torch, sparse=False)
    for ids, offs, x, y in batches:
        ref_opt.zero_grad()
        out = ref(torch.from_numpy(ids[: offs[-1]]), torch.from_numpy(offs), torch.tensor(x))
        torch.nn.functional.binary_cross_entropy_with_logits(out, torch.tensor(y)).backward()
        ref_opt.step()
    got = dict(net.named_parameters())
    for name, p in ref.named_parameters():
        np.testing.assert_allclose(got[name].numpy(), p.detach().numpy(), rtol=1e-4, atol=1e-5)
    # the first call makes the grads (its arguments change structure: not kept); then
    # (grads, batch 6) and (grads, batch 12) are kept, and the last batch replays
    assert len(jitted.captures) == 2


def test_learning_rate_change_replays_without_recapturing(device: str) -> None:
    # lr is a tensor the optimizer refreshes before each call (Optimizer.jit_hypers), not
    # part of the signature: a new value replays the one capture, and the steps follow it
    batches = data(9)
    lrs = [0.1, 0.1, 0.1, 0.05, 0.05, 0.02, 0.1, 0.02, 0.2]
    net, opt = build(ac, sparse=False, momentum=0.9)
    net.to(device)
    jitted = ac.jit(step)
    compiled_after_warmup = 0
    for k, ((ids, offs, x, y), lr) in enumerate(zip(batches, lrs)):
        opt.param_groups[0]["lr"] = lr
        jitted(net, opt, *[ac.tensor(a, device=device) for a in (ids, offs, x, y)])
        if k == 2:
            compiled_after_warmup = programs(device)
    assert programs(device) == compiled_after_warmup
    assert len(jitted.captures) == 1  # no grads, then no momentum buffers: not kept
    want = torch_steps(False, batches, lrs, 0.9)
    for name, p in net.named_parameters():
        np.testing.assert_allclose(p.numpy(), want[name].detach().numpy(), rtol=1e-4, atol=1e-5)


def test_nested_jit_replays_the_inner_host_step(device: str) -> None:
    # the inner function lays its bags out on the host; captured inside the outer one, the
    # outer replay must lay each new batch out again, not reuse the first batch's layout
    table = np.random.default_rng(3).standard_normal((ROWS, DIM)).astype(np.float32)
    w = ac.tensor(table, device=device)

    @ac.jit
    def inner(w: ac.Tensor, ids: ac.Tensor, offs: ac.Tensor) -> ac.Tensor:
        return ac.nn.functional.embedding_bag(ids, w, offs, mode="sum", include_last_offset=True)

    @ac.jit
    def outer(w: ac.Tensor, ids: ac.Tensor, offs: ac.Tensor) -> ac.Tensor:
        return inner(w, ids, offs) * 2

    for seed in range(5):
        ids, offs = bags(seed)
        a, b = ac.tensor(ids, device=device), ac.tensor(offs, device=device)
        if seed == 0:
            inner(w, a, b)  # the inner capture exists: the outer capture replays it
        want = np.stack([table[ids[s:e]].sum(0) for s, e in itertools.pairwise(offs)]) * 2
        np.testing.assert_allclose(outer(w, a, b).numpy(), want, rtol=1e-5, atol=1e-6)
    assert len(outer.captures) == 1


def test_concurrent_replays_of_one_capture(device: str) -> None:
    # one replay at a time uses the plan's own buffers; the others replay the general way
    @ac.jit
    def f(a: ac.Tensor, b: ac.Tensor) -> ac.Tensor:
        return ((a @ b).relu() + 1).sum(dim=1)

    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((16, 8)).astype(np.float32) for _ in range(8)]
    m = rng.standard_normal((8, 8)).astype(np.float32)
    f(ac.tensor(xs[0], device=device), ac.tensor(m, device=device))
    errors: list[str] = []

    def work(x: np.ndarray) -> None:
        for _ in range(20):
            got = f(ac.tensor(x, device=device), ac.tensor(m, device=device)).numpy()
            if not np.allclose(got, (np.maximum(x @ m, 0) + 1).sum(1), rtol=1e-4, atol=1e-4):
                errors.append("wrong value")

    threads = [threading.Thread(target=work, args=(x,)) for x in xs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(f.captures) == 1


def test_profiled_replay_matches_fast_replay(device: str) -> None:
    # under the profiler a replay goes launch by launch (watched); the values are the same
    net, opt = build(ac, sparse=True)
    net.to(device)
    jitted = ac.jit(step)
    batches = data(6)
    for k, (ids, offs, x, y) in enumerate(batches):
        args = [ac.tensor(a, device=device) for a in (ids, offs, x, y)]
        if k == 4:
            with ac.profile():
                jitted(net, opt, *args)
        else:
            jitted(net, opt, *args)
    want = torch_steps(True, batches, [0.1] * 6, 0.0)
    for name, p in net.named_parameters():
        np.testing.assert_allclose(p.numpy(), want[name].detach().numpy(), rtol=1e-4, atol=1e-5)


def test_module_changes_after_capture_recapture(device: str) -> None:
    # the module walk is kept between calls; a swapped layer, a new parameter in a
    # container or another mode must still give a new signature
    model = ac.nn.Sequential(ac.nn.Linear(3, 2), ac.nn.Dropout(0.5)).to(device)

    @ac.jit
    def f(m: Any, x: ac.Tensor) -> ac.Tensor:
        return m(x)

    x = ac.tensor(np.ones((2, 3), np.float32), device=device)
    model.eval()
    for _ in range(2):
        f(model, x)
    model[0] = ac.nn.Linear(3, 2).to(device)
    with ac.no_grad():
        model[0].weight.zero_()
        model[0].bias.fill_(2.0)
    np.testing.assert_array_equal(f(model, x).numpy(), np.full((2, 2), 2.0))
    model._modules["0"].register_parameter(
        "bias", ac.nn.Parameter(ac.full((2,), 5.0, device=device))
    )
    np.testing.assert_array_equal(f(model, x).numpy(), np.full((2, 2), 5.0))
    model.train()
    with pytest.raises(ac.JitError, match="random"):
        f(model, x)  # Dropout draws in training mode: the new mode is captured anew


def test_updates_write_over_old_values_held_by_nothing_else(device: str) -> None:
    # each replay writes the new parameters and gradients into the old ones' buffers; a
    # lazy result still reading an old gradient keeps its value
    from anychip.runtime import donate

    net, opt = build(ac, sparse=False)
    net.to(device)
    jitted = ac.jit(step)
    n_params = len(list(net.parameters()))
    for k, batch in enumerate(data(6)):
        before = donate.donated_count()
        jitted(net, opt, *[ac.tensor(a, device=device) for a in batch])
        # replays: every parameter and gradient is written in place, but the table's
        # gradient: its rows (frontend/rowgrad.py) come in new buffers, small ones
        if k in (2, 3):
            assert donate.donated_count() - before == 2 * n_params - 1
        if k == 3:
            want = net.top.weight.grad.numpy() + 1
            kept = net.top.weight.grad + 1  # not computed yet: it holds the gradient's node
        if k == 4:  # that gradient's buffer is held twice: a new one is made for it
            assert donate.donated_count() - before == 2 * n_params - 2
    np.testing.assert_array_equal(kept.numpy(), want)
    assert not np.array_equal(net.top.weight.grad.numpy(), want)


def test_sparse_gradients_of_another_size_are_not_written_over(device: str) -> None:
    # a row-sparse gradient's parts are sized by the size class of its batch's ids: a step
    # on ids padded to another class replays (the loose signature) but must not write its
    # gradient into the previous one's buffers, which have another size
    net, opt = build(ac, sparse=True)
    net.to(device)
    jitted = ac.jit(step)
    batches = data(10)
    for k, (ids, offs, x, y) in enumerate(batches):
        if k % 4 >= 2:  # ids padded to 32, not 16
            batches[k] = (np.concatenate([ids, np.zeros(16, np.int64)]), offs, x, y)
        args = [ac.tensor(a, device=device) for a in batches[k]]
        jitted(net, opt, *args)
    want = torch_steps(True, batches, [0.1] * 10, 0.0)
    for name, p in net.named_parameters():
        np.testing.assert_allclose(p.numpy(), want[name].detach().numpy(), rtol=1e-4, atol=1e-5)


def test_plans_over_the_limit_replay_into_new_buffers(
    device: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a plan whose intermediates exceed OWN_LIMIT keeps none between replays
    from anychip.runtime import replay

    monkeypatch.setattr(replay, "OWN_LIMIT", 64)

    @ac.jit
    def f(a: ac.Tensor) -> ac.Tensor:
        return ((a @ a.T).relu() + 1).sum(dim=1)

    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal((8, 8)).astype(np.float32)
        want = (np.maximum(x @ x.T, 0) + 1).sum(1)
        np.testing.assert_allclose(f(ac.tensor(x, device=device)).numpy(), want, rtol=1e-4)
    (cap,) = f.captures.values()
    assert cap.plan.replayer is not None and not cap.plan.replayer.fits


def test_replay_across_devices(device: str) -> None:
    # a copy to another device inside the function is replayed into the plan's buffer
    other = next((d for d in ac.devices() if d not in (device, "npu")), None)
    if other is None:
        pytest.skip("one device only")

    runs = []

    @ac.jit
    def f(a: ac.Tensor) -> ac.Tensor:
        runs.append(1)
        return ((a * 2).to(other) + 1).to(device).sum()

    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal(5).astype(np.float32)
        got = f(ac.tensor(x, device=device))
        np.testing.assert_allclose(got.numpy(), (x * 2 + 1).sum(), rtol=1e-5)
        assert got.device == device
    assert len(runs) == 1  # the later calls replayed
