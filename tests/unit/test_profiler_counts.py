"""The profiler's counting rules (docs/profiler.md) against hand-derived counts: FLOPs from
the primitive graph (2*M*N*K per contraction, n-1 combines per sum), bytes from the input
elements a kernel can touch plus the output it writes, and the kernels' names."""

from __future__ import annotations

import anychip as ac
from anychip.profiler import Counts, kernel_counts
from anychip.runtime.realize import plan

DEV = "ref"  # planning only: nothing below launches a counted kernel


def counts_of(t: ac.Tensor) -> list[Counts]:
    """The counts of each kernel that would compute `t` (none is run)."""
    return [kernel_counts(w.kernel) for w in plan([t.node]) if w.kernel is not None]


def test_batched_matmul_is_two_mnk_per_batch() -> None:
    b, m, k, n = 2, 3, 4, 5
    a = ac.randn(b, m, k, device=DEV).realize()
    w = ac.randn(b, k, n, device=DEV).realize()
    (c,) = counts_of(a @ w)
    assert c.flops == c.matrix_flops == 2 * b * m * n * k
    assert c.bytes == 4 * (b * m * k + b * k * n + b * m * n)  # float32 in, in, out
    assert c.name == "contraction"


def test_half_matmul_casts_cost_nothing_and_bytes_use_storage_sizes() -> None:
    m, k, n = 6, 8, 4
    a = ac.randn(m, k, device=DEV).half().realize()
    w = ac.randn(k, n, device=DEV).half().realize()
    # one kernel: float32 accumulators rounded to float16 in its store (no cast kernel)
    (mm,) = counts_of(a @ w)
    assert (mm.name, mm.flops) == ("contraction", 2 * m * n * k)
    assert mm.bytes == 2 * (m * k + k * n) + 2 * m * n


def test_sum_reads_n_elements_and_combines_n_minus_one() -> None:
    x = ac.randn(100, device=DEV).realize()
    (c,) = counts_of(x.sum())
    assert (c.flops, c.matrix_flops, c.bytes) == (99, 0, 100 * 4 + 4)
    assert c.name == "reduce_sum"


def test_row_sums_combine_within_rows() -> None:
    x = ac.randn(3, 7, device=DEV).realize()
    (c,) = counts_of(x.sum(1))
    assert c.flops == 3 * (7 - 1)
    assert c.bytes == 4 * (21 + 3)


def test_fused_elementwise_counts_one_op_per_element_per_primitive() -> None:
    a, b, c = (ac.randn(50, device=DEV).realize() for _ in range(3))
    (k,) = counts_of(a * b + c)
    assert (k.flops, k.bytes, k.name) == (100, 4 * 50 * 4, "elementwise_mul_add")


def test_broadcast_input_is_read_once() -> None:
    v = ac.randn(5, device=DEV).realize()
    y = ac.randn(3, 5, device=DEV).realize()
    (k,) = counts_of(v + y)
    assert k.flops == 15
    assert k.bytes == 4 * (5 + 15 + 15)  # v's 5 elements, not its 15 broadcast reads


def test_a_slice_reads_only_its_elements() -> None:
    x = ac.randn(100, device=DEV).realize()
    (k,) = counts_of(x[2:5] + 1.0)
    assert (k.flops, k.bytes) == (3, 4 * 3 + 4 * 3)


def test_gather_reads_the_rows_it_gathers_not_the_whole_table() -> None:
    table = ac.randn(1000, 8, device=DEV).realize()
    idx = ac.tensor([3, 1, 4, 1, 5], device=DEV).realize()
    (k,) = counts_of(ac.nn.functional.embedding(idx, table))
    # 5 looked-up rows of 8 float32, the 5x8 int64 index reads it takes, the 5x8 output
    assert k.flops == 0
    assert k.bytes == 5 * 8 * 4 + 5 * 8 + 5 * 8 * 4
    assert k.name == "elementwise_gather"


def test_cumsum_and_sort_counts() -> None:
    x = ac.randn(3, 8, device=DEV).realize()
    (scan,) = counts_of(x.cumsum(1))
    assert (scan.flops, scan.name) == (3 * 7, "scan_cumsum")
    (srt,) = counts_of(x.argsort(1))
    assert srt.flops == 3 * 8 * 3  # n * ceil(log2 n) comparisons per row of 8
    assert srt.bytes == 3 * 8 * 4 + 3 * 8 * 8  # float32 in, int64 out


def test_runtime_scalars_are_not_memory_traffic() -> None:
    x = ac.randn(10, device=DEV).realize()
    (k,) = counts_of(x * 0.5 + 2.0)
    assert k.bytes == 2 * 10 * 4  # x in, result out; the scalars are launch arguments
    assert k.flops == 20


def test_long_names_are_cut_with_a_count() -> None:
    x = ac.randn(4, 6, device=DEV).realize()
    names = [c.name for c in counts_of(x.softmax(-1))]
    assert names == ["row_rmax_neg_add_exp_+3"]  # then sum, div, mul
