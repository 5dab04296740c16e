"""The static and online protocols, driven with a scripted numpy learner that records
what it was asked to do and when."""

from __future__ import annotations

import numpy as np
import pytest

import anychip as ac
from anychip.rec import metrics, protocol


class Recorder:
    """Predicts a noisy copy of the label whose noise shrinks until epoch `peak` and grows
    after, so the validation AUC peaks there; logs every call."""

    def __init__(self, labels: np.ndarray, peak: int) -> None:
        self.labels, self.peak, self.log = labels, peak, []
        self.epoch, self.seen = 0, np.zeros(len(labels), int)
        self.rng = np.random.default_rng(0)

    def fit(self, rows: np.ndarray) -> None:
        self.log.append(("fit", rows.copy()))
        self.seen[rows] += 1
        n_fit = len(protocol.split(len(self.labels)).fit)
        if rows.max() < n_fit:  # the learner "improves" once per epoch on the fit period
            self.epoch = int(self.seen[:n_fit].sum()) // n_fit

    def predict(self, rows: np.ndarray) -> np.ndarray:
        self.log.append(("predict", rows.copy()))
        noise = 0.2 + abs(self.epoch - self.peak)
        return 1 / (
            1 + np.exp(-(self.labels[rows] - 0.5 + noise * self.rng.standard_normal(len(rows))))
        )

    def snapshot(self) -> int:
        return self.epoch

    def restore(self, state: int) -> None:
        self.log.append(("restore", state))
        self.epoch = state


def _data(n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return (rng.random(n) < 0.5).astype(np.float32), rng.integers(0, 30, n)


def test_split_periods() -> None:
    s = protocol.split(1000)
    assert (len(s.fit), len(s.valid), len(s.test)) == (720, 80, 200)
    assert s.fit[-1] + 1 == s.valid[0] and s.valid[-1] + 1 == s.test[0] == 800
    np.testing.assert_array_equal(s.train, np.arange(800))


def test_static_stops_early_on_validation_and_never_trains_on_test() -> None:
    labels, users = _data()
    learner = Recorder(labels, peak=2)
    res = protocol.run("static", learner, labels, users, protocol.Config(batch_size=64))
    assert res.epochs == 2 and len(res.valid_auc) == 3  # stopped one epoch after the peak
    assert ("restore", 2) in [c for c in learner.log if c[0] == "restore"]
    s = protocol.split(len(labels))
    assert learner.seen[s.test].sum() == 0
    assert np.all(learner.seen[s.fit] == 3) and np.all(learner.seen[s.valid] == 1)
    assert res.metrics == pytest.approx(metrics.summary(res.probs, labels[s.test], users[s.test]))


def test_online_predicts_each_shard_before_training_on_it() -> None:
    labels, users = _data()
    learner = Recorder(labels, peak=0)
    cfg = protocol.Config(batch_size=1000, max_epochs=1)
    res = protocol.run("online", learner, labels, users, cfg)
    test = protocol.split(len(labels)).test
    first_predict, first_fit = {}, {}
    for step, (kind, rows) in enumerate(learner.log):
        if kind == "restore":
            continue
        for r in rows[rows >= test[0]]:
            (first_predict if kind == "predict" else first_fit).setdefault(int(r), step)
    assert sorted(first_predict) == sorted(first_fit) == test.tolist()
    assert all(first_predict[r] < first_fit[r] for r in test)
    assert np.all(learner.seen[test] == 1)
    assert len(res.shard_auc) == 50 and len(res.probs) == len(test)
    assert res.metrics["auc"] == pytest.approx(metrics.auc(res.probs, labels[test]))


def test_unknown_protocol_is_a_typed_error() -> None:
    labels, users = _data(100)
    with pytest.raises(ac.ArgumentError, match="'offline'"):
        protocol.run("offline", Recorder(labels, 0), labels, users)


def test_both_protocols_share_one_static_training() -> None:
    labels, users = _data()
    both = protocol.run_protocols(("online", "static"), Recorder(labels, 2), labels, users)
    alone = protocol.run("static", Recorder(labels, 2), labels, users)
    assert list(both) == ["static", "online"]
    np.testing.assert_array_equal(both["static"].probs, alone.probs)
    assert both["online"].epochs == alone.epochs == 2
