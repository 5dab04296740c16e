"""The demo workload: an MLP learns to tell three interleaved spirals apart, end to end
(data, nn.Linear + ReLU, cross_entropy, Adam) on any device; `anychip demo` runs it.

The data are made in-process from a fixed seed, so the run needs no download.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from anychip import nn, optim
from anychip.frontend.creation import tensor
from anychip.frontend.random import manual_seed
from anychip.frontend.tensor import Tensor, no_grad
from anychip.nn import functional as F

TARGET_ACCURACY = 0.9  # what `anychip demo` promises on held-out points


def make_spirals(
    n_per_class: int = 100, classes: int = 3, noise: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Points on `classes` interleaved spiral arms in the unit disc.

    Returns x (N, 2) float32 and y (N,) int64 with N = n_per_class * classes.

    >>> x, y = make_spirals(10, 3)
    >>> x.shape, y.shape, sorted(set(y.tolist()))
    ((30, 2), (30,), [0, 1, 2])
    """
    rng = np.random.default_rng(seed)
    radius = np.tile(np.linspace(0.05, 1.0, n_per_class), classes)  # (N,)
    label = np.repeat(np.arange(classes), n_per_class)  # (N,)
    # each arm turns by 4 radians from centre to rim, arms offset by 2*pi/classes
    angle = label * (2 * np.pi / classes) + radius * 4.0
    angle = angle + rng.standard_normal(angle.shape) * noise
    x = np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1)
    return x.astype(np.float32), label.astype(np.int64)


def make_model(hidden: int = 64, classes: int = 3) -> nn.Module:
    """A 2 -> hidden -> hidden -> classes MLP with ReLU."""
    return nn.Sequential(
        nn.Linear(2, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, classes),
    )


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Share of rows of x whose largest logit is at the label y."""
    with no_grad():
        hits = (model(x).argmax(dim=1) == y).to(x.dtype).mean()
    return float(hits.item())


@dataclass
class EpochStats:
    epoch: int
    loss: float  # mean training loss over the epoch's batches
    train_accuracy: float
    test_accuracy: float


def train(
    epochs: int = 20,
    device: str | None = None,
    seed: int = 0,
    batch_size: int = 32,
    lr: float = 1e-2,
    log: Callable[[str], None] | None = print,
) -> list[EpochStats]:
    """Train the spiral classifier; one EpochStats per epoch (logged as it goes)."""
    manual_seed(seed)
    x_np, y_np = make_spirals(seed=seed)
    xt_np, yt_np = make_spirals(seed=seed + 1)  # held-out points from the same spirals
    x_all, y_all = tensor(x_np, device=device), tensor(y_np, device=device)
    x_test, y_test = tensor(xt_np, device=device), tensor(yt_np, device=device)
    model = make_model().to(x_all.device)
    opt = optim.Adam(model.parameters(), lr=lr)
    order_rng = np.random.default_rng(seed)
    history = []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        perm = order_rng.permutation(len(y_np))  # batches are cut on the host, like a loader
        losses = []
        for start in range(0, len(perm), batch_size):
            idx = perm[start : start + batch_size]
            xb, yb = tensor(x_np[idx], device=device), tensor(y_np[idx], device=device)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss)
        model.eval()
        stats = EpochStats(
            epoch,
            float(np.mean([v.item() for v in losses])),
            accuracy(model, x_all, y_all),
            accuracy(model, x_test, y_test),
        )
        history.append(stats)
        if log is not None:
            log(
                f"epoch {epoch:3d}/{epochs}  loss {stats.loss:.4f}  "
                f"train acc {stats.train_accuracy:6.1%}  test acc {stats.test_accuracy:6.1%}  "
                f"({time.perf_counter() - t0:.2f}s)"
            )
    return history
