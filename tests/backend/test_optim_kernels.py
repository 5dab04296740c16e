"""Optimisers whose per-step numbers change (Adam's bias corrections, Adagrad's decayed
rate) reuse one compiled kernel for every step instead of compiling one per step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import anychip as ac
from anychip.runtime.device import get_backend


def _programs(device: str) -> int:
    programs = getattr(get_backend(device), "programs", None)
    if programs is None:
        pytest.skip(f"{device} keeps no table of compiled programs")
    return len(programs)


@pytest.mark.parametrize(
    "make",
    [
        lambda ps, m: m.Adam(ps, lr=0.1),
        lambda ps, m: m.AdamW(ps, lr=0.1, amsgrad=True),
        lambda ps, m: m.Adagrad(ps, lr=0.1, lr_decay=0.05),
    ],
    ids=["adam", "adamw_amsgrad", "adagrad_decay"],
)
def test_steps_compile_once_and_match_torch(device: str, make: object) -> None:
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((5, 3)).astype(np.float32)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    w = ac.tensor(w0, device=device, requires_grad=True)
    tw = torch.tensor(w0, requires_grad=True)
    opt, topt = make([w], ac.optim), make([tw], torch.optim)  # type: ignore[operator]
    xs, txs = ac.tensor(x, device=device), torch.tensor(x)
    counts = []
    for _ in range(6):
        opt.zero_grad()
        topt.zero_grad()
        ((xs @ w).tanh() ** 2).sum().backward()
        ((txs @ tw).tanh() ** 2).sum().backward()
        opt.step()
        topt.step()
        w.realize()
        counts.append(_programs(device))
        np.testing.assert_allclose(w.numpy(), tw.detach().numpy(), rtol=1e-5, atol=1e-6)
    # steps 3.. add no program: the changing numbers are read from memory, not compiled in
    assert counts[2:] == [counts[2]] * 4, counts
