"""The `transpose` pass on kernel IR: which nests it tiles and into what."""

from __future__ import annotations

from anychip import dtypes
from anychip.ir.kernel import (
    INDEX,
    BufDecl,
    BufRole,
    KernelIR,
    KernelKind,
    Load,
    Loop,
    LoopKind,
    Store,
    Var,
    alu,
    const,
    walk_stmts,
)
from anychip.ir.ops import Ops
from anychip.ir.verify import verify
from anychip.passes.transpose import tile_transposes

F32 = dtypes.float32
I, J = Var("i", INDEX), Var("j", INDEX)


def nest(rows: int, cols: int, src_index: object) -> KernelIR:
    store = Store(0, alu(Ops.ADD, alu(Ops.MUL, I, const(cols)), J), Load(1, src_index, F32))
    inner = Loop("j", cols, (store,), LoopKind.PARALLEL)
    bufs = (
        BufDecl("out", F32, rows * cols, BufRole.OUT),
        BufDecl("x", F32, rows * cols, BufRole.IN),
    )
    return KernelIR(
        "k", KernelKind.ELEMENTWISE, bufs, (Loop("i", rows, (inner,), LoopKind.PARALLEL),)
    )


def loops(k: KernelIR) -> list[tuple[str, int, str]]:
    return [(s.var, s.extent, s.kind.value) for s in walk_stmts(k.body) if isinstance(s, Loop)]


def test_a_transposed_read_is_tiled_in_squares() -> None:
    k = tile_transposes(nest(64, 32, alu(Ops.ADD, alu(Ops.MUL, J, const(64)), I)))
    verify(k)
    assert loops(k) == [
        ("ti", 4, "parallel"), ("tj", 2, "parallel"), ("i", 16, "serial"), ("j", 16, "vector")
    ]  # fmt: skip


def test_sides_divisible_by_8_only_get_8x8_tiles() -> None:
    k = tile_transposes(nest(24, 40, alu(Ops.ADD, alu(Ops.MUL, J, const(24)), I)))
    assert [x[1] for x in loops(k)] == [3, 5, 8, 8]


def test_plain_copies_and_indivisible_sides_are_left_alone() -> None:
    plain = nest(64, 32, alu(Ops.ADD, alu(Ops.MUL, I, const(32)), J))
    assert tile_transposes(plain) is plain
    odd = nest(100, 30, alu(Ops.ADD, alu(Ops.MUL, J, const(100)), I))
    assert tile_transposes(odd) is odd


def test_a_read_contiguous_further_out_is_moved_next_to_the_innermost_loop() -> None:
    # out[i, j, k] = x[j, k, i] (a (4, 16, 32) out from a (16, 32, 4)... permute(2, 0, 1)):
    # the read is contiguous along i, the outermost loop: i moves inside j, then tiles
    k_ = Var("k", INDEX)
    src = alu(
        Ops.ADD, alu(Ops.ADD, alu(Ops.MUL, J, const(32 * 16)), alu(Ops.MUL, k_, const(16))), I
    )
    dst = alu(
        Ops.ADD, alu(Ops.ADD, alu(Ops.MUL, I, const(16 * 32)), alu(Ops.MUL, J, const(32))), k_
    )
    store = Store(0, dst, Load(1, src, F32))
    nest = Loop("i", 16, (Loop("j", 16, (Loop("k", 32, (store,), LoopKind.PARALLEL),),
                                LoopKind.PARALLEL),), LoopKind.PARALLEL)  # fmt: skip
    bufs = (
        BufDecl("out", F32, 16 * 16 * 32, BufRole.OUT),
        BufDecl("x", F32, 16 * 16 * 32, BufRole.IN),
    )
    k = tile_transposes(KernelIR("k", KernelKind.ELEMENTWISE, bufs, (nest,)))
    verify(k)
    assert [x[0] for x in loops(k)] == ["j", "ti", "tk", "i", "k"]
