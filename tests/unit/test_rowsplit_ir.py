"""The rowsplit pass: a contiguous row sum's IR folds into a local array of partials (chunk
loop, tail, pairwise tree, one fold into the accumulator); short rows, column sums and
whole-tensor sums (threaded by the renderer) are left alone."""

from __future__ import annotations

import numpy as np

import anychip as ac
from anychip.ir.kernel import (
    BufRole,
    KernelIR,
    Load,
    Local,
    Loop,
    LoopKind,
    Store,
    Update,
    walk_stmts,
)
from anychip.ir.ops import Ops
from anychip.passes.pipeline import PASSES, lower_kernel
from anychip.passes.simplify import affine
from anychip.runtime.realize import plan


def ir_of(t: ac.Tensor) -> KernelIR:
    # without blocksum (its own tests), which cuts long sums into blocks rowsplit then splits
    (item,) = [w for w in plan([t.node]) if w.kernel is not None]
    return lower_kernel(item.kernel, [(n, f) for n, f in PASSES if n != "blocksum"])


def test_row_sum_folds_into_partials() -> None:
    x = ac.tensor(np.ones((64, 1000), np.float32)).realize()
    k = ir_of(x.sum(1))
    (part,) = [i for i, b in enumerate(k.bufs) if b.role is BufRole.LOCAL]
    assert k.bufs[part].size == 64  # 256 bytes of float32
    (rows,) = k.body
    assert isinstance(rows, Loop) and rows.kind is LoopKind.PARALLEL and rows.extent == 64
    assert Local(part) in rows.body
    loops = [s for s in rows.body if isinstance(s, Loop)]
    init, chunks, tail, *tree, last = loops
    assert init.kind is LoopKind.VECTOR and init.extent == 64
    assert chunks.kind is LoopKind.SERIAL and chunks.extent == 1000 // 64
    (inner,) = chunks.body
    assert isinstance(inner, Loop) and inner.kind is LoopKind.VECTOR and inner.extent == 64
    (fold,) = inner.body
    assert isinstance(fold, Store) and fold.buf == part and fold.combine is Ops.ADD
    assert isinstance(fold.value, Load) and fold.value.buf == 1
    terms, _ = affine(fold.value.index)  # type: ignore[misc]
    assert terms == {"i0": 1000, chunks.var: 64, inner.var: 1}  # unit stride across lanes
    assert tail.kind is LoopKind.VECTOR and tail.extent == 1000 % 64
    (tfold,) = tail.body
    assert isinstance(tfold, Store) and tfold.buf == part
    assert affine(tfold.value.index) == ({"i0": 1000, tail.var: 1}, 960)  # type: ignore[union-attr]
    assert [t.extent for t in tree] == [32, 16, 8, 4, 2, 1]  # pairwise, a fixed order
    assert last.extent == 1 and isinstance(last.body[0], Update)
    stores = [s for s in rows.body if isinstance(s, Store)]
    assert len(stores) == 1 and stores[0].buf == 0  # the row's result, after the fold


def test_every_reduction_of_a_row_kernel_is_split() -> None:
    x = ac.tensor(np.ones((8, 1000), np.float32)).realize()
    k = ir_of(x.softmax(-1))  # max then sum: two partial arrays
    assert sum(b.role is BufRole.LOCAL for b in k.bufs) == 2
    assert not any(isinstance(s, Loop) and s.kind is LoopKind.REDUCE for s in walk_stmts(k.body))


def test_halves_accumulate_in_float32_partials() -> None:
    x = ac.tensor(np.ones((8, 1000), np.float32)).to(ac.float16).realize()
    k = ir_of(x.sum(1))
    (part,) = [b for b in k.bufs if b.role is BufRole.LOCAL]
    assert part.dtype is ac.float32 and part.size == 64


def test_short_rows_and_columns_are_left_alone() -> None:
    for t in (
        ac.tensor(np.ones((64, 40), np.float32)).sum(1),  # shorter than a chunk
        ac.tensor(np.ones((1000, 64), np.float32)).sum(0),  # a column sum (interchange's)
        ac.tensor(np.ones(1 << 16, np.float32)).sum(),  # threaded by the renderer
    ):
        k = ir_of(t)
        assert not any(b.name.endswith("_part") for b in k.bufs)
