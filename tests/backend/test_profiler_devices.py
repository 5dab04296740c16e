"""The profiler on every device present: a training step's launches are recorded with the
counted FLOPs of its matmuls, and devices whose backend reports `launch_stats` (a simulated
chip) give simulated times and unit busy fractions."""

from __future__ import annotations

import anychip as ac
import anychip.nn.functional as F
from anychip import nn
from anychip.runtime.device import Backend, get_backend


def test_a_training_step_is_profiled(device: str) -> None:
    ac.manual_seed(0)
    model = nn.Linear(8, 4).to(device)
    x = ac.randn(16, 8, device=device)
    y = ac.randn(16, 4, device=device)
    opt = ac.optim.SGD(model.parameters(), lr=0.1)
    for t in [*model.parameters(), x, y]:  # created lazily: made before the profile
        t.realize()
    with ac.profile() as prof:
        loss = F.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.realize()
    events = prof.events
    assert events and all(e.device == device and e.time_s > 0 for e in events)
    # forward x @ W^T and the weight gradient dL/dW = g^T @ x: 2*16*8*4 multiply-adds
    # each (the input needs no gradient); other contractions are the scheduler's choice
    matmuls = sorted(e.matrix_flops for e in events if e.matrix_flops)
    assert matmuls.count(2 * 16 * 8 * 4) >= 2
    assert sum(e.flops for e in events) >= sum(matmuls)
    simulates = type(get_backend(device)).launch_stats is not Backend.launch_stats
    assert all(e.simulated == simulates for e in events)
    if simulates:
        assert all(e.units and all(0 <= f <= 1 for f in e.units.values()) for e in events)


def test_jit_replays_are_profiled(device: str) -> None:
    w = ac.randn(8, 8, device=device).realize()

    @ac.jit
    def f(t: ac.Tensor) -> ac.Tensor:
        return (t @ w).exp()

    x = ac.randn(4, 8, device=device).realize()
    f(x)
    with ac.profile() as prof:
        f(x).realize()
    assert [e.matrix_flops for e in prof.events if e.matrix_flops] == [2 * 4 * 8 * 8]
