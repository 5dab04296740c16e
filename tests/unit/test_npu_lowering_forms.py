"""The npu lowering's forms beyond elementwise and reductions, each against numpy on the
small `edge` design (steps of a few thousand elements, one core) and on `datacenter`
(four cores): running sums (`vcumsum` plus a carry), argsort and top-k rows (`vargsort`),
guarded stores written as boxes, combining stores other than add (max/min/prod down a
middle axis), and the small integer types."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import anychip as ac
from anychip.backends.npu import cache
from anychip.backends.npu.lower import lower_ir
from anychip.npu.config import get_config
from anychip.npu.isa import Dma, Instr, Space, VScan, VSort
from anychip.runtime.realize import plan

pytestmark = pytest.mark.skipif("npu" not in ac.devices(), reason="npu backend not present")
DESIGNS = ["npu:edge", "npu:datacenter"]


def _program(fn: Callable[[ac.Tensor], ac.Tensor], a: np.ndarray) -> list[Instr]:
    """The instructions of the one kernel `fn(a)` launches, on `edge`."""
    t = ac.tensor(a, device="npu:edge")
    (w,) = [w for w in plan([fn(t).node]) if w.kernel is not None]
    comp = lower_ir(cache.kernel_ir(w.kernel), get_config("edge"))
    return [i for code in comp.cores for i in code]


def _cumsum64(a: np.ndarray, axis: int) -> np.ndarray:
    return np.cumsum(a.astype(np.float64), axis)


@pytest.mark.parametrize("design", DESIGNS)
@pytest.mark.parametrize(
    ("shape", "axis"),
    [((1,), 0), ((7,), 0), ((5000,), 0), ((3, 4), 1), ((9, 1), 0), ((40, 33), 0),
     ((3, 3001), 1), ((3, 50, 17), 1), ((2, 3, 5), 0), ((3000, 20), 0)],
    ids=str,
)  # fmt: skip
def test_running_sums_float32(shape: tuple[int, ...], axis: int, design: str) -> None:
    a = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    got = ac.tensor(a, device=design).cumsum(axis).numpy()
    np.testing.assert_allclose(got, _cumsum64(a, axis), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", ["int64", "int32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize(("shape", "axis"), [((4099,), 0), ((70, 3), 0), ((3, 70), 1)], ids=str)
def test_running_sums_of_other_types(shape: tuple[int, ...], axis: int, dtype: str) -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(-9, 10, shape)
    x = ac.tensor(a.astype(np.float32), device="npu").to(getattr(ac, dtype))  # edge: no bf16
    got = x.cumsum(axis).float().numpy() if "16" in dtype else x.cumsum(axis).numpy()
    # small integers: every prefix is exact in every type (bf16 holds integers to 256)
    want = np.cumsum(a, axis)
    if dtype == "bfloat16":
        want = np.where(np.abs(want) <= 256, want, got)
    np.testing.assert_array_equal(got, want.astype(got.dtype))


def test_a_running_sum_is_a_scan_instruction() -> None:
    code = _program(lambda t: t.cumsum(1), np.ones((3, 50), np.float32))
    assert any(isinstance(i, VScan) and i.axis == 1 for i in code)


@pytest.mark.parametrize("design", DESIGNS)
@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize(("shape", "axis"), [((1,), 0), ((9,), 0), ((4, 300), 1), ((300, 4), 0),
                                             ((2, 3, 40), 1), ((700, 3), 1)], ids=str)  # fmt: skip
def test_argsort_rows_are_stable(
    shape: tuple[int, ...], axis: int, descending: bool, design: str
) -> None:
    a = np.random.default_rng(2).integers(-5, 6, shape).astype(np.float32)  # many ties
    a.flat[:: max(1, a.size // 5)] = np.nan
    got = ac.tensor(a, device=design).argsort(axis, descending=descending).numpy()
    key = -np.nan_to_num(a, nan=np.inf) if descending else np.nan_to_num(a, nan=np.inf)
    np.testing.assert_array_equal(got, np.argsort(key, axis, kind="stable"))


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int64", "float16", "bool"])
def test_topk_of_every_key_type(dtype: str) -> None:
    a = np.random.default_rng(3).integers(0, 100, (6, 257)).astype(dtype)
    vals, idx = ac.tensor(a, device="npu:edge").topk(5, 1)
    order = np.argsort(-a.astype(np.float64), 1, kind="stable")[:, :5]
    np.testing.assert_array_equal(idx.numpy(), order)
    np.testing.assert_array_equal(vals.numpy(), np.take_along_axis(a, order, 1))


def test_a_sort_is_one_vargsort_per_block_of_rows() -> None:
    code = _program(lambda t: t.argsort(1), np.ones((64, 100), np.float32))
    sorts = [i for i in code if isinstance(i, VSort)]
    assert sum(i.shape[0] for i in sorts) == 64 and all(i.shape[1] == 100 for i in sorts)


@pytest.mark.parametrize("design", DESIGNS)
@pytest.mark.parametrize("op", ["amax", "amin", "prod"])
@pytest.mark.parametrize("shape", [(3, 20, 33), (2, 7, 1500), (5, 2, 3), (2, 3000, 20)], ids=str)
def test_combining_stores_down_a_middle_axis(shape: tuple[int, ...], op: str, design: str) -> None:
    rng = np.random.default_rng(4)
    a = rng.choice([-1.0, 0.999, 1.0, 1.002] if op == "prod" else [-1.5, 0.5, 2.0], shape)
    a = a.astype(np.float32)
    a[0, -1, 0] = np.nan  # max/min propagate NaN, prod too
    want = {"amax": np.max, "amin": np.min, "prod": np.prod}[op](a.astype(np.float64), 1)
    got = getattr(ac.tensor(a, device=design), op)(1).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("op", ["any", "all"])
def test_boolean_folds_down_a_middle_axis(op: str) -> None:
    a = np.random.default_rng(7).random((4, 300, 40)) < (0.005 if op == "any" else 0.995)
    got = getattr(ac.tensor(a, device="npu:edge"), op)(1).numpy()
    np.testing.assert_array_equal(got, getattr(a, op)(1))


def test_guarded_stores_write_only_where_the_guard_holds() -> None:
    # cumsum down the rows of float32 is the line form: rows of 16 columns, the last line
    # guarded to the 33 - 32 = 1 column left (a box per run of columns)
    a = np.random.default_rng(5).standard_normal((40, 33)).astype(np.float32)
    code = _program(lambda t: t.cumsum(0), a)
    out_dmas = [i for i in code if isinstance(i, Dma) and i.dst.space == Space.DRAM]
    assert any(i.shape[2] == 1 for i in out_dmas) and any(i.shape[2] == 16 for i in out_dmas)
    got = ac.tensor(a, device="npu:edge").cumsum(0).numpy()
    np.testing.assert_allclose(got, _cumsum64(a, 0), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint32"])
def test_small_integers_wrap_as_numpy(dtype: str) -> None:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(6)
    a = rng.integers(info.min, info.max, 1000, endpoint=True).astype(dtype)
    b = rng.integers(max(info.min, -9), 10, 1000).astype(dtype)
    b[b == 0] = 1
    x, y = ac.tensor(a, device="npu:edge"), ac.tensor(b, device="npu:edge")
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal((x * y + x).numpy(), a * b + a)
        np.testing.assert_array_equal((-x).numpy(), -a)
        np.testing.assert_array_equal((x // y).numpy(), a // b)
    np.testing.assert_array_equal(ac.maximum(x, y).numpy(), np.maximum(a, b))
    np.testing.assert_array_equal(x.amax().numpy(), a.max())
    np.testing.assert_array_equal((x < y).numpy(), a < b)
    np.testing.assert_array_equal(x.float().numpy(), a.astype(np.float32))


def test_transposed_boxes_move_runs_of_device_memory() -> None:
    # x.T + 1: the tile's rows are x's columns; the DMA walks x's rows innermost
    a = np.arange(64 * 48, dtype=np.float32).reshape(64, 48)
    code = _program(lambda t: t.T + 1, a)
    loads = [i for i in code if isinstance(i, Dma) and i.src.space == Space.DRAM]
    assert loads and all(i.src_strides[2] == 1 for i in loads)
    got = (ac.tensor(a, device="npu:edge").T + 1).numpy()
    np.testing.assert_array_equal(got, a.T + 1)
