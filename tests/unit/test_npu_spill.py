"""Kernels with more buffers than the scalar registers address (`backends/npu/spill.py`):
the most used buffers keep their registers, the others' operands are relocated at launch;
values against numpy, with the functional simulator's race and bounds checks on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import anychip as ac
from anychip.backends.npu import cache, spill
from anychip.backends.npu.lower import Compiled, lower_ir
from anychip.backends.npu.lower_exprs import _all_stmts, _stmt_exprs
from anychip.ir.kernel import Load, walk_exprs
from anychip.npu.config import get_config
from anychip.npu.isa import DT, NUM_REGS, Dma, Ref, Space
from anychip.runtime.device import get_backend
from anychip.runtime.realize import plan

pytestmark = pytest.mark.skipif("npu" not in ac.devices(), reason="npu backend not present")


def _kernel(y: ac.Tensor) -> Any:
    (w,) = [w for w in plan([y.node]) if w.kernel is not None]
    return cache.kernel_ir(w.kernel)


def _dram(comp: Compiled) -> Iterator[Ref]:
    for code in comp.cores:
        for ins in code:
            for v in vars(ins).values():
                if isinstance(v, Ref) and v.space == Space.DRAM:
                    yield v


@pytest.mark.parametrize("design", ["npu", "npu:edge"])
@pytest.mark.parametrize("n", [40, 64])
def test_a_fused_sum_of_many_inputs_matches_numpy(n: int, design: str) -> None:
    rng = np.random.default_rng(n)
    xs = [rng.standard_normal((7, 301)).astype(np.float32) for _ in range(n)]
    ts = [ac.tensor(x, device=design) for x in xs]
    y = ts[0]
    for t in ts[1:]:
        y = y + t
    ir = _kernel(y)
    assert len(ir.bufs) == n + 1  # one kernel: the output and every input
    comp = lower_ir(ir, get_config(design.partition(":")[2] or "datacenter"))
    assert comp.relocs and sum(r != 0 for r in comp.regs) == spill.MAX_BUF_REGS
    assert max(r.reg for r in _dram(comp)) < NUM_REGS - 3  # args, tables, scratch after
    want = np.sum(np.stack(xs).astype(np.float64), axis=0)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-5, atol=1e-4)
    stats = get_backend(design).launch_stats()
    assert stats is not None and stats["time_s"] > 0


def test_a_kernel_that_fits_keeps_the_register_convention() -> None:
    ts = [ac.tensor(np.ones(100, np.float32), device="npu") for _ in range(spill.MAX_BUF_REGS - 1)]
    y = ts[0]
    for t in ts[1:]:
        y = y + t
    ir = _kernel(y)
    comp = lower_ir(ir, get_config("datacenter"))
    assert comp.regs == () and comp.relocs == ()
    assert comp.buffer_regs() == tuple(range(spill.BUF_REG, spill.BUF_REG + len(ir.bufs)))
    assert {r.reg for r in _dram(comp)} == set(comp.buffer_regs())
    assert (comp.arg_reg, comp.const_reg, comp.scratch_reg) == (29, 30, 31)
    np.testing.assert_array_equal(y.numpy(), np.full(100, len(ts), np.float32))


def test_the_most_used_buffers_keep_their_registers() -> None:
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal(64).astype(np.float32) for _ in range(40)]
    ts = [ac.tensor(x, device="npu") for x in xs]
    y = ts[0]
    for t in ts[1:]:
        y = y + t
    y = y + ts[39].flip(0) * ts[39][::1].flip(0).exp()  # input 39: read at two places
    ir = _kernel(y)
    uses = [0] * len(ir.bufs)
    for e in _stmt_exprs(list(_all_stmts(ir.body))):
        for x in walk_exprs(e):
            if isinstance(x, Load):
                uses[x.buf] += 1
    regs = spill.buffer_regs(ir)
    busiest = max(range(len(uses)), key=lambda i: uses[i])
    assert uses[busiest] >= 2 and regs[busiest] != 0
    kept = [r for r in regs if r]
    assert sorted(kept) == list(range(spill.BUF_REG, spill.BUF_REG + spill.MAX_BUF_REGS))
    want = np.sum(np.stack(xs).astype(np.float64), 0) + xs[39][::-1] * np.exp(xs[39][::-1])
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-5, atol=1e-4)


def _index_add(a: np.ndarray, i: np.ndarray) -> np.ndarray:
    out = np.zeros((6, 50))
    np.add.at(out, i, a)
    return out


FORMS: dict[str, tuple[Callable[..., ac.Tensor], Callable[..., np.ndarray]]] = {
    "softmax": (
        lambda a, i: a.softmax(-1),
        lambda a, i: np.exp(a) / np.exp(a).sum(-1, keepdims=True),
    ),
    "sum": (lambda a, i: (a * 2).sum(0), lambda a, i: (a * 2).sum(0)),
    "cumsum": (lambda a, i: a.cumsum(1), lambda a, i: a.cumsum(1)),
    "argsort": (lambda a, i: a.argsort(1), lambda a, i: np.argsort(a, 1, kind="stable")),
    "gather": (lambda a, i: a[i], lambda a, i: a[i]),
    "index_add": (
        lambda a, i: ac.zeros((6, 50), device=a.device).index_add(0, i, a),
        _index_add,
    ),
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_form_with_every_buffer_relocated(form: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No buffer in a register: every device-memory operand (loads, stores, gather tables,
    scatter-adds, sort keys) goes through a relocation; values still match numpy."""
    be = get_backend("npu")
    monkeypatch.setattr(spill, "MAX_BUF_REGS", 0)
    # programs of the patched convention, and their tables (by id), apart from the others
    monkeypatch.setattr(be, "programs", {})
    monkeypatch.setattr(be, "tables", {})
    monkeypatch.setattr(cache, "load", lambda key: None)
    monkeypatch.setattr(cache, "save", lambda key, c: None)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((12, 50)).astype(np.float32)
    idx = np.array([5, 0, 3, 3, 1, 2, 0, 5, 4, 4, 2, 1])
    fn, ref = FORMS[form]
    got = fn(ac.tensor(a, device="npu"), ac.tensor(idx, device="npu")).numpy()
    for c in be.programs.values():
        assert c.relocs and {r.reg for r in _dram(c)} <= {0, c.arg_reg, c.const_reg, c.scratch_reg}
    want = ref(a.astype(np.float64), idx)
    if form == "argsort":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_relocated_operand_lands_at_its_buffers_address() -> None:
    regs = (spill.BUF_REG, 0, 0)  # buffer 0 in a register, 1 and 2 relocated
    refs = [spill.dram_ref(regs, b, off) for b, off in ((0, 8), (1, 64), (2, -4), (2, 0))]
    assert refs[0] == Ref(Space.DRAM, 8, spill.BUF_REG)
    code = tuple(
        Dma(DT.F32, Ref(Space.UB, 0), r, (1, 1, 1), (0, 0, 1), (0, 0, 1), (1, 1, 1)) for r in refs
    )
    assert spill.relocations([code]) == ((0, 1), (0, 2), (0, 3))
    (got,) = spill.relocate((code,), spill.relocations([code]), [0, 4096, 1 << 20])
    assert [i.src for i in got] == [
        refs[0],
        Ref(Space.DRAM, 4096 + 64),
        Ref(Space.DRAM, (1 << 20) - 4),
        Ref(Space.DRAM, 1 << 20),
    ]
    assert got[1:] != code[1:] and code[1].src == refs[1]  # the compiled code is left as it was
