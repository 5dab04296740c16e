"""matmul (`@`) and einsum forward and backward against PyTorch: 1-d, 2-d, batched and
broadcast operands, half precision accumulating in float32, and the usual contractions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import anychip as ac
from helpers import check, rand

MATMUL_SHAPES = [
    ((3, 4), (4, 5)),
    ((4,), (4,)),
    ((4,), (4, 5)),
    ((3, 4), (4,)),
    ((2, 3, 4), (4, 5)),
    ((3, 4), (2, 4, 5)),
    ((2, 1, 3, 4), (5, 4, 2)),
    ((2, 3, 4), (4,)),
    ((4,), (2, 4, 5)),
    ((0, 4), (4, 3)),
    ((3, 0), (0, 2)),
    ((1, 1), (1, 1)),
]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul(shapes: tuple, device: str) -> None:
    a, b = rand(*shapes[0], seed=1), rand(*shapes[1], seed=2)
    check(lambda x, y: x @ y, [a, b], device)
    check(lambda x, y: x.matmul(y), [a, b], device)


def test_matmul_finite_differences(device: str) -> None:
    a, b = rand(2, 3, 4, seed=3), rand(4, 2, seed=4)
    check(lambda x, y: (x @ y).tanh(), [a, b], device, fd=True)


def test_mm_bmm_dot_and_free_functions(device: str) -> None:
    a, b = rand(3, 4, seed=5), rand(4, 2, seed=6)
    check(lambda x, y: x.mm(y), [a, b], device)
    check(lambda x, y: x.bmm(y), [rand(2, 3, 4), rand(2, 4, 5)], device)
    check(lambda x, y: x.dot(y), [rand(5, seed=7), rand(5, seed=8)], device)

    def free(x: Any, y: Any) -> Any:
        m = torch if isinstance(x, torch.Tensor) else ac
        return m.matmul(x, y) + m.mm(x, y)

    check(free, [a, b], device)


def test_rmatmul_with_numpy(device: str) -> None:
    a = rand(3, 4, seed=9).astype(np.float32)
    t = ac.tensor(rand(4, 2, seed=10).astype(np.float32), device=device)
    np.testing.assert_allclose((a @ t).numpy(), a @ t.numpy(), rtol=1e-5)
    np.testing.assert_allclose((t.T @ a.T).numpy(), t.numpy().T @ a.T, rtol=1e-5)


@pytest.mark.parametrize("dt", ["float16", "bfloat16", "float32", "float64"])
def test_matmul_dtypes(dt: str, device: str) -> None:
    a, b = rand(2, 8, 16, seed=11), rand(16, 4, seed=12)
    check(lambda x, y: x @ y, [a, b], device, dtype=dt)


@pytest.mark.parametrize("dt", ["float16", "bfloat16"])
def test_half_matmul_accumulates_in_float32(dt: str, device: str) -> None:
    # 4096 products of 1: a float16 accumulator stops at 2048, a bfloat16 one at 256
    half = getattr(ac, dt)
    a = ac.ones(1, 4096, dtype=half, device=device)
    b = ac.ones(4096, 1, dtype=half, device=device)
    out = a @ b
    assert out.dtype is half and out.item() == 4096.0
    # values that round in half: one rounding at the end, compared with float32 math
    x, y = rand(2, 512, seed=13), rand(512, 3, seed=14)
    xh, yh = ac.tensor(x, device=device).to(half), ac.tensor(y, device=device).to(half)
    exact = xh.float().numpy() @ yh.float().numpy()
    want = torch.from_numpy(exact).to(getattr(torch, dt)).float().numpy()
    np.testing.assert_array_equal((xh @ yh).float().numpy(), want)


@pytest.mark.parametrize("dt", ["int32", "int64"])
def test_integer_matmul_keeps_dtype(dt: str, device: str) -> None:
    a = (np.arange(12).reshape(3, 4) - 5).astype(dt)
    b = (np.arange(8).reshape(4, 2) * 3 - 7).astype(dt)
    check(lambda x, y: x @ y, [a, b], device)


EINSUMS = [
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("ij,jk", [(3, 4), (4, 5)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("...ij,...jk", [(2, 3, 4), (4, 5)]),
    ("b...i,b...i->b...", [(2, 3, 4), (2, 1, 4)]),
    ("ii", [(4, 4)]),
    ("ii->i", [(4, 4)]),
    ("iij->ji", [(3, 3, 2)]),
    ("bii->b", [(2, 3, 3)]),
    ("ijij->ji", [(2, 3, 2, 3)]),
    ("i,j->ij", [(3,), (4,)]),
    ("i,j", [(3,), (4,)]),
    ("i,i->", [(5,), (5,)]),
    ("ij->", [(3, 4)]),
    ("ij->ji", [(3, 4)]),
    ("ba", [(3, 4)]),
    ("ij", [(3, 4)]),
    ("ij...->ij", [(2, 3, 4)]),
    ("...->", [(2, 3)]),
    ("ij,ij->ij", [(1, 4), (3, 4)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),
    ("ab,bc,ca->", [(2, 3), (3, 4), (4, 2)]),
    ("i,i,i->i", [(4,), (4,), (4,)]),
    ("bhqd,bhkd->bhqk", [(2, 2, 3, 4), (2, 2, 5, 4)]),
    ("ij,kl->ijkl", [(2, 3), (2, 2)]),
    ("i j , j k -> i k", [(3, 4), (4, 2)]),
    ("Ab,bC->AC", [(2, 3), (3, 4)]),
    ("i,i->", [(0,), (0,)]),
    ("ij,jk->ik", [(2, 0), (0, 3)]),
    (",->", [(), ()]),
    ("i,->i", [(3,), ()]),
]


@pytest.mark.parametrize(("eq", "shapes"), EINSUMS, ids=[e for e, _ in EINSUMS])
def test_einsum(eq: str, shapes: list, device: str) -> None:
    arrays = [rand(*s, seed=20 + i) for i, s in enumerate(shapes)]

    def fn(*xs: Any) -> Any:
        return (torch if isinstance(xs[0], torch.Tensor) else ac).einsum(eq, *xs)

    check(fn, arrays, device)


def test_einsum_finite_differences(device: str) -> None:
    arrays = [rand(2, 3, 3, seed=30), rand(3, 4, seed=31), rand(4, seed=32)]
    check(
        lambda a, b, c: ac.einsum("bii,ij,j->bj", a, b, c),
        arrays,
        device,
        fd=True,
        torch_fn=lambda a, b, c: torch.einsum("bii,ij,j->bj", a, b, c),
    )


def test_einsum_list_operands_and_dtypes(device: str) -> None:
    a, b = rand(3, 4, seed=33), rand(4, 2, seed=34)
    check(
        lambda x, y: ac.einsum("ij,jk->ik", [x, y]),
        [a, b],
        device,
        torch_fn=lambda x, y: torch.einsum("ij,jk->ik", [x, y]),
    )
    for dt in ("float16", "bfloat16"):
        check(
            lambda x, y: ac.einsum("ij,jk->ik", x, y),
            [a, b],
            device,
            torch_fn=lambda x, y: torch.einsum("ij,jk->ik", x, y),
            dtype=dt,
        )
    i = ac.tensor([[1, 2], [3, 4]], dtype=ac.int32, device=device)
    out = ac.einsum("ij,jk->ik", i, i)
    assert out.dtype is ac.int32 and out.tolist() == [[7, 10], [15, 22]]
    assert ac.einsum("ii", i).item() == 5


def test_einsum_matches_matmul(device: str) -> None:
    a = ac.tensor(rand(2, 3, 4, seed=35), device=device)
    b = ac.tensor(rand(2, 4, 5, seed=36), device=device)
    np.testing.assert_allclose(ac.einsum("bij,bjk->bik", a, b).numpy(), (a @ b).numpy(), rtol=1e-12)
