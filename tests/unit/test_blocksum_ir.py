"""The blocksum pass: a long float sum's IR adds at most a block of terms into a fresh
partial and folds each partial into the total with TwoSum compensation (scalar
accumulators, column tiles, row partials, middle-axis rows); short sums, integer sums and
max/min are left alone. Interpreting the rewritten IR by hand gives the exact sum."""

from __future__ import annotations

import math

import numpy as np

import anychip as ac
from anychip.ir.kernel import (
    INDEX,
    Acc,
    BufDecl,
    BufRole,
    Const,
    KernelIR,
    KernelKind,
    Let,
    Load,
    Loop,
    LoopKind,
    Store,
    Update,
    Var,
    const,
    walk_stmts,
)
from anychip.ir.ops import Ops
from anychip.ir.verify import verify
from anychip.passes.blocksum import BLOCK, SCALAR_BLOCK, block_sums
from anychip.passes.pipeline import lower_kernel
from anychip.runtime.realize import plan


def ir_of(t: ac.Tensor) -> KernelIR:
    (item,) = [w for w in plan([t.node]) if w.kernel is not None]
    return lower_kernel(item.kernel)


def test_whole_sum_adds_blocks_with_compensation() -> None:
    # blocks of 64 lanes * BLOCK contiguous terms (rowsplit then splits each into lanes)
    x = ac.tensor(np.ones(1 << 20, np.float32)).realize()
    k = ir_of(x.sum())
    accs = [s.var for s in walk_stmts(k.body) if isinstance(s, Acc)]
    assert any(a.startswith("comp") for a in accs) and any(a.startswith("part") for a in accs)
    assert sum(isinstance(s, Let) for s in walk_stmts(k.body)) >= 3  # TwoSum's temporaries
    outer = next(s for s in k.body if isinstance(s, Loop))
    assert outer.kind is LoopKind.REDUCE  # still threaded by the renderer
    assert outer.extent == (1 << 20) // (64 * BLOCK)
    chunks = [
        s for s in walk_stmts(outer.body) if isinstance(s, Loop) and s.kind is LoopKind.SERIAL
    ]
    assert any(c.extent == BLOCK for c in chunks)  # each lane adds BLOCK terms per block
    # a strided whole-tensor sum is left to vector lanes: SCALAR_BLOCK terms per block
    k = ir_of(ac.tensor(np.ones((1 << 16, 2), np.float32)).realize().sum(0))
    blocks = [s for s in walk_stmts(k.body) if isinstance(s, Loop) and s.var.startswith("blk")]
    assert blocks and all(b.extent <= SCALAR_BLOCK for b in blocks)
    (part_loop,) = [b for b in blocks if b.extent == SCALAR_BLOCK]
    assert all(isinstance(u, Update) and u.var.startswith("part") for u in part_loop.body)


def test_column_and_middle_sums_block_their_lanes() -> None:
    for t in (
        ac.tensor(np.ones((10_000, 64), np.float32)).sum(0),  # interchange's tile
        ac.tensor(np.ones((4, 5000, 64), np.float32)).sum(1),  # reduce_into_rows' rows
    ):
        k = ir_of(t)
        names = [b.name for b in k.bufs if b.role is BufRole.LOCAL]
        assert any(n.endswith("_comp") for n in names) and any(n.endswith("_block") for n in names)
        blocks = [s for s in walk_stmts(k.body) if isinstance(s, Loop) and s.var.startswith("blk")]
        assert blocks and all(b.extent <= BLOCK for b in blocks)
    # rows: blocked as scalar sums first, then split into rowsplit's lanes of partials
    k = ir_of(ac.tensor(np.ones((4, 64 * 200), np.float32)).sum(1))
    assert any(isinstance(s, Acc) and s.var.startswith("comp") for s in walk_stmts(k.body))
    assert any(b.name.endswith("_part") for b in k.bufs)


def test_short_integer_and_extreme_reductions_are_left_alone() -> None:
    for t in (
        ac.tensor(np.ones((64, 1000), np.float32)).sum(1),  # 16 chunks of row partials
        ac.tensor(np.ones((32, 256), np.float32)).sum(0),  # 32 rows: one block
        ac.tensor(np.ones(SCALAR_BLOCK, np.float32)).sum(),
        ac.tensor(np.ones(1 << 20, np.int32)).sum(),
        ac.tensor(np.ones(1 << 20, np.float32)).amax(),
    ):
        k = ir_of(t)
        assert not any(isinstance(s, Acc) and s.var.startswith("comp") for s in walk_stmts(k.body))
        assert not any(b.name.endswith("_comp") for b in k.bufs)


def _run(k: KernelIR, inputs: dict[int, np.ndarray]) -> np.ndarray:
    """A tiny interpreter of the scalar statements this test builds, in float32."""
    env: dict[str, np.float32 | int] = {}
    bufs = {i: np.array(a) for i, a in inputs.items()}
    for i, b in enumerate(k.bufs):
        bufs.setdefault(i, np.zeros(b.size, np.float32))

    def ev(e: object) -> np.float32 | int:
        if isinstance(e, Var):
            return env[e.name]
        if isinstance(e, Load):
            return bufs[e.buf][int(ev(e.index))]  # type: ignore[no-any-return]
        if isinstance(e, Const):
            return np.float32(e.value) if e.dtype is not INDEX else int(e.value)
        a = [ev(s) for s in e.srcs]  # type: ignore[attr-defined]
        op = e.op  # type: ignore[attr-defined]
        if op is Ops.ADD:
            return a[0] + a[1]
        if op is Ops.MUL:
            return a[0] * a[1]
        assert op is Ops.NEG
        return -a[0]

    def run(body: tuple) -> None:
        for s in body:
            if isinstance(s, Loop):
                for i in range(s.extent):
                    env[s.var] = i
                    run(s.body)
            elif isinstance(s, Acc):
                env[s.var] = np.float32(0)
            elif isinstance(s, Let):
                env[s.var] = ev(s.value)
            elif isinstance(s, Update):
                env[s.var] = np.float32(env[s.var] + ev(s.value))
            elif isinstance(s, Store):
                v = ev(s.value)
                at = int(ev(s.index))
                bufs[s.buf][at] = bufs[s.buf][at] + v if s.combine is Ops.ADD else v

    with np.errstate(all="ignore"):
        run(k.body)
    return bufs[0]


def test_compensation_recovers_what_a_float32_total_drops() -> None:
    # 2**24, then blocks that each add up to 1 (exactly): 2**24 + 1 rounds back to 2**24
    # (a tie, to even), so a float32 total stays at 2**24 however it is blocked; the
    # compensation keeps every lost 1 and adds them back
    f32 = np.float32
    blocks, size = 16, 64 * BLOCK  # a contiguous row: 64 lanes of BLOCK terms per block
    x = np.full(size * (blocks + 1), f32(1 / size), f32)
    x[0], x[1:size] = f32(1 << 24), 0
    n = x.size
    r = Var("r", INDEX)
    body = (
        Acc("a", Ops.SUM, ac.float32),
        Loop("r", n, (Update("a", Load(1, r, ac.float32)),), LoopKind.REDUCE),
        Store(0, const(0), Var("a", ac.float32)),
    )
    bufs = (BufDecl("out", ac.float32, 1, BufRole.OUT), BufDecl("x", ac.float32, n, BufRole.IN))
    k = KernelIR("k", KernelKind.REDUCE, bufs, body)
    blocked = verify(block_sums(k))
    assert _run(k, {1: x})[0] == f32(1 << 24)
    assert _run(blocked, {1: x})[0] == f32((1 << 24) + blocks) == math.fsum(x.tolist())


def test_long_running_sums_are_blocked_short_ones_left_alone() -> None:
    row = ir_of(ac.tensor(np.ones(1 << 12, np.float32)).cumsum(0))
    accs = [s.var for s in walk_stmts(row.body) if isinstance(s, Acc)]
    assert any(a.startswith("comp") for a in accs)
    blocks = [s for s in walk_stmts(row.body) if isinstance(s, Loop) and s.var.startswith("blk")]
    assert blocks and all(b.extent <= BLOCK for b in blocks)
    cols = ir_of(ac.tensor(np.ones((1000, 64), np.float32)).cumsum(0))
    names = [b.name for b in cols.bufs if b.role is BufRole.LOCAL]
    assert any(n.endswith("_run") for n in names) and any(n.endswith("_comp") for n in names)
    for t in (
        ac.tensor(np.ones((100, 64), np.float32)).cumsum(1),
        ac.tensor(np.ones((100, 64), np.float32)).cumsum(0),
    ):
        k = ir_of(t)
        assert all(b.role is not BufRole.LOCAL for b in k.bufs)
        assert not any(isinstance(s, Acc) and s.var.startswith("comp") for s in walk_stmts(k.body))
