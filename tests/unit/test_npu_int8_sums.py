"""int8 sums and products on the npu (`lower_accs.py`): accumulated in i16, whose wrapping
sums and products agree with int8's modulo 2^8, and wrapped to int8 when read (a value
used after the sum sees the int8 result); combining stores widen the old values."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import anychip as ac

pytestmark = pytest.mark.skipif("npu" not in ac.devices(), reason="npu backend not present")
DESIGNS = ["npu:edge", "npu:datacenter"]
Op = Callable[[ac.Tensor], ac.Tensor]
Ref = Callable[[np.ndarray], np.ndarray]
I8 = ac.int8

CASES: list[tuple[str, tuple[int, ...], Op, Ref]] = [
    ("sum last axis", (5, 300), lambda t: t.sum(1, dtype=I8), lambda a: a.sum(1, dtype=np.int8)),
    ("sum first axis", (300, 7), lambda t: t.sum(0, dtype=I8), lambda a: a.sum(0, dtype=np.int8)),
    ("sum middle axis", (4, 64, 30), lambda t: t.sum(1, dtype=I8),
     lambda a: a.sum(1, dtype=np.int8)),
    ("sum of all", (3, 5000), lambda t: t.sum(dtype=I8), lambda a: a.sum(dtype=np.int8)),
    ("prod last axis", (6, 40, 50), lambda t: t.prod(2, dtype=I8),
     lambda a: a.prod(2, dtype=np.int8)),
    ("prod first axis", (300, 7), lambda t: t.prod(0, dtype=I8),
     lambda a: a.prod(0, dtype=np.int8)),
    ("prod middle axis", (4, 64, 30), lambda t: t.prod(1, dtype=I8),
     lambda a: a.prod(1, dtype=np.int8)),
    ("sum read as int8", (5, 300), lambda t: t.sum(1, dtype=I8) > 0,
     lambda a: a.sum(1, dtype=np.int8) > 0),
    ("sum then float", (5, 300), lambda t: t.sum(1, dtype=I8).to(ac.float32) / 2,
     lambda a: a.sum(1, dtype=np.int8).astype(np.float32) / 2),
    ("cumsum along rows", (5, 300), lambda t: t.cumsum(1, dtype=I8),
     lambda a: a.cumsum(1, dtype=np.int8)),
    ("cumsum down rows", (20, 70), lambda t: t.cumsum(0, dtype=I8),
     lambda a: a.cumsum(0, dtype=np.int8)),
    ("cumsum read as int8", (5, 300), lambda t: t.cumsum(1, dtype=I8) < 0,
     lambda a: a.cumsum(1, dtype=np.int8) < 0),
    ("amax middle axis", (4, 64, 30), lambda t: t.amax(1), lambda a: a.max(1)),
]  # fmt: skip


@pytest.mark.parametrize("design", DESIGNS)
@pytest.mark.parametrize(("name", "shape", "op", "ref"), CASES, ids=[c[0] for c in CASES])
def test_int8_sums_and_products_wrap_as_numpy(
    design: str, name: str, shape: tuple[int, ...], op: Op, ref: Ref
) -> None:
    a = np.random.default_rng(len(name)).integers(-128, 128, shape).astype(np.int8)
    got = op(ac.tensor(a, device=design)).numpy()
    want = ref(a)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
