"""Chunked cpu kernels (codegen/c_chunk.py) compute what unchunked ones do: a tiny chunk size
(`ANYCHIP_CHUNK_WORK`) forces every kernel of these small graphs into many calls, and each
result is checked against numpy (float64 where it sums) and against the unchunked run."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

import anychip as ac
from anychip.codegen import c_chunk
from anychip.runtime import dispatch, eager_cache

NO_CPU = pytest.mark.skipif("cpu" not in ac.devices(), reason="cpu backend not available")
RNG = np.random.default_rng(7)
X = RNG.standard_normal((37, 29, 23)).astype(np.float32)
A = RNG.standard_normal((67, 45)).astype(np.float32)
B = RNG.standard_normal((45, 53)).astype(np.float32)


@pytest.fixture(autouse=True)
def _fresh_plans() -> Iterator[None]:
    """Plans cached under a tiny chunk size hold chunked programs: none outlive a test."""
    yield
    eager_cache.clear_cache()


def _run(fn: Callable[[], ac.Tensor]) -> tuple[np.ndarray, bool]:
    """fn's value on cpu, and whether any of its kernels ran chunked."""
    eager_cache.clear_cache()  # cached plans hold programs compiled under another chunk size
    with dispatch.recording() as rec:
        out = fn().numpy()
    chunked = any(getattr(s.program, "chunking", None) is not None for s in rec.steps)
    return out, chunked


def both(
    fn: Callable[[], ac.Tensor], monkeypatch: pytest.MonkeyPatch, exact: bool = True
) -> np.ndarray:
    """fn's value with tiny chunks, checked equal to the unchunked value (close, for a
    matrix product: a GEMM of fewer rows may block its sums otherwise)."""
    plain, was = _run(fn)
    assert not was  # small kernels never chunk at the default size
    monkeypatch.setenv(c_chunk.ENV, "16")
    chunked, was = _run(fn)
    monkeypatch.delenv(c_chunk.ENV)
    assert was, "nothing ran chunked"
    if exact:
        np.testing.assert_array_equal(chunked, plain)
    else:
        np.testing.assert_allclose(chunked, plain, rtol=1e-5, atol=1e-5)
    return chunked


def t(a: np.ndarray) -> ac.Tensor:
    return ac.tensor(a, device="cpu")


@NO_CPU
def test_elementwise(monkeypatch: pytest.MonkeyPatch) -> None:
    got = both(lambda: (t(X) * 0.5 + 1).exp().sin() / (t(X).abs() + 1), monkeypatch)
    want = np.sin(np.exp(X * 0.5 + 1)) / (np.abs(X) + 1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    got = both(lambda: ac.where(t(X) > 0, t(X), -t(X)).int() % 3, monkeypatch)
    np.testing.assert_array_equal(got, np.abs(X).astype(np.int32) % 3)


@NO_CPU
@pytest.mark.parametrize("dim", [None, 0, 1, 2, (0, 2)])
def test_sums_over_every_axis(
    dim: int | tuple[int, ...] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    got = both(lambda: t(X).sum(dim) if dim is not None else t(X).sum(), monkeypatch)
    want = X.astype(np.float64).sum(axis=dim)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@NO_CPU
def test_a_long_full_sum_stays_accurate(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.full(1_000_003, 1.1, np.float32)
    got = both(lambda: t(x).mean(), monkeypatch)
    assert got == pytest.approx(np.float64(np.float32(1.1)), rel=1.2e-7)  # 1 ulp


@NO_CPU
@pytest.mark.parametrize("op", ["amax", "amin", "prod", "argmax", "isum"])
@pytest.mark.parametrize("dim", [None, 0, 2])
def test_other_reductions(op: str, dim: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    small = (X[:5, :6, :7] * 0.5 + 1).astype(np.float32)
    ints = (X * 100).astype(np.int32)

    def fn() -> ac.Tensor:
        if op == "isum":
            return t(ints).sum(dim) if dim is not None else t(ints).sum()
        src = t(small) if op == "prod" else t(X)
        f = getattr(src, op)
        return f() if dim is None else f(dim)

    got = both(fn, monkeypatch)
    if op == "isum":
        want = ints.sum(axis=dim, dtype=np.int64).astype(np.int32)
        np.testing.assert_array_equal(got, want)
    elif op == "prod":
        np.testing.assert_allclose(got, np.prod(small.astype(np.float64), axis=dim), rtol=1e-5)
    else:
        np.testing.assert_array_equal(got, getattr(np, op)(X, axis=dim))


@NO_CPU
def test_matmul_and_batched_matmul(monkeypatch: pytest.MonkeyPatch) -> None:
    got = both(lambda: t(A) @ t(B), monkeypatch, exact=False)
    np.testing.assert_allclose(got, A.astype(np.float64) @ B, rtol=1e-4, atol=1e-4)
    xb = X[:, :5, :]
    yb = X[:, :23, :4]
    got = both(lambda: t(xb) @ t(yb), monkeypatch, exact=False)
    np.testing.assert_allclose(got, xb.astype(np.float64) @ yb, rtol=1e-4, atol=1e-4)
    # 3 entries (prime) too long for one chunk each: chunks of rows within each entry
    xr = RNG.standard_normal((3, 64, 32)).astype(np.float32)
    yr = RNG.standard_normal((3, 32, 16)).astype(np.float32)
    got = both(lambda: t(xr) @ t(yr), monkeypatch, exact=False)
    np.testing.assert_allclose(got, xr.astype(np.float64) @ yr, rtol=1e-4, atol=1e-4)


@NO_CPU
def test_scatter_gather_and_index_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    idx = RNG.integers(0, 37, size=200)
    src = RNG.standard_normal((200, 23)).astype(np.float32)
    base = X[:, 0, :]
    got = both(lambda: t(base).index_add(0, t(idx), t(src)), monkeypatch)
    want = base.astype(np.float64).copy()
    np.add.at(want, idx, src)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    got = both(lambda: t(X)[t(idx)] * 2, monkeypatch)
    np.testing.assert_array_equal(got, X[idx] * 2)
    gi = RNG.integers(0, 23, size=(37, 29, 5))
    got = both(lambda: t(X).gather(2, t(gi)), monkeypatch)
    np.testing.assert_array_equal(got, np.take_along_axis(X, gi, 2))
    got = both(lambda: t(X).cumsum(1), monkeypatch)
    np.testing.assert_allclose(got, np.cumsum(X.astype(np.float64), 1), rtol=1e-5, atol=1e-5)
    got = both(lambda: t(X).argsort(2), monkeypatch)
    np.testing.assert_array_equal(got, np.argsort(X, 2, kind="stable"))


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: (x * 0.5 + 1).exp().sin(),
        lambda x: x.sum(2),
        lambda x: x.sum((0, 2)),
        lambda x: x.amax(1),
        lambda x: x[:, :5, :] @ x[:, :23, :4],
        lambda x: x.cumsum(1),
        lambda x: x.argsort(2, descending=True),
        lambda x: x.topk(3, dim=0).indices,
    ],
)
def test_ref_blocks_give_the_values_of_one_call(fn, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from anychip.backends.ref import blocks

    whole = fn(ac.tensor(X, device="ref")).numpy()
    monkeypatch.setattr(blocks, "REF_BLOCK", 7)
    cuts = []
    real = blocks.blocks
    monkeypatch.setattr(blocks, "blocks", lambda *a: cuts.append(len(real(*a))) or real(*a))
    cut = fn(ac.tensor(X, device="ref")).numpy()
    assert max(cuts) > 1, "nothing ran in blocks"
    np.testing.assert_array_equal(cut, whole)


@NO_CPU
def test_tiny_chunks_leave_empty_and_tiny_tensors_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(c_chunk.ENV, "1")
    eager_cache.clear_cache()
    empty = np.zeros((0, 5), np.float32)
    np.testing.assert_array_equal(t(empty).sum(0).numpy(), np.zeros(5, np.float32))
    np.testing.assert_array_equal((t(empty) * 2).numpy(), empty)
    one = np.array([[3.0]], np.float32)
    np.testing.assert_array_equal((t(one).exp() + t(one).sum()).numpy(), np.exp(one) + 3)
