"""embedding and embedding_bag against torch.nn.functional, forward and backward: gradients
reach the table (and per_sample_weights); padding ids, empty bags and bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import anychip as ac
from anychip.frontend.indexing import embedding, embedding_bag
from helpers import check, finite_differences, rand

I64 = np.int64


def _emb(ids: Any, w: Any, **kw: Any) -> Any:
    if isinstance(w, torch.Tensor):
        return F.embedding(ids, w, **kw)
    return embedding(ids, w, **kw)


def _bag(ids: Any, w: Any, offsets: Any = None, psw: Any = None, **kw: Any) -> Any:
    if isinstance(w, torch.Tensor):
        return F.embedding_bag(ids, w, offsets, per_sample_weights=psw, **kw)
    return embedding_bag(ids, w, offsets, per_sample_weights=psw, **kw)


@pytest.mark.parametrize(
    "ids",
    [[3, 0, 3, 9], [[1, 2], [2, 8]], 4, [], [[]]],
    ids=["1d_repeats", "2d", "0d", "empty", "empty_2d"],
)
def test_embedding(ids: Any, device: str) -> None:
    check(lambda i, w: _emb(i, w), [np.array(ids, I64), rand(10, 4)], device)


def test_embedding_padding_idx_gets_no_gradient(device: str) -> None:
    ids = np.array([[0, 2, 0], [1, 2, 3]], I64)
    check(lambda i, w: _emb(i, w, padding_idx=2), [ids, rand(5, 3)], device)
    check(lambda i, w: _emb(i, w, padding_idx=-1), [np.array([4, 1, 4], I64), rand(5, 3)], device)


def test_embedding_free_function_and_fd(device: str) -> None:
    w = ac.tensor(rand(4, 2), device=device)
    out = ac.embedding(ac.tensor([1, 3], device=device), w)
    np.testing.assert_allclose(out.numpy(), w.numpy()[[1, 3]])
    finite_differences(lambda i, w: embedding(i, w), [np.array([1, 1, 0], I64), rand(3, 2)], device)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_bag_fixed_size(mode: str, device: str) -> None:
    ids = np.array([[0, 4, 4], [2, 1, 3]], I64)
    check(lambda i, w: _bag(i, w, mode=mode), [ids, rand(6, 5)], device)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("last", [False, True], ids=["offsets", "include_last_offset"])
def test_bag_offsets_of_equal_bags(mode: str, last: bool, device: str) -> None:
    # bags of one length back to back (the input seen as a (B, L) matrix), with padding
    # ids (bag 2 holds only padding) and, for sum, per-sample weights
    ids = np.array([0, 4, 4, 2, 1, 3, 5, 5, 5, 1, 0, 2], I64)
    offs = np.arange(0, 13 if last else 12, 3, dtype=I64)
    args = [ids, rand(6, 5), offs]
    check(lambda i, w, o: _bag(i, w, o, mode=mode, include_last_offset=last), args, device)
    pad = lambda i, w, o: _bag(i, w, o, mode=mode, padding_idx=5, include_last_offset=last)  # noqa: E731
    check(pad, args, device)
    if mode == "sum":
        psw = lambda i, w, o, p: _bag(i, w, o, p, mode="sum", include_last_offset=last)  # noqa: E731
        check(psw, [*args, rand(12, seed=3)], device)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_bag_offsets_with_empty_bags(mode: str, dtype: str, device: str) -> None:
    ids = np.array([1, 2, 4, 4, 0, 3, 5], I64)
    offsets = np.array([0, 3, 3, 6], I64)  # bags of 3, 0, 3 and 1 ids
    check(lambda i, w, o: _bag(i, w, o, mode=mode), [ids, rand(6, 4), offsets], device, dtype=dtype)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_bag_include_last_offset(mode: str, device: str) -> None:
    ids = np.array([1, 2, 4, 4, 0, 3, 5], I64)
    # three bags; the last offset is the input's length, as torch documents (past that,
    # torch's float32 and float64 kernels disagree, so the test stays inside it)
    offsets = np.array([0, 2, 2, 7], I64)
    check(
        lambda i, w, o: _bag(i, w, o, mode=mode, include_last_offset=True),
        [ids, rand(6, 4), offsets],
        device,
    )


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_bag_padding_idx(mode: str, device: str) -> None:
    w = rand(5, 3)
    ids2 = np.array([[1, 1], [2, 1], [0, 3]], I64)  # the first bag holds only padding
    check(lambda i, w: _bag(i, w, mode=mode, padding_idx=1), [ids2, w], device)
    ids1, offs = np.array([1, 2, 1, 4, 1], I64), np.array([0, 1, 3], I64)
    check(lambda i, w, o: _bag(i, w, o, mode=mode, padding_idx=1), [ids1, w, offs], device)


def test_bag_per_sample_weights(device: str) -> None:
    ids, offs = np.array([1, 2, 4, 4, 0], I64), np.array([0, 2, 2], I64)
    w, psw = rand(5, 3), rand(5, seed=4)
    check(lambda i, w, o, p: _bag(i, w, o, p, mode="sum"), [ids, w, offs, psw], device)
    check(
        lambda i, w, p: _bag(i, w, None, p, mode="sum", padding_idx=0),
        [ids.reshape(1, 5), w, psw.reshape(1, 5)],
        device,
    )
    finite_differences(
        lambda i, w, o, p: embedding_bag(i, w, o, mode="sum", per_sample_weights=p),
        [ids, w, offs, psw],
        device,
    )


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_bag_empty_input(mode: str, device: str) -> None:
    check(
        lambda i, w, o: _bag(i, w, o, mode=mode),
        [np.zeros(0, I64), rand(4, 2), np.array([0, 0], I64)],
        device,
    )


def test_bag_default_mode_is_mean(device: str) -> None:
    w = ac.tensor(rand(3, 2), device=device)
    got = ac.embedding_bag(ac.tensor([[0, 2]], device=device), w)
    np.testing.assert_allclose(got.numpy()[0], w.numpy()[[0, 2]].mean(0), rtol=1e-6)


def test_embedding_errors(device: str) -> None:
    w = ac.zeros(4, 2, device=device)
    with pytest.raises(
        ac.IndexOutOfRange, match=r"embedding: index 4 is out of range for an embedding table of 4"
    ):
        embedding(ac.tensor([0, 4], device=device), w)
    with pytest.raises(ac.IndexOutOfRange, match=r"index -1 is out of range"):
        embedding(ac.tensor([-1], device=device), w)
    with pytest.raises(ac.IndexOutOfRange, match="padding_idx 4 must be within num_embeddings 4"):
        embedding(ac.tensor([0], device=device), w, padding_idx=4)
    with pytest.raises(ac.DTypeError, match="indices must be integer"):
        embedding(ac.tensor([0.0], device=device), w)
    with pytest.raises(ac.ShapeError, match="weight must be 2-d"):
        embedding(ac.tensor([0], device=device), ac.zeros(4, device=device))
    ids = ac.tensor([0, 1, 2], device=device)
    with pytest.raises(ac.IndexOutOfRange, match=r"embedding_bag: offsets\[0\] has to be 0"):
        embedding_bag(ids, w, ac.tensor([1, 2], device=device))
    with pytest.raises(ac.IndexOutOfRange, match=r"offsets\[-1\] can not be greater than"):
        embedding_bag(ids, w, ac.tensor([0, 4], device=device))
    with pytest.raises(ac.IndexOutOfRange, match="non-decreasing"):
        embedding_bag(ids, w, ac.tensor([0, 2, 1], device=device))
    with pytest.raises(ac.ShapeError, match="offsets has to be None"):
        embedding_bag(ids.reshape(1, 3), w, ac.tensor([0], device=device))
    with pytest.raises(ac.ShapeError, match="1-d with 1-d offsets"):
        embedding_bag(ids, w)
    with pytest.raises(ac.ShapeError, match="mode has to be one of"):
        embedding_bag(ids.reshape(1, 3), w, mode="median")
    with pytest.raises(ac.ShapeError, match="only supported for mode='sum'"):
        embedding_bag(ids.reshape(1, 3), w, mode="mean", per_sample_weights=ac.ones(1, 3))
    with pytest.raises(ac.ShapeError, match="per_sample_weights must have the shape of input"):
        embedding_bag(ids.reshape(1, 3), w, mode="sum", per_sample_weights=ac.ones(3))
