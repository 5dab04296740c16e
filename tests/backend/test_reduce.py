"""Reductions forward and backward against PyTorch: dim as int, tuple, None or negative,
keepdim, 0-d and empty tensors, integer dtypes, ties and zeros in prod's gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import anychip as ac
from helpers import check, rand

# (shape, dim) pairs every plain reduction runs over
CASES = [
    ((3, 4), None),
    ((3, 4), 0),
    ((3, 4), -1),
    ((2, 3, 4), (0, 2)),
    ((2, 3, 4), (-1, 1)),
    ((2, 3, 4), ()),
    ((), None),
    ((), 0),
    ((), -1),
    ((0, 3), 0),
    ((0, 3), 1),
    ((2, 0), None),
]

REDUCERS = {
    "sum": lambda x, d, k: x.sum(d, keepdim=k) if d is not None else x.sum(),
    "mean": lambda x, d, k: x.mean(d, keepdim=k) if d is not None else x.mean(),
    "var": lambda x, d, k: x.var(d, keepdim=k),
    "var_biased": lambda x, d, k: x.var(d, keepdim=k, unbiased=False),
    "std": lambda x, d, k: x.std(d, keepdim=k),
    "amax": lambda x, d, k: x.amax(d if d is not None else (), keepdim=k),
    "amin": lambda x, d, k: x.amin(d if d is not None else (), keepdim=k),
    "logsumexp": lambda x, d, k: x.logsumexp(d, keepdim=k),
}


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("name", sorted(REDUCERS))
def test_reduce(name: str, case: tuple, keepdim: bool, device: str) -> None:
    shape, dim = case
    all_dims = dim is None or dim == ()
    empty_reduced = 0 in shape and (all_dims or shape[dim] == 0)
    if name in ("amax", "amin") and empty_reduced:
        pytest.skip("amax/amin over an empty dimension is an error (test_errors)")
    # dim=() means every dimension, but torch's logsumexp fails on it (and has no dim=None)
    # and its var/std backward returns inf for it: give torch the dimensions by number
    dim_t = tuple(range(len(shape))) if dim == () or (all_dims and name == "logsumexp") else dim
    # var/std of fewer than two values: torch warns and returns nan; compare values only
    grad = not (name.startswith(("var", "std")) and (empty_reduced or shape == ()))
    check(
        lambda x: REDUCERS[name](x, dim, keepdim),
        [rand(*shape)],
        device,
        torch_fn=lambda x: REDUCERS[name](x, dim_t, keepdim),
        grad=grad,
    )


def test_reduce_finite_differences(device: str) -> None:
    x = rand(3, 4, seed=1)
    check(lambda t: t.var(1) + t.logsumexp(1) + t.std(0).sum() + t.prod(1), [x], device, fd=True)


@pytest.mark.parametrize(
    ("dt", "want"),
    [("int8", "int64"), ("int32", "int64"), ("uint8", "int64"), ("bool", "int64")],
)
def test_integer_sums_are_int64(dt: str, want: str, device: str) -> None:
    a = (np.arange(12).reshape(3, 4) * 37 % 11 - 3).astype(dt)
    t = ac.tensor(a, device=device)
    assert t.sum().dtype.name == want == str(torch.from_numpy(a).sum().dtype).split(".")[-1]
    assert t.sum().item() == int(a.astype(np.int64).sum())
    assert t.sum(0).tolist() == a.astype(np.int64).sum(0).tolist()
    assert t.prod(1).dtype is ac.int64
    assert t.prod(1).tolist() == torch.from_numpy(a).prod(1).tolist()
    assert t.cumsum(1).dtype is ac.int64
    assert t.cumsum(1).tolist() == torch.from_numpy(a).cumsum(1).tolist()


def test_sum_dtype_argument(device: str) -> None:
    a = rand(3, 4)
    check(
        lambda x: x.sum(1, dtype=ac.float64),
        [a],
        device,
        torch_fn=lambda x: x.sum(1, dtype=torch.float64),
        dtype="float32",
    )
    i = ac.tensor([[1, 2], [3, 4]], dtype=ac.int32, device=device)
    assert i.sum(dtype=ac.int32).dtype is ac.int32
    assert i.sum(dtype=ac.float32).item() == 10.0


@pytest.mark.parametrize("dt", ["float16", "bfloat16", "float64"])
def test_reduce_float_dtypes(dt: str, device: str) -> None:
    x = rand(4, 64, seed=2)
    check(lambda t: t.sum(1) + t.mean(1) + t.amax(1), [x], device, dtype=dt)
    check(lambda t: t.softmax(-1), [x], device, dtype=dt)


def test_half_sum_accumulates_in_float32(device: str) -> None:
    # 4096 ones: float16 accumulation would stop at 2048
    t = ac.ones(4096, dtype=ac.float16, device=device)
    assert t.sum().item() == 4096.0
    assert t.sum().dtype is ac.float16


@pytest.mark.parametrize("dt", ["float16", "bfloat16"])
def test_half_statistics_do_not_overflow(dt: str, device: str) -> None:
    # 10000 tens sum to 1e5 > 65504: torch computes mean/var/softmax in float32 internally
    x = np.full((2, 10000), 10.0) + np.linspace(0, 1, 10000)
    fns = {
        "mean": lambda t: t.mean(1),
        "var": lambda t: t.var(1),
        "std": lambda t: t.std(1, keepdim=True),
        "softmax": lambda t: t.softmax(1),
        "log_softmax": lambda t: t.log_softmax(1),
        "logsumexp": lambda t: t.logsumexp(1),
    }
    for fn in fns.values():
        check(fn, [x], device, dtype=dt, grad=False)
    check(lambda t: t.mean(1) + t.var(1) + t.logsumexp(1), [x[:, :300]], device, dtype=dt)


@pytest.mark.parametrize(("shape", "dim"), [((3, 4), 1), ((3, 4), 0), ((2, 3, 4), -2)])
def test_prod(shape: tuple, dim: int, device: str) -> None:
    check(lambda x: x.prod(dim), [rand(*shape, seed=3)], device)
    check(lambda x: x.prod(dim, keepdim=True), [rand(*shape, seed=4)], device)
    check(lambda x: x.prod(), [rand(*shape, seed=5, low=0.5, high=1.5)], device)


def test_prod_gradient_with_zeros(device: str) -> None:
    # rows with no zero, one zero and two zeros: each takes a different branch
    x = np.array([[1.5, -2.0, 3.0, 0.5], [2.0, 0.0, -1.5, 3.0], [0.0, 4.0, 0.0, -2.0]])
    check(lambda t: t.prod(1), [x], device)
    check(lambda t: t.prod(0), [x.T.copy()], device)
    check(lambda t: t.prod(), [x[1]], device)
    check(lambda t: t.prod(), [x[2]], device)


def test_prod_empty_and_0d(device: str) -> None:
    check(lambda t: t.prod(0), [rand(0, 3)], device)
    check(lambda t: t.prod(), [rand()], device)


MAXMIN = {
    "max_dim": lambda x: x.max(1),
    "min_dim": lambda x: x.min(0, keepdim=True),
    "max_neg": lambda x: x.max(-1, keepdim=True),
    "max_all": lambda x: x.max(),
    "min_all": lambda x: x.min(),
}


@pytest.mark.parametrize("name", sorted(MAXMIN))
def test_max_min_with_ties(name: str, device: str) -> None:
    # small integers as floats give many ties; torch sends the gradient of max(dim) to the
    # index it returns and splits the gradient of max() evenly between tied elements
    x = np.round(rand(4, 5, seed=6)).astype(np.float64)
    check(MAXMIN[name], [x], device)


def test_max_min_binary_forms(device: str) -> None:
    a, b = rand(3, 4, seed=7), rand(4, seed=8)
    check(lambda x, y: x.max(y) + x.min(y), [a, b], device)


@pytest.mark.parametrize("fn", ["argmax", "argmin"])
@pytest.mark.parametrize(("dim", "keepdim"), [(None, False), (None, True), (0, False), (1, True)])
def test_argmax_argmin_ties(fn: str, dim: int | None, keepdim: bool, device: str) -> None:
    x = np.round(rand(5, 6, seed=9))  # ties: the first index wins, as in torch
    check(lambda t: getattr(t, fn)(dim, keepdim=keepdim), [x], device, grad=False)
    ints = (x * 3).astype(np.int32)
    check(lambda t: getattr(t, fn)(dim, keepdim=keepdim), [ints], device)


def test_argmax_0d_and_nan(device: str) -> None:
    check(lambda t: t.argmax(0), [np.array(5.0)], device, grad=False)
    x = np.array([1.0, np.nan, 3.0, np.nan])
    check(lambda t: t.argmax(), [x], device, grad=False)
    check(lambda t: t.argmin(), [x], device, grad=False)
    check(lambda t: t.max(0), [x], device)


@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_softmax(fn: str, dim: int, device: str) -> None:
    check(lambda t: getattr(t, fn)(dim), [rand(3, 5, seed=10, low=-20, high=20)], device)
    check(lambda t: getattr(t, fn)(dim), [rand(0, 4)], device)


def test_softmax_extremes(device: str) -> None:
    x = np.array([[1000.0, 0.0, -1000.0], [-np.inf, 0.0, 1.0], [5.0, 5.0, 5.0]])
    check(lambda t: t.softmax(1), [x], device, grad=False)
    check(lambda t: t.log_softmax(1), [x[[0, 2]]], device)
    check(lambda t: t.softmax(0), [np.array(3.0)], device)
    check(lambda t: t.logsumexp(1), [x], device, grad=False)


def test_softmax_int_input(device: str) -> None:
    t = ac.tensor([[1, 2, 3]], device=device)
    want = torch.tensor([[1, 2, 3]]).float().softmax(1).numpy()
    np.testing.assert_allclose(t.softmax(1).numpy(), want, rtol=1e-6)
    assert t.softmax(1, dtype=ac.float64).dtype is ac.float64


@pytest.mark.parametrize(("shape", "dim"), [((4,), 0), ((3, 4), 1), ((3, 4), -2), ((2, 0), 1)])
def test_cumsum(shape: tuple, dim: int, device: str) -> None:
    check(lambda t: t.cumsum(dim), [rand(*shape, seed=11)], device)


def test_cumsum_0d(device: str) -> None:
    check(lambda t: t.cumsum(0), [rand()], device)


@pytest.mark.parametrize("fn", ["all", "any"])
@pytest.mark.parametrize(
    ("shape", "dim", "keepdim"),
    [((3, 4), None, False), ((3, 4), 1, False), ((3, 4), 0, True), ((0, 3), 0, False)],
)
def test_all_any(fn: str, shape: tuple, dim: int | None, keepdim: bool, device: str) -> None:
    x = (rand(*shape, seed=12) > -1.2).astype(np.bool_)
    if dim is None:
        check(lambda t: getattr(t, fn)(), [x], device)
    else:
        check(lambda t: getattr(t, fn)(dim, keepdim=keepdim), [x], device)
    floats = np.where(x, rand(*shape, seed=13), 0.0)
    check(lambda t: getattr(t, fn)(), [floats], device, grad=False)


def test_all_any_empty_and_values(device: str) -> None:
    e = ac.ones(0, device=device)
    assert e.all().item() is True and e.any().item() is False
    t = ac.tensor([[True, False], [True, True]], device=device)
    assert t.all(1).tolist() == [False, True] and t.any(0).tolist() == [True, True]
    assert t.all().dtype is ac.bool


def test_norm_and_count_nonzero(device: str) -> None:
    x = rand(3, 4, seed=14)
    check(lambda t: t.norm(), [x], device)
    check(lambda t: t.norm(dim=1), [x], device)
    z = np.where(x > 0, x, 0.0)
    check(lambda t: t.count_nonzero(), [z], device, grad=False)
    check(lambda t: t.count_nonzero(1), [z], device, grad=False)


def test_free_functions(device: str) -> None:
    x = rand(3, 4, seed=15)
    check(
        lambda t: ac.sum(t, 1) + ac.amax(t, 1) + ac.logsumexp(t, 1),
        [x],
        device,
        torch_fn=lambda t: torch.sum(t, 1) + torch.amax(t, 1) + torch.logsumexp(t, 1),
    )


@pytest.mark.parametrize(
    "shape,dim", [((40, 33), 0), ((7, 16), 0), ((3, 50, 17), 1), ((20, 2, 70), 0), ((9, 1), 0)]
)
@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64", "float16"])
def test_cumsum_down_rows(shape: tuple, dim: int, dtype: str, device: str) -> None:
    # a running sum down a non-innermost axis is computed row by row (whole rows read and
    # written): the same sums in the same order as numpy's, so exact for every dtype here;
    # float32 within a serial sum's rounding bound of float64 (`ref` runs float32 sums in
    # float64, rounding once; short compiled ones add in order); on npu float64 too (its
    # `vcumsum` compensates, so its last bits may differ from the serial order's)
    a = (rand(*shape, seed=12) * 8).astype(dtype)
    got = ac.tensor(a, device=device).cumsum(dim).numpy()
    if dtype == "float32" or (dtype == "float64" and device.startswith("npu")):
        exact = a.astype(np.longdouble)
        eps = 2.0**-24 if dtype == "float32" else 2.0**-53
        bound = shape[dim] * eps * np.cumsum(np.abs(exact), axis=dim)
        assert np.all(np.abs(got - np.cumsum(exact, axis=dim)) <= bound)
        return
    want = np.cumsum(a, axis=dim, dtype=a.dtype) if dtype != "float16" else None
    if want is None:  # halves: the accumulator path (float sums, rounded once per output)
        want = np.cumsum(a.astype(np.float32), axis=dim).astype(np.float16)
    np.testing.assert_array_equal(got, want)
