"""Behaviour features built from the event stream as it happens: for each event, what the
user and the item did *strictly before* its timestamp (events of the same second are not
seen by each other, so nothing looks ahead, whatever order a file lists them in).

- `recent_items`: the user's last `k` items; `recent_liked`: the last `k` items the user
  rated >= 4 (ratings are known once an event has happened); both jagged int64 ids.
- dense (N, 6) float32: log1p of the user's past events, the user's smoothed like rate and
  mean centred rating, and the same three for the item.

Vectorised numpy over the whole stream (sorting by user or item, exclusive cumulative
sums), so a real-time engine's feature store would hold the same numbers at each event.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anychip.rec.movielens import Jagged

PRIOR = 10.0  # pseudo-events of the global mean in the smoothed rates (a new user is average)
DENSE_NAMES = (
    "user_log_count", "user_like_rate", "user_mean_rating",
    "item_log_count", "item_like_rate", "item_mean_rating",
)  # fmt: skip


@dataclass(frozen=True)
class Behaviour:
    recent_items: Jagged
    recent_liked: Jagged
    dense: np.ndarray  # (N, len(DENSE_NAMES)) float32


def _past(group: np.ndarray, timestamp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort events by (group, time); return (order, start of each event's group, start of its
    (group, second) run), positions in sorted order: an event sees positions [start, run)."""
    n = len(group)
    order = np.lexsort((np.arange(n), timestamp, group))
    g, t = group[order], timestamp[order]
    new_group = np.r_[True, g[1:] != g[:-1]]
    new_run = new_group | np.r_[True, t[1:] != t[:-1]]
    pos = np.arange(n)
    start = np.maximum.accumulate(np.where(new_group, pos, 0))
    run = np.maximum.accumulate(np.where(new_run, pos, 0))
    return order, start, run


def _exclusive(x: np.ndarray) -> np.ndarray:
    """Exclusive cumulative sum: out[i] = x[:i].sum() (length len(x) + 1)."""
    out = np.zeros(len(x) + 1, np.float64)
    np.cumsum(x, out=out[1:])
    return out


def _window(lo: np.ndarray, hi: np.ndarray, source: np.ndarray) -> Jagged:
    """Jagged rows source[lo[i]:hi[i]]."""
    lengths = hi - lo
    offsets = np.zeros(len(lo) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    idx = np.repeat(lo - offsets[:-1], lengths) + np.arange(offsets[-1])
    return Jagged(source[idx].astype(np.int64), offsets)


def _unsort(order: np.ndarray, rows: Jagged) -> Jagged:
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return rows.take(inverse)


def _recent(
    order: np.ndarray,
    start: np.ndarray,
    run: np.ndarray,
    item: np.ndarray,
    keep: np.ndarray,
    k: int,
) -> Jagged:
    """Each event's last `k` items among earlier events (in sorted order) with `keep`."""
    kept = keep[order]
    before = _exclusive(kept).astype(np.int64)  # kept events before each sorted position
    kept_items = item[order][kept]
    lo, hi = before[start], before[run]
    return _unsort(order, _window(np.maximum(lo, hi - k), hi, kept_items))


def _stats(
    order: np.ndarray, start: np.ndarray, run: np.ndarray, label: np.ndarray, rating: np.ndarray
) -> np.ndarray:
    """(N, 3): log1p(past events), smoothed past like rate, smoothed past mean rating
    (centred on the stream's mean, which is a constant, not a peek at the future)."""
    count = (run - start).astype(np.float64)
    likes = _exclusive(label[order])
    stars = _exclusive(rating[order])
    like_sum, star_sum = likes[run] - likes[start], stars[run] - stars[start]
    like_prior, star_prior = 0.55, 3.5  # MovieLens' long-run like rate and mean rating
    out = np.empty((len(order), 3), np.float64)
    out[order, 0] = np.log1p(count)
    out[order, 1] = (like_sum + PRIOR * like_prior) / (count + PRIOR) - like_prior
    out[order, 2] = (star_sum + PRIOR * star_prior) / (count + PRIOR) - star_prior
    return out


def behaviour(
    user: np.ndarray,
    item: np.ndarray,
    rating: np.ndarray,
    timestamp: np.ndarray,
    k: int = 20,
    threshold: float = 4.0,
) -> Behaviour:
    """Behaviour features of each event from the events before it (see the module doc)."""
    label = (np.asarray(rating) >= threshold).astype(np.float64)
    rating = np.asarray(rating, np.float64)
    u_order, u_start, u_run = _past(np.asarray(user), np.asarray(timestamp))
    i_order, i_start, i_run = _past(np.asarray(item), np.asarray(timestamp))
    everything = np.ones(len(user), bool)
    recent = _recent(u_order, u_start, u_run, item, everything, k)
    liked = _recent(u_order, u_start, u_run, item, label > 0, k)
    dense = np.concatenate(
        [
            _stats(u_order, u_start, u_run, label, rating),
            _stats(i_order, i_start, i_run, label, rating),
        ],
        axis=1,
    )
    return Behaviour(recent, liked, dense.astype(np.float32))


@dataclass(frozen=True)
class Snapshot:
    """The behaviour state after a whole stream, as a feature store serves it: per user
    (indexed by raw id) the recent items and liked items and 3 stats; per item 3 stats."""

    recent_items: Jagged  # (num_users bags)
    recent_liked: Jagged
    user_dense: np.ndarray  # (num_users, 3) float32
    item_dense: np.ndarray  # (num_items, 3) float32


def snapshot(
    user: np.ndarray,
    item: np.ndarray,
    rating: np.ndarray,
    timestamp: np.ndarray,
    num_users: int,
    num_items: int,
    k: int = 20,
) -> Snapshot:
    """What `behaviour` would give a new event of every user and every item one second
    after the stream ends (probe events appended; their own rating is never read)."""
    n = max(num_users, num_items)
    after = int(np.max(timestamp)) + 1 if len(timestamp) else 0
    probe_u = np.arange(n) % num_users  # each user and each item at least once
    probe_i = np.arange(n) % num_items
    b = behaviour(
        np.concatenate([user, probe_u]), np.concatenate([item, probe_i]),
        np.concatenate([rating, np.zeros(n)]), np.concatenate([timestamp, np.full(n, after)]), k,
    )  # fmt: skip
    first = len(user)
    users = first + np.arange(num_users)  # probe rows n0..: probe r has user r % num_users
    items = first + np.arange(num_items)
    return Snapshot(
        b.recent_items.take(users), b.recent_liked.take(users),
        b.dense[users, :3], b.dense[items, 3:],
    )  # fmt: skip
