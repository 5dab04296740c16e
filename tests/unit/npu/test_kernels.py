"""The kernel library against numpy in float64, 50 random shapes per kernel and profile.

Tolerances follow the chip's declared numerics (docs/npu-isa.md, npu/numerics.py):
- gemm: fp16 inputs, products exact, each mma instruction rounds its k-slice dot product
  to f32 and rounds again adding it to the f32 accumulator, so
  |C - A@B| <= 2 * steps * 2^-24 * (|A| @ |B|) with steps = ceil(K / matrix_k).
- vector float ops round once per instruction (reductions are exact sums rounded once):
  softmax and layer norm chain a handful of such roundings: rtol 1e-5 (plus a tiny atol).
- elementwise: each instruction rounds once to the dtype: 1 ulp of the operands' scale per
  instruction (f32 2^-23, f16 2^-10, bf16 2^-7).
- embedding-bag: one rounded sum per bag piece plus f32 adds: 1e-6 * sum |rows|.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from anychip.errors import ShapeError
from anychip.npu.config import PROFILES, NpuConfig
from anychip.npu.isa import DT
from anychip.npu.kernels import (
    GemmPlan,
    run_elementwise,
    run_embedding_bag,
    run_gemm,
    run_layer_norm,
    run_softmax,
)
from anychip.npu.kernels.elementwise import UNARY
from anychip.npu.kernels.gemm import _fits, plan_gemm

SHAPES = 50
NAMES = sorted(PROFILES)


def _rng(name: str, kernel: str) -> np.random.Generator:
    return np.random.default_rng([NAMES.index(name), sum(map(ord, kernel))])


def _gemm_shape(cfg: NpuConfig, rng: np.random.Generator) -> tuple[int, int, int]:
    """Sizes around one to three matrix-unit tiles, rarely multiples of them."""
    t = (cfg.matrix_m, cfg.matrix_n, cfg.matrix_k)
    dims = [int(rng.integers(1, 3 * d + 8)) for d in t]
    if rng.random() < 0.1:  # sometimes an exact multiple
        dims[int(rng.integers(3))] = t[0] * int(rng.integers(1, 3))
    return dims[0], dims[1], dims[2]


def _small_plan(cfg: NpuConfig, rng: np.random.Generator) -> GemmPlan | None:
    """A plan with small tiles, so small problems still take many tiles, k-steps and cores."""
    p = GemmPlan(cfg.matrix_m * int(rng.integers(1, 3)), cfg.matrix_n * int(rng.integers(1, 3)),
                 cfg.matrix_k * int(rng.integers(1, 3)), int(rng.integers(1, 3)))  # fmt: skip
    return p if _fits(cfg, p.tm, p.tn, p.tk, p.acc_slots, 2) else None


@pytest.mark.parametrize("name", NAMES)
def test_gemm_matches_numpy(name):
    cfg, rng = PROFILES[name], _rng(name, "gemm")
    for case in range(SHAPES):
        m, n, k = _gemm_shape(cfg, rng)
        plan = _small_plan(cfg, rng) if case % 2 else None
        a = rng.standard_normal((m, k)).astype(np.float16)
        b = rng.standard_normal((k, n)).astype(np.float16)
        c = run_gemm(cfg, a, b, plan)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        steps = math.ceil(k / cfg.matrix_k)
        bound = 2 * steps * 2.0**-24 * (np.abs(a64) @ np.abs(b64))
        assert c.dtype == np.float32 and c.shape == (m, n)
        err = np.abs(c - a64 @ b64)
        assert (err <= bound).all(), f"{name} gemm {(m, n, k)} plan {plan}: max err {err.max()}"


def test_gemm_rounds_inputs_to_fp16():
    cfg = PROFILES["edge"]
    a = np.array([[1.0 + 2.0**-12]])  # not an fp16 value: rounds to 1.0
    assert run_gemm(cfg, a, np.array([[1.0]])).item() == 1.0


def test_gemm_shape_error_names_shapes():
    with pytest.raises(ShapeError, match=r"a \(2, 3\) and b \(4, 5\)"):
        run_gemm(PROFILES["edge"], np.ones((2, 3)), np.ones((4, 5)))


def _rows_shape(rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(1, 40)), int(rng.integers(1, 300))


@pytest.mark.parametrize("name", NAMES)
def test_softmax_matches_numpy(name):
    cfg, rng = PROFILES[name], _rng(name, "softmax")
    for _ in range(SHAPES):
        rows, cols = _rows_shape(rng)
        x = (rng.standard_normal((rows, cols)) * rng.uniform(0.1, 10)).astype(np.float32)
        x64 = x.astype(np.float64)
        e = np.exp(x64 - x64.max(axis=1, keepdims=True))
        ref = e / e.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(run_softmax(cfg, x), ref, rtol=1e-5, atol=1e-9,
                                   err_msg=f"{name} softmax {(rows, cols)}")  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_layer_norm_matches_numpy(name):
    cfg, rng = PROFILES[name], _rng(name, "layer_norm")
    for case in range(SHAPES):
        rows, cols = _rows_shape(rng)
        x = (rng.standard_normal((rows, cols)) * 3 + 1).astype(np.float32)
        g, b = rng.standard_normal((2, cols)).astype(np.float32)
        eps = (1e-5, 1e-3)[case % 2]
        x64 = x.astype(np.float64)
        mu = x64.mean(axis=1, keepdims=True)
        var = ((x64 - mu) ** 2).mean(axis=1, keepdims=True)
        ref = (x64 - mu) / np.sqrt(var + eps) * g + b
        np.testing.assert_allclose(run_layer_norm(cfg, x, g, b, eps), ref, rtol=1e-5, atol=1e-5,
                                   err_msg=f"{name} layer_norm {(rows, cols)}")  # fmt: skip


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


REFS = {
    "relu": lambda a: np.maximum(a, 0.0),
    "gelu": _gelu,
    "exp": np.exp,
    "tanh": np.tanh,
    "sigmoid": lambda a: 1 / (1 + np.exp(-a)),
    "add": lambda a, b: a + b,
    "mul": lambda a, b: a * b,
    "max": np.maximum,
    "fma": lambda a, b, c: a * b + c,
}
ULP = {DT.F32: 2.0**-23, DT.F16: 2.0**-10, DT.BF16: 2.0**-7}
NP = {DT.F32: np.float32, DT.F16: np.float16}


@pytest.mark.parametrize("name", NAMES)
def test_elementwise_matches_numpy(name):
    cfg, rng = PROFILES[name], _rng(name, "elementwise")
    dtypes = [d for d in (DT.F32, DT.F16, DT.BF16) if d.name.lower() in cfg.vector_dtypes]
    ops = sorted(REFS)
    for case in range(SHAPES):
        op, dt = ops[case % len(ops)], dtypes[int(rng.integers(len(dtypes)))]
        n = int(rng.integers(1, 3000))
        nin = 1 if op in UNARY else 3 if op == "fma" else 2
        xs = [rng.standard_normal(n) * 2 for _ in range(nin)]
        if dt in NP:  # what the device holds: inputs rounded to the dtype
            xs = [x.astype(NP[dt]).astype(np.float64) for x in xs]
        else:
            xs = [run_elementwise(cfg, "relu", np.abs(x), dtype=dt).astype(np.float64) *
                  np.sign(x) for x in xs]  # fmt: skip
        out = run_elementwise(cfg, op, *xs, dtype=dt).astype(np.float64)
        ref = REFS[op](*xs)
        # one rounding per instruction, relative to the size of what was rounded
        scale = np.abs(xs[0] * xs[1]) + np.abs(xs[2]) if op == "fma" else np.abs(ref)
        tiny = 2.0**-24 if dt == DT.F16 else 1e-37
        ok = np.abs(out - ref) <= 2 * ULP[dt] * scale + tiny
        assert ok.all(), f"{name} {op} {dt.name} n={n}: {out[~ok][:3]} vs {ref[~ok][:3]}"


def _bags(rng: np.random.Generator) -> tuple[list[int], int]:
    """Bag lengths 0..12 (some empty), sometimes one long bag that spans chunks."""
    lens = [int(x) for x in rng.integers(0, 13, size=int(rng.integers(1, 12)))]
    if rng.random() < 0.3:
        lens[int(rng.integers(len(lens)))] = int(rng.integers(30, 80))
    offsets = [0, *np.cumsum(lens)[:-1].tolist()]
    return offsets, sum(lens)


@pytest.mark.parametrize("name", NAMES)
def test_embedding_bag_matches_numpy(name):
    cfg, rng = PROFILES[name], _rng(name, "embedding_bag")
    for _ in range(SHAPES):
        rows, dim = int(rng.integers(1, 60)), int(rng.integers(1, 70))
        offsets, total = _bags(rng)
        if total == 0:
            offsets, total = [0], 1
        w = rng.standard_normal((rows, dim)).astype(np.float32)
        idx = rng.integers(0, rows, size=total).astype(np.int32)
        out = run_embedding_bag(cfg, w, idx, offsets)
        ends = [*offsets[1:], total]
        ref = np.stack([w[idx[s:e]].astype(np.float64).sum(0) for s, e in zip(offsets, ends)])
        mag = np.stack([np.abs(w[idx[s:e]]).astype(np.float64).sum(0) for s, e in
                        zip(offsets, ends)])  # fmt: skip
        err = np.abs(out - ref)
        assert (err <= 1e-6 * mag).all(), f"{name} bag {rows}x{dim} offsets {offsets}"


def test_embedding_bag_bad_index_is_a_typed_fault():
    from anychip.npu.errors import OutOfBounds

    with pytest.raises(OutOfBounds, match=r"gather index 7 .* outside the table of 3 rows"):
        run_embedding_bag(PROFILES["edge"], np.ones((3, 2)), [0, 7], [0])


def test_embedding_bag_bad_offsets():
    with pytest.raises(ShapeError, match="offsets must start at 0"):
        run_embedding_bag(PROFILES["edge"], np.ones((3, 2)), [0, 1], [1])


def test_unsupported_dtypes_are_typed_errors():
    from anychip.errors import DTypeError
    from anychip.npu.kernels import elementwise, gemm

    with pytest.raises(DTypeError, match=r"bf16 .* design 'edge'"):
        elementwise(PROFILES["edge"], "relu", 10, DT.BF16)
    with pytest.raises(DTypeError, match="f16 or bf16, got f32"):
        gemm(PROFILES["edge"], 4, 4, 4, dtype=DT.F32)


def test_unknown_elementwise_op():
    with pytest.raises(ShapeError, match="unknown op 'swish'"):
        run_elementwise(PROFILES["edge"], "swish", [1.0])


@pytest.mark.parametrize("plan", [GemmPlan(32, 32, 32, 2, 64), GemmPlan(32, 16, 16, 1, 48)])
def test_gemm_staged_through_l1_matches_numpy(plan):
    # cube has an L1: A and B panels of kc go through it (partial last chunks, padded edges)
    cfg, rng = PROFILES["cube"], np.random.default_rng(7)
    a = rng.standard_normal((100, 300)).astype(np.float16)
    b = rng.standard_normal((300, 70)).astype(np.float16)
    c = run_gemm(cfg, a, b, plan)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    bound = 2 * math.ceil(300 / cfg.matrix_k) * 2.0**-24 * (np.abs(a64) @ np.abs(b64))
    assert (np.abs(c - a64 @ b64) <= bound).all()


def test_gemm_planner_stages_only_short_rows():
    # cube's 2048^3 plan reads A in rows of tk = 64 f16 = 128 B, under half its 1 KiB page:
    # staged. datacenter's reads rows of 512 B (half its page) in 4096-cycle steps: direct.
    assert plan_gemm(PROFILES["cube"], 2048, 2048, 2048).kc > 0
    assert plan_gemm(PROFILES["datacenter"], 2048, 2048, 2048).kc == 0
