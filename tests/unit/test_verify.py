"""The kernel-IR verifier rejects malformed IR with a message naming the problem."""

from __future__ import annotations

import pytest

from anychip import dtypes
from anychip.ir.kernel import (
    INDEX,
    Acc,
    Alu,
    BufDecl,
    BufRole,
    KernelIR,
    KernelKind,
    Load,
    Loop,
    LoopKind,
    Stmt,
    Store,
    Update,
    Var,
    const,
)
from anychip.ir.ops import Ops
from anychip.ir.verify import KernelIRError, verify

F32 = dtypes.float32
I = Var("i", INDEX)
BUFS = (BufDecl("out", F32, 4, BufRole.OUT), BufDecl("in0", F32, 4, BufRole.IN))


def kernel(*body: Stmt, bufs: tuple[BufDecl, ...] = BUFS) -> KernelIR:
    return KernelIR("k", KernelKind.ELEMENTWISE, bufs, tuple(body))


def test_well_formed_kernel_passes() -> None:
    k = kernel(Loop("i", 4, (Store(0, I, Load(1, I, F32)),), LoopKind.PARALLEL))
    assert verify(k) is k


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ((Store(0, I, const(1.0, F32)),), "i is used outside the scope"),
        ((Loop("i", 5, (Store(0, I, const(1.0, F32)),)),), "outside b0 of size 4"),
        ((Loop("i", 4, (Store(1, I, const(1.0, F32)),)),), "store into input buffer b1"),
        ((Loop("i", 4, (Store(0, I, const(1, dtypes.int32)),)),), "store of int32 into b0"),
        ((Loop("i", 4, (Store(0, I, Load(7, I, F32)),)),), "names buffer b7"),
        ((Loop("i", 4, (Store(0, I, Load(1, I, dtypes.float64)),)),), "load of float64"),
        (
            (Loop("i", 4, (Store(0, I, Alu(Ops.ADD, (Load(1, I, F32), const(1, INDEX)), F32)),)),),
            "ADD of (float32, int64) -> float32 is ill-typed",
        ),
        ((Loop("i", 4, (Update("acc", const(1.0, F32)),)),), "not an accumulator"),
        (
            (
                Acc("a", Ops.SUM, F32),
                Loop("i", 4, (Update("a", Load(1, I, F32)),), LoopKind.PARALLEL),
            ),
            "inside a parallel loop races",
        ),
        (
            (Loop("i", 4, (Loop("j", 4, (), LoopKind.PARALLEL),), LoopKind.VECTOR),),
            "nested in a vector loop",
        ),
        ((Loop("i", 4, (Loop("i", 4, ()),)),), "already bound"),
        ((Acc("a", Ops.ADD, F32),), "non-reduce op ADD"),
    ],
)
def test_malformed_kernel_is_rejected(body: tuple[Stmt, ...], message: str) -> None:
    with pytest.raises(KernelIRError, match=message.replace("(", r"\(").replace(")", r"\)")):
        verify(kernel(*body))


def test_output_buffer_comes_first() -> None:
    with pytest.raises(KernelIRError, match="bufs\\[0\\] must be the output"):
        verify(kernel(bufs=(BUFS[1], BUFS[0])))
