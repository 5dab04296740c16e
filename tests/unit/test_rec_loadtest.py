"""`anychip rec loadtest`'s arrivals and bodies (no server: tests/backend/test_rec_serve.py
runs it against one)."""

from __future__ import annotations

import json

import numpy as np

from anychip.rec.loadtest import Config, bodies, schedule


def test_arrivals_are_a_poisson_process_of_the_asked_rate() -> None:
    t = schedule(500.0, 20.0, seed=3)
    assert abs(len(t) - 10_000) < 400  # Poisson count: sd 100
    assert t[0] >= 0 and t[-1] < 20.0 and np.all(np.diff(t) >= 0)
    gaps = np.diff(t)
    assert abs(gaps.mean() - 1 / 500) < 0.03 / 500
    assert abs(gaps.std() / gaps.mean() - 1) < 0.05  # exponential: sd = mean
    counts = np.bincount((t // 1).astype(int), minlength=20)  # per second: var = mean
    assert abs(counts.var() / counts.mean() - 1) < 0.8


def test_bodies_hold_distinct_candidates_in_range() -> None:
    cfg = Config("http://x", candidates=100, users=943, items=1682, k=10)
    for raw in bodies(cfg, 20):
        req = json.loads(raw)
        assert 1 <= req["user_id"] <= 943 and req["k"] == 10
        c = req["candidates"]
        assert len(c) == len(set(c)) == 100 and min(c) >= 1 and max(c) <= 1682
