"""Cross-device parity: one small training loop on `ref` and on each other device gives
the same losses step by step (float32, within the stated tolerance)."""

from __future__ import annotations

import numpy as np
import pytest

import anychip as ac
from anychip import nn, optim
from anychip.nn import functional as F

RTOL = 1e-4  # float32 sums in a different order (SIMD lanes, threads) than numpy's
STEPS = 6


def losses(device: str) -> list[float]:
    rng = np.random.default_rng(0)
    x = ac.tensor(rng.standard_normal((32, 8)).astype(np.float32), device=device)
    y = ac.tensor(rng.integers(0, 3, 32), device=device)
    ac.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).to(device)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    out = []
    for _ in range(STEPS):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(loss.item())
    return out


def test_mlp_training_matches_ref(device: str) -> None:
    if device == "ref":
        pytest.skip("ref is the oracle the other devices are compared with")
    want, got = losses("ref"), losses(device)
    assert want[-1] < want[0]  # it really trains
    np.testing.assert_allclose(got, want, rtol=RTOL)
