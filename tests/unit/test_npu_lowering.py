"""The npu lowering's parts: affine index analysis, frames covering the iteration space,
the flag protocol of the step ring, tile sizes fitting the unified buffer, and programs
whose addresses are launch arguments."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import anychip as ac
from anychip import dtypes
from anychip.backends.npu import cache
from anychip.backends.npu.lower import BUF_REG, Frame, _long_frames, lower_ir
from anychip.backends.npu.lower_exprs import _affine
from anychip.ir.kernel import INDEX, Var, alu, const
from anychip.ir.ops import Ops
from anychip.npu.config import get_config
from anychip.npu.isa import Dma, Ref, SetFlag, Space, WaitFlag
from anychip.runtime.realize import plan

pytestmark = pytest.mark.skipif("npu" not in ac.devices(), reason="npu backend not present")


def test_affine_forms_of_index_expressions() -> None:
    i, j = Var("i", INDEX), Var("j", INDEX)
    e = alu(Ops.ADD, alu(Ops.MUL, i, const(5)), alu(Ops.ADD, j, const(3)))
    assert _affine(e, {}) == (3, {"i": 5, "j": 1})
    assert _affine(alu(Ops.NEG, e), {}) == (-3, {"i": -5, "j": -1})
    assert _affine(alu(Ops.MUL, i, j), {}) is None  # not affine
    assert _affine(alu(Ops.MOD, i, const(4)), {}) is None
    # a Let of index math is substituted
    assert _affine(Var("k", INDEX), {"k": alu(Ops.MUL, j, const(7))}) == (0, {"j": 7})


def test_frame_strides_follow_the_coefficients() -> None:
    f = Frame(4, 8, {"i": 2, "j": 0}, {"i": 1}, {"j": 1})
    assert f.at((3, {"i": 5, "j": 1})) == (13, 5, 1)  # start 3 + 5*2, rows 5 apart
    g = f.grid()
    assert g["i"][:, 0].tolist() == [2, 3, 4, 5] and g["j"][0].tolist() == list(range(8))


@pytest.mark.parametrize("extent", [1, 7, 64, 1000, 4099])
def test_long_frames_cover_every_point_once(extent: int) -> None:
    seen = Counter[int]()
    for f in _long_frames({}, "v", extent, elems=256, width=64):
        assert f.rows * f.cols <= 256
        seen.update(f.grid()["v"].ravel().tolist())
    assert sorted(seen) == list(range(extent)) and set(seen.values()) == {1}


def _compiled(expr_fn, *shapes: tuple[int, ...], design: str = "edge"):  # type: ignore[no-untyped-def]
    ts = [ac.tensor(np.ones(s, np.float32), device="npu:edge") for s in shapes]
    (w,) = [w for w in plan([expr_fn(*ts).node]) if w.kernel is not None]
    return lower_ir(cache.kernel_ir(w.kernel), get_config(design))


@pytest.mark.parametrize("design", ["edge", "cube", "datacenter"])
def test_every_setf_has_its_waitf(design: str) -> None:
    comp = _compiled(lambda a, b: (a * b).softmax(-1), (37, 300), (300,), design=design)
    for code in comp.cores:
        sets = Counter((i.src, i.dst, i.flag) for i in code if isinstance(i, SetFlag))
        waits = Counter((i.src, i.dst, i.flag) for i in code if isinstance(i, WaitFlag))
        assert sets == waits  # the simulator would raise SyncError on a leftover flag


def test_buffers_are_addressed_through_launch_registers() -> None:
    comp = _compiled(lambda a, b: a + b, (50, 30), (50, 30))
    dmas = [i for c in comp.cores for i in c if isinstance(i, Dma)]
    dram = [r for i in dmas for r in (i.src, i.dst) if r.space == Space.DRAM]
    assert dram and all(r.reg in (BUF_REG, BUF_REG + 1, BUF_REG + 2) for r in dram)
    assert all(isinstance(r, Ref) for r in dram)


def test_steps_fit_the_unified_buffer_of_a_small_design() -> None:
    comp = _compiled(lambda a: (a.exp() * 2 + a.sin()).softmax(-1), (8, 5000))
    ub = get_config("edge").ub.size
    assert comp.tile_elems >= 1 and comp.tile_elems * 4 * 3 <= ub
    for code in comp.cores:
        for i in code:
            for name in ("dst", "src", "a", "b"):
                r = getattr(i, name, None)
                if isinstance(r, Ref) and r.space == Space.UB:
                    assert 0 <= r.off < ub


def test_work_is_split_over_the_cores() -> None:
    comp = _compiled(lambda a: a.sum(1), (64, 100), design="datacenter")
    assert len(comp.cores) == get_config("datacenter").cores
    assert comp.nbufs == 2 and comp.scalars == ()
    assert dtypes.float32 is not None
