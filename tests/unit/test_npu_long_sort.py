"""Sorts of rows longer than a step's share of the unified buffer (`lower_sort.py`): each
key's place counted on the chip, block against block, and scattered. Designs with a small
`ub` (64 KiB: rows past about 1K keys) keep the rows, and the simulation, short."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

import anychip as ac
from anychip.backends.npu import cache
from anychip.backends.npu.lower import lower_ir
from anychip.npu.config import PROFILES, get_config
from anychip.npu.isa import Instr, ScatterAdd, VSort
from anychip.runtime.realize import plan

pytestmark = pytest.mark.skipif("npu" not in ac.devices(), reason="npu backend not present")
N = 1101  # keys a row: past a step's share of the 64 KiB `ub`; odd: the last block too


def _small(name: str, tmp: pytest.TempPathFactory) -> str:
    """`npu:PATH` of profile `name` with a 64 KiB unified buffer."""
    path = tmp.mktemp("designs") / f"{name}_ub64k.toml"
    PROFILES[name].replace(**{"ub.size": 64 * 1024}).save(path)
    return f"npu:{path}"


@pytest.fixture(scope="module", params=["edge", "datacenter"])
def design(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small-`ub` edge (one core) or datacenter (four cores)."""
    return _small(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _small("edge", tmp_path_factory)


def _program(design: str, fn: Callable[[ac.Tensor], ac.Tensor], a: np.ndarray) -> list[Instr]:
    """The instructions of the one kernel `fn(a)` launches on `design`."""
    (w,) = [w for w in plan([fn(ac.tensor(a, device=design)).node]) if w.kernel is not None]
    comp = lower_ir(cache.kernel_ir(w.kernel), get_config(design.split(":", 1)[1]))
    return [i for core in comp.cores for i in core]


def _keys(rows: int, seed: int) -> np.ndarray:
    """Many ties, NaNs, signed zeros and infinities."""
    a = np.random.default_rng(seed).integers(-6, 7, (rows, N)).astype(np.float32)
    a.flat[::37] = np.nan
    a.flat[3::41] = -0.0
    a.flat[5::43] = np.inf
    a.flat[7::47] = -np.inf
    return a


def _ref_order(a: np.ndarray, axis: int, descending: bool) -> np.ndarray:
    """numpy's stable order with `ref`'s NaN order (last ascending, first descending)."""
    nan = np.isnan(a)
    val = np.where(nan, 0.0, a).astype(np.float64)
    keys = (-val, -nan.astype(np.int8)) if descending else (val, nan)  # the last key first
    return np.lexsort(keys, axis=axis)


@pytest.mark.parametrize("descending", [False, True])
def test_long_rows_argsort_is_stable(design: str, descending: bool) -> None:
    a = _keys(3, 0)
    got = ac.tensor(a, device=design).argsort(1, descending=descending).numpy()
    np.testing.assert_array_equal(got, _ref_order(a, 1, descending))


def test_long_columns_sort_matches_torch(design: str) -> None:
    a = np.ascontiguousarray(_keys(2, 1).T)  # (N, 2): each sorted column is strided
    for descending in (False, True):
        v, i = ac.tensor(a, device=design).sort(0, descending=descending)
        tv, ti = torch.sort(torch.tensor(a), dim=0, descending=descending, stable=True)
        np.testing.assert_array_equal(v.numpy(), tv.numpy())  # NaNs in the same places
        np.testing.assert_array_equal(i.numpy(), ti.numpy())


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int64", "float16", "float64", "bool"])
@pytest.mark.parametrize("largest", [True, False])
def test_long_rows_topk_of_every_key_type(edge: str, dtype: str, largest: bool) -> None:
    a = np.random.default_rng(3).integers(0, 100, (1, N)).astype(dtype)
    vals, idx = ac.tensor(a, device=edge).topk(5, 1, largest=largest)
    key = a.astype(np.float64)
    order = np.argsort(-key if largest else key, 1, kind="stable")[:, :5]
    np.testing.assert_array_equal(idx.numpy(), order)
    np.testing.assert_array_equal(vals.numpy(), np.take_along_axis(a, order, 1))


@pytest.mark.parametrize("dtype", ["int32", "uint32", "int64", "uint64"])
def test_long_rows_of_full_range_integers(edge: str, dtype: str) -> None:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(5)
    a = rng.integers(info.min, info.max, (1, N), dtype=dtype, endpoint=True)
    a[:, ::3] = rng.integers(0, 4, (1, len(range(0, N, 3))))  # ties
    a[0, :4] = [info.min, info.max, info.max, info.min]
    for descending in (False, True):
        got = ac.tensor(a, device=edge).argsort(1, descending=descending).numpy()
        # numpy's exact stable order; descending: ascending on the reversed row, reversed
        order = np.argsort(a[:, ::-1] if descending else a, 1, kind="stable")
        np.testing.assert_array_equal(got, N - 1 - order[:, ::-1] if descending else order)


def test_a_long_row_is_counted_and_scattered_not_vargsorted(design: str) -> None:
    code = _program(design, lambda t: t.argsort(1), np.ones((1, N), np.float32))
    assert not any(isinstance(i, VSort) for i in code)
    adds = [i for i in code if isinstance(i, ScatterAdd)]
    assert sum(i.count for i in adds) == N  # every key's position lands once


def test_a_row_that_fits_is_still_one_vargsort(design: str) -> None:
    a = _keys(2, 4)[:, :300]
    code = _program(design, lambda t: t.argsort(1), a)
    assert any(isinstance(i, VSort) for i in code)
    assert not any(isinstance(i, ScatterAdd) for i in code)
    got = ac.tensor(a, device=design).argsort(1).numpy()
    np.testing.assert_array_equal(got, _ref_order(a, 1, False))
