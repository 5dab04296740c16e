"""Behaviour features against a per-event loop over the raw stream (strictly earlier
timestamps only), on a small stream with many same-second events."""

from __future__ import annotations

import numpy as np
import pytest

from anychip.rec.history import PRIOR, behaviour


def _stream(n: int = 400, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(0, 60, n))  # ~7 events per second: many ties
    return rng.integers(1, 12, n), rng.integers(1, 30, n), rng.integers(1, 6, n).astype(float), ts


def test_recent_items_and_stats_see_only_earlier_seconds() -> None:
    user, item, rating, ts = _stream()
    k = 4
    b = behaviour(user, item, rating, ts, k=k)
    for e in range(len(user)):
        past = np.flatnonzero((user == user[e]) & (ts < ts[e]))  # time order = index order
        got = b.recent_items.values[b.recent_items.offsets[e] : b.recent_items.offsets[e + 1]]
        assert got.tolist() == item[past][-k:].tolist()
        liked = past[rating[past] >= 4]
        got = b.recent_liked.values[b.recent_liked.offsets[e] : b.recent_liked.offsets[e + 1]]
        assert got.tolist() == item[liked][-k:].tolist()
        n = len(past)
        rate = ((rating[past] >= 4).sum() + PRIOR * 0.55) / (n + PRIOR) - 0.55
        mean = (rating[past].sum() + PRIOR * 3.5) / (n + PRIOR) - 3.5
        assert b.dense[e, :3] == pytest.approx([np.log1p(n), rate, mean], abs=1e-6)
        ipast = np.flatnonzero((item == item[e]) & (ts < ts[e]))
        assert b.dense[e, 3] == pytest.approx(np.log1p(len(ipast)), abs=1e-6)


def test_a_future_event_changes_nothing_before_it() -> None:
    user, item, rating, ts = _stream(seed=1)
    a = behaviour(user, item, rating, ts)
    rating2 = rating.copy()
    rating2[-1] = 6 - rating2[-1]  # rewrite the last second's events: earlier ones must not move
    b = behaviour(user, item, rating2, ts)
    early = ts < ts[-1]
    np.testing.assert_array_equal(a.dense[early], b.dense[early])
