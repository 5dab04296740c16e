"""The C renderer's common subexpressions: text rebuilt by lowering is computed once, and
never shared across a change of the memory or accumulator it reads (checked by running)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from anychip import dtypes
from anychip.backends.cpu import compiler
from anychip.codegen.c import CRenderer
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
    Stmt,
    Store,
    Update,
    Var,
    const,
)
from anychip.ir.ops import Ops
from anychip.ir.verify import verify

pytestmark = pytest.mark.skipif(compiler.find_compiler() is None, reason="no C compiler")
F32 = dtypes.float32
BUFS = (BufDecl("out", F32, 4, BufRole.OUT), BufDecl("in0", F32, 4, BufRole.IN))


def run(body: tuple[Stmt, ...], x: np.ndarray) -> tuple[np.ndarray, str]:
    k = KernelIR("k", KernelKind.ELEMENTWISE, BUFS, body)
    verify(k)
    src = CRenderer().render(k)
    fn = compiler.build(src, compiler.GENERIC_FLAGS).k
    fn.restype, fn.argtypes = None, [ctypes.c_void_p] * 2
    out = np.full(4, np.nan, np.float32)
    fn(out.ctypes.data, x.ctypes.data)
    return out, src[src.index("void k(") :]


def exp_of(buf: int, i: Var) -> Alu:
    return Alu(Ops.EXP, (Load(buf, i, F32),), F32)


def test_a_rebuilt_subexpression_is_computed_once() -> None:
    i = Var("i", INDEX)
    x = np.array([0.5, -1.0, 2.0, 0.0], np.float32)
    twice = Alu(Ops.ADD, (exp_of(1, i), exp_of(1, i)), F32)  # two equal trees, not one
    out, body = run((Loop("i", 4, (Store(0, i, twice),)),), x)
    assert body.count("ac_expf(") == 1
    np.testing.assert_allclose(out, 2 * np.exp(x.astype(np.float64)), rtol=1e-6)


def test_no_sharing_across_an_accumulator_update() -> None:
    r, s = Var("r", INDEX), Var("s", INDEX)
    acc = Var("acc0", F32)
    plus1 = Alu(Ops.ADD, (acc, const(1.0, F32)), F32)  # the same text, before and after
    body = (
        Acc("acc0", Ops.SUM, F32),
        Loop("r", 4, (Update("acc0", Load(1, r, F32)),)),
        Store(0, const(0, INDEX), plus1),
        Loop("s", 4, (Update("acc0", Load(1, s, F32)),)),
        Store(0, const(1, INDEX), Alu(Ops.ADD, (acc, const(1.0, F32)), F32)),
    )
    x = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    out, _ = run(body, x)
    assert out[0] == 11.0 and out[1] == 21.0


def test_no_sharing_of_memory_the_kernel_writes() -> None:
    i = Var("i", INDEX)
    zero = const(0, INDEX)
    body = (
        Store(0, zero, const(5.0, F32)),
        Store(0, const(1, INDEX), Load(0, zero, F32)),  # reads 5
        Store(0, zero, const(7.0, F32)),
        Store(0, const(2, INDEX), Load(0, zero, F32)),  # the same text, now reads 7
        Loop("i", 1, (Store(0, const(3, INDEX), exp_of(1, i)),)),
    )
    out, _ = run(body, np.zeros(4, np.float32))
    np.testing.assert_array_equal(out, [7.0, 5.0, 7.0, 1.0])
