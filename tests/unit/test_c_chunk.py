"""Which kernels the C renderer chunks and the text it gives them (codegen/c_chunk.py): small
kernels are untouched, long ones take a range of their heaviest loop, and a loop whose one
iteration is long hands the chunking to its inner loop."""

from __future__ import annotations

import pytest

from anychip import dtypes
from anychip.codegen import c_chunk
from anychip.codegen.c import CRenderer
from anychip.codegen.c_chunk import ChunkedCRenderer, Chunking, choose, cost, split_count
from anychip.errors import ArgumentError
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
    Store,
    Update,
    Var,
    const,
)
from anychip.ir.ops import Ops

F32 = dtypes.float32


def scale(n: int) -> KernelIR:
    """out[i] = in[i] * 2 over n elements: 5 expression nodes per element."""
    i = Var("i", INDEX)
    body = Store(0, i, Alu(Ops.MUL, (Load(1, i, F32), const(2.0, F32)), F32))
    bufs = (BufDecl("out", F32, n, BufRole.OUT), BufDecl("in", F32, n, BufRole.IN))
    return KernelIR(
        "scale", KernelKind.ELEMENTWISE, bufs, (Loop("i", n, (body,), LoopKind.PARALLEL),)
    )


def row_sums(rows: int, n: int) -> KernelIR:
    """out[r] = sum of in[r, :]: a parallel loop over few rows, each a long reduction."""
    r, j = Var("r", INDEX), Var("j", INDEX)
    idx = Alu(Ops.ADD, (Alu(Ops.MUL, (r, const(n)), INDEX), j), INDEX)
    inner = Loop("j", n, (Update("acc", Load(1, idx, F32)),), LoopKind.REDUCE)
    row = (Acc("acc", Ops.SUM, F32), inner, Store(0, r, Var("acc", F32)))
    bufs = (BufDecl("out", F32, rows, BufRole.OUT), BufDecl("in", F32, rows * n, BufRole.IN))
    return KernelIR("rows", KernelKind.REDUCE, bufs, (Loop("r", rows, row, LoopKind.PARALLEL),))


def test_cost_counts_expression_nodes_over_iterations() -> None:
    # per element: the store's index i, and the value mul(load(in, i), 2.0): 1 + 4
    assert cost(scale(1000).body) == 5000


def test_small_kernels_render_as_before() -> None:
    k = scale(1000)
    r = ChunkedCRenderer()
    assert r.render(k) == CRenderer().render(k)
    assert r.chunking is None


def test_a_long_kernel_takes_a_range_of_its_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(c_chunk.ENV, "500")
    r = ChunkedCRenderer()
    src = r.render(scale(1000))  # cost 5000 >= 4 * 500: 100 elements of cost 5 per chunk
    assert r.chunking == Chunking(extent=1000, step=100, state_bytes=8)
    assert "int64_t lo_, int64_t hi_, char *restrict st_)" in src
    assert "for (int64_t i = lo_; i < hi_; i++)" in src


def test_a_loop_of_few_long_iterations_chunks_its_inner_loop() -> None:
    k = row_sums(2, 100_000)
    plan = choose(k, 1000)
    assert plan is not None and plan.path == (0, 1)  # the reduction inside row r
    row = k.body[0]
    assert isinstance(row, Loop)
    assert plan.step == 1000 * 100_000 // cost((row.body[1],))
    many = choose(row_sums(4096, 100), 1000)  # short rows: ranges of rows
    assert many is not None and many.path == (0,)


def test_nested_chunks_keep_the_accumulator_per_row(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(c_chunk.ENV, "1000")
    r = ChunkedCRenderer()
    src = r.render(row_sums(2, 100_000))
    assert r.chunking is not None and r.chunking.outer == 2 and r.chunking.extent == 100_000
    assert "const int64_t r = o_;" in src
    assert "float acc = (lo_ == 0) ? 0.0f : *(float *)(st_ + 0);" in src


def test_gemm_chunks_are_divisors() -> None:
    assert split_count(4096, 4096 * 4096, 1 << 24) == 256
    assert split_count(2048, 2048 * 2048, 1 << 24) is None  # too small to chunk
    assert split_count(4099, 4096 * 4096, 1 << 24) is None  # prime rows: no even split


def test_a_bad_chunk_setting_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(c_chunk.ENV, "lots")
    with pytest.raises(ArgumentError, match="ANYCHIP_CHUNK_WORK='lots'"):
        c_chunk.chunk_work()
