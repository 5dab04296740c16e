"""Random lazy graphs (elementwise chains, broadcasting, movement views, reductions, softmax
rows, matmuls) realised on each device against the same graph in float64 numpy: whatever the
scheduler fuses and the passes rewrite, the values must stay those of the math.
Half-precision graphs are checked against the `ref` backend (it rounds op by op as they do).
ANYCHIP_FUZZ_SEEDS=N runs N graphs instead of 60 (a longer hunt for compiler bugs)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import anychip as ac
from anychip.frontend.tensor import realize_together

Pair = tuple[Any, np.ndarray]  # an anychip tensor and the float64 numpy value it must hold
SHAPES = [(7,), (5, 9), (3, 1, 8), (64,), (4, 70), (33, 130), (2, 3, 40), (96, 17)]


def _unary(rng: np.random.Generator) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """(anychip op, numpy op): inputs stay moderate so float32 rounding stays small."""
    ops = [
        (lambda x: -x, lambda x: -x),
        (lambda x: x.tanh().exp(), lambda x: np.exp(np.tanh(x))),
        (lambda x: (x.abs() + 1).log(), lambda x: np.log(np.abs(x) + 1)),
        (lambda x: x.abs().sqrt(), lambda x: np.sqrt(np.abs(x))),
        (lambda x: x.relu(), lambda x: np.maximum(x, 0)),
        (lambda x: x.sigmoid(), lambda x: 1 / (1 + np.exp(-x))),
        (lambda x: x * 0.5 + 0.25, lambda x: x * 0.5 + 0.25),
    ]
    return ops[rng.integers(len(ops))]


def _binary(rng: np.random.Generator) -> tuple[Callable[..., Any], Callable[..., Any]]:
    ops = [
        (lambda a, b: a + b, lambda a, b: a + b),
        (lambda a, b: a - b, lambda a, b: a - b),
        (lambda a, b: a * b, lambda a, b: a * b),
        (lambda a, b: a / (b.abs() + 1), lambda a, b: a / (np.abs(b) + 1)),
        (lambda a, b: a.maximum(b), np.maximum),
        (lambda a, b: a.minimum(b), np.minimum),
        (lambda a, b: ac.where(a > b, a, b * 2), lambda a, b: np.where(a > b, a, b * 2)),
    ]
    return ops[rng.integers(len(ops))]


def _broadcastable(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape that broadcasts against `shape`: some dims set to 1, maybe fewer leading."""
    out = [1 if rng.random() < 0.4 else d for d in shape]
    drop = int(rng.integers(0, len(shape))) if rng.random() < 0.3 else 0
    return tuple(out[drop:])


def _reduce(rng: np.random.Generator, p: Pair) -> Pair:
    x, ref = p
    axes = tuple(sorted(rng.choice(ref.ndim, int(rng.integers(1, ref.ndim + 1)), replace=False)))
    keep = bool(rng.random() < 0.5)
    kind = int(rng.integers(4))
    if kind == 0:
        return x.sum(axes, keepdim=keep), ref.sum(axes, keepdims=keep)
    if kind == 1:
        return x.mean(axes, keepdim=keep), ref.mean(axes, keepdims=keep)
    if kind == 2:
        return x.amax(axes, keepdim=keep), ref.max(axes, keepdims=keep)
    return x.amin(axes, keepdim=keep), ref.min(axes, keepdims=keep)


def _softmax(rng: np.random.Generator, p: Pair) -> Pair:
    x, ref = p
    axis = int(rng.integers(ref.ndim))
    e = np.exp(ref - ref.max(axis, keepdims=True))
    return x.softmax(axis), e / e.sum(axis, keepdims=True)


def _view(rng: np.random.Generator, p: Pair) -> Pair:
    x, ref = p
    kind = int(rng.integers(4))
    if kind == 0 and ref.ndim > 1:
        perm = tuple(int(i) for i in rng.permutation(ref.ndim))
        return x.permute(*perm), ref.transpose(perm)
    if kind == 1:
        return x.reshape(-1), ref.reshape(-1)
    if kind == 2 and ref.shape[-1] > 2:
        return x[..., 1::2], ref[..., 1::2]
    return x.flip(-1), ref[..., ::-1]


def _matmul(rng: np.random.Generator, p: Pair, device: str) -> Pair:
    x, ref = p
    if ref.ndim == 1:
        x, ref = x.reshape(1, -1), ref.reshape(1, -1)
    k = ref.shape[-1]
    w = rng.uniform(-1, 1, (k, int(rng.integers(1, 40)))).astype(np.float32)
    return x @ ac.tensor(w, device=device).to(x.dtype), ref @ w.astype(np.float64)


def _graph(seed: int, device: str, dtype: str = "float32") -> list[Pair]:
    rng = np.random.default_rng(seed)
    shape = SHAPES[seed % len(SHAPES)]
    vals: list[Pair] = []
    for _ in range(2):
        a = rng.uniform(-2, 2, _broadcastable(rng, shape) if vals else shape).astype(np.float32)
        vals.append((ac.tensor(a, device=device).to(dtype), a.astype(np.float64)))
    for _ in range(int(rng.integers(3, 9))):
        r = rng.random()
        p = vals[int(rng.integers(len(vals)))]
        if r < 0.3:
            f, g = _unary(rng)
            vals.append((f(p[0]), g(p[1])))
        elif r < 0.6:
            q = vals[int(rng.integers(len(vals)))]
            try:
                want = np.broadcast_shapes(p[1].shape, q[1].shape)
            except ValueError:
                continue
            f2, g2 = _binary(rng)
            out = (f2(p[0], q[0]), g2(p[1], q[1]))
            assert out[0].shape == want
            vals.append(out)
        elif r < 0.75:
            vals.append(_reduce(rng, p) if p[1].ndim else p)
        elif r < 0.82:
            vals.append(_softmax(rng, p) if p[1].ndim else p)
        elif r < 0.94:
            vals.append(_view(rng, p) if p[1].ndim else p)
        elif 1 <= p[1].ndim <= 2:
            vals.append(_matmul(rng, p, device))
    return vals[2:] or vals


@pytest.mark.parametrize("seed", range(int(os.environ.get("ANYCHIP_FUZZ_SEEDS", "60"))))
def test_random_graph_matches_float64_numpy(seed: int, device: str) -> None:
    vals = _graph(seed, device)
    outs = vals[-3:]  # several roots at once: one schedule shares what they have in common
    realize_together([t for t, _ in outs])
    for t, want in outs:
        got = t.numpy()
        assert got.shape == want.shape, f"seed {seed}: shape {got.shape} != {want.shape}"
        scale = max(1.0, float(np.abs(want).max(initial=0.0)))
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5 * scale, err_msg=f"seed {seed}")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("seed", range(int(os.environ.get("ANYCHIP_FUZZ_SEEDS", "60")) // 2))
def test_random_half_graph_matches_the_ref_backend(seed: int, dtype: str) -> None:
    # halves round after every op, so float64 math is no reference: the numpy `ref`
    # backend, which rounds op by op, is (what the passes fuse must not change the result
    # beyond a few roundings)
    # npu: no half or 64-bit integer types yet (docs/npu-backend.md); float32 graphs run there
    devices = [d for d in ac.devices() if d not in ("ref", "npu")]
    if not devices:
        pytest.skip("only the ref backend is present")
    refs = _graph(seed, "ref", dtype)[-3:]
    for device in devices:
        outs = _graph(seed, device, dtype)[-3:]
        realize_together([t for t, _ in outs])
        for (t, _), (r, _) in zip(outs, refs, strict=True):
            got, want = t.float().numpy(), r.float().numpy()
            scale = max(1.0, float(np.abs(want).max(initial=0.0)))
            tol = 4e-2 if dtype == "bfloat16" else 8e-3
            np.testing.assert_allclose(
                got, want, rtol=tol, atol=tol * scale, err_msg=f"{device}, seed {seed}"
            )


def _int_graph(seed: int, device: str, dtype: str) -> list[Any]:
    """Random integer graphs (wrapping arithmetic, comparisons, selects, reductions, views):
    exact on every device, so the ref backend's values must come back bit for bit."""
    rng = np.random.default_rng(seed)
    shape = SHAPES[seed % len(SHAPES)]
    vals = [
        ac.tensor(rng.integers(-9, 9, s), device=device).to(dtype)
        for s in (shape, _broadcastable(rng, shape))
    ]
    for _ in range(int(rng.integers(3, 9))):
        p = vals[int(rng.integers(len(vals)))]
        q = vals[int(rng.integers(len(vals)))]
        r = rng.random()
        try:
            np.broadcast_shapes(p.shape, q.shape)
            pair = True
        except ValueError:
            pair = False
        if r < 0.45 and pair:
            k = int(rng.integers(5))
            out = [p + q, p - q, p * q, p.maximum(q), ac.where(p > q, p, -q)][k]
        elif r < 0.6:
            out = [p.abs(), -p, p * 3 - 1][int(rng.integers(3))]
        elif r < 0.8 and p.ndim:
            axes = tuple(
                int(a) for a in rng.choice(p.ndim, int(rng.integers(1, p.ndim + 1)), replace=False)
            )
            out = [p.sum(axes), p.amax(axes), p.amin(axes)][int(rng.integers(3))]
        elif p.ndim:
            out = p.flip(-1) if r < 0.9 else p.reshape(-1)
        else:
            continue
        vals.append(out)
    return vals[2:] or vals


@pytest.mark.parametrize("dtype", ["int32", "int64"])
@pytest.mark.parametrize("seed", range(int(os.environ.get("ANYCHIP_FUZZ_SEEDS", "60")) // 2))
def test_random_int_graph_matches_the_ref_backend_exactly(seed: int, dtype: str) -> None:
    # npu: no half or 64-bit integer types yet (docs/npu-backend.md); float32 graphs run there
    devices = [d for d in ac.devices() if d not in ("ref", "npu")]
    if not devices:
        pytest.skip("only the ref backend is present")
    refs = [t.numpy() for t in _int_graph(seed, "ref", dtype)[-3:]]
    for device in devices:
        outs = _int_graph(seed, device, dtype)[-3:]
        realize_together(outs)
        for t, want in zip(outs, refs, strict=True):
            np.testing.assert_array_equal(t.numpy(), want, err_msg=f"{device}, seed {seed}")
