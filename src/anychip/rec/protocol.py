"""Evaluation protocols over a time-ordered event stream: `static` and `online`.

`static`: fit on the first 72% of events, choose the number of epochs on the next 8% (the
last 10% of the training period; never the test set), then train once on those 8% too, and
test on the last 20%. `online` (progressive validation): after the static training, walk
the test period in 50 time-ordered shards: predict a shard, record it, then train on it.

The protocols only see event indices; a `Learner` (one framework's model, optimizers and
batch builder) trains on and predicts rows, so PyTorch twins run the same protocol.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from anychip.errors import ArgumentError
from anychip.rec import metrics

PROTOCOLS = ("static", "online")
TRAIN, VALID = 0.8, 0.1  # train on the first 80%; validate on the last 10% of that part


class Learner(Protocol):
    """What a protocol drives. `fit(rows)` takes one optimiser step per batch of `rows`
    (in the given order); `predict(rows)` returns probabilities (len(rows),)."""

    def fit(self, rows: np.ndarray) -> None: ...
    def predict(self, rows: np.ndarray) -> np.ndarray: ...
    def snapshot(self) -> Any: ...
    def restore(self, state: Any) -> None: ...


@dataclass(frozen=True)
class Config:
    batch_size: int = 256
    max_epochs: int = 10
    patience: int = 1  # epochs without a better validation AUC before stopping
    shards: int = 50
    seed: int = 0  # order of training rows within an epoch


@dataclass(frozen=True)
class Split:
    fit: np.ndarray  # first 72%: epochs of training
    valid: np.ndarray  # next 8%: early stopping
    test: np.ndarray  # last 20%

    @property
    def train(self) -> np.ndarray:
        return np.concatenate([self.fit, self.valid])


def split(n: int) -> Split:
    """Event indices of the three periods of a stream of `n` time-ordered events."""
    if n < 10:
        raise ArgumentError(f"protocol: a stream of {n} events is too short to split")
    n_train = round(n * TRAIN)
    n_fit = n_train - round(n_train * VALID)
    idx = np.arange(n, dtype=np.int64)
    return Split(idx[:n_fit], idx[n_fit:n_train], idx[n_train:])


@dataclass
class Result:
    protocol: str
    metrics: dict[str, float]
    events_per_s: float  # training and prediction events over their wall time
    epochs: int  # epochs kept on the fit period (chosen on the validation period)
    valid_auc: list[float]  # validation AUC after each epoch
    shard_auc: list[float] = field(default_factory=list)  # online: AUC of each shard
    probs: np.ndarray = field(default_factory=lambda: np.zeros(0))  # test predictions


Progress = Callable[[str, int, int], None]  # (phase, done, total)


def _quiet(phase: str, done: int, total: int) -> None:
    return None


def _batches(rows: np.ndarray, size: int) -> list[np.ndarray]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def _fit_epoch(
    learner: Learner,
    rows: np.ndarray,
    cfg: Config,
    rng: np.random.Generator,
    progress: Progress = _quiet,
    phase: str = "train",
) -> int:
    chunks = _batches(rng.permutation(rows), cfg.batch_size)
    for i, chunk in enumerate(chunks):
        learner.fit(chunk)
        if i % 16 == 15 or i == len(chunks) - 1:
            progress(phase, i + 1, len(chunks))
    return len(rows)


def _predict(learner: Learner, rows: np.ndarray, cfg: Config) -> np.ndarray:
    parts = [learner.predict(chunk) for chunk in _batches(rows, cfg.batch_size * 4)]
    return np.concatenate(parts) if parts else np.zeros(0)


def train_static(
    learner: Learner, labels: np.ndarray, cfg: Config = Config(), progress: Progress = _quiet
) -> tuple[int, list[float], int]:
    """The static training of both protocols: epochs on the fit period with early stopping
    on the validation period (the best epoch's state is kept), then one pass over the
    validation period. Returns (epochs kept, validation AUC per epoch, events processed)."""
    s = split(len(labels))
    rng = np.random.default_rng(cfg.seed)
    best, best_state, history, events = -1.0, None, [], 0
    for epoch in range(cfg.max_epochs):
        events += _fit_epoch(learner, s.fit, cfg, rng, progress, f"epoch {epoch + 1}")
        score = metrics.auc(_predict(learner, s.valid, cfg), labels[s.valid])
        events += len(s.valid)
        history.append(score)
        if score > best:
            best, best_state = score, learner.snapshot()
        elif epoch - int(np.argmax(history)) >= cfg.patience:
            break
    learner.restore(best_state)
    events += _fit_epoch(learner, s.valid, cfg, rng, progress, "valid")
    return int(np.argmax(history)) + 1, history, events


def run(
    protocol: str,
    learner: Learner,
    labels: np.ndarray,
    users: np.ndarray,
    cfg: Config = Config(),
    progress: Progress = _quiet,
) -> Result:
    """Run `protocol` ('static' or 'online') on a stream with these per-event `labels` and
    `users` (time-ordered); metrics are over the test period (the last 20%)."""
    return run_protocols((protocol,), learner, labels, users, cfg, progress)[protocol]


def run_protocols(
    protocols: Sequence[str],
    learner: Learner,
    labels: np.ndarray,
    users: np.ndarray,
    cfg: Config = Config(),
    progress: Progress = _quiet,
) -> dict[str, Result]:
    """Several protocols from one static training (it is the same for both): the static
    test predictions first (they leave the model as it is), then the online walk."""
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad or not protocols:
        raise ArgumentError(f"protocol: has to be one of {PROTOCOLS}, got {bad or protocols}")
    labels, users = np.asarray(labels), np.asarray(users)
    if labels.shape != users.shape:
        raise ArgumentError(f"protocol: labels {labels.shape} and users {users.shape} differ")
    t0 = time.perf_counter()
    epochs, history, events = train_static(learner, labels, cfg, progress)
    trained = time.perf_counter() - t0
    test = split(len(labels)).test
    out = {}
    for name in [p for p in PROTOCOLS if p in protocols]:  # static first: it only reads
        t1 = time.perf_counter()
        shard_auc: list[float] = []
        if name == "static":
            probs, seen = _predict(learner, test, cfg), len(test)
        else:
            probs, shard_auc = _online(learner, test, labels, cfg, progress)
            seen = 2 * len(test)  # each test event is predicted, then trained on
        rate = (events + seen) / max(trained + time.perf_counter() - t1, 1e-9)
        m = metrics.summary(probs, labels[test], users[test])
        out[name] = Result(name, m, rate, epochs, history, shard_auc, probs)
    return out


def _online(
    learner: Learner, test: np.ndarray, labels: np.ndarray, cfg: Config, progress: Progress
) -> tuple[np.ndarray, list[float]]:
    """Progressive validation: each shard is predicted before the model trains on it
    (in time order: a shard's events are seen once, as they arrive)."""
    shards: Sequence[np.ndarray] = np.array_split(test, cfg.shards)
    probs, shard_auc = [], []
    for k, shard in enumerate(shards):
        p = _predict(learner, shard, cfg)
        probs.append(p)
        y = labels[shard]
        shard_auc.append(metrics.auc(p, y) if 0 < y.sum() < len(y) else float("nan"))
        for chunk in _batches(shard, cfg.batch_size):
            learner.fit(chunk)
        progress("online", k + 1, len(shards))
    return np.concatenate(probs), shard_auc
