"""Scheduling and fusion: how many kernels a graph becomes, and what they read."""

from __future__ import annotations

import numpy as np

import anychip as ac
import anychip.nn.functional as F
from anychip.ir.kernel import KernelKind
from anychip.ir.verify import verify
from anychip.passes.lower import lower
from anychip.passes.pipeline import lower_kernel
from anychip.runtime.realize import plan


def kernels(t: ac.Tensor) -> list:
    return [w for w in plan([t.node]) if w.kernel is not None]


def inputs(shape: tuple[int, ...], n: int = 3) -> list[ac.Tensor]:
    rng = np.random.default_rng(0)
    return [ac.tensor(rng.standard_normal(shape).astype(np.float32)).realize() for _ in range(n)]


def test_elementwise_chain_is_one_kernel() -> None:
    a, b, c = inputs((8, 16))
    (k,) = kernels((a * b + c).relu())
    assert k.kernel.kind is KernelKind.ELEMENTWISE
    assert len(k.ins) == 3


def test_chain_into_sum_is_one_kernel() -> None:
    a, b, c = inputs((8, 16))
    (k,) = kernels((a * b + c).relu().sum())
    assert k.kernel.kind is KernelKind.REDUCE


def test_row_ops_are_one_kernel_each() -> None:
    (x,) = inputs((6, 10), 1)
    w, b = inputs((10,), 2)
    for t in (x.softmax(-1), x.log_softmax(-1), F.layer_norm(x, (10,), w, b)):
        (k,) = kernels(t)
        assert k.kernel.kind is KernelKind.ROW
        # the row's max/mean and sum are computed once per row, not once per element
        ir = lower_kernel(k.kernel)
        outer = ir.body[0]
        assert outer.extent == 6 and len([s for s in outer.body if hasattr(s, "op")]) >= 1


def test_broadcast_and_permute_are_read_in_place() -> None:
    (x,) = inputs((4, 5), 1)
    (y,) = inputs((4,), 1)
    (k,) = kernels(x.permute(1, 0) + y)
    # the inputs are the realised buffers themselves: no copy kernel, no expanded buffer
    assert sorted(b.size for b in k.ins) == [4, 20]
    assert k.out.size == 20


def test_realised_inputs_are_not_recomputed() -> None:
    a, b, _ = inputs((3, 3))
    mid = (a * b).exp().realize()
    (k,) = kernels(mid + 1)
    assert [buf.size for buf in k.ins] == [9]


def test_matmul_gets_a_contraction_kernel_with_spec() -> None:
    a, b = inputs((2, 4, 8), 2)
    (k,) = [w for w in kernels(a @ b.transpose(1, 2)) if w.kernel.kind is KernelKind.CONTRACTION]
    spec = lower_kernel(k.kernel).contraction
    assert spec is not None and (spec.batch, spec.m, spec.n, spec.k) == ((2,), 4, 4, 8)
    # b.transpose is read in place: its row (k) stride is 1, its column (n) stride 8
    assert (spec.b.rows, spec.b.cols) == (1, 8)


def test_half_matmul_rounds_in_its_contraction_kernel() -> None:
    # float16 products accumulate in float32; the rounding to float16 is the contraction
    # kernel's store, not a kernel of its own (an extra pass over the output)
    a, b = (t.to(ac.float16).realize() for t in inputs((16, 32), 2))
    (k,) = kernels(a @ b.T)
    assert k.kernel.kind is KernelKind.CONTRACTION
    spec = lower_kernel(k.kernel).contraction
    assert spec is not None and spec.out.dtype is ac.float16 and spec.a.dtype is ac.float16
    assert (spec.m, spec.n, spec.k) == (16, 16, 32)


def test_every_scheduled_kernel_lowers_to_verified_ir() -> None:
    a, b, c = inputs((4, 6))
    graph = ((a @ b.T).softmax(-1).cumsum(0) + c.sum(0)[:4].reshape(4, 1)).argsort(-1)
    for w in kernels(graph):
        verify(lower(w.kernel))
        lower_kernel(w.kernel)
