"""Behaviour features against a per-event loop over the raw stream (strictly earlier
timestamps only), on a small stream with many same-second events."""

from __future__ import annotations

import numpy as np
import pytest

from anychip.rec.history import PRIOR, State, behaviour, dense_of, snapshot, sums_of


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


def test_a_state_that_follows_the_stream_reads_what_behaviour_gives_each_event() -> None:
    user, item, rating, ts = _stream(seed=2)
    k, cut = 4, int(np.searchsorted(ts, 30))  # the snapshot ends at a second's boundary
    snap = snapshot(user[:cut], item[:cut], rating[:cut], ts[:cut], 12, 30, k)
    np.testing.assert_allclose(dense_of(snap.user_sums), snap.user_dense, atol=1e-6)
    np.testing.assert_allclose(sums_of(snap.item_dense), snap.item_sums, atol=1e-4)
    state = State(snap, k)
    want = behaviour(user, item, rating, ts, k=k)
    for e in range(cut, len(user)):  # a query for each event, then the event itself
        bags, user_dense, item_dense = state.read(user[e : e + 1], item[e : e + 1], int(ts[e]))
        for name, j in (("recent_items", want.recent_items), ("recent_liked", want.recent_liked)):
            assert bags[name].values.tolist() == j.values[j.offsets[e] : j.offsets[e + 1]].tolist()
        np.testing.assert_array_equal(np.r_[user_dense[0], item_dense[0]], want.dense[e])
        state.observe([(int(user[e]), int(item[e]), float(rating[e]), int(ts[e]))])


def test_a_state_counts_nothing_of_unknown_ids_and_a_late_event_at_once() -> None:
    user, item, rating, ts = _stream(seed=3)
    state = State(snapshot(user, item, rating, ts, 12, 30, 4), 4)
    before = state.read(np.array([3]), np.array([5]), 10**6)[1:]
    state.observe([(0, 5, 5.0, 10**6), (3, 99, 5.0, 10**6), (-1, 5, 5.0, 10**6)])
    np.testing.assert_array_equal(state.read(np.array([3]), np.array([5]), 10**6 + 1)[1:], before)
    state.observe([(3, 5, 5.0, 10**6 + 5), (3, 6, 1.0, 10**6 + 2)])  # the second is late
    bags, _, _ = state.read(np.array([3]), np.array([5]), 10**6 + 5)
    assert bags["recent_items"].values[-1] == 6  # counted; the held second is not yet
