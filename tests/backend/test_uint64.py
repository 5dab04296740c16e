"""uint64 tensors against numpy's uint64 arithmetic (torch 2.13 has the dtype but not most
of its CPU kernels, so numpy is the reference): values above 2^63, wrap-around, casts,
reductions, sorting, indexing, files; and Python ints that no dtype holds raise."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import anychip as ac

A = np.array([0, 1, 2**63 + 5, 2**64 - 1, 12345678901234567890, 7], dtype=np.uint64)
B = np.array([3, 7, 2, 2**32, 10, 2**63], dtype=np.uint64)

BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": lambda p, q: p + q,
    "sub": lambda p, q: p - q,
    "mul": lambda p, q: p * q,
    "floordiv": lambda p, q: p // q,
    "mod": lambda p, q: p % q,
    "lt": lambda p, q: p < q,
    "eq": lambda p, q: p == q,
    "and": lambda p, q: p & q,
    "or": lambda p, q: p | q,
    "xor": lambda p, q: p ^ q,
}


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_ops_wrap_as_numpy(device: str, name: str) -> None:
    f = BINARY[name]
    with np.errstate(all="ignore"):
        want = f(A, B)
    got = f(ac.tensor(A, device=device), ac.tensor(B, device=device))
    np.testing.assert_array_equal(got.numpy(), want)


def test_scalars_casts_and_reductions(device: str) -> None:
    x = ac.tensor(A, device=device)
    assert x.dtype is ac.uint64 and x.tolist() == [int(v) for v in A]
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal((x + 1).numpy(), A + np.uint64(1))
        np.testing.assert_array_equal((x * 3).numpy(), A * np.uint64(3))
        assert x.sum().dtype is ac.uint64 and x.sum().item() == int(A.sum())
    np.testing.assert_array_equal(
        ac.maximum(x, ac.tensor(B, device=device)).numpy(), np.maximum(A, B)
    )
    assert x.max().item() == 2**64 - 1 and x.min().item() == 0 and x.argmax().item() == 3
    np.testing.assert_array_equal(x.double().numpy(), A.astype(np.float64))
    np.testing.assert_array_equal(x.float().numpy(), A.astype(np.float32))
    big = ac.tensor([1.5e19, 3.0], dtype=ac.float64, device=device).to(ac.uint64)
    assert big.tolist() == [15000000000000000000, 3]
    np.testing.assert_array_equal((x >> 60).numpy(), A >> np.uint64(60))
    np.testing.assert_array_equal((x << 4).numpy(), A << np.uint64(4))


def test_sort_gather_and_index(device: str) -> None:
    x = ac.tensor(A, device=device)
    np.testing.assert_array_equal(x.sort().values.numpy(), np.sort(A))
    np.testing.assert_array_equal(
        x.argsort(descending=True).numpy(),
        np.argsort(-A.astype(object), kind="stable").astype(np.int64),
    )
    idx = np.array([3, 2, 2, 0])
    np.testing.assert_array_equal(x[ac.tensor(idx, device=device)].numpy(), A[idx])
    np.testing.assert_array_equal(x.cumsum(0).numpy(), np.cumsum(A))


def test_files_and_torch_round_trip(tmp_path: Any) -> None:
    x = ac.tensor(A)
    ac.save_file({"x": x}, tmp_path / "u.safetensors")
    back = ac.load_file(tmp_path / "u.safetensors")["x"]
    assert back.dtype is ac.uint64 and back.tolist() == [int(v) for v in A]
    t = torch.tensor(A.astype(np.int64).view(np.uint64).tolist(), dtype=torch.uint64)
    assert ac.tensor(t.numpy()).tolist() == t.tolist()


def test_mixing_with_signed_integers_raises_as_torch() -> None:
    with pytest.raises(RuntimeError, match="promotion of uint64 with int64 is not supported"):
        ac.tensor(A) + ac.tensor([1, 2, 3, 4, 5, 6])
    with pytest.raises(RuntimeError):  # torch refuses these promotions too
        torch.promote_types(torch.uint64, torch.int64)


@pytest.mark.parametrize(
    ("values", "dtype", "want"),
    [
        ([2**64 - 1], None, "cannot be converted to int64 without overflow.*uint64"),
        ([2**63], ac.int64, "cannot be converted to int64"),
        ([300], ac.int8, "cannot be converted to int8"),
        ([256], ac.uint8, "cannot be converted to uint8"),
        ([-1], ac.uint64, "cannot be converted to uint64"),
    ],
)
def test_python_ints_out_of_range_raise(values: list[int], dtype: Any, want: str) -> None:
    with pytest.raises(ValueError, match=want):
        ac.tensor(values, dtype=dtype)


def test_negative_ints_wrap_into_small_unsigned_types_as_torch() -> None:
    for dt, tdt in [(ac.uint8, torch.uint8), (ac.uint32, torch.uint32)]:
        assert (
            ac.tensor([-1, -200], dtype=dt).tolist() == torch.tensor([-1, -200], dtype=tdt).tolist()
        )
