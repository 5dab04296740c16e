"""Indexing against PyTorch, forward and backward: subscripts (basic, advanced, masks),
assignment, gather/scatter ops, nonzero, one_hot, sort/argsort/topk, and their errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import anychip as ac
from anychip.ir.ops import Ops
from helpers import check, finite_differences, rand

I64 = np.int64

# subscripts that need no index tensor; each applied to a (4, 5, 6) tensor
BASIC: dict[str, Callable[[Any], Any]] = {
    "int": lambda x: x[1],
    "neg_int": lambda x: x[-1],
    "ints": lambda x: x[1, -2, 3],
    "slice": lambda x: x[1:3],
    "step": lambda x: x[::2],
    "step3_offset": lambda x: x[1::3, :, 1:6:4],
    "neg_bounds": lambda x: x[-3:-1],
    "clamped": lambda x: x[-100:100, 2:100],
    "empty_slice": lambda x: x[3:1],
    "step_past_end": lambda x: x[:, ::7],
    "none": lambda x: x[None],
    "none_mid": lambda x: x[:, None, 2:, None],
    "ellipsis_int": lambda x: x[..., 1],
    "ellipsis_mid": lambda x: x[1, ..., None, ::2],
    "empty_tuple": lambda x: x[()],
    "bool_true": lambda x: x[True],
    "bool_false": lambda x: x[False],
    "zero_d_int_tensor": lambda x: x[_scalar_index(x, 2)],
}


def _scalar_index(x: Any, v: int) -> Any:
    return torch.tensor(v) if isinstance(x, torch.Tensor) else ac.tensor(v, device=x.device)


@pytest.mark.parametrize("name", sorted(BASIC))
def test_basic_getitem(name: str, device: str) -> None:
    check(BASIC[name], [rand(4, 5, 6)], device)


def test_zero_d_and_empty(device: str) -> None:
    check(lambda x: x[None], [rand()], device)
    check(lambda x: x[...], [rand()], device)
    check(lambda x: x[1:], [rand(0, 3)], device)
    check(lambda x: x[:, 1], [rand(0, 3)], device)


# advanced: (subscript built from the index arrays, shape of x, index arrays)
ADVANCED: dict[str, tuple[Callable[..., Any], tuple[int, ...], list[np.ndarray]]] = {
    "one": (lambda x, i: x[i], (5, 3), [np.array([0, 4, 2, 2], I64)]),
    "negative": (lambda x, i: x[i], (5, 3), [np.array([-1, -5, 3], I64)]),
    "2d_index": (lambda x, i: x[:, i], (5, 3, 2), [np.array([[0, 2], [1, -1]], I64)]),
    "pair": (lambda x, i, j: x[i, j], (5, 3), [np.array([0, 4], I64), np.array([2, -3], I64)]),
    "broadcast": (
        lambda x, i, j: x[i, :, j],
        (4, 3, 5),
        [np.array([[0], [3]], I64), np.array([1, 4, -1], I64)],
    ),
    "adjacent_mid": (
        lambda x, i, j: x[:, i, j],
        (2, 4, 5, 3),
        [np.array([0, 3, 1], I64), np.array([4, 0, 2], I64)],
    ),
    "separated_go_first": (
        lambda x, i, j: x[i, :, j],
        (4, 3, 5, 2),
        [np.array([0, 3, 1], I64), np.array([4, 0, 2], I64)],
    ),
    "with_slice_step": (lambda x, i: x[1::2, i], (5, 4), [np.array([3, 0], I64)]),
    "with_none": (lambda x, i: x[None, i, None], (5, 4), [np.array([3, 0], I64)]),
    "int_then_index": (lambda x, i: x[1, :, i], (3, 4, 5), [np.array([4, 0], I64)]),
    "empty_index": (lambda x, i: x[i], (5, 3), [np.zeros(0, I64)]),
    "empty_index_2d": (lambda x, i: x[:, i], (5, 3), [np.zeros((2, 0), I64)]),
    "zero_d_src": (lambda x, i: x[None][i], (), [np.array([0, 0, -1], I64)]),
    "int32_index": (lambda x, i: x[i], (5, 3), [np.array([1, 4], np.int32)]),
}


@pytest.mark.parametrize("name", sorted(ADVANCED))
def test_advanced_getitem(name: str, device: str) -> None:
    fn, shape, idx = ADVANCED[name]
    check(fn, [rand(*shape), *idx], device)


def test_list_index(device: str) -> None:
    check(lambda x: x[[0, -1, 2]], [rand(4, 3)], device)
    check(lambda x: x[[0, 1], [2, 0]], [rand(4, 3)], device)
    check(lambda x: x[..., [[1], [0]]], [rand(2, 4, 3)], device)
    check(lambda x: x[[]], [rand(4, 3)], device)


MASKS: dict[str, tuple[tuple[int, ...], Callable[[np.ndarray], np.ndarray]]] = {
    "full": ((3, 4), lambda a: a > 0),
    "leading": ((3, 4, 2), lambda a: a[:, :, 0] > 0),
    "first_dim": ((5, 2), lambda a: a[:, 0] > 0),
    "none_true": ((3, 4), lambda a: a > 100),
    "all_true": ((3, 4), lambda a: a > -100),
    "zero_d": ((), lambda a: a > 0),
}


@pytest.mark.parametrize("name", sorted(MASKS))
def test_mask_getitem(name: str, device: str) -> None:
    shape, make = MASKS[name]
    a = rand(*shape, seed=3)
    check(lambda x, m: x[m], [a, np.asarray(make(a))], device)


def test_mask_with_other_indices(device: str) -> None:
    a = rand(3, 4, 5, seed=4)
    m = np.array([True, False, True, True])
    check(lambda x, m: x[:, m], [a, m], device)
    check(lambda x, m: x[1:, m, 2], [a, m], device)
    check(lambda x, m, i: x[i, m], [a, m, np.array([[0], [2]], I64)], device)
    check(lambda x, m: x[m, 1:], [a, a[:, :, 0] > 0], device)


def test_mask_from_comparison(device: str) -> None:
    check(lambda x: x[x > 0.5], [rand(6, 7)], device)
    check(lambda x: x[(x > 0).all(1)], [rand(6, 2, seed=5)], device)


# --- assignment -----------------------------------------------------------------------
def _assign(index: Callable[..., Any], value: Callable[..., Any] | float) -> Callable[..., Any]:
    """x[index(...)] = value on a copy of x (so x stays a leaf that gets gradients)."""

    def fn(x: Any, *rest: Any) -> Any:
        y = x * 1
        v = value(*rest) if callable(value) else value
        y[index(*rest)] = v
        return y

    return fn


def test_setitem_basic(device: str) -> None:
    a = rand(4, 5)
    check(_assign(lambda: (slice(1, 3), 2), 7.0), [a], device)
    check(_assign(lambda: (slice(None, None, 2),), 0.0), [a], device)
    check(
        _assign(lambda v: (slice(1, None, 2), slice(0, 5, 2)), lambda v: v), [a, rand(2, 3)], device
    )
    check(_assign(lambda v: (Ellipsis, 1), lambda v: v), [a, rand(4)], device)
    check(_assign(lambda v: 0, lambda v: v), [a, rand(1, 5)], device)  # leading 1 dropped
    check(_assign(lambda v: (None, 2), lambda v: v), [a, rand(5)], device)
    check(_assign(lambda v: slice(3, 1), lambda v: v), [a, rand(0, 5)], device)


def test_setitem_advanced(device: str) -> None:
    a = rand(5, 4)
    i = np.array([3, -1, 0], I64)
    check(_assign(lambda i: i, 2.5), [a, i], device)
    check(_assign(lambda i, v: (i, slice(1, 3)), lambda i, v: v), [a, i, rand(3, 2)], device)
    check(
        _assign(lambda i, v: (slice(None), i), lambda i, v: v), [rand(5, 6), i, rand(5, 1)], device
    )
    check(_assign(lambda i, j, v: (i, j), lambda i, j, v: v), [a, i, i % 4, rand(3)], device)
    check(_assign(lambda i: i, 1.0), [a, np.zeros(0, I64)], device)


def test_setitem_mask(device: str) -> None:
    a = rand(4, 6, seed=7)
    m = a > 0
    check(_assign(lambda m: m, 0.0), [a, m], device)
    check(_assign(lambda m, v: m, lambda m, v: v), [a, m, rand(int(m.sum()))], device)
    check(_assign(lambda m: m[:, 0], -1.0), [a, m], device)


def test_setitem_repeated_index_last_write_wins(device: str) -> None:
    # torch leaves this unspecified; on CPU it writes in order, so the last value stays
    a = rand(5)
    i = np.array([1, 3, 1, 1], I64)
    v = np.array([10.0, 20.0, 30.0, 40.0])
    x = ac.tensor(a, device=device)
    x[ac.tensor(i, device=device)] = ac.tensor(v, device=device)
    want = a.copy()
    for k, j in enumerate(i):
        want[j] = v[k]
    np.testing.assert_allclose(x.numpy(), want.astype(np.float32))


def test_setitem_dtypes_and_gradient_through_value(device: str) -> None:
    x = ac.zeros(3, dtype=ac.int64, device=device)
    x[0] = 1.7  # truncates, as torch
    x[1:] = ac.tensor([True, False], device=device)
    assert x.tolist() == [1, 1, 0]
    b = ac.zeros(3, dtype=ac.bool, device=device)
    b[ac.tensor([2, 0], device=device)] = True
    assert b.tolist() == [True, False, True]
    v = ac.tensor([2.0, 3.0], requires_grad=True, device=device)
    y = ac.zeros(4, device=device)
    y[ac.tensor([0, 2], device=device)] = v
    (y * ac.tensor([1.0, 2.0, 3.0, 4.0], device=device)).sum().backward()
    assert v.grad is not None and v.grad.tolist() == [1.0, 3.0]


def test_setitem_on_leaf_that_requires_grad_fails(device: str) -> None:
    x = ac.ones(3, requires_grad=True, device=device)
    with pytest.raises(ac.AutogradError, match="leaf"):
        x[0] = 2.0


# --- gather, scatter, index_select, index_add, take_along_dim ---------------------------
def test_gather(device: str) -> None:
    check(
        lambda x, i: x.gather(1, i), [rand(3, 4), np.array([[0, 3], [1, 1], [2, 0]], I64)], device
    )
    check(lambda x, i: x.gather(0, i), [rand(3, 4), np.array([[2, 0, 1]], I64)], device)
    check(lambda x, i: x.gather(-1, i), [rand(2, 3, 4), np.zeros((2, 2, 0), I64)], device)
    check(lambda x, i: x.gather(0, i), [rand(), np.array(0, I64)], device)
    check(lambda x, i: x.gather(0, i), [rand(5), np.array(3, I64)], device)
    check(
        lambda x, i: torch.gather(x, 1, i) if isinstance(x, torch.Tensor) else ac.gather(x, 1, i),
        [rand(2, 3), np.array([[2], [0]], I64)],
        device,
    )


def test_take_along_dim(device: str) -> None:
    a = rand(3, 4)
    check(lambda x, i: x.take_along_dim(i, 1), [a, np.array([[0, 3], [1, 1], [2, 0]], I64)], device)
    check(lambda x, i: x.take_along_dim(i, 0), [a, np.array([[2, 0, 1, 0]], I64)], device)
    check(lambda x, i: x.take_along_dim(i), [a, np.array([11, 0, 5], I64)], device)
    idx = np.argsort(a, axis=1)
    check(
        lambda x, i: (
            torch.take_along_dim(x, i, 1)
            if isinstance(x, torch.Tensor)
            else ac.take_along_dim(x, i, 1)
        ),
        [a, idx],
        device,
    )


def test_index_select(device: str) -> None:
    check(lambda x, i: x.index_select(0, i), [rand(4, 3), np.array([3, 0, 3], I64)], device)
    check(lambda x, i: x.index_select(-1, i), [rand(2, 4, 3), np.array([2, 1], I64)], device)
    check(lambda x, i: x.index_select(1, i), [rand(2, 4), np.zeros(0, I64)], device)
    check(lambda x, i: x.index_select(0, i), [rand(4, 3), np.array(2, I64)], device)
    check(lambda x, i: x.index_select(0, i), [rand(), np.array([0], I64)], device)


def test_scatter_add(device: str) -> None:
    check(
        lambda x, i, s: x.scatter_add(0, i, s),
        [rand(3, 4), np.array([[0, 1, 2, 0], [2, 2, 0, 1]], I64), rand(2, 4)],
        device,
    )
    # index smaller than src and self: only its window takes part (torch's own backward
    # fails on this case, so gradients are checked by finite differences)
    small = [rand(3, 5), np.array([[4, 0], [1, 1]], I64), rand(3, 3)]
    check(lambda x, i, s: x.scatter_add(1, i, s), small, device, grad=False)
    finite_differences(lambda x, i, s: x.scatter_add(1, i, s), small, device)
    empty = [rand(3), np.zeros(0, I64), rand(2)]  # torch's backward fails here too
    check(lambda x, i, s: x.scatter_add(0, i, s), empty, device, grad=False)
    finite_differences(lambda x, i, s: x.scatter_add(0, i, s), empty, device)
    check(lambda x, i, s: x.scatter_add(0, i, s), [rand(), np.array([0, 0], I64), rand(2)], device)
    a = np.array([[1, 2], [3, 4]], I64)
    check(lambda x, i, s: x.scatter_add(1, i, s), [a, np.array([[1, 1]], I64), a], device)


@pytest.mark.parametrize("cols", [1, 5, 16, 17, 64, 100])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int32"])
def test_index_add_of_rows(cols: int, dtype: str, device: str) -> None:
    # rows added into a table's rows (an embedding gradient): columns split in cache lines,
    # repeated and negative row ids, every row of src folded in order
    rng = np.random.default_rng(cols)
    ids = rng.integers(-7, 7, 40)
    table, src = rand(7, cols), rand(40, cols, seed=cols)
    if dtype == "int32":  # exact: integers
        table, src = (np.round(v * 4).astype(np.int32) for v in (table, src))
    check(
        lambda x, i, s: x.index_add(0, i % 7, s),
        [table, ids, src],
        device,
        dtype=None if dtype == "int32" else dtype,
        grad=dtype != "int32",
        atol=0.02 if dtype == "float16" else None,  # ~6 adds of |x| <= 8 rounded in halves
    )
    three = [rand(2, 7, cols), ids[:9] % 7, rand(2, 9, cols, seed=2)]
    check(lambda x, i, s: x.index_add(1, i, s), three, device)


def test_index_add(device: str) -> None:
    check(
        lambda x, i, s: x.index_add(0, i, s),
        [rand(4, 3), np.array([3, 0, 3], I64), rand(3, 3)],
        device,
    )
    check(
        lambda x, i, s: x.index_add(1, i, s, alpha=-2.0),
        [rand(2, 4), np.array([1, 1, 2], I64), rand(2, 3)],
        device,
    )
    check(lambda x, i, s: x.index_add(0, i, s), [rand(4, 3), np.zeros(0, I64), rand(0, 3)], device)


# --- masks and nonzero ------------------------------------------------------------------
def test_masked_fill_and_select(device: str) -> None:
    a = rand(3, 4, seed=9)
    check(lambda x, m: x.masked_fill(m, -1.5), [a, a > 0], device)
    check(lambda x, m: x.masked_fill(m, 0.0), [a, (a > 0)[0]], device)  # broadcast mask
    check(lambda x, m, v: x.masked_fill(m, v), [a, a > 0, np.array(0.25)], device)
    check(lambda x, m: x.masked_select(m), [a, a > 0.5], device)
    check(lambda x, m: x.masked_select(m), [a, (a > 0)[:, :1]], device)
    i = np.arange(12, dtype=I64).reshape(3, 4)
    check(lambda x, m: x.masked_fill(m, 7), [i, i % 3 == 0], device)


@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 2), (), (0, 3)], ids=str)
def test_nonzero(shape: tuple[int, ...], device: str) -> None:
    a = np.round(rand(*shape, seed=2))
    check(lambda x: x.nonzero(), [a], device, grad=False)
    check(lambda x: x.nonzero(as_tuple=True), [a], device, grad=False)
    check(lambda x: (x > 0).nonzero(), [a], device, grad=False)


def test_one_hot(device: str) -> None:
    for a, n in [([0, 2, 1, 2], 3), ([[1], [0]], -1), ([], 4), (2, 5)]:
        arr = np.array(a, I64)
        want = torch.nn.functional.one_hot(torch.tensor(arr), n).numpy()
        got = ac.one_hot(ac.tensor(arr, device=device), n)
        assert got.dtype is ac.int64
        np.testing.assert_array_equal(got.numpy(), want)


# --- ordering ---------------------------------------------------------------------------
@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_sort(dim: int, descending: bool, device: str) -> None:
    check(lambda x: x.sort(dim, descending), [rand(4, 5, 3)], device)
    check(lambda x: x.argsort(dim, descending), [rand(4, 5, 3)], device)


def test_sort_ties_nan_and_edges(device: str) -> None:
    ties = np.array([[3, 1, 2, 1, 3, 2]], I64)
    check(lambda x: x.sort(stable=True), [ties], device)
    check(lambda x: x.sort(descending=True, stable=True), [ties], device)
    big = np.array([2**60, 2**60 + 1, -(2**62), 2**60 + 1], I64)  # beyond float64's precision
    check(lambda x: x.sort(descending=True, stable=True), [big], device)
    nans = np.array([1.0, np.nan, -2.0, np.nan, 0.5])
    check(lambda x: x.sort(), [nans], device, grad=False)
    check(lambda x: x.sort(descending=True), [nans], device, grad=False)
    check(lambda x: x.sort(), [rand()], device)
    check(lambda x: x.sort(0), [rand(0, 3)], device)
    check(
        lambda x: torch.sort(x, 0) if isinstance(x, torch.Tensor) else ac.sort(x, 0),
        [rand(5)],
        device,
    )


@pytest.mark.parametrize(
    "args", [(2,), (3, 0), (1, -1, False), (4, 1, True, True), (0,), (5, -1, False)], ids=str
)
def test_topk(args: tuple[Any, ...], device: str) -> None:
    check(lambda x: x.topk(*args), [rand(4, 5)], device)
    check(
        lambda x: torch.topk(x, 1) if isinstance(x, torch.Tensor) else ac.topk(x, 1),
        [rand()],
        device,
    )


# --- errors -----------------------------------------------------------------------------
def test_index_errors(device: str) -> None:
    x = ac.zeros(3, 4, device=device)
    with pytest.raises(
        ac.IndexOutOfRange, match=r"index 3 is out of bounds for dimension 0 with size 3"
    ):
        x[3]
    with pytest.raises(
        ac.IndexOutOfRange, match=r"index -5 is out of bounds for dimension 1 with size 4"
    ):
        x[0, -5]
    with pytest.raises(
        ac.IndexOutOfRange, match=r"index 7 is out of bounds for dimension 0 with size 3.*\(3, 4\)"
    ):
        x[ac.tensor([0, 7], device=device)]
    with pytest.raises(ac.IndexOutOfRange, match=r"index -4 is out of bounds for dimension 0"):
        x[[0, -4]]
    with pytest.raises(ac.IndexOutOfRange, match="too many indices for tensor of dimension 2"):
        x[0, 0, 0]
    with pytest.raises(ac.IndexOutOfRange, match="too many indices for tensor of dimension 0"):
        ac.tensor(1.0, device=device)[0]
    with pytest.raises(ac.IndexOutOfRange, match="single ellipsis"):
        x[..., 0, ...]
    with pytest.raises(ac.ShapeError, match="step must be greater than zero"):
        x[::-1]
    with pytest.raises(
        ac.IndexOutOfRange, match=r"shape of the mask \[4\] at index 0 does not match"
    ):
        x[ac.ones(4, dtype=ac.bool, device=device)]
    with pytest.raises(ac.DTypeError, match="integer or bool tensors"):
        x[ac.tensor([1.0], device=device)]
    with pytest.raises(
        ac.ShapeError, match=r"value tensor of shape \(3,\) cannot be broadcast.*\(2, 4\)"
    ):
        x[1:] = ac.ones(3, device=device)
    with pytest.raises(IndexError):  # the builtin still catches it
        x[[5]]


def test_op_errors(device: str) -> None:
    x = ac.zeros(3, 4, device=device)
    i = ac.tensor([[0, 4]], device=device)
    with pytest.raises(
        ac.IndexOutOfRange, match=r"gather: index 4 is out of bounds for dimension 1 with size 4"
    ):
        x.gather(1, i)
    with pytest.raises(ac.IndexOutOfRange, match=r"gather: index -1 is out of bounds"):
        x.gather(0, ac.tensor([[-1]], device=device))
    with pytest.raises(ac.ShapeError, match="same number of dimensions"):
        x.gather(0, ac.tensor([0], device=device))
    with pytest.raises(
        ac.IndexOutOfRange, match=r"index_select: index 3 is out of bounds for dimension 0"
    ):
        x.index_select(0, ac.tensor([3], device=device))
    with pytest.raises(ac.IndexOutOfRange, match=r"scatter_add: index 4 is out of bounds"):
        x.scatter_add(1, i, ac.ones(1, 2, device=device))
    with pytest.raises(ac.DTypeError, match="same dtype"):
        x.scatter_add(1, i, ac.ones(1, 2, dtype=ac.float64, device=device))
    with pytest.raises(ac.ShapeError, match="index_add: source must match"):
        x.index_add(0, ac.tensor([0], device=device), ac.ones(2, 4, device=device))
    with pytest.raises(
        ac.IndexOutOfRange, match=r"topk: k=5 is out of range for dimension 1 of size 4"
    ):
        x.topk(5)
    with pytest.raises(ac.IndexOutOfRange, match=r"dimension 2 out of range"):
        x.sort(2)
    with pytest.raises(
        ac.IndexOutOfRange, match=r"one_hot: class value 3 is out of range for num_classes=3"
    ):
        ac.one_hot(ac.tensor([0, 3], device=device), 3)
    with pytest.raises(ac.IndexOutOfRange, match=r"one_hot: class value -1"):
        ac.one_hot(ac.tensor([-1], device=device), 3)
    with pytest.raises(ac.DTypeError, match="one_hot: expects an integer"):
        ac.one_hot(x, 3)
    with pytest.raises(ac.DTypeError, match="masked_fill: mask must be a bool tensor"):
        x.masked_fill(x, 1.0)


def test_gather_primitive_reads_zero_out_of_range(device: str) -> None:
    # the primitive's own semantics (frontend ops check ids first, embedding_bag after the
    # gather has run in the same schedule): negative ids wrap, others out of range read 0
    x = rand(4, 2).astype(np.float32)
    ids = np.array([[-1, 0, 9], [2, -5, 3]], I64).T  # (3, 2) along axis 0
    out = ac.tensor(x, device=device)._prim(Ops.GATHER, ac.tensor(ids, device=device), arg=0)
    want = np.where((ids >= -4) & (ids < 4), x[ids % 4, np.arange(2)], 0.0)
    np.testing.assert_array_equal(out.numpy(), want.astype(np.float32))


def test_embedding_bag_reports_a_bad_id_after_its_gather(device: str) -> None:
    from anychip.frontend.indexing import embedding_bag

    w = ac.tensor(rand(5, 2), device=device)
    ids = ac.tensor(np.array([0, 4, 7, 1], I64), device=device)
    offs = ac.tensor(np.array([0, 2], I64), device=device)
    with pytest.raises(ac.IndexOutOfRange, match=r"index 7 is out of range .* 5 rows"):
        embedding_bag(ids, w, offs, mode="sum")


def test_scatter_add_primitive_drops_out_of_range(device: str) -> None:
    base = np.zeros((4, 2), np.float32)
    ids = np.array([[-1, 0], [9, 2], [1, -6]], I64)  # (3, 2) along axis 0
    src = np.arange(1, 7, dtype=np.float32).reshape(3, 2)
    out = ac.tensor(base, device=device)._prim(
        Ops.SCATTER_ADD, ac.tensor(ids, device=device), ac.tensor(src, device=device), arg=0
    )
    want = base.copy()
    for (i, j), v in np.ndenumerate(ids):
        if -4 <= v < 4:
            want[v % 4, j] += src[i, j]
    np.testing.assert_array_equal(out.numpy(), want)
