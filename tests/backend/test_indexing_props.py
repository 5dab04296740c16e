"""Property tests: random subscripts give numpy's answer, for reading and for assignment.

Basic subscripts (ints, slices with positive steps, None, Ellipsis) and advanced ones
(integer arrays broadcast together, boolean masks, mixed with slices) are drawn at random;
numpy's indexing is the reference (torch agrees with it on these forms).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

import anychip as ac

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

shapes = st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple)


def _value_array(shape: tuple[int, ...]) -> np.ndarray:
    return (np.arange(int(np.prod(shape)), dtype=np.float32) * 0.5 - 3).reshape(shape)


@st.composite
def _slice(draw: st.DrawFn) -> slice:
    bound = st.none() | st.integers(-7, 7)
    return slice(draw(bound), draw(bound), draw(st.sampled_from([None, 1, 2, 3, 5])))


def _basic_items(draw: st.DrawFn, dims: tuple[int, ...]) -> list[Any]:
    items: list[Any] = []
    for n in dims:
        kind = draw(st.sampled_from(["int", "slice", "slice", "none"] if n else ["slice", "none"]))
        if kind == "int":
            items.append(draw(st.integers(-n, n - 1)))
        elif kind == "slice":
            items.append(draw(_slice()))
        else:
            items.extend([None, draw(_slice())])  # a new axis, then this dim's own index
    return items


@st.composite
def basic_index(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[Any, ...]:
    """Ints, slices and Nones for a prefix of `shape`'s dims, maybe then an Ellipsis and
    entries for a suffix of its dims."""
    k = draw(st.integers(0, len(shape)))
    items = _basic_items(draw, shape[:k])
    if draw(st.booleans()):
        m = draw(st.integers(0, len(shape) - k))
        items += [Ellipsis, *_basic_items(draw, shape[len(shape) - m :])]
    if draw(st.booleans()):
        items.insert(draw(st.integers(0, len(items))), None)
    return tuple(items)


@SETTINGS
@given(data=st.data(), shape=shapes)
def test_basic_indexing_matches_numpy(
    data: st.DataObject, shape: tuple[int, ...], device: str
) -> None:
    a = _value_array(shape)
    idx = data.draw(basic_index(shape))
    got = ac.tensor(a, device=device)[idx]
    want = a[idx]
    assert got.shape == want.shape, (idx, got.shape, want.shape)
    np.testing.assert_array_equal(got.numpy(), want)


@SETTINGS
@given(data=st.data(), shape=shapes)
def test_basic_assignment_matches_numpy(
    data: st.DataObject, shape: tuple[int, ...], device: str
) -> None:
    a = _value_array(shape)
    idx = data.draw(basic_index(shape))
    target = a[idx]
    value = np.arange(target.size, dtype=np.float32).reshape(target.shape) + 100
    x = ac.tensor(a, device=device)
    x[idx] = ac.tensor(value, device=device)
    want = a.copy()
    want[idx] = value
    np.testing.assert_array_equal(x.numpy(), want)


@st.composite
def advanced_index(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[Any, ...]:
    """Integer arrays on some dims (one broadcast shape, negatives too), maybe a boolean
    mask on one dim, slices elsewhere; no scalar ints (torch and numpy place those apart)."""
    common = draw(st.lists(st.integers(0, 3), min_size=1, max_size=2).map(tuple))
    items: list[Any] = []
    for n in shape:
        kind = draw(st.sampled_from(["array", "array", "slice", "mask"]))
        if kind == "array" and n:
            # each array's shape broadcasts to `common`: some of its trailing dims set to 1
            own = tuple(1 if draw(st.booleans()) else c for c in common)
            lead = draw(st.integers(0, len(own) - 1))  # 0-d int tensors act as ints in torch
            vals = draw(st.lists(st.integers(-n, n - 1), min_size=int(np.prod(own[lead:]))))
            arr = np.array(vals[: int(np.prod(own[lead:]))], dtype=np.int64).reshape(own[lead:])
            items.append(arr)
        elif kind == "mask" and not any(
            isinstance(i, np.ndarray) and i.dtype == bool for i in items
        ):
            items.append(np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool))
        else:
            items.append(draw(_slice()))
    return tuple(items)


def _compatible(idx: tuple[Any, ...]) -> bool:
    """numpy accepts it (the arrays and the mask's nonzero broadcast together)."""
    arrays = [i.nonzero()[0] if i.dtype == bool else i for i in idx if isinstance(i, np.ndarray)]
    try:
        np.broadcast_shapes(*(a.shape for a in arrays))
    except ValueError:
        return False
    return bool(arrays)


@SETTINGS
@given(data=st.data(), shape=st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple))
def test_advanced_indexing_matches_numpy(
    data: st.DataObject, shape: tuple[int, ...], device: str
) -> None:
    a = _value_array(shape)
    idx = data.draw(advanced_index(shape).filter(_compatible))
    want = a[idx]
    x = ac.tensor(a, device=device, requires_grad=True)
    got = x[tuple(ac.tensor(i, device=device) if isinstance(i, np.ndarray) else i for i in idx)]
    assert got.shape == want.shape, (idx, got.shape, want.shape)
    np.testing.assert_array_equal(got.numpy(), want)
    # gradient: each element of x gets the count of the times it was read
    got.sum().backward()
    counts = np.zeros(a.size, np.float32)
    np.add.at(counts, np.arange(a.size).reshape(shape)[idx].reshape(-1), 1)
    assert x.grad is not None
    np.testing.assert_array_equal(x.grad.numpy(), counts.reshape(shape))


@SETTINGS
@given(data=st.data(), shape=st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple))
def test_advanced_assignment_matches_numpy(
    data: st.DataObject, shape: tuple[int, ...], device: str
) -> None:
    a = _value_array(shape)
    idx = data.draw(advanced_index(shape).filter(_compatible))
    x = ac.tensor(a, device=device)
    x[tuple(ac.tensor(i, device=device) if isinstance(i, np.ndarray) else i for i in idx)] = 42.0
    want = a.copy()
    want[idx] = 42.0
    np.testing.assert_array_equal(x.numpy(), want)
