"""Reductions over non-innermost axes (column sums, a Linear bias gradient) against PyTorch:
sum/prod/max/min/mean/var, fused elementwise work before and after, tails where the kept
axis is not a multiple of a tile, keepdim, 3-D middle axes, dtypes, NaN, empty axes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import anychip as ac
from helpers import check, rand

# (shape, dim): the reduced axis is never the innermost one
CASES = [
    ((256, 512), 0),
    ((37, 100), 0),  # 100 = a whole tile and a tail
    ((300, 9), 0),  # narrower than one tile
    ((4, 6, 40), 0),
    ((1, 50, 77), 1),  # a middle axis with nothing in front
    ((3, 20, 33), 1),
    ((5, 7, 70), (0, 1)),
    ((7, 129), -2),
]

REDUCERS = {
    "sum": lambda x, d, k: x.sum(d, keepdim=k),
    "mean": lambda x, d, k: x.mean(d, keepdim=k),
    "var": lambda x, d, k: x.var(d, keepdim=k),
    "std": lambda x, d, k: x.std(d, keepdim=k),
    "amax": lambda x, d, k: x.amax(d, keepdim=k),
    "amin": lambda x, d, k: x.amin(d, keepdim=k),
    "prod": lambda x, d, k: x.prod(d, keepdim=k),
}


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("name", sorted(REDUCERS))
def test_column_reduce(name: str, case: tuple, keepdim: bool, device: str) -> None:
    shape, dim = case
    if name == "prod" and isinstance(dim, tuple):
        pytest.skip("torch.prod takes one dim")
    # prod over hundreds of values: keep them near 1 so the product stays finite
    x = rand(*shape, low=0.9, high=1.1) if name == "prod" else rand(*shape)
    check(lambda t: REDUCERS[name](t, dim, keepdim), [x], device)


FUSED = {
    "mul_in": (lambda a, b: (a * b).sum(0), 2),
    "scale_out_keepdim": (lambda a: a.sum(0, keepdim=True) * 2, 1),
    "mean_exp": (lambda a: a.mean(0, keepdim=True).exp(), 1),
    "square_in": (lambda a: ((a - 1) * (a - 1)).sum(0), 1),
    "relu_max": (lambda a: a.relu().amax(0, keepdim=True) + 1, 1),
    "bias_grad": (lambda a, b: (a.tanh() * b).sum(0, keepdim=True).sqrt(), 2),
    "var_keepdim": (lambda a: a.var(0, keepdim=True) - a.mean(0, keepdim=True), 1),
}


@pytest.mark.parametrize("shape", [(64, 128), (33, 70)], ids=str)
@pytest.mark.parametrize("name", sorted(FUSED))
def test_fused_column_reduce(name: str, shape: tuple[int, int], device: str) -> None:
    fn, n = FUSED[name]
    low = 0.1 if name == "bias_grad" else -2.0
    check(fn, [rand(*shape, seed=i, low=low) for i in range(n)], device)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32"])
@pytest.mark.parametrize("op", ["sum", "prod", "amax", "amin"])
@pytest.mark.parametrize("shape", [(96, 130), (3, 11, 65)], ids=str)
def test_column_reduce_dtypes(op: str, dtype: str, shape: tuple, device: str) -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(-3, 4, shape) if op != "prod" else rng.choice([-1, 1, 2], shape)
    a = a.astype(dtype)
    dim = 1 if len(shape) == 3 else 0
    t = torch.from_numpy(a)
    want = getattr(torch, op)(t, dim) if op != "prod" else torch.prod(t, dim)
    got = getattr(ac.tensor(a, device=device), op)(dim).numpy()
    assert str(got.dtype) == str(want.numpy().dtype)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5 if dtype == "float32" else 1e-12)


@pytest.mark.parametrize("op", ["amax", "amin"])
def test_column_max_min_propagate_nan(op: str, device: str) -> None:
    a = rand(50, 70)
    a[10, 3] = a[0, 69] = a[49, 40] = np.nan
    want = getattr(torch.from_numpy(a), op)(0).numpy()
    got = getattr(ac.tensor(a, device=device), op)(0).numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("op", ["any", "all"])
def test_column_any_all(op: str, device: str) -> None:
    a = np.random.default_rng(2).random((40, 90)) < 0.97
    want = getattr(torch.from_numpy(a), op)(0).numpy()
    got = getattr(ac.tensor(a, device=device), op)(0).numpy()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape", [(0, 20), (1, 20), (20, 1), (5, 0), (0, 3, 40)], ids=str)
@pytest.mark.parametrize("op", ["sum", "prod"])
def test_column_reduce_empty_and_size_one(shape: tuple, op: str, device: str) -> None:
    a = rand(*shape).astype(np.float32)
    want = getattr(torch.from_numpy(a), op)(0).numpy()
    got = getattr(ac.tensor(a, device=device), op)(0).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6)
