"""The synthetic Criteo-shaped generator: seeded, Zipf ids within each table, labels from
the hidden model (its probabilities rank the labels: AUC well above 0.5), and a small
DLRM trained on it learns that model (held-out AUC above 0.5 by a wide margin)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import anychip as ac
from anychip.rec import models
from anychip.rec.synthetic import (
    KEYS,
    SyntheticCriteo,
    criteo_table_sizes,
    criteo_tables,
    synthetic_criteo,
)


def test_batches_are_seeded_and_criteo_shaped() -> None:
    a = list(synthetic_criteo(10, batch=4, table_sizes=[50] * 26, seed=3))
    b = list(synthetic_criteo(10, batch=4, table_sizes=[50] * 26, seed=3))
    assert [x[0].shape for x in a] == [(4, 13), (4, 13), (2, 13)]
    _, kjt, labels = a[0]
    assert kjt.keys() == KEYS and kjt.stride() == 4 and kjt.lengths().tolist() == [1] * 104
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x[0].numpy(), y[0].numpy())
        np.testing.assert_array_equal(x[1].values().numpy(), y[1].values().numpy())
        np.testing.assert_array_equal(x[2].numpy(), y[2].numpy())
    other = next(synthetic_criteo(4, batch=4, table_sizes=[50] * 26, seed=3, stream=1))
    assert not np.array_equal(other[1].values().numpy(), kjt.values().numpy())
    assert set(np.unique(labels.numpy())) <= {0.0, 1.0}


def test_ids_follow_a_zipf_law_within_each_table() -> None:
    gen = SyntheticCriteo([10_000] * 26, zipf=1.2)
    ids = gen.ids(np.random.default_rng(0), 200_000)
    assert ids.min() >= 0 and ids.max() < 10_000
    counts = np.sort(np.bincount(ids[0], minlength=10_000))[::-1].astype(np.float64)
    # frequency of the rank-r id ~ r^-1.2: the slope of log count against log rank
    r = np.arange(1, 101)
    slope = np.polyfit(np.log(r), np.log(counts[:100]), 1)[0]
    assert -1.45 < slope < -0.95, slope
    assert counts[0] > 100 * 200_000 / 10_000  # the top id is far above uniform


def test_labels_come_from_the_hidden_model() -> None:
    gen = SyntheticCriteo(criteo_table_sizes())
    assert 2_400_000 < sum(gen.sizes) < 2_600_000 and max(gen.sizes) > 500_000
    b = gen.batch(np.random.default_rng(1), 20_000)
    assert 0.15 < b.labels.mean() < 0.35  # Criteo-like click rate
    assert abs(b.labels.mean() - b.prob.mean()) < 0.02
    assert roc_auc_score(b.labels, b.prob) > 0.8  # the truth ranks clicks well
    assert roc_auc_score(b.labels, b.dense @ gen.w_dense) > 0.55  # dense features matter


def test_bad_table_sizes_are_refused() -> None:
    with pytest.raises(ac.ArgumentError, match="26 positive table sizes"):
        SyntheticCriteo([10] * 3)


@pytest.mark.slow
def test_a_small_dlrm_learns_the_hidden_model() -> None:
    dev = "cpu" if "cpu" in ac.devices() else "ref"
    sizes = [200] * 26
    ac.manual_seed(0)
    model = models.build(
        "dlrm", criteo_tables(8, sizes), 13, device=dev, bottom_mlp=[16, 8], top_mlp=[16, 1]
    )
    opt = ac.optim.Adam(model.parameters(), lr=0.01)
    bce = ac.nn.functional.binary_cross_entropy_with_logits

    @ac.jit
    def step(model, opt, dense, kjt, y):  # type: ignore[no-untyped-def]
        opt.zero_grad()
        loss = bce(model(dense, kjt), y)
        loss.backward()
        opt.step()
        return loss

    for dense, kjt, y in synthetic_criteo(150 * 256, batch=256, table_sizes=sizes, device=dev):
        step(model, opt, dense, kjt, y)
    dense, kjt, y = next(synthetic_criteo(4096, batch=4096, table_sizes=sizes, stream=1))
    model = model.to("ref") if dev != "ref" else model
    with ac.no_grad():
        p = model(dense.to("ref"), kjt.to("ref")).numpy()
    auc = roc_auc_score(y.numpy(), p)
    assert auc > 0.68, auc  # chance is 0.5; the hidden model itself reaches about 0.87
