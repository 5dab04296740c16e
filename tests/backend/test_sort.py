"""argsort, sort and topk against an independent stable order (Python's sorted, numpy's
stable argsort) and PyTorch: dtypes, ties, NaN, -0.0, row lengths, k, axes, gradients."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import anychip as ac
from helpers import check, rand

INTS = ["int8", "int16", "int32", "int64", "uint8", "uint32", "bool"]
FLOATS = ["float16", "float32", "float64"]


def stable_order(a: np.ndarray, axis: int, descending: bool) -> np.ndarray:
    """Stable argsort by Python's sorted: NaN largest, -0.0 ties 0.0, ties keep index order."""

    def row(r: np.ndarray) -> list[int]:
        vals = [float(v) for v in r]

        def key(i: int) -> tuple[bool, float]:
            nan = vals[i] != vals[i]
            if descending:
                return (not nan, 0.0 if nan else -vals[i])
            return (nan, 0.0 if nan else vals[i])

        return sorted(range(len(vals)), key=key)

    moved = np.moveaxis(a, axis, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    out = np.array([row(r) for r in flat], np.int64).reshape(moved.shape)
    return np.moveaxis(out, -1, axis)


def data(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Values with many ties; floats also get NaN, +-0.0 and +-inf."""
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(np.bool_)
    if dtype in INTS:
        info = np.iinfo(np.dtype(dtype))
        wide = rng.integers(info.min, info.max, shape, dtype=np.int64, endpoint=True)
        few = rng.integers(max(info.min, -3), 4, shape)
        return np.where(rng.random(shape) < 0.5, wide, few).astype(dtype)
    a = rng.integers(-4, 5, shape).astype(np.float64) / 2
    specials = np.array([np.nan, -0.0, 0.0, np.inf, -np.inf, -np.nan])
    pick = rng.random(shape) < 0.3
    a = np.where(pick, specials[rng.integers(0, len(specials), shape)], a)
    return np.where(rng.random(shape) < 0.3, rng.standard_normal(shape), a).astype(dtype)


@pytest.mark.parametrize("dtype", INTS + FLOATS)
@pytest.mark.parametrize("n", [1, 7, 48, 49, 301])
@pytest.mark.parametrize("descending", [False, True])
def test_argsort_matches_stable_order(dtype: str, n: int, descending: bool, device: str) -> None:
    a = data(dtype, (3, n), seed=n)
    want = stable_order(a, 1, descending)
    got = ac.tensor(a, device=device).argsort(1, descending).numpy()
    np.testing.assert_array_equal(got, want)
    if not descending:  # numpy's stable sort is a second, independent oracle
        np.testing.assert_array_equal(got, np.argsort(a, 1, kind="stable"))


def test_argsort_bfloat16(device: str) -> None:
    a = data("float32", (2, 100))
    x = ac.tensor(a, device=device).to(ac.bfloat16)
    keys = x.to(ac.float32).numpy()  # the values bfloat16 holds
    for desc in (False, True):
        np.testing.assert_array_equal(x.argsort(1, desc).numpy(), stable_order(keys, 1, desc))


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64", "uint8"])
@pytest.mark.parametrize("n", [1, 9, 64, 257])
@pytest.mark.parametrize("largest", [True, False])
def test_topk_is_the_stable_order_prefix(dtype: str, n: int, largest: bool, device: str) -> None:
    a = data(dtype, (4, n), seed=n + 1)
    order = stable_order(a, 1, largest)
    x = ac.tensor(a, device=device)
    for k in sorted({1, min(8, n), min(33, n), n // 2, n}):
        vals, idx = x.topk(k, 1, largest)
        np.testing.assert_array_equal(idx.numpy(), order[:, :k])
        np.testing.assert_array_equal(vals.numpy(), np.take_along_axis(a, order[:, :k], 1))
        if dtype.startswith("float"):  # torch agrees on the values (its tie order may differ)
            want = torch.topk(torch.from_numpy(a), k, 1, largest).values.numpy()
            np.testing.assert_array_equal(vals.numpy(), want)


@pytest.mark.parametrize("dim", [0, 1, 2])
@pytest.mark.parametrize("descending", [False, True])
def test_3d_sort_and_topk(dim: int, descending: bool, device: str) -> None:
    a = data("float32", (5, 6, 7), seed=dim)
    x = ac.tensor(a, device=device)
    order = stable_order(a, dim, descending)
    np.testing.assert_array_equal(x.argsort(dim, descending).numpy(), order)
    vals = x.sort(dim, descending).values.numpy()
    np.testing.assert_array_equal(vals, np.take_along_axis(a, order, dim))
    k = 3
    idx = x.topk(k, dim, largest=descending).indices.numpy()
    np.testing.assert_array_equal(idx, np.take(order, np.arange(k), axis=dim))


@pytest.mark.parametrize("args", [(1, 0), (3, 1), (5, -1, False), (7, 2, True)], ids=str)
def test_topk_grad_3d(args: tuple[Any, ...], device: str) -> None:
    check(lambda x: x.topk(*args), [rand(4, 5, 7)], device)


def test_sort_long_rows_against_torch(device: str) -> None:
    perm = np.random.default_rng(3).permutation(3 * 2049) - 3000.0
    a = (perm.reshape(3, 2049) / 8).astype(np.float32)  # distinct: torch's order is unique
    check(lambda x: x.sort(1, True), [a], device, grad=False)
    check(lambda x: x.topk(8, 1), [a], device)
    check(lambda x: x.topk(1024, 1, False), [a], device)
