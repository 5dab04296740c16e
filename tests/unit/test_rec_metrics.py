"""anychip.rec.metrics against scikit-learn and against cases counted by hand (ties)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

import anychip as ac
from anychip.rec import metrics


def test_auc_matches_sklearn_with_many_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 5000)
    s = np.round(rng.random(5000) + 0.3 * y, 1)  # rounded: most scores tie with others
    assert metrics.auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_by_hand() -> None:
    # positives 0.5, 0.9; negatives 0.5, 0.1: pairs (0.5 v 0.5)=1/2, (0.5 v 0.1)=1,
    # (0.9 v 0.5)=1, (0.9 v 0.1)=1 -> 3.5 / 4
    assert metrics.auc([0.5, 0.9, 0.5, 0.1], [1, 1, 0, 0]) == 0.875
    assert metrics.auc([0.3, 0.3, 0.3], [1, 0, 1]) == 0.5  # all tied
    assert metrics.auc([0.1, 0.2], [1, 0]) == 0.0


def test_logloss_and_calibration() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 1000)
    p = rng.uniform(0.01, 0.99, 1000)
    assert metrics.logloss(p, y) == pytest.approx(log_loss(y, p), rel=1e-12)
    assert metrics.logloss([0.5], [1]) == pytest.approx(np.log(2))
    assert metrics.calibration([0.2, 0.4, 0.6], [0, 1, 0]) == pytest.approx(0.4 / (1 / 3))


def test_gauc_weights_users_by_impressions_and_skips_one_class_users() -> None:
    # user 1: 3 events, AUC 1/2 (pos 0.4 over neg 0.2, under neg 0.6 -> 1 of 2 pairs);
    # user 2: 2 events with a tie, AUC 1/2; user 3: only positives (skipped)
    s = [0.4, 0.2, 0.6, 0.7, 0.7, 0.9]
    y = [1, 0, 0, 1, 0, 1]
    u = [1, 1, 1, 2, 2, 3]
    assert metrics.gauc(s, y, u) == pytest.approx((3 * 0.5 + 2 * 0.5) / 5)
    s2 = [0.4, 0.2, 0.1, 0.7, 0.7, 0.9]  # user 1 now ranks perfectly: AUC 1
    assert metrics.gauc(s2, y, u) == pytest.approx((3 * 1.0 + 2 * 0.5) / 5)


def test_gauc_matches_per_user_sklearn() -> None:
    rng = np.random.default_rng(2)
    u = rng.integers(0, 40, 3000)
    y = rng.integers(0, 2, 3000)
    s = np.round(rng.random(3000) + 0.2 * y, 2)
    num = den = 0.0
    for user in np.unique(u):
        m = u == user
        if len(np.unique(y[m])) == 2:
            num += roc_auc_score(y[m], s[m]) * m.sum()
            den += m.sum()
    assert metrics.gauc(s, y, u) == pytest.approx(num / den, abs=1e-12)


def test_summary_keys() -> None:
    out = metrics.summary([0.2, 0.8, 0.6], [0, 1, 0], [1, 1, 2])
    assert set(out) == {"auc", "logloss", "gauc", "calibration"}


def test_bad_input_is_a_typed_error() -> None:
    with pytest.raises(ac.ArgumentError, match="both classes"):
        metrics.auc([0.1, 0.2], [1, 1])
    with pytest.raises(ac.ArgumentError, match=r"shapes \(2,\), \(3,\)"):
        metrics.logloss([0.1, 0.2], [1, 0, 1])
    with pytest.raises(ac.ArgumentError, match="no group"):
        metrics.gauc([0.1, 0.2], [1, 1], [0, 1])
