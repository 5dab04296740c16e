"""The interchange pass: a column sum's IR is tiled along its contiguous output axis, a row
sum's is left alone, and the verifier polices local buffers."""

from __future__ import annotations

import numpy as np
import pytest

import anychip as ac
from anychip import dtypes
from anychip.ir.kernel import (
    INDEX,
    BufDecl,
    BufRole,
    KernelIR,
    KernelKind,
    Load,
    Local,
    Loop,
    LoopKind,
    Store,
    Var,
    const,
    render_ir,
    walk_stmts,
)
from anychip.ir.ops import Ops
from anychip.ir.verify import KernelIRError, verify
from anychip.passes.pipeline import PASSES, lower_kernel
from anychip.passes.simplify import affine
from anychip.runtime.realize import plan


def ir_of(t: ac.Tensor) -> KernelIR:
    (item,) = [w for w in plan([t.node]) if w.kernel is not None]
    return lower_kernel(item.kernel)


def test_column_sum_is_tiled_along_the_output_axis() -> None:
    x = ac.tensor(np.ones((256, 512), np.float32)).realize()
    (item,) = [w for w in plan([x.sum(0).node]) if w.kernel is not None]
    no_blocks = [(n, f) for n, f in PASSES if n != "blocksum"]  # blocksum has its own tests
    k = lower_kernel(item.kernel, no_blocks)
    locals_ = [i for i, b in enumerate(k.bufs) if b.role is BufRole.LOCAL]
    assert len(locals_) == 1
    (tiles,) = k.body  # 512 = 8 whole tiles of 64 float32, no tail
    assert isinstance(tiles, Loop) and tiles.kind is LoopKind.PARALLEL
    lanes = k.bufs[locals_[0]].size
    assert tiles.extent * lanes == 512 and lanes % 16 == 0
    assert Local(locals_[0]) in tiles.body
    (red,) = [s for s in tiles.body if isinstance(s, Loop) and s.extent == 256]
    assert red.kind is LoopKind.SERIAL  # the reduced axis runs outside
    (inner,) = red.body
    assert isinstance(inner, Loop) and inner.kind is LoopKind.VECTOR and inner.extent == lanes
    (fold,) = inner.body
    assert isinstance(fold, Store) and fold.buf == locals_[0] and fold.combine is Ops.ADD
    assert isinstance(fold.value, Load) and fold.value.buf == 1
    terms, _ = affine(fold.value.index)  # type: ignore[misc]
    assert terms[inner.var] == 1 and terms[red.var] == 512  # unit stride across the lanes
    stores = [s for s in walk_stmts(tiles.body) if isinstance(s, Store) and s.buf == 0]
    assert len(stores) == 1 and affine(stores[0].index)[0][inner.var] == 1  # type: ignore[index]


def test_row_sum_is_left_alone() -> None:
    x = ac.tensor(np.ones((256, 512), np.float32)).realize()
    (item,) = [w for w in plan([x.sum(1).node]) if w.kernel is not None]
    # rowsplit and blocksum have their own tests
    no_split = [(n, f) for n, f in PASSES if n not in ("rowsplit", "blocksum")]
    k = lower_kernel(item.kernel, no_split)
    assert all(b.role is not BufRole.LOCAL for b in k.bufs)
    loops = [s for s in walk_stmts(k.body) if isinstance(s, Loop)]
    assert [lp.kind for lp in loops] == [LoopKind.PARALLEL, LoopKind.REDUCE]


def test_printer_shows_local_buffers() -> None:
    x = ac.tensor(np.ones((20, 100), np.float32)).realize()
    text = render_ir(ir_of(x.amax(0)))
    assert "local float32" in text and "max=" in text


def _kernel(body: tuple) -> KernelIR:
    f32 = dtypes.float32
    bufs = (BufDecl("out", f32, 8, BufRole.OUT), BufDecl("t", f32, 8, BufRole.LOCAL))
    return KernelIR("k", KernelKind.REDUCE, bufs, body)


def test_verifier_rejects_a_local_used_outside_its_block() -> None:
    i = Var("i", INDEX)
    fill = Loop("i", 8, (Store(1, i, const(0.0, dtypes.float32)),), LoopKind.VECTOR)
    verify(_kernel((Local(1), fill)))
    with pytest.raises(KernelIRError, match="outside the block"):
        verify(_kernel((fill,)))


def test_verifier_rejects_a_local_written_from_a_parallel_loop() -> None:
    i = Var("i", INDEX)
    fill = Loop("i", 8, (Store(1, i, const(0.0, dtypes.float32)),), LoopKind.PARALLEL)
    with pytest.raises(KernelIRError, match="races"):
        verify(_kernel((Local(1), fill)))
