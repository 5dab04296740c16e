"""ARGSORT with k (top-k) at the IR level: the primitive's shape and numpy rule, the
verifier's bounds for SortRow, and the C sort kernel (rows on threads, k passed on)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from anychip import dtypes
from anychip.backends.cpu import compiler
from anychip.codegen.c import CRenderer
from anychip.ir.kernel import (
    INDEX,
    BufDecl,
    BufRole,
    KernelIR,
    KernelKind,
    Loop,
    LoopKind,
    SortRow,
    Var,
    alu,
    const,
)
from anychip.ir.ops import Ops
from anychip.ir.primitives import RULES
from anychip.ir.verify import KernelIRError, verify

ROWS, N, K = 300, 200, 5


def test_ref_rule_keeps_the_first_k_of_the_stable_order() -> None:
    a = np.array([[3.0, 1.0, np.nan, 1.0, -0.0, 0.0], [2.0, 2.0, 2.0, -1.0, 5.0, np.nan]])
    asc = np.argsort(a, 1, kind="stable")
    np.testing.assert_array_equal(RULES[Ops.ARGSORT].ref((1, False, 3), a), asc[:, :3])
    # descending: NaN first, then largest; ties keep index order
    np.testing.assert_array_equal(RULES[Ops.ARGSORT].ref((1, True, 2), a), [[2, 0], [5, 4]])
    assert RULES[Ops.ARGSORT].ref((0, False, 0), a).shape == (0, 6)


def sort_kernel(k: int | None) -> KernelIR:
    i = Var("i0", INDEX)
    width = N if k is None else k
    row = SortRow(0, alu(Ops.MUL, i, const(width)), 1, 1, alu(Ops.MUL, i, const(N)), 1, N, True, k)
    bufs = (
        BufDecl("out", dtypes.int64, ROWS * width, BufRole.OUT),
        BufDecl("in0", dtypes.float32, ROWS * N, BufRole.IN),
    )
    return KernelIR("k", KernelKind.SORT, bufs, (Loop("i0", ROWS, (row,), LoopKind.PARALLEL),))


def test_verify_bounds_the_output_row_by_k() -> None:
    verify(sort_kernel(K))
    loop = sort_kernel(K).body[0]
    assert isinstance(loop, Loop) and isinstance(loop.body[0], SortRow)
    row = loop.body[0]
    for bad_k in (N + 1, K + 1):  # more than the row holds; past the k-wide output
        bad = SortRow(0, row.dst_base, 1, 1, row.src_base, 1, N, True, bad_k)
        with pytest.raises(KernelIRError):
            verify(KernelIR("k", KernelKind.SORT, sort_kernel(K).bufs, (Loop("i0", ROWS, (bad,)),)))


@pytest.mark.skipif(compiler.find_compiler() is None, reason="no C compiler")
@pytest.mark.parametrize("k", [None, 1, K, 33, N])
def test_c_sort_rows_run_on_threads_and_stop_at_k(k: int | None) -> None:
    src = CRenderer().render(sort_kernel(k))
    body = src[src.index("void k(") :]
    assert "#pragma omp parallel for\n" in body and "simd" not in body
    fn = compiler.build(src, compiler.GENERIC_FLAGS).k
    fn.restype, fn.argtypes = None, [ctypes.c_void_p] * 2
    x = np.random.default_rng(0).integers(-20, 20, (ROWS, N)).astype(np.float32)
    width = N if k is None else k
    out = np.full((ROWS, width), -1, np.int64)
    fn(out.ctypes.data, x.ctypes.data)
    want = N - 1 - np.argsort(x[:, ::-1], 1, kind="stable")[:, ::-1]  # stable descending
    np.testing.assert_array_equal(out, want[:, :width])
