"""Synthetic Criteo-shaped click data: 13 dense features, 26 single-valued sparse features
(C1..C26) with Zipf-distributed ids, and labels drawn from a hidden ground-truth model, so
a trained model's AUC says how much of that model it learnt. Seeded; batches are made on
the host with numpy, vectorised per table.

The hidden model: logit = b + dense @ w + sum_t u_t[id_t] + sum over table pairs (a, b)
of <v_a[id_a], v_b[id_b]> (rank-4 vectors for the first 8 tables); label ~ Bernoulli.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from anychip.errors import ArgumentError
from anychip.frontend.tensor import Tensor
from anychip.rec.collection import EmbeddingBagConfig
from anychip.rec.jagged import KeyedJaggedTensor

DENSE, SPARSE = 13, 26
KEYS = [f"C{i + 1}" for i in range(SPARSE)]
# Criteo Kaggle's cardinalities (C1..C26), which `criteo_table_sizes` scales down
KAGGLE = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27,
    14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)  # fmt: skip
FACTOR_TABLES, RANK = 8, 4  # tables whose ids interact pairwise in the hidden model


def criteo_table_sizes(total_rows: int = 2_500_000) -> list[int]:
    """26 table sizes shaped like Criteo Kaggle's, the large ones scaled so all total about
    `total_rows` (small tables keep their size, at least 2 rows).

    >>> sizes = criteo_table_sizes()
    >>> len(sizes), 2_400_000 < sum(sizes) < 2_600_000
    (26, True)
    """
    small = [c for c in KAGGLE if c <= 20_000]
    scale = max(total_rows - sum(small), 0) / sum(c for c in KAGGLE if c > 20_000)
    return [c if c <= 20_000 else max(2, round(c * scale)) for c in KAGGLE]


def criteo_tables(dim: int, table_sizes: Sequence[int] | None = None) -> list[EmbeddingBagConfig]:
    """One sum-pooled table per feature: table `t_Ci` of `table_sizes[i]` rows reads Ci."""
    sizes = criteo_table_sizes() if table_sizes is None else list(table_sizes)
    return [EmbeddingBagConfig(f"t_{k}", dim, n, [k]) for k, n in zip(KEYS, sizes)]


@dataclass
class Batch:
    """One batch on the host: dense (B, 13) float32, ids (26, B) int64, labels (B,)
    float32 in {0, 1}, and the hidden model's click probabilities (B,)."""

    dense: np.ndarray
    ids: np.ndarray
    labels: np.ndarray
    prob: np.ndarray

    def tensors(self, device: Any = None) -> tuple[Tensor, KeyedJaggedTensor, Tensor]:
        """(dense, KeyedJaggedTensor of C1..C26 with one id each, labels) on `device`."""
        lengths = np.ones(self.ids.size, np.int64)
        kjt = KeyedJaggedTensor(KEYS, self.ids.reshape(-1), lengths, device=device)
        return (
            Tensor(self.dense, device=kjt.device()),
            kjt,
            Tensor(self.labels, device=kjt.device()),
        )


class SyntheticCriteo:
    """The hidden model for `table_sizes` (26 sizes) drawn from `seed`, and batches drawn
    from it: `batch(rng, b)`. Ids follow a Zipf law of exponent `zipf` over each table's
    rows (rank r drawn with probability ~ r^-zipf, ranks mapped to ids by a fixed
    bijection so the popular ids are spread over the table)."""

    def __init__(
        self, table_sizes: Sequence[int] | None = None, *, seed: int = 0, zipf: float = 1.05
    ) -> None:
        self.sizes = criteo_table_sizes() if table_sizes is None else [int(n) for n in table_sizes]
        if len(self.sizes) != SPARSE or min(self.sizes) < 1:
            raise ArgumentError(
                f"SyntheticCriteo: needs {SPARSE} positive table sizes, got {self.sizes}"
            )
        if zipf <= 0 or zipf == 1.0:
            raise ArgumentError(f"SyntheticCriteo: zipf must be > 0 and != 1, got {zipf}")
        self.zipf = zipf
        rng = np.random.default_rng([seed, 0])
        self.w_dense = rng.normal(0, 0.3, DENSE).astype(np.float32)
        # per id weights, smaller for bigger tables so no one table decides the label
        self.u = [rng.normal(0, 0.8, n).astype(np.float32) for n in self.sizes]
        self.v = [
            rng.normal(0, 0.5, (n, RANK)).astype(np.float32) for n in self.sizes[:FACTOR_TABLES]
        ]
        self.mult = [_coprime(n, rng) for n in self.sizes]
        self.shift = [int(rng.integers(0, n)) for n in self.sizes]
        self.bias = -1.2  # about one click in four, as in Criteo

    def ids(self, rng: np.random.Generator, b: int) -> np.ndarray:
        """(26, b) Zipf-distributed ids."""
        out = np.empty((SPARSE, b), np.int64)
        e = 1.0 - self.zipf
        for t, n in enumerate(self.sizes):
            u = rng.random(b)
            # inverse CDF of the continuous power law on [1, n + 1): ranks 1..n
            r = np.floor(((np.float64(n + 1) ** e - 1.0) * u + 1.0) ** (1.0 / e)).astype(np.int64)
            r = np.clip(r, 1, n) - 1
            out[t] = (r * self.mult[t] + self.shift[t]) % n
        return out

    def batch(self, rng: np.random.Generator, b: int) -> Batch:
        ids = self.ids(rng, b)
        dense = np.log1p(rng.exponential(2.0, (b, DENSE))).astype(np.float32) - 1.0
        logit = self.bias + dense @ self.w_dense
        logit = logit + sum(self.u[t][ids[t]] for t in range(SPARSE)) / np.sqrt(SPARSE / 4)
        vs = [self.v[t][ids[t]] for t in range(FACTOR_TABLES)]  # (b, RANK) each
        for a in range(FACTOR_TABLES):
            for c in range(a + 1, FACTOR_TABLES):
                logit = logit + (vs[a] * vs[c]).sum(1) / np.sqrt(FACTOR_TABLES)
        prob = 1.0 / (1.0 + np.exp(-logit))
        labels = (rng.random(b) < prob).astype(np.float32)
        return Batch(dense, ids, labels, prob.astype(np.float32))


def _coprime(n: int, rng: np.random.Generator) -> int:
    """A multiplier coprime to n (rank -> id is then a bijection mod n)."""
    while True:
        m = int(rng.integers(1, max(n, 2))) | 1
        if np.gcd(m, n) == 1:
            return m


def synthetic_criteo(
    n: int,
    *,
    batch: int = 2048,
    seed: int = 0,
    stream: int = 0,
    table_sizes: Sequence[int] | None = None,
    zipf: float = 1.05,
    device: Any = None,
) -> Iterator[tuple[Tensor, KeyedJaggedTensor, Tensor]]:
    """`n` samples in batches of `batch` (the last one smaller if `batch` does not divide
    n): (dense (B, 13) float32, KeyedJaggedTensor of C1..C26, labels (B,) float32). The
    hidden model depends on `seed` (and table_sizes, zipf) only; `stream` picks another
    draw of samples from the same model (a held-out set).

    >>> dense, kjt, labels = next(synthetic_criteo(4, table_sizes=[100] * 26))
    >>> dense.shape, kjt.stride(), len(kjt.keys()), labels.shape
    ((4, 13), 4, 26, (4,))
    """
    gen = SyntheticCriteo(table_sizes, seed=seed, zipf=zipf)
    rng = np.random.default_rng([seed, 1, stream])
    for start in range(0, n, batch):
        yield gen.batch(rng, min(batch, n - start)).tensors(device)
