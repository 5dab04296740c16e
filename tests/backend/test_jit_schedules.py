"""A jitted training step under a learning-rate schedule replays its one capture with each
step's new rate (optim/optimizer.py `_hyper`, frontend/jit.py `_Live`): parameters after 20
steps match PyTorch running the same schedule, with one capture and no compile after the
first steps; a scheduler stepped inside the jitted function is never replayed stale."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import anychip as ac
from anychip.runtime.device import get_backend

STEPS = 20


def programs(device: str) -> int:
    return len(getattr(get_backend(device), "programs", ()))


OPTIMIZERS: dict[str, Callable[[Any, Any], Any]] = {
    "sgd_momentum": lambda lib, ps: lib.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
    "adam": lambda lib, ps: lib.optim.Adam(ps, lr=0.05),
    "adamw": lambda lib, ps: lib.optim.AdamW(ps, lr=0.05, weight_decay=0.1),
    "rmsprop": lambda lib, ps: lib.optim.RMSprop(ps, lr=0.01, momentum=0.5),
    "adagrad": lambda lib, ps: lib.optim.Adagrad(ps, lr=0.1, lr_decay=0.01),
}
SCHEDULES: dict[str, Callable[[Any, Any], Any]] = {
    "step": lambda lib, opt: lib.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5),
    "cosine": lambda lib, opt: lib.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS),
}


def model(lib: Any) -> Any:
    """Linear(5, 3) then Linear(3, 1), with the same weights in both libraries."""
    net = lib.nn.Sequential(lib.nn.Linear(5, 3), lib.nn.Tanh(), lib.nn.Linear(3, 1))
    rng = np.random.default_rng(3)
    for _, p in sorted(net.named_parameters()):
        p.data = lib.tensor(rng.standard_normal(tuple(p.shape)).astype(np.float32) * 0.5)
    return net


def batches() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(11)
    return [
        (
            rng.standard_normal((8, 5)).astype(np.float32),
            rng.standard_normal((8, 1)).astype(np.float32),
        )
        for _ in range(STEPS)
    ]


def step(x: Any, y: Any, net: Any, opt: Any) -> Any:
    opt.zero_grad()
    loss = ((net(x) - y) ** 2).mean()
    loss.backward()
    opt.step()
    return loss


def torch_params(optimizer: str, schedule: str) -> dict[str, np.ndarray]:
    net = model(torch)
    opt = OPTIMIZERS[optimizer](torch, net.parameters())
    sched = SCHEDULES[schedule](torch, opt)
    for x, y in batches():
        step(torch.from_numpy(x), torch.from_numpy(y), net, opt)
        sched.step()
    return {k: v.detach().numpy() for k, v in net.named_parameters()}


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_scheduled_steps_replay_one_capture(device: str, optimizer: str, schedule: str) -> None:
    net = model(ac).to(device)
    opt = OPTIMIZERS[optimizer](ac, net.parameters())
    sched = SCHEDULES[schedule](ac, opt)
    jitted = ac.jit(step)
    compiled_after_warmup = 0
    for k, (x, y) in enumerate(batches()):
        jitted(ac.tensor(x, device=device), ac.tensor(y, device=device), net, opt)
        sched.step()
        if k == 1:  # the first call makes the grads and state; the second is the capture
            compiled_after_warmup = programs(device)
    assert len(jitted.captures) == 1
    assert programs(device) == compiled_after_warmup
    want = torch_params(optimizer, schedule)
    for name, p in net.named_parameters():
        np.testing.assert_allclose(p.numpy(), want[name], rtol=1e-5, atol=1e-6)


def test_a_scheduler_stepped_inside_the_function_is_not_replayed(device: str) -> None:
    # a replay would not rerun sched.step() (Python is not replayed): a rate the function
    # changes keeps it from being kept, so each call runs the function, with torch's rates
    def step_and_schedule(x: Any, y: Any, net: Any, opt: Any, sched: Any) -> Any:
        loss = step(x, y, net, opt)
        sched.step()
        return loss

    net = model(ac).to(device)
    opt = OPTIMIZERS["adam"](ac, net.parameters())
    sched = SCHEDULES["cosine"](ac, opt)  # a new rate every step
    jitted = ac.jit(step_and_schedule)
    for x, y in batches():
        jitted(ac.tensor(x, device=device), ac.tensor(y, device=device), net, opt, sched)
    assert not jitted.captures
    want = torch_params("adam", "cosine")
    for name, p in net.named_parameters():
        np.testing.assert_allclose(p.numpy(), want[name], rtol=1e-5, atol=1e-6)


def test_a_rate_set_by_hand_replays_with_the_new_value(device: str) -> None:
    # no scheduler: a rate written into param_groups between calls is the one used
    net = model(ac).to(device)
    opt = ac.optim.SGD(net.parameters(), lr=0.1)
    ref = model(torch)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    jitted = ac.jit(step)
    for k, (x, y) in enumerate(batches()[:6]):
        opt.param_groups[0]["lr"] = ref_opt.param_groups[0]["lr"] = 0.3 / (k + 1)
        jitted(ac.tensor(x, device=device), ac.tensor(y, device=device), net, opt)
        step(torch.from_numpy(x), torch.from_numpy(y), ref, ref_opt)
    assert len(jitted.captures) == 1
    want = dict(ref.named_parameters())
    for name, p in net.named_parameters():
        np.testing.assert_allclose(p.numpy(), want[name].detach().numpy(), rtol=1e-5, atol=1e-6)
