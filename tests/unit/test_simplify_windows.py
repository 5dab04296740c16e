"""Index simplification of sliding windows: div/mod that loop ranges make exact vanish,
checked against the expression evaluated for every loop value (C semantics)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import anychip as ac
from anychip.frontend.conv import sliding_windows
from anychip.ir.kernel import INDEX, Alu, Const, Expr, Load, Var, alu, const, walk_exprs
from anychip.ir.ops import Ops
from anychip.passes.pipeline import lower_kernel
from anychip.passes.simplify import simplify_expr
from anychip.runtime.realize import plan


def evaluate(e: Expr, env: dict[str, int]) -> int:
    """C integer semantics (truncating division) for the index ops used here."""
    if isinstance(e, Const):
        return int(e.value)
    if isinstance(e, Var):
        return env[e.name]
    assert isinstance(e, Alu)
    v = [evaluate(s, env) for s in e.srcs]
    if e.op is Ops.ADD:
        return v[0] + v[1]
    if e.op is Ops.MUL:
        return v[0] * v[1]
    if e.op is Ops.NEG:
        return -v[0]
    q = abs(v[0]) // abs(v[1]) * (1 if (v[0] >= 0) == (v[1] > 0) else -1)
    return q if e.op is Ops.DIV else v[0] - q * v[1]


def has_divmod(e: Expr) -> bool:
    return any(isinstance(x, Alu) and x.op in (Ops.DIV, Ops.MOD) for x in walk_exprs(e))


I, J, K = (Var(n, INDEX) for n in "ijk")
CASES = [  # (expression, ranges): each div/mod is exact over the ranges given
    (alu(Ops.MOD, alu(Ops.ADD, I, alu(Ops.MUL, J, const(9))), const(8)), {"i": 5, "j": 3}),
    (alu(Ops.DIV, alu(Ops.ADD, I, alu(Ops.MUL, J, const(9))), const(8)), {"i": 5, "j": 3}),
    # a constant offset and a coefficient above and below the modulus
    (
        alu(
            Ops.MOD, alu(Ops.ADD, alu(Ops.ADD, I, alu(Ops.MUL, J, const(17))), const(11)), const(8)
        ),
        {"i": 3, "j": 2},
    ),
    (alu(Ops.DIV, alu(Ops.ADD, alu(Ops.MUL, I, const(13)), K), const(12)), {"i": 4, "k": 9}),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_exact_divmod_becomes_affine(case):
    e, ext = CASES[case]
    ranges = {v: (0, n - 1) for v, n in ext.items()}
    out = simplify_expr(e, ranges)
    assert not has_divmod(out)
    for vals in itertools.product(*(range(n) for n in ext.values())):
        env = dict(zip(ext, vals, strict=True))
        assert evaluate(out, env) == evaluate(e, env), env


def test_wrapping_divmod_is_kept():
    # (i + 9j) % 8 with i + j reaching 8 wraps: it must stay a mod, and stay right
    e = alu(Ops.MOD, alu(Ops.ADD, I, alu(Ops.MUL, J, const(9))), const(8))
    ranges = {"i": (0, 6), "j": (0, 2)}
    out = simplify_expr(e, ranges)
    assert has_divmod(out)
    for i, j in itertools.product(range(7), range(3)):
        assert evaluate(out, {"i": i, "j": j}) == (i + 9 * j) % 8


@pytest.mark.parametrize("stride,dilation", [((1, 1), (1, 1)), ((2, 1), (1, 1)), ((1, 1), (2, 3))])
def test_window_view_reads_affine(stride, dilation):
    # every window of a (2, 3, 9, 10) tensor, stored: the load's index has no div/mod, and
    # the values are numpy's sliding_window_view
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 10)).astype(np.float32)
    t = ac.tensor(x).realize()
    w = sliding_windows(t, (3, 2), stride, dilation) * 1.0
    (item,) = plan([w.node])
    ir = lower_kernel(item.kernel)
    loads = [e for s in ir.body for e in walk_exprs_body(s) if isinstance(e, Load)]
    assert loads and not any(has_divmod(ld.index) for ld in loads)
    full = np.lib.stride_tricks.sliding_window_view(
        x, (dilation[0] * 2 + 1, dilation[1] * 1 + 1), axis=(2, 3)
    )[:, :, :: stride[0], :: stride[1], :: dilation[0], :: dilation[1]]
    np.testing.assert_array_equal(w.numpy(), full)


def walk_exprs_body(s: object) -> list[Expr]:
    from anychip.ir.kernel import stmt_exprs, walk_stmts

    out: list[Expr] = []
    for st in walk_stmts((s,)):  # type: ignore[arg-type]
        for e in stmt_exprs(st):
            out += walk_exprs(e)
    return out
