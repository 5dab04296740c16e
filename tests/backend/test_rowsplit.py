"""Row reductions the rowsplit pass folds into partial accumulators, against PyTorch: row
lengths that are not a multiple of a chunk, rows shorter than one, several reductions per
row (softmax, layer norm), fused work, every dtype class, NaN in max rows, products."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import anychip as ac
from helpers import check, rand

# row lengths around the 64-float32 / 32-float64 chunk: whole chunks, tails, one chunk plus
# a tail, shorter than a chunk (left alone), long rows
LENGTHS = [1000, 1025, 130, 64, 70, 40, 5, 4096]

REDUCERS = {
    "sum": lambda x: x.sum(-1),
    "mean_keepdim": lambda x: x.mean(-1, keepdim=True),
    "var": lambda x: x.var(-1),
    "amax": lambda x: x.amax(-1),
    "amin": lambda x: x.amin(-1, keepdim=True),
    "logsumexp": lambda x: x.logsumexp(-1),
}


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("name", sorted(REDUCERS))
def test_row_reduce(name: str, n: int, device: str) -> None:
    check(REDUCERS[name], [rand(7, n)], device)


@pytest.mark.parametrize("n", [1000, 129, 40])
def test_row_prod(n: int, device: str) -> None:
    # values near 1 so products of a thousand stay finite
    check(lambda x: x.prod(-1), [rand(6, n, low=0.95, high=1.05)], device, grad=False)


FUSED = {
    "softmax": (lambda a: a.softmax(-1), 1),
    "log_softmax": (lambda a: a.log_softmax(-1), 1),
    "layer_norm": (lambda a: torch_free_layer_norm(a), 1),
    "mul_sum": (lambda a, b: (a * b).sum(-1), 2),
    "sq_sum_sqrt": (lambda a: (a * a + 1).sum(-1, keepdim=True).sqrt() * a, 1),
    "relu_max": (lambda a: a.relu().amax(-1) + a.sum(-1), 1),
}


def torch_free_layer_norm(a: object) -> object:
    """Layer norm in ops both libraries share (mean, then variance, per row)."""
    m = a.mean(-1, keepdim=True)  # type: ignore[attr-defined]
    d = a - m  # type: ignore[operator]
    return d / (d * d).mean(-1, keepdim=True).add(1e-5).sqrt()


@pytest.mark.parametrize("n", [1000, 333, 50])
@pytest.mark.parametrize("name", sorted(FUSED))
def test_fused_row_reduce(name: str, n: int, device: str) -> None:
    fn, k = FUSED[name]
    check(fn, [rand(9, n, seed=i) for i in range(k)], device)


@pytest.mark.parametrize("n", [1000, 77])
def test_nn_layer_norm_and_softmax_rows(n: int, device: str) -> None:
    check(lambda x: x.softmax(-1), [rand(16, n)], device)
    a, w, b = rand(16, n), rand(n, seed=1), rand(n, seed=2)
    check(
        lambda x, w, b: ac.nn.functional.layer_norm(x, (n,), w, b),
        [a, w, b],
        device,
        torch_fn=lambda x, w, b: torch.nn.functional.layer_norm(x, (n,), w, b),
    )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("op", ["sum", "amax", "mean"])
@pytest.mark.parametrize("n", [1000, 100, 30])
def test_row_reduce_halves(dtype: str, op: str, n: int, device: str) -> None:
    check(lambda x: getattr(x, op)(-1), [rand(5, n)], device, dtype=dtype, grad=False)


@pytest.mark.parametrize("dtype", ["float64", "int32", "int64"])
@pytest.mark.parametrize("op", ["sum", "prod", "amax", "amin"])
@pytest.mark.parametrize("n", [1000, 100, 20])
def test_row_reduce_dtypes(dtype: str, op: str, n: int, device: str) -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(-50, 51, (6, n)) if op != "prod" else rng.choice([-1, 1, 1, 1, 2], (6, n))
    a = a.astype(dtype)
    want = getattr(torch, op)(torch.from_numpy(a), -1).numpy()
    got = getattr(ac.tensor(a, device=device), op)(-1).numpy()
    assert str(got.dtype) == str(want.dtype)
    np.testing.assert_allclose(got, want, rtol=1e-12)  # integer-valued: exact in any order


@pytest.mark.parametrize("op", ["amax", "amin", "sum"])
@pytest.mark.parametrize("n", [1000, 130])
def test_row_nan_propagates(op: str, n: int, device: str) -> None:
    a = rand(6, n)
    a[0, 0] = a[1, n - 1] = a[2, 63] = a[3, 64] = a[4, n // 2] = np.nan  # every part of a row
    a[4, 3] = np.inf
    want = getattr(torch.from_numpy(a), op)(-1).numpy()
    got = getattr(ac.tensor(a, device=device), op)(-1).numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_row_sum_is_the_same_every_run(device: str) -> None:
    a = rand(32, 1000)
    first = ac.tensor(a, device=device).sum(-1).numpy()
    for _ in range(3):
        np.testing.assert_array_equal(ac.tensor(a, device=device).sum(-1).numpy(), first)
