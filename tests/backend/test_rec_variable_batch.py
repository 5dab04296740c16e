"""Variable batches (`KeyedJaggedTensor(..., stride_per_key_per_rank, inverse_indices)`):
an EmbeddingBagCollection pools a request's features once and hands each sample its row,
with the values and table gradients of the same batch written out per sample (numpy),
under `anychip.jit` on batches with other maps, and bad layouts refused."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import anychip as ac
from anychip.rec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor

ROWS, DIM, SAMPLES, USERS = 20, 3, 7, 3


def layout(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Key "user": USERS bags of 1-3 ids read by the samples through a map; key "item":
    one id per sample. (values, lengths, inverse (2, SAMPLES))."""
    rng = np.random.default_rng(seed)
    ulen = rng.integers(1, 4, USERS)
    values = np.concatenate([rng.integers(0, ROWS, ulen.sum()), rng.integers(0, ROWS, SAMPLES)])
    lengths = np.concatenate([ulen, np.ones(SAMPLES, np.int64)])
    inverse = np.stack([rng.integers(0, USERS, SAMPLES), np.arange(SAMPLES)])
    return values, lengths, inverse


def variable(values: np.ndarray, lengths: np.ndarray, inverse: np.ndarray, device: str):
    return KeyedJaggedTensor(
        ["user", "item"], values, lengths, device=device,
        stride_per_key_per_rank=[[USERS], [SAMPLES]], inverse_indices=(["user", "item"], inverse),
    )  # fmt: skip


def per_sample(values: np.ndarray, lengths: np.ndarray, inverse: np.ndarray) -> tuple:
    """The same batch with every sample's user bag written out: (values, lengths)."""
    off = np.concatenate([[0], np.cumsum(lengths)])
    bags = [values[off[u] : off[u + 1]] for u in inverse[0]]
    items = values[off[USERS] :]
    vals = np.concatenate([*bags, items])
    return vals, np.concatenate([[len(b) for b in bags], np.ones(SAMPLES, np.int64)])


def tables(device: str) -> EmbeddingBagCollection:
    ac.manual_seed(0)
    cfg = [EmbeddingBagConfig("t", DIM, ROWS, ["user", "item"])]
    return EmbeddingBagCollection(cfg, device=device, sparse=False)


def numpy_pooled(w: np.ndarray, values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    off = np.concatenate([[0], np.cumsum(lengths)])
    return np.stack([w[values[a:b]].sum(0) for a, b in itertools.pairwise(off)])


def test_pooled_and_gradients_match_the_batch_written_per_sample(device: str) -> None:
    values, lengths, inverse = layout(0)
    ebc = tables(device)
    w = ebc.embedding_bags["t"].weight
    kjt = variable(values, lengths, inverse, device)
    assert kjt.stride() == SAMPLES and kjt.stride_per_key() == [USERS, SAMPLES]
    kt = ebc(kjt)
    vals, lens = per_sample(values, lengths, inverse)
    want = numpy_pooled(w.numpy(), vals, lens).reshape(2, SAMPLES, DIM)
    np.testing.assert_allclose(kt["user"].numpy(), want[0], rtol=1e-6)
    np.testing.assert_allclose(kt["item"].numpy(), want[1], rtol=1e-6)
    g = np.random.default_rng(1).standard_normal((SAMPLES, 2 * DIM)).astype(np.float32)
    (kt.values() * ac.tensor(g, device=device)).sum().backward()
    grad = np.zeros((ROWS, DIM), np.float64)  # each id's row gets its sample's upstream
    off = np.concatenate([[0], np.cumsum(lens)])
    for b in range(2 * SAMPLES):
        np.add.at(grad, vals[off[b] : off[b + 1]], g[b % SAMPLES, (b // SAMPLES) * DIM :][:DIM])
    assert w.grad is not None
    np.testing.assert_allclose(w.grad.numpy(), grad, rtol=1e-5, atol=1e-6)


def test_jit_replays_on_other_maps(device: str) -> None:
    ebc = tables(device)
    w = ebc.embedding_bags["t"].weight.numpy()
    fn = ac.jit(lambda kjt: ebc(kjt).values())
    for seed in range(4):
        values, lengths, inverse = layout(seed)
        # same id count per batch: the user key's ids padded into its last bag
        pad = 3 * USERS - int(lengths[:USERS].sum())
        values = np.concatenate([values[: lengths[:USERS].sum()], np.zeros(pad, np.int64),
                                 values[lengths[:USERS].sum() :]])  # fmt: skip
        lengths = lengths.copy()
        lengths[USERS - 1] += pad
        got = fn(variable(values, lengths, inverse, device)).numpy()
        vals, lens = per_sample(values, lengths, inverse)
        want = numpy_pooled(w, vals, lens).reshape(2, SAMPLES, DIM)
        np.testing.assert_allclose(got, np.concatenate(list(want), 1), rtol=1e-6)
    assert len(fn.captures) == 1


def test_bad_variable_layouts_are_refused() -> None:
    values, lengths, inverse = layout(0)
    keys = ["user", "item"]
    with pytest.raises(ac.ArgumentError, match="come together"):
        KeyedJaggedTensor(keys, values, lengths, stride_per_key_per_rank=[[USERS], [SAMPLES]])
    with pytest.raises(ac.ShapeError, match="sum to"):
        KeyedJaggedTensor(keys, values, lengths, stride_per_key_per_rank=[[USERS], [1]],
                          inverse_indices=(keys, inverse))  # fmt: skip
    bad = inverse.copy()
    bad[0, 2] = USERS
    with pytest.raises(ac.IndexOutOfRange, match=r"inverse_indices\[0, 2\] = 3"):
        KeyedJaggedTensor(keys, values, lengths, stride_per_key_per_rank=[[USERS], [SAMPLES]],
                          inverse_indices=(keys, bad))  # fmt: skip
    with pytest.raises(ac.ShapeError, match=r"shape \(2, B\)"):
        KeyedJaggedTensor(keys, values, lengths, stride_per_key_per_rank=[[USERS], [SAMPLES]],
                          inverse_indices=(keys, inverse[0]))  # fmt: skip
    with pytest.raises(ac.ArgumentError, match="keys"):
        KeyedJaggedTensor(keys, values, lengths, stride_per_key_per_rank=[[USERS], [SAMPLES]],
                          inverse_indices=(["item", "user"], inverse))  # fmt: skip
