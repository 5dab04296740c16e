"""Software prefetch of gathered rows (codegen/c_prefetch.py): a row gather from a table
larger than MIN_BYTES asks for the row AHEAD iterations on, reading the index buffer
only inside its bounds; a small table gets no hint; and the values stay the gather's
(against numpy), also for ids a guard skips."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from anychip import dtypes
from anychip.backends.cpu import compiler
from anychip.codegen import c_prefetch
from anychip.codegen.c import CRenderer
from anychip.ir.kernel import (
    INDEX,
    BufDecl,
    BufRole,
    KernelIR,
    KernelKind,
    Let,
    Load,
    Loop,
    LoopKind,
    Store,
    Var,
    alu,
    const,
)
from anychip.ir.ops import Ops
from anychip.ir.verify import verify

pytestmark = pytest.mark.skipif(compiler.find_compiler() is None, reason="no C compiler")
F32, I64 = dtypes.float32, dtypes.int64
N, D = 256, 16


def _gather(rows: int) -> KernelIR:
    """out[s, d] = table[ids[s], d] where 0 <= ids[s] < rows, else 0."""
    s, d = Var("s", INDEX), Var("d", INDEX)
    row = Var("row", INDEX)
    ok = Var("ok", dtypes.bool_)
    b = dtypes.bool_
    low, high = alu(Ops.CMPLT, const(-1), row, dtype=b), alu(Ops.CMPLT, row, const(rows), dtype=b)
    inside = alu(Ops.MUL, low, high, dtype=b)
    at = alu(Ops.ADD, alu(Ops.MUL, row, const(D)), d)
    inner = Loop(
        "d",
        D,
        (Store(0, alu(Ops.ADD, alu(Ops.MUL, s, const(D)), d), Load(2, at, F32, ok)),),
        LoopKind.VECTOR,
    )
    body = (Let("row", Load(1, s, I64)), Let("ok", inside), inner)
    bufs = (
        BufDecl("out", F32, N * D, BufRole.OUT),
        BufDecl("ids", I64, N, BufRole.IN),
        BufDecl("table", F32, rows * D, BufRole.IN),
    )
    return KernelIR("k", KernelKind.ELEMENTWISE, bufs, (Loop("s", N, body),))


@pytest.mark.parametrize("rows", [40_000, 100])
def test_gather_from_a_large_table_prefetches_and_keeps_its_values(rows: int) -> None:
    k = _gather(rows)
    verify(k)
    src = CRenderer().render(k)
    big = rows * D * 4 >= c_prefetch.MIN_BYTES
    assert ("__builtin_prefetch(&b2[" in src) == big
    if big:  # the index buffer is read at min(s + AHEAD, N - 1): never past its end
        assert f"(s + INT64_C({c_prefetch.AHEAD}))" in src and "INT64_C(255)" in src
    rng = np.random.default_rng(3)
    ids = rng.integers(0, rows, N).astype(np.int64)
    ids[::7] = rows + 5  # out of the table: the guard skips them
    ids[::11] = -(2**40)
    table = rng.standard_normal((rows, D)).astype(np.float32)
    fn = compiler.build(src, compiler.GENERIC_FLAGS).k
    fn.restype, fn.argtypes = None, [ctypes.c_void_p] * 3
    out = np.full((N, D), np.nan, np.float32)
    fn(out.ctypes.data, ids.ctypes.data, table.ctypes.data)
    ok = (ids >= 0) & (ids < rows)
    want = np.where(ok[:, None], table[np.clip(ids, 0, rows - 1)], 0.0)
    np.testing.assert_array_equal(out, want)
