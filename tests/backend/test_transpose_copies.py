"""Copies through transposed views (tiled by the `transpose` pass where the sides allow)
against numpy: 2-d and 3-d permutes, sides divisible by 16, by 8 only, by neither, fused
elementwise work, several dtypes."""

from __future__ import annotations

import numpy as np
import pytest

import anychip as ac


@pytest.mark.parametrize("shape", [(64, 48), (784, 512), (24, 40), (100, 30), (1, 33), (16, 1)])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int32", "bool"])
def test_transposed_copy(shape: tuple[int, int], dtype: str, device: str) -> None:
    a = (np.random.default_rng(sum(shape)).standard_normal(shape) * 9).astype(dtype)
    x = ac.tensor(a, device=device)
    np.testing.assert_array_equal(x.T.contiguous().numpy(), a.T)
    if dtype not in ("bool",):
        np.testing.assert_array_equal((x.T * 2 + x.T).numpy(), a.T * 2 + a.T)


@pytest.mark.parametrize("perm", [(0, 2, 1), (1, 0, 2), (2, 1, 0), (1, 2, 0)])
def test_permuted_copy_3d(perm: tuple[int, int, int], device: str) -> None:
    a = np.random.default_rng(1).standard_normal((3, 32, 48)).astype(np.float32)
    x = ac.tensor(a, device=device)
    np.testing.assert_array_equal(x.permute(*perm).contiguous().numpy(), a.transpose(perm))


def test_transpose_mixed_with_plain_reads(device: str) -> None:
    a = np.random.default_rng(2).standard_normal((48, 48)).astype(np.float32)
    x = ac.tensor(a, device=device)
    got = (x.T * x + x.T.exp()).numpy()
    np.testing.assert_allclose(got, a.T * a + np.exp(a.T), rtol=1e-5, atol=1e-6)
