"""Property tests for broadcasting: random broadcastable shape pairs give numpy's result
shape and values for every binary op (and gradients that sum back to each input's shape);
shape pairs that do not broadcast raise ShapeError naming both shapes."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import anychip as ac

OPS: dict[str, tuple[Any, Any]] = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / b, np.divide),
    "maximum": (lambda a, b: a.maximum(b), np.maximum),
    "minimum": (lambda a, b: a.minimum(b), np.minimum),
    "lt": (lambda a, b: a < b, np.less),
    "eq": (lambda a, b: a == b, np.equal),
    "where": (lambda a, b: ac.where(a > b, a, b), lambda a, b: np.where(a > b, a, b)),
}

PAIRS = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4)
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


def _values(shape: tuple[int, ...], seed: int) -> np.ndarray:
    # halves and integers: exact in float64, with ties for the comparisons
    rng = np.random.default_rng(seed)
    return rng.integers(-4, 5, size=shape) * 0.5 + 0.25 * (rng.integers(0, 2, size=shape))


@SETTINGS
@given(shapes=PAIRS, op=st.sampled_from(sorted(OPS)), swap=st.booleans())
def test_binary_ops_broadcast_like_numpy(shapes: Any, op: str, swap: bool, device: str) -> None:
    sa, sb = shapes.input_shapes
    if swap:
        sa, sb = sb, sa
    a, b = _values(sa, 1), _values(sb, 2) + 3.0  # b > 0 keeps div finite
    fn, ref = OPS[op]
    got = fn(ac.tensor(a, device=device), ac.tensor(b, device=device))
    want = ref(a, b)
    assert got.shape == want.shape == np.broadcast_shapes(sa, sb)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)


@SETTINGS
@given(shapes=PAIRS)
def test_gradients_reduce_to_input_shapes(shapes: Any, device: str) -> None:
    sa, sb = shapes.input_shapes
    a = ac.tensor(_values(sa, 3), device=device, requires_grad=True)
    b = ac.tensor(_values(sb, 4), device=device, requires_grad=True)
    (a * b + a).sum().backward()
    assert a.grad is not None and b.grad is not None
    assert a.grad.shape == sa and b.grad.shape == sb
    out = np.broadcast_shapes(sa, sb)
    bb = np.broadcast_to(b.detach().numpy(), out)
    aa = np.broadcast_to(a.detach().numpy(), out)
    # d/da sum(a*b + a) = sum of (b + 1) over a's broadcast axes, and likewise for b
    want_a = _sum_to(bb + 1.0, sa)
    want_b = _sum_to(aa, sb)
    np.testing.assert_allclose(a.grad.numpy(), want_a, rtol=1e-12)
    np.testing.assert_allclose(b.grad.numpy(), want_b, rtol=1e-12)


def _sum_to(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    lead = x.ndim - len(shape)
    x = x.sum(axis=tuple(range(lead))) if lead else x
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and x.shape[i] != 1)
    return x.sum(axis=axes, keepdims=True) if axes else x


@st.composite
def bad_pairs(draw: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Two shapes that do not broadcast: one aligned axis has sizes n != m, both > 1."""
    base = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4))
    axis = draw(st.integers(0, len(base) - 1))
    n, m = draw(st.integers(2, 5)), draw(st.integers(2, 5))
    if n == m:
        m = n + 1
    sa = list(base)
    sa[axis] = n
    sb = list(base)
    sb[axis] = m
    drop = draw(st.integers(0, axis))  # drop leading axes from b: still aligned from the right
    return tuple(sa), tuple(sb[drop:])


@SETTINGS
@given(pair=bad_pairs(), op=st.sampled_from(sorted(OPS)))
def test_non_broadcastable_shapes_raise(pair: Any, op: str, device: str) -> None:
    sa, sb = pair
    a = ac.ones(*sa, device=device)
    b = ac.ones(*sb, device=device)
    try:
        OPS[op][0](a, b)
    except ac.ShapeError as e:
        assert isinstance(e, ValueError)
        msg = str(e)
        assert str(sa) in msg and str(sb) in msg and device in msg and "float32" in msg
    else:
        raise AssertionError(f"{op} of {sa} and {sb} did not raise ShapeError")
    try:
        np.broadcast_shapes(sa, sb)
    except ValueError:
        pass
    else:
        raise AssertionError(f"numpy broadcasts {sa} and {sb}: the strategy is wrong")
