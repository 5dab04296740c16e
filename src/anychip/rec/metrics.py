"""Ranking and probability metrics of click/like predictions, exact and vectorised (numpy).

>>> auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
0.75
>>> auc([0.5, 0.5], [0, 1])  # a tie between a positive and a negative counts half
0.5
"""

from __future__ import annotations

from typing import Any

import numpy as np

from anychip.errors import ArgumentError

EPS = 1e-12  # probabilities are clipped to [EPS, 1 - EPS] in logloss


def _arrays(name: str, *xs: Any) -> list[np.ndarray]:
    out = [np.asarray(x, np.float64).reshape(-1) for x in xs]
    if len({len(x) for x in out}) != 1:
        shapes = ", ".join(str(np.shape(x)) for x in xs)
        raise ArgumentError(f"{name}: inputs differ in length (shapes {shapes})")
    if len(out[0]) == 0:
        raise ArgumentError(f"{name}: no events")
    return out


def _tied_ranks(keys: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort by `keys` (last key primary, as np.lexsort) and give each position the mean
    1-based rank of its run of equal keys; returns (order, ranks in sorted order)."""
    order = np.lexsort(keys)
    change = np.zeros(n, bool)
    change[0] = True
    for k in keys:
        ks = k[order]
        change[1:] |= ks[1:] != ks[:-1]
    starts = np.flatnonzero(change)
    ends = np.append(starts[1:], n)
    mean_rank = (starts + ends + 1) / 2.0  # mean of starts+1 .. ends
    return order, np.repeat(mean_rank, ends - starts)


def auc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve: the chance a random positive scores above a random
    negative, ties counted half (Mann-Whitney U / (n_pos n_neg)), in O(n log n)."""
    s, y = _arrays("auc", scores, labels)
    pos = y > 0.5
    n_pos = int(pos.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ArgumentError(f"auc: needs both classes, got {n_pos} positives, {n_neg} negatives")
    order, ranks = _tied_ranks([s], len(s))
    u = ranks[pos[order]].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def logloss(probs: Any, labels: Any) -> float:
    """Mean binary cross-entropy of probabilities (clipped to [1e-12, 1 - 1e-12])."""
    p, y = _arrays("logloss", probs, labels)
    p = np.clip(p, EPS, 1.0 - EPS)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def calibration(probs: Any, labels: Any) -> float:
    """Mean prediction over mean label (1.0 is calibrated; > 1 over-predicts)."""
    p, y = _arrays("calibration", probs, labels)
    if y.sum() == 0:
        raise ArgumentError("calibration: no positive labels (the ratio is undefined)")
    return float(p.mean() / y.mean())


def gauc(scores: Any, labels: Any, groups: Any) -> float:
    """Group AUC: each group's (user's) AUC weighted by its number of events; groups whose
    events are all of one class are skipped. Ties within a group count half."""
    s, y, g = _arrays("gauc", scores, labels, groups)
    n = len(s)
    order, ranks = _tied_ranks([s, g], n)  # sorted by group, then score
    gs, pos = g[order], y[order] > 0.5
    first = np.flatnonzero(np.r_[True, gs[1:] != gs[:-1]])
    size = np.diff(np.append(first, n))
    start = np.repeat(first, size)  # rank within the group = global rank - group start
    local = ranks - start
    n_pos = np.add.reduceat(pos.astype(np.float64), first)
    n_neg = size - n_pos
    rank_sum = np.add.reduceat(np.where(pos, local, 0.0), first)
    keep = (n_pos > 0) & (n_neg > 0)
    if not keep.any():
        raise ArgumentError("gauc: no group has both classes")
    per_group = (rank_sum[keep] - n_pos[keep] * (n_pos[keep] + 1) / 2) / (n_pos * n_neg)[keep]
    return float(np.sum(per_group * size[keep]) / size[keep].sum())


def summary(probs: Any, labels: Any, users: Any) -> dict[str, float]:
    """The four figures of a run: {'auc', 'logloss', 'gauc', 'calibration'}."""
    return {
        "auc": auc(probs, labels),
        "logloss": logloss(probs, labels),
        "gauc": gauc(probs, labels, users),
        "calibration": calibration(probs, labels),
    }
