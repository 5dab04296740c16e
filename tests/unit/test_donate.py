"""Buffer donation's static parts: which kernel inputs may be written over (`donors`), the
donated scatter's IR (no copy of its base), the C signature of aliased buffers, the cpu
launcher finishing a donated chunked kernel under Ctrl-C, and realised nodes letting go of
their sources."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

import anychip as ac
from anychip.backends.cpu import run_all
from anychip.backends.cpu.renderer import CpuRenderer
from anychip.ir.kernel import KernelKind, Store, walk_stmts
from anychip.ir.ops import Ops
from anychip.passes.pipeline import compile_source, lower_kernel
from anychip.runtime.donate import donors
from anychip.runtime.realize import plan


def _kernel(t: ac.Tensor) -> Any:
    (item,) = [w for w in plan([t.node]) if w.kernel is not None]
    return item.kernel


def _given(t: ac.Tensor, *inputs: ac.Tensor) -> list[int]:
    """Which of `inputs` (by position) the kernel computing t may write over."""
    (item,) = [w for w in plan([t.node]) if w.kernel is not None]
    may = donors(item.kernel.ast, item.kernel.kind)
    bufs = [item.ins[j] for j in may]
    return [i for i, x in enumerate(inputs) if any(b is x.node.arg for b in bufs)]


def test_elementwise_inputs_read_in_place_may_be_given() -> None:
    a, b = ac.ones(4, 3, device="ref").realize(), ac.ones(4, 3, device="ref").realize()
    assert _given(a * 2 + b.exp(), a, b) == [0, 1]


def test_inputs_read_elsewhere_or_of_another_shape_may_not() -> None:
    a = ac.ones(4, 3, device="ref").realize()
    row = ac.ones(3, device="ref").realize()
    assert _given(a + a.flip(0), a) == []  # a read at another element too
    assert _given(a * row, a, row) == [0]  # row is broadcast: one element read by many
    half = ac.ones(4, 3, dtype=ac.float16, device="ref").realize()
    assert _given(half.float() + a, half, a) == [1]  # another dtype: another element size


def test_a_scatter_may_write_over_its_base_unless_its_source_reads_it() -> None:
    w = ac.zeros(6, 2, device="ref").realize()
    idx = ac.tensor([1, 4], device="ref").realize()
    src = ac.ones(2, 2, device="ref").realize()
    assert _kernel(w.index_add(0, idx, src)).kind is KernelKind.SCATTER
    assert _given(w.index_add(0, idx, src), w, idx, src) == [0]
    assert _given(w.index_add(0, idx, w[idx] * 2), w, idx) == []  # the source reads the base


def _plain_stores(kernel: Any) -> list[Store]:
    ir = lower_kernel(kernel)
    return [s for s in walk_stmts(ir.body) if isinstance(s, Store) and s.combine is None]


def test_a_donated_scatter_does_not_copy_its_base() -> None:
    w = ac.zeros(1000, 8, device="ref").realize()
    idx = ac.tensor([3, 7], device="ref").realize()
    k = _kernel(w.index_add(0, idx, ac.ones(2, 8, device="ref").realize()))
    assert len(_plain_stores(k)) == 1  # the copy of the base into the new buffer
    donated = replace(k, alias=donors(k.ast, k.kind)[0])
    assert _plain_stores(donated) == []  # only the indexed adds
    assert lower_kernel(donated).alias == 1 + donors(k.ast, k.kind)[0]


@pytest.mark.skipif("cpu" not in ac.devices(), reason="the C renderer's output is compiled")
def test_aliased_buffers_are_not_restrict_in_c() -> None:
    a = ac.ones(8, device="cpu").realize()
    k = _kernel(a * 3)
    plain = compile_source(k, CpuRenderer(), "k")
    aliased = compile_source(replace(k, alias=0), CpuRenderer(), "k")
    assert "*restrict b0" in plain and "*restrict b1" in plain
    assert "*restrict b0" not in aliased and "*restrict b1" not in aliased


def test_run_all_finishes_every_span_before_raising() -> None:
    done: list[tuple[int, int]] = []

    def fn(*args: Any) -> None:
        lo, hi = args[-3], args[-2]
        done.append((lo, hi))
        if lo == 2:
            raise KeyboardInterrupt  # as Python raises it after the call returns

    spans = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    with pytest.raises(KeyboardInterrupt):
        run_all(fn, ("out",), spans, 0)
    assert done == spans  # each span once, none skipped


def test_a_realised_node_forgets_its_sources() -> None:
    x = ac.ones(3, device="ref")
    y = (x + 1) * 2
    node = y.node
    assert node.srcs
    y.realize()
    assert node.srcs == () and node.op is Ops.MUL
    assert y.tolist() == [4.0, 4.0, 4.0]
