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

import threading
from dataclasses import dataclass

import numpy as np

from anychip.rec.movielens import Jagged

PRIOR = 10.0  # pseudo-events of the global mean in the smoothed rates (a new user is average)
K = 20  # items in the recent and liked bags
LIKE_THRESHOLD = 4.0  # a rating at or above it is a like (the dataset's label)
LIKE_PRIOR, STAR_PRIOR = 0.55, 3.5  # MovieLens' long-run like rate and mean rating
DENSE_NAMES = (
    "user_log_count", "user_like_rate", "user_mean_rating",
    "item_log_count", "item_like_rate", "item_mean_rating",
)  # fmt: skip


@dataclass(frozen=True)
class Behaviour:
    recent_items: Jagged
    recent_liked: Jagged
    dense: np.ndarray  # (N, len(DENSE_NAMES)) float32
    user_sums: np.ndarray  # (N, 3) float64: the user's past events, likes, stars
    item_sums: np.ndarray  # (N, 3) float64: the item's


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
    """(N, 3): each event's past sums (events, likes, stars) in the input order."""
    count = (run - start).astype(np.float64)
    likes = _exclusive(label[order])
    stars = _exclusive(rating[order])
    out = np.empty((len(order), 3), np.float64)
    out[order, 0] = count
    out[order, 1] = likes[run] - likes[start]
    out[order, 2] = stars[run] - stars[start]
    return out


def dense_of(sums: np.ndarray) -> np.ndarray:
    """(N, 3) past sums (events, likes, stars) -> log1p(events), smoothed like rate and
    smoothed mean rating, both centred on the long-run means (constants, not a peek at
    the future): the 3 dense features of a user or an item."""
    count, likes, stars = sums[:, 0], sums[:, 1], sums[:, 2]
    out = np.empty((len(sums), 3), np.float64)
    out[:, 0] = np.log1p(count)
    out[:, 1] = (likes + PRIOR * LIKE_PRIOR) / (count + PRIOR) - LIKE_PRIOR
    out[:, 2] = (stars + PRIOR * STAR_PRIOR) / (count + PRIOR) - STAR_PRIOR
    return out


def sums_of(dense: np.ndarray) -> np.ndarray:
    """The inverse of `dense_of` (a feature store that holds only the dense features)."""
    d = np.asarray(dense, np.float64)
    count = np.round(np.expm1(d[:, 0]))
    likes = (d[:, 1] + LIKE_PRIOR) * (count + PRIOR) - PRIOR * LIKE_PRIOR
    stars = (d[:, 2] + STAR_PRIOR) * (count + PRIOR) - PRIOR * STAR_PRIOR
    return np.stack([count, np.round(likes), stars], axis=1)


def behaviour(
    user: np.ndarray,
    item: np.ndarray,
    rating: np.ndarray,
    timestamp: np.ndarray,
    k: int = K,
    threshold: float = LIKE_THRESHOLD,
) -> Behaviour:
    """Behaviour features of each event from the events before it (see the module doc)."""
    label = (np.asarray(rating) >= threshold).astype(np.float64)
    rating = np.asarray(rating, np.float64)
    u_order, u_start, u_run = _past(np.asarray(user), np.asarray(timestamp))
    i_order, i_start, i_run = _past(np.asarray(item), np.asarray(timestamp))
    everything = np.ones(len(user), bool)
    recent = _recent(u_order, u_start, u_run, item, everything, k)
    liked = _recent(u_order, u_start, u_run, item, label > 0, k)
    user_sums = _stats(u_order, u_start, u_run, label, rating)
    item_sums = _stats(i_order, i_start, i_run, label, rating)
    dense = np.concatenate([dense_of(user_sums), dense_of(item_sums)], axis=1)
    return Behaviour(recent, liked, dense.astype(np.float32), user_sums, item_sums)


@dataclass(frozen=True)
class Snapshot:
    """The behaviour state after a whole stream, as a feature store serves it: per user
    (indexed by raw id) the recent items and liked items and 3 stats; per item 3 stats."""

    recent_items: Jagged  # (num_users bags)
    recent_liked: Jagged
    user_dense: np.ndarray  # (num_users, 3) float32
    item_dense: np.ndarray  # (num_items, 3) float32
    user_sums: np.ndarray  # (num_users, 3) float64: what user_dense is made of (dense_of)
    item_sums: np.ndarray  # (num_items, 3) float64


def snapshot(
    user: np.ndarray,
    item: np.ndarray,
    rating: np.ndarray,
    timestamp: np.ndarray,
    num_users: int,
    num_items: int,
    k: int = K,
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
        b.dense[users, :3], b.dense[items, 3:], b.user_sums[users], b.item_sums[items],
    )  # fmt: skip


class State:
    """The behaviour state a server's feature store keeps as events arrive (`observe`):
    per user the last `k` items and liked items (rows of (num_users, k) arrays, oldest
    first, with their lengths) and past sums, per item past sums.

    `behaviour` gives an event at second t what happened strictly before t, so `observe`
    holds back the events of the newest second it has seen and counts them once a later
    second begins: when a later event arrives, or when a query names a later time
    (`read`). A query at time t then reads exactly what `behaviour` gives an event at t.
    Thread-safe: `observe` and the reads hold one lock.
    """

    def __init__(self, snap: Snapshot, k: int) -> None:
        self.k = k
        self.sums = {"user": np.array(snap.user_sums, np.float64),
                     "item": np.array(snap.item_sums, np.float64)}  # fmt: skip
        # the dense features too, kept up to date row by row: a query only gathers them
        self.dense = {side: dense_of(sums).astype(np.float32) for side, sums in self.sums.items()}
        self.bags = {"recent_items": _rows(snap.recent_items, k),
                     "recent_liked": _rows(snap.recent_liked, k)}  # fmt: skip
        self._second = -(2**62)  # the newest second observed; its events are held back
        self._held: list[tuple[int, int, float]] = []  # (user, item, rating) of that second
        self._lock = threading.Lock()

    def observe(self, events: list[tuple[int, int, float, int]]) -> None:
        """Count events (user, item, rating, timestamp), in log order. Ids outside the
        state (cold start) are not counted."""
        users, items = len(self.sums["user"]), len(self.sums["item"])
        with self._lock:
            for user, item, rating, ts in events:
                if not (0 < user < users and 0 < item < items):
                    continue
                if ts > self._second:
                    self._fold()
                    self._second = ts
                if ts < self._second:  # late: older than the held second, so count it now
                    self._count(user, item, rating)
                else:
                    self._held.append((user, item, rating))

    def _fold(self) -> None:
        for user, item, rating in self._held:
            self._count(user, item, rating)
        self._held.clear()

    def _count(self, user: int, item: int, rating: float) -> None:
        like = float(rating >= LIKE_THRESHOLD)
        for side, row in (("user", user), ("item", item)):
            self.sums[side][row] += (1.0, like, rating)
            self.dense[side][row] = dense_of(self.sums[side][row : row + 1])[0]
        _push(self.bags["recent_items"], user, item)
        if like:
            _push(self.bags["recent_liked"], user, item)

    def read(
        self, users: np.ndarray, items: np.ndarray, timestamp: int
    ) -> tuple[dict[str, Jagged], np.ndarray, np.ndarray]:
        """The recent and liked bags (by name) and (len(users), 3) dense features of
        `users`, and the (len(items), 3) dense features of `items` (float32; ids in range),
        as of a query at `timestamp` (counting the held events first if it is later), all
        read at one moment."""
        with self._lock:
            if timestamp > self._second:
                self._fold()
            bags = {name: (ids[users], n[users]) for name, (ids, n) in self.bags.items()}
            user_dense, item_dense = self.dense["user"][users], self.dense["item"][items]
        out = {}
        for name, (rows, n) in bags.items():
            offsets = np.zeros(len(users) + 1, np.int64)
            np.cumsum(n, out=offsets[1:])
            out[name] = Jagged(rows[np.arange(self.k) < n[:, None]], offsets)
        return out, user_dense, item_dense


def _rows(bags: Jagged, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Jagged bags as ((rows, k) ids, oldest first and left-aligned; (rows,) lengths),
    keeping each bag's last k."""
    lengths = np.minimum(bags.lengths, k)
    ids = np.zeros((len(lengths), k), np.int64)
    mask = np.arange(k) < lengths[:, None]
    starts = np.repeat(bags.offsets[1:] - lengths, lengths)  # where each bag's last k begin
    rank = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    ids[mask] = bags.values[starts + rank]
    return ids, lengths


def _push(bags: tuple[np.ndarray, np.ndarray], row: int, item: int) -> None:
    """Append `item` to bag `row`, dropping its oldest when it holds k already."""
    ids, lengths = bags
    n = lengths[row]
    if n < ids.shape[1]:
        ids[row, n] = item
        lengths[row] = n + 1
    else:
        ids[row, :-1] = ids[row, 1:]
        ids[row, -1] = item
