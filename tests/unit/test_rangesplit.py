"""The `rangesplit` pass: a concatenation's or pad's inner loop becomes one loop per source
range with no selects left, and the values stay numpy's."""

from __future__ import annotations

import numpy as np

import anychip as ac
from anychip.ir.kernel import KernelIR, Loop, LoopKind, stmt_exprs, walk_exprs, walk_stmts
from anychip.ir.ops import Ops
from anychip.passes.pipeline import lower_kernel
from anychip.passes.rangesplit import MAX_PIECES
from anychip.runtime.realize import plan


def ir_of(t: ac.Tensor) -> KernelIR:
    kernels = [s.kernel for s in plan([t.node]) if getattr(s, "kernel", None) is not None]
    assert len(kernels) == 1
    return lower_kernel(kernels[0])


def selects(k: KernelIR) -> int:
    return sum(
        1
        for s in walk_stmts(k.body)
        for root in stmt_exprs(s)
        for e in walk_exprs(root)
        if getattr(e, "op", None) in (Ops.WHERE, Ops.CMPLT)
    )


def loops(k: KernelIR) -> list[Loop]:
    return [s for s in walk_stmts(k.body) if isinstance(s, Loop)]


def test_cat_copies_each_part_without_selects() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((7, w)).astype(np.float32) for w in (3, 16, 1, 5)]
    xs = [ac.tensor(p, device="cpu").realize() for p in parts]
    out = ac.cat(xs, 1)
    k = ir_of(out)
    assert selects(k) == 0
    assert sorted(lp.extent for lp in loops(k)) == [1, 3, 5, 7, 16]
    np.testing.assert_array_equal(out.numpy(), np.concatenate(parts, 1))


def test_pad_splits_into_border_and_interior() -> None:
    x = np.arange(4 * 6, dtype=np.float32).reshape(4, 6) - 10
    y = ac.nn.functional.pad(ac.tensor(x, device="cpu").realize(), (2, 3))
    k = ir_of(y)
    assert selects(k) == 0
    assert sorted(lp.extent for lp in loops(k)) == [2, 3, 4, 6]
    np.testing.assert_array_equal(y.numpy(), np.pad(x, ((0, 0), (2, 3))))


def test_too_many_ranges_stay_one_loop() -> None:
    parts = [np.full((2, 1), i, np.float32) for i in range(MAX_PIECES + 1)]
    out = ac.cat([ac.tensor(p, device="cpu").realize() for p in parts], 1)
    k = ir_of(out)
    assert selects(k) > 0
    np.testing.assert_array_equal(out.numpy(), np.concatenate(parts, 1))


def test_outermost_and_reduce_loops_are_not_split() -> None:
    a = ac.tensor(np.ones((3, 4), np.float32), device="cpu").realize()
    b = ac.tensor(np.full((5, 4), 2, np.float32), device="cpu").realize()
    rows = ac.cat([a, b], 0)  # the cat's loop is the kernel's outermost
    k = ir_of(rows)
    assert next(lp.extent for lp in loops(k)) == 8
    cols = ac.cat([a.t(), b.t()], 1).sum(1)  # the cat's axis is reduced
    k = ir_of(cols)
    assert [lp.extent for lp in loops(k) if lp.kind is LoopKind.REDUCE] == [8]
    np.testing.assert_allclose(cols.numpy(), [13.0] * 4)


def test_npu_cat_and_pad_move_each_byte_once() -> None:
    # on the chip each part is one DMA box: device memory moves the parts in and the result
    # out once (before: guarded element loads of every part for every output element)
    from anychip.runtime.device import get_backend

    rng = np.random.default_rng(1)
    parts = [rng.standard_normal((64, w)).astype(np.float32) for w in (16, 48, 16)]
    out = ac.cat([ac.tensor(p, device="npu").realize() for p in parts], 1)
    np.testing.assert_array_equal(out.numpy(), np.concatenate(parts, 1))
    assert get_backend("npu").launch_stats()["bytes"] == 2 * sum(p.nbytes for p in parts)
    x = rng.standard_normal((32, 40)).astype(np.float32)
    y = ac.nn.functional.pad(ac.tensor(x, device="npu").realize(), (3, 5))
    np.testing.assert_array_equal(y.numpy(), np.pad(x, ((0, 0), (3, 5))))
    assert get_backend("npu").launch_stats()["bytes"] == x.nbytes + 32 * 48 * 4
