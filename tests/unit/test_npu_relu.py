"""relu and its kin on the npu: `where(x <= c, c, x)` lowers to one `vmaxs x c`
(`backends/npu/lower_exprs.py` `max_form`) instead of two compares, an `or` and a select;
instruction counts by hand, values against numpy (and torch where present), NaN, signed
zeros and infinities included."""

from __future__ import annotations

import numpy as np
import pytest

import anychip as ac
from anychip.backends.npu import cache
from anychip.backends.npu.lower import lower_ir
from anychip.npu.config import get_config
from anychip.npu.isa import BinOp, Instr, VBin, VCmp, VScalar, VSel, VUn
from anychip.runtime.realize import plan

pytestmark = pytest.mark.skipif("npu" not in ac.devices(), reason="npu backend not present")

SPECIAL = [np.nan, -np.nan, 0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45, 3.5, -2.25, 65504.0]


def _program(y: ac.Tensor, design: str) -> list[Instr]:
    """Every core's instructions of the one kernel that computes `y`."""
    (w,) = [w for w in plan([y.node]) if w.kernel is not None]
    comp = lower_ir(cache.kernel_ir(w.kernel), get_config(design.split(":")[1]))
    return [i for code in comp.cores for i in code]


def _vector(prog: list[Instr]) -> list[Instr]:
    return [i for i in prog if isinstance(i, (VBin, VScalar, VCmp, VSel, VUn))]


@pytest.mark.parametrize("design", ["npu:edge", "npu:datacenter"])
def test_fused_relu_is_one_vmax(design: str) -> None:
    """(a * b + c).relu(), 4096 float32 elements: a mul, an add and a max per step (was a
    mul, an add, two compares, an or and a select)."""
    n = 4096
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(n).astype(np.float32) for _ in range(3)]
    xs[0][: len(SPECIAL)] = SPECIAL
    a, b, c = (ac.tensor(x, device=design) for x in xs)
    y = (a * b + c).relu()
    vec = _vector(_program(y, design))
    steps = sum(1 for i in vec if isinstance(i, VScalar))
    assert steps >= 1 and len(vec) == 3 * steps
    assert all(i.op == BinOp.MAX and i.imm == 0.0 for i in vec if isinstance(i, VScalar))
    assert sorted(i.op.name for i in vec if isinstance(i, VBin)) == sorted(["ADD", "MUL"] * steps)
    got = y.numpy()
    with np.errstate(invalid="ignore"):
        s = (xs[0] * xs[1]).astype(np.float32) + xs[2]
    want = np.where(np.isnan(s), s, np.where(s <= 0, np.float32(0), s))
    np.testing.assert_array_equal(got, want)  # NaN where NaN, bit-equal elsewhere
    assert not np.signbit(got[~np.isnan(got)]).any()


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_relu_special_values_match_torch_semantics(dtype: str) -> None:
    """relu(NaN) is NaN, relu(+-inf) is inf and 0, relu of a tiny negative is 0; -0.0
    gives +0.0 (the select's constant; torch keeps -0.0, equal by value)."""
    x = np.array(SPECIAL, dtype)
    got = ac.tensor(x, device="npu:edge").relu().numpy()
    want = np.where(np.isnan(x), x, np.where(x <= 0, 0, x)).astype(dtype)
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[:2]).all()
    try:
        import torch
    except ImportError:
        return
    np.testing.assert_array_equal(got, torch.relu(torch.from_numpy(x)).numpy())


def test_integer_relu_and_other_selects() -> None:
    """int32 relu is one vmaxs too; `x < 0 ? 0 : x` (keeps -0.0) and `x > 0 ? x : 0` (NaN
    gives 0) are other functions and keep their compares and select."""
    design = "npu:edge"
    xi = np.array([-5, 0, 7, -(2**31), 2**31 - 1], np.int32)
    ti = ac.tensor(xi, device=design)
    assert any(isinstance(i, VScalar) and i.op == BinOp.MAX for i in _program(ti.relu(), design))
    np.testing.assert_array_equal(ti.relu().numpy(), np.maximum(xi, 0))
    x = np.array(SPECIAL, np.float32)
    t = ac.tensor(x, device=design)
    for y, want in (
        (ac.where(t < 0, 0.0, t), np.where(x < 0, np.float32(0), x)),
        (ac.where(t > 0, t, 0.0), np.where(x > 0, x, np.float32(0))),
    ):
        prog = _program(y, design)
        assert any(isinstance(i, VSel) for i in prog)
        np.testing.assert_array_equal(y.numpy(), want)
