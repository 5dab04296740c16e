"""Plain elementwise kernels on the npu write a vector op's result over an operand tile
that nothing reads again (`lower_exprs.sole_uses`, `CoreLowering.temp`), so a step holds
fewer tiles and covers more elements: values against numpy, the tiles by hand, and the
fused chain's simulated time against the device-memory floor."""

from __future__ import annotations

import numpy as np
import pytest

import anychip as ac
from anychip.backends.npu import cache
from anychip.backends.npu.lower import lower_ir
from anychip.npu.config import get_config
from anychip.npu.isa import Dma, Instr, Space, VBin, VScalar, VUn
from anychip.runtime.device import get_backend
from anychip.runtime.realize import plan

pytestmark = pytest.mark.skipif("npu" not in ac.devices(), reason="npu backend not present")


def _compiled(y: ac.Tensor, design: str) -> tuple[list[Instr], int]:
    (w,) = [w for w in plan([y.node]) if w.kernel is not None]
    comp = lower_ir(cache.kernel_ir(w.kernel), get_config(design.split(":")[1]))
    return list(comp.cores[0]), comp.tile_elems


def _inputs(design: str, n: int, k: int = 3) -> tuple[list[np.ndarray], list[ac.Tensor]]:
    rng = np.random.default_rng(n)
    xs = [rng.standard_normal(n).astype(np.float32) for _ in range(k)]
    return xs, [ac.tensor(x, device=design) for x in xs]


def test_chain_overwrites_dead_operands_but_not_the_stored_value() -> None:
    """(a * b + c).relu() on cube: the product goes over a loaded tile, the sum over the
    product; the relu (the stored value) gets a tile no load writes, so the next loads into
    the slot need not wait for its store. Four tiles a step instead of six: 4096 elements a
    step (2730 before)."""
    design = "npu:cube"
    xs, (a, b, c) = _inputs(design, 1 << 16)
    y = (a * b + c).relu()
    code, elems = _compiled(y, design)
    assert elems == 4096
    loaded = {i.dst.off for i in code if isinstance(i, Dma) and i.dst.space == Space.UB}
    mul = next(i for i in code if isinstance(i, VBin) and i.op.name == "MUL")
    add = next(i for i in code if isinstance(i, VBin) and i.op.name == "ADD")
    mx = next(i for i in code if isinstance(i, VScalar))
    assert mul.dst in (mul.a, mul.b) and mul.dst.off in loaded
    assert add.dst == mul.dst
    assert mx.dst.off not in loaded
    want = np.maximum((xs[0] * xs[1]).astype(np.float32) + xs[2], np.float32(0))
    np.testing.assert_array_equal(y.numpy(), want)


@pytest.mark.parametrize("design", ["npu:edge", "npu:cube", "npu:datacenter"])
def test_values_read_twice_are_not_overwritten(design: str) -> None:
    """a * b feeds two ops and a is read by two: neither tile is overwritten while a later
    op still reads it; float16 and int32 chains too."""
    xs, (a, b, c) = _inputs(design, 5000)
    p = a * b
    y = (p + c) * p.exp() - a.abs()
    x64 = [x.astype(np.float64) for x in xs]
    p64 = x64[0] * x64[1]
    want = (p64 + x64[2]) * np.exp(p64) - np.abs(x64[0])
    code, _ = _compiled(y, design)
    exp = next(i for i in code if isinstance(i, VUn) and i.op.name == "EXP")
    assert exp.dst != exp.a  # the product is read again by the add
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-5, atol=1e-5)
    h = [t.to(ac.float16) for t in (a, b, c)]
    yh = ((h[0] * h[1] + h[2]) * h[2]).numpy().astype(np.float64)
    xh = [x.astype(np.float16).astype(np.float64) for x in xs]
    assert np.allclose(yh, (xh[0] * xh[1] + xh[2]) * xh[2], rtol=4e-3, atol=4e-3)
    ints = [ac.tensor((x * 100).astype(np.int32), device=design) for x in xs]
    xi = [(x * 100).astype(np.int64) for x in xs]
    got = (ints[0] * ints[1] + ints[2] * ints[0]).numpy()
    np.testing.assert_array_equal(got, (xi[0] * xi[1] + xi[2] * xi[0]).astype(np.int32))


@pytest.mark.parametrize(("design", "share"), [("npu:cube", 0.72), ("npu:edge", 0.85)])
def test_fused_chain_near_the_memory_floor(design: str, share: float) -> None:
    """The timing model's time of (a * b + c).relu() over 2^20 float32 elements within
    1 / share of the 16 bytes an element moves at the design's bandwidth (cube 58.3 us,
    62.5%, before the tiles were shared and the relu was one vmaxs: 79.9 us, 46%)."""
    n = 1 << 20 if design == "npu:cube" else 1 << 16
    _, (a, b, c) = _inputs(design, n)
    (a * b + c).relu().numpy()
    st = get_backend(design).launch_stats()
    assert st is not None
    floor = 16 * n / get_backend(design).config.dram_bytes_per_s
    assert floor / st["time_s"] >= share
