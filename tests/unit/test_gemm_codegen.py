"""The generated GEMM against numpy float64 products: shapes, layouts, dtypes, tilings.

A private harness builds each generated file with the system C compiler and loads it with
ctypes; the real compiler cache lives in backends/cpu."""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from anychip.codegen.gemm import (
    GemmSpec,
    GemmTiling,
    candidate_tilings,
    default_tiling,
    gemm_source,
    host_info,
    tune,
)
from anychip.dtypes import bf16_to_f32
from anychip.errors import CompileError, DTypeError, ShapeError

CC = os.environ.get("CC", "cc")
pytestmark = pytest.mark.skipif(shutil.which(CC) is None, reason=f"no C compiler {CC!r}")
GOLDEN = Path(__file__).parent / "golden" / "gemm_f32_14x32.c"
_BUILT: dict[str, ctypes.CDLL] = {}


def build(src: str, name: str, tmp: Path, flags: tuple[str, ...] = ()) -> ctypes._CFuncPtr:
    """Compile `src` to a shared object (once per source and flags) and return `name`."""
    key = hashlib.sha256((src + repr(flags)).encode()).hexdigest()[:16]
    if key not in _BUILT:
        c, so = tmp / f"{key}.c", tmp / f"{key}.so"
        c.write_text(src)
        cmd = [CC, "-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", *flags, str(c)]
        r = subprocess.run([*cmd, "-o", str(so)], capture_output=True, text=True)
        if r.returncode:
            raise CompileError(f"gemm test build failed:\n{r.stderr}")
        _BUILT[key] = ctypes.CDLL(str(so))
    fn = getattr(_BUILT[key], name)
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p] * 3
    return fn


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gemm")


# ------------------------------------------------------------------ data and reference


def rand(shape: tuple[int, ...], dtype: str, rng: np.random.Generator) -> np.ndarray:
    """Random storage for `dtype` (bfloat16 as uint16 bits)."""
    x = rng.uniform(-1, 1, shape).astype(np.float32)
    if dtype == "bfloat16":
        return torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    return x.astype(dtype)


def values(x: np.ndarray, dtype: str) -> np.ndarray:
    return bf16_to_f32(x).astype(np.float64) if dtype == "bfloat16" else x.astype(np.float64)


def elems(x: np.ndarray) -> tuple[int, int, int]:
    return tuple(s // x.itemsize for s in x.strides)  # type: ignore[return-value]


# unit roundoff of the accumulator and of the output rounding
EPS = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}


def run_and_check(
    a: np.ndarray,
    b: np.ndarray,
    out: np.ndarray,
    dtype: str,
    out_dtype: str,
    tmp: Path,
    tiling: GemmTiling | None = None,
    flags: tuple[str, ...] = (),
) -> None:
    """a (batch, m, k), b (batch, k, n), out (batch, m, n): any numpy views."""
    batch, m, k = a.shape
    n = b.shape[2]
    spec = GemmSpec(batch, m, n, k, dtype, out_dtype, elems(a), elems(b), elems(out))
    fn = build(gemm_source(spec, tiling, "mm"), "mm", tmp, flags)
    out[...] = 0x7E00 if out_dtype in ("float16", "bfloat16") else np.nan  # poison
    fn(out.ctypes.data, a.ctypes.data, b.ctypes.data)
    va, vb = values(a, dtype), values(b, dtype)
    ref, mag = va @ vb, np.abs(va) @ np.abs(vb)  # (batch, m, n)
    acc = "float64" if dtype == "float64" else "float32"
    tol = 2 * EPS[out_dtype] * np.abs(ref) + 2 * (k + 2) * EPS[acc] * mag + 1e-300
    err = np.abs(values(out, out_dtype) - ref)
    assert np.all(err <= tol), f"{spec}: max err {err.max()} (tol {tol.flat[err.argmax()]})"


def contiguous_case(batch, m, n, k, dtype="float32", out_dtype=None, seed=0):
    rng = np.random.default_rng(seed)
    out_dtype = out_dtype or dtype
    a, b = rand((batch, m, k), dtype, rng), rand((batch, k, n), dtype, rng)
    store = np.uint16 if out_dtype == "bfloat16" else out_dtype
    return a, b, np.empty((batch, m, n), store), dtype, out_dtype


# ------------------------------------------------------------------ shapes

SHAPES = [
    (1, 1, 1, 1),
    (1, 5, 7, 1),  # K = 1
    (1, 37, 53, 29),  # no dimension a multiple of any tile size
    (1, 100, 70, 300),  # K spans several kc blocks
    (3, 15, 33, 17),
    (1, 1000, 3, 5),  # tall and skinny
    (1, 2, 900, 40),  # short and wide
    (1, 1, 64, 500),  # a row vector times a matrix
    (1, 513, 1, 7),  # a matrix times a column vector
    (2, 130, 200, 150),  # enough work for the threaded path
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_shapes_float32(shape, tmp):
    run_and_check(*contiguous_case(*shape), tmp)


SMALL_BLOCKS = [
    GemmTiling(mc=28, nc=64, kc=16, mr=14, nr=32, vec_bytes=64, unroll=4, threads=1),
    GemmTiling(mc=12, nc=48, kc=7, mr=6, nr=16, vec_bytes=32, unroll=3, threads=2),
    GemmTiling(mc=8, nc=8, kc=5, mr=4, nr=8, vec_bytes=16, unroll=1, threads=2),
    GemmTiling(mc=28, nc=64, kc=16, mr=14, nr=32, vec_bytes=64, threads=2, batch_parallel=True),
    GemmTiling(mc=9, nc=5, kc=4, mr=3, nr=5, vec_bytes=0, unroll=2, threads=1),
]


@pytest.mark.parametrize("tiling", SMALL_BLOCKS, ids=range(len(SMALL_BLOCKS)))
def test_every_block_has_an_edge(tiling, tmp):
    # every loop runs several full blocks and one partial block
    run_and_check(*contiguous_case(3, 61, 150, 45, seed=1), tmp, tiling=tiling)


@pytest.mark.parametrize("tiling", [None, *SMALL_BLOCKS[:3]], ids=range(4))
def test_column_major_a(tiling, tmp):
    # A^T @ B (attention's dK = dS^T Q): A packed 8 k rows at a time for all slivers, with
    # edge slivers (m not a multiple of MR) and k blocks not a multiple of 8
    a, b, out, dtype, out_dtype = contiguous_case(3, 61, 70, 45, seed=3)
    at = np.ascontiguousarray(a.transpose(0, 2, 1)).transpose(0, 2, 1)  # (3, 61, 45), SAM 1
    run_and_check(at, b, out, dtype, out_dtype, tmp, tiling=tiling)


def test_scalar_fallback(tmp):
    run_and_check(*contiguous_case(2, 37, 45, 19), tmp, flags=("-DANYCHIP_GEMM_SCALAR",))


# narrow N (matrix-vector, class heads) reads A in place, short M (vector-matrix) reads B in
# place; edge tiles are still packed. (batch, m, n, k), dtype, operand read in place
INPLACE = [
    ((1, 700, 5, 300), "float32", "A"),  # threaded, several row blocks and an edge tile
    ((1, 513, 3, 40), "float64", "A"),  # a matrix times three columns
    ((1, 4, 2000, 150), "float32", "B"),  # threaded column slivers and an edge sliver
    ((3, 2, 130, 17), "float64", "B"),  # two rows times matrices, batched
    ((1, 5, 70, 9), "float16", None),  # halves are always packed (widened while packing)
]


@pytest.mark.parametrize("flags", [(), ("-DANYCHIP_GEMM_SCALAR",)], ids=["vector", "scalar"])
@pytest.mark.parametrize("case", INPLACE, ids=lambda c: "x".join(map(str, c[0])) + c[1])
def test_operands_read_in_place(case, flags, tmp):
    shape, dtype, which = case
    spec = GemmSpec(*shape, dtype)
    src = gemm_source(spec)
    for op in "AB":
        assert f"#define INPLACE_{op} {int(op == which)}L" in src
    run_and_check(*contiguous_case(*shape, dtype, seed=6), tmp, flags=flags)


# x @ W.T (a Linear layer): A's k-contiguous rows are read in place when all of k is one
# block; W (n, k) used as (k, n) is column-major B, packed by 16 x 16 register transposes
# on AVX-512 (float32). n = 83 leaves a 16-column group and a 3-column tail in the edge
# sliver, k = 100 a 4-deep tail; kc = 40 splits k (A packed again) with an 8-deep tail.
LINEAR_TILINGS = [
    None,
    GemmTiling(mc=24, nc=128, kc=40, mr=6, nr=64, vec_bytes=64, unroll=4, threads=2),
    GemmTiling(mc=24, nc=48, kc=100, mr=6, nr=16, vec_bytes=32, unroll=2, threads=2),
]


@pytest.mark.parametrize("flags", [(), ("-DANYCHIP_GEMM_SCALAR",)], ids=["vector", "scalar"])
@pytest.mark.parametrize("tiling", LINEAR_TILINGS, ids=["default", "k_blocks", "avx2"])
@pytest.mark.parametrize("m", [70, 300])
def test_linear_layer_products(m, tiling, flags, tmp):
    rng = np.random.default_rng(8)
    k, n = 100, 83
    a = rand((1, m, k), "float32", rng)
    w = rand((n, k), "float32", rng)
    out = np.empty((1, m, n), np.float32)
    spec = GemmSpec(1, m, n, k, "float32", a_strides=(0, k, 1), b_strides=(0, 1, k))
    src = gemm_source(spec, tiling)
    assert "transpose16(" in src
    dense = tiling is None or tiling.kc >= k
    assert f"#define INPLACE_A {int(dense)}L" in src
    run_and_check(a, w.T[None], out, "float32", "float32", tmp, tiling=tiling, flags=flags)
    # the backward products of the same layer: g.T @ x (A column-major) and g @ W
    g = rand((1, m, n), "float32", rng)
    dw = np.empty((1, n, k), np.float32)
    run_and_check(g.transpose(0, 2, 1), a, dw, "float32", "float32", tmp, flags=flags)
    run_and_check(g, w[None], np.empty((1, m, k), np.float32), "float32", "float32", tmp)


# M or N of 1 with unit-stride rows: one dot product per output (no packing)
def gemv_cases(rng: np.random.Generator):
    f32 = lambda *shape: rand(shape, "float32", rng)  # noqa: E731
    w = f32(2048, 1030)  # a Linear weight (out, in)
    yield "x@W.T threaded", f32(1, 1, 1030), w.T[None], "float32"
    yield "x@W.T batched", f32(3, 1, 37), f32(3, 70, 37).transpose(0, 2, 1), "float32"
    yield "A@v strided v", f32(2, 301, 45), f32(2, 45, 3)[:, :, 1:2], "float32"
    yield "A@v negative", f32(1, 40, 33)[:, ::-1, :], f32(1, 33, 1)[:, ::-1], "float32"
    b64 = rand((1, 7, 19), "float64", rng).transpose(0, 2, 1)
    yield "v@B.T float64", rand((1, 1, 19), "float64", rng), b64, "float64"
    yield "to float16", f32(1, 1, 64), f32(1, 64, 64).transpose(0, 2, 1), "float16"
    # the matrix's other dimension is the contiguous one: scaled rows summed (axpy)
    yield "x@B threaded axpy", f32(1, 1, 1030), f32(1, 1030, 4100), "float32"
    yield "A.T@v axpy", f32(2, 70, 301).transpose(0, 2, 1), f32(2, 70, 3)[:, :, 1:2], "float32"
    yield (
        "x@B float64 axpy",
        rand((3, 1, 9), "float64", rng)[:, :, ::-1],
        rand((3, 9, 5), "float64", rng),
    )


GEMV = list(gemv_cases(np.random.default_rng(7)))


@pytest.mark.parametrize("flags", [(), ("-DANYCHIP_GEMM_SCALAR",)], ids=["vector", "scalar"])
@pytest.mark.parametrize("case", GEMV, ids=[c[0] for c in GEMV])
def test_matrix_vector(case, flags, tmp):
    _, a, b, *out_dtype = case
    dtype = a.dtype.name
    out_dtype = out_dtype[0] if out_dtype and out_dtype[0] != dtype else dtype
    out = np.empty((a.shape[0], a.shape[1], b.shape[2]), out_dtype)
    if a.shape[1] == 1:
        out = np.empty((a.shape[0], b.shape[2], 3), out_dtype)[:, :, :1].transpose(0, 2, 1)
    spec = GemmSpec(a.shape[0], a.shape[1], b.shape[2], a.shape[2], dtype, out_dtype)
    assert "anychip GEMV" in gemm_source(replace(spec, a_strides=elems(a), b_strides=elems(b)))
    run_and_check(a, b, out, dtype, out_dtype, tmp, flags=flags)


# ------------------------------------------------------------------ layouts


def layout_case(
    kind: str,
    rng: np.random.Generator,
    dtype: str = "float32",
    out_dtype: str | None = None,
    dims: tuple[int, int, int, int] = (3, 29, 41, 23),
):
    """Views of (batch, m, k) A, (batch, k, n) B and an out buffer with the given layout."""
    batch, m, n, k = dims
    out_dtype = out_dtype or dtype
    store = np.uint16 if out_dtype == "bfloat16" else out_dtype
    a = rand((batch, m, k), dtype, rng)
    b = rand((batch, k, n), dtype, rng)
    out = np.empty((batch, m, n), store)
    if kind == "a_transposed":  # stored (batch, k, m)
        a = rand((batch, k, m), dtype, rng).transpose(0, 2, 1)
    elif kind == "b_transposed":  # a (n, k) weight used as (k, n), batch-broadcast
        b = np.broadcast_to(rand((n, k), dtype, rng).T, (batch, k, n))
    elif kind == "b_broadcast":  # stride-0 batch: folded into one taller GEMM
        b = np.broadcast_to(rand((k, n), dtype, rng), (batch, k, n))
    elif kind == "a_broadcast":
        a = np.broadcast_to(rand((m, k), dtype, rng), (batch, m, k))
    elif kind == "sliced":  # every other column and row, batch reversed
        a = rand((batch, 2 * m, 2 * k), dtype, rng)[::-1, ::2, 1::2]
        b = rand((batch, k + 3, 3 * n), dtype, rng)[:, 2:-1, ::3]
    elif kind == "negative":
        a = a[:, ::-1, ::-1]
        b = b[::-1, :, ::-1]
    elif kind == "out_transposed":  # write C as (batch, n, m) storage
        out = np.empty((batch, n, m), store).transpose(0, 2, 1)
    elif kind == "out_strided":
        out = np.empty((batch, m, 2 * n + 1), store)[:, :, 1::2]
    return a, b, out, dtype, out_dtype


LAYOUTS = ["a_transposed", "b_transposed", "b_broadcast", "a_broadcast", "sliced", "negative"]
LAYOUTS += ["out_transposed", "out_strided"]


@pytest.mark.parametrize("kind", LAYOUTS)
def test_layouts(kind, tmp):
    run_and_check(*layout_case(kind, np.random.default_rng(2)), tmp)


# float64 and halves through every layout, at odd sizes (1, 7, 33, 129) that leave a partial
# register tile and block in every dimension; halves also produce a float32 result
ODD_DIMS = {"a_transposed": (2, 33, 7, 129), "b_transposed": (3, 129, 33, 7)}
ODD_DIMS |= {"b_broadcast": (3, 7, 129, 33), "a_broadcast": (2, 1, 129, 33)}
ODD_DIMS |= {"sliced": (2, 33, 129, 1), "negative": (3, 7, 33, 129)}
ODD_DIMS |= {"out_transposed": (1, 129, 7, 33), "out_strided": (2, 33, 1, 129)}
WIDE_PAIRS = [("float64", "float64"), ("float16", "float16"), ("bfloat16", "bfloat16")]
WIDE_PAIRS += [("float16", "float32"), ("bfloat16", "float32")]


@pytest.mark.parametrize("pair", WIDE_PAIRS, ids="->".join)
@pytest.mark.parametrize("kind", LAYOUTS)
def test_layouts_other_dtypes(kind, pair, tmp):
    rng = np.random.default_rng(5)
    run_and_check(*layout_case(kind, rng, *pair, dims=ODD_DIMS[kind]), tmp)


def test_broadcast_batch_is_folded():
    spec = GemmSpec(4, 10, 20, 30, "float32", b_strides=(0, 20, 1))
    assert "#define BATCH 1L" in gemm_source(spec) and "#define M 40L" in gemm_source(spec)


# ------------------------------------------------------------------ dtypes

DTYPE_PAIRS = [
    ("float64", "float64"),
    ("float16", "float16"),
    ("bfloat16", "bfloat16"),
    ("float16", "float32"),
    ("bfloat16", "float32"),
    ("float32", "float16"),
    ("float32", "float64"),
]


@pytest.mark.parametrize("pair", DTYPE_PAIRS, ids="->".join)
@pytest.mark.parametrize("shape", [(1, 37, 53, 300), (2, 64, 96, 33)], ids=["edges", "batched"])
def test_dtypes(pair, shape, tmp):
    run_and_check(*contiguous_case(*shape, *pair, seed=3), tmp)


def test_soft_float16(tmp):
    run_and_check(
        *contiguous_case(2, 19, 35, 70, "float16"), tmp, flags=("-DANYCHIP_GEMM_SOFT_F16",)
    )


SPECIALS = [0.0, -0.0, 1.0, 65504.0, 65519.0, 65520.0, 1e6, 2.0**-14, 2.0**-24, 2.0**-25]
SPECIALS += [3 * 2.0**-26, 2.0**-25 * 1.0001, 1 + 2.0**-11, 1 + 3 * 2.0**-11, 6e-5, np.inf]


@pytest.mark.parametrize("flags", [(), ("-DANYCHIP_GEMM_SOFT_F16",)], ids=["native", "soft"])
def test_half_rounding_is_exact(flags, tmp):
    # K = 1 and B = 1: the product is the rounding of A itself, checked bit for bit
    rng = np.random.default_rng(4)
    x = np.concatenate([SPECIALS, rng.normal(0, 1e3, 200), rng.normal(0, 1e-5, 200)])
    x = np.concatenate([x, -x, [np.nan]]).astype(np.float32)
    a, one = x.reshape(1, -1, 1), np.ones((1, 1, 1), np.float32)
    for out_dtype, want, inf_bits in [
        ("float16", torch.from_numpy(x).half(), 0x7C00),
        ("bfloat16", torch.from_numpy(x).bfloat16(), 0x7F80),
    ]:
        spec = GemmSpec(1, x.size, 1, 1, "float32", out_dtype)
        out = np.empty((1, x.size, 1), np.uint16)
        build(gemm_source(spec, name="mm"), "mm", tmp, flags)(
            out.ctypes.data, a.ctypes.data, one.ctypes.data
        )
        got, ref = out.ravel(), want.view(torch.int16).numpy().view(np.uint16)
        # a sum starts from +0, so -0 * 1 gives +0: compare zeros by value, NaNs by class
        plain = ~np.isnan(x) & (x != 0)
        np.testing.assert_array_equal(got[plain], ref[plain], err_msg=out_dtype)
        assert ((got[x == 0] & 0x7FFF) == 0).all()
        assert ((got[np.isnan(x)] & 0x7FFF) > inf_bits).all()
    # and back: float16 storage widened exactly (subnormals included)
    h = np.arange(0, 0x7C00, 7, dtype=np.uint16).view(np.float16).reshape(1, -1, 1)
    spec = GemmSpec(1, h.size, 1, 1, "float16", "float32")
    out32 = np.empty((1, h.size, 1), np.float32)
    oneh = np.ones((1, 1, 1), np.float16)
    build(gemm_source(spec, name="mm"), "mm", tmp, flags)(
        out32.ctypes.data, h.ctypes.data, oneh.ctypes.data
    )
    np.testing.assert_array_equal(out32, h.astype(np.float32))


# ------------------------------------------------------------------ degenerate shapes


def test_k_zero_writes_zeros(tmp):
    a, b, out, *_ = contiguous_case(2, 3, 4, 0)
    out[...] = np.nan
    build(gemm_source(GemmSpec(2, 3, 4, 0, "float32"), name="mm"), "mm", tmp)(
        out.ctypes.data, a.ctypes.data, b.ctypes.data
    )
    assert (out == 0).all()


def test_empty_output_builds(tmp):
    fn = build(gemm_source(GemmSpec(2, 0, 4, 5, "float32"), name="mm"), "mm", tmp)
    fn(None, None, None)  # writes nothing, reads nothing


# ------------------------------------------------------------------ tilings and tuning


def test_default_tiling_fits_registers():
    host = host_info()
    for spec in [GemmSpec(1, 1024, 1024, 1024, d) for d in ("float32", "float64", "float16")]:
        t = default_tiling(spec)
        lanes = t.vec_bytes // spec.acc_dtype.itemsize
        assert t.nr % lanes == 0 and t.mc % t.mr == 0 and t.nc % t.nr == 0
        assert t.mr * t.nr // lanes + t.nr // lanes + 1 <= host.vec_regs
        assert t.kc * t.mr * spec.acc_dtype.itemsize <= max(host.l1_bytes // 4, 128 * t.mr * 4)
    assert default_tiling(GemmSpec(1, 4, 4, 4, "float32")).threads == 1  # too small to split


def test_candidates_are_valid():
    spec = GemmSpec(1, 300, 200, 100, "float64")
    for t in candidate_tilings(spec):
        gemm_source(spec, t)  # validates nr against the lanes


def test_tune_picks_fastest_and_skips_failures(tmp):
    spec = GemmSpec(1, 50, 60, 70, "float32")
    base = default_tiling(spec)
    cands = [replace(base, unroll=u) for u in (1, 2, 3)]

    def time_fn(src: str, t: GemmTiling) -> float:
        if t.unroll == 3:
            raise CompileError("pretend this one failed")
        assert f"k + {t.unroll} <= kc" in src
        return 1.0 / t.unroll

    assert tune(spec, cands, time_fn).unroll == 2
    with pytest.raises(CompileError, match="no candidate"):
        tune(spec, cands[2:], time_fn)


def test_golden_kernel(tmp):
    """A fixed spec and tiling (not the host's) so a change to the generated C shows here;
    the file itself is a working kernel: built and checked against float64 numpy."""
    spec = GemmSpec(2, 100, 70, 50, "float32", b_strides=(3500, 1, 50))
    t = GemmTiling(mc=56, nc=64, kc=32, mr=14, nr=32, vec_bytes=64, unroll=2, threads=2)
    src = gemm_source(spec, t, "anychip_gemm_golden")
    if os.environ.get("ANYCHIP_UPDATE_GOLDEN"):
        GOLDEN.write_text(src)
    assert src == GOLDEN.read_text(), "generated GEMM changed: ANYCHIP_UPDATE_GOLDEN=1 to accept"
    if host_info().vec_bytes == 64:  # the file is AVX-512 code
        rng = np.random.default_rng(11)
        a, bt = rand((2, 100, 50), "float32", rng), rand((2, 70, 50), "float32", rng)
        run_and_check(a, bt.transpose(0, 2, 1), np.empty((2, 100, 70), np.float32), "float32",
                      "float32", tmp, tiling=t)  # fmt: skip


# ------------------------------------------------------------------ errors


def test_bad_specs_raise_typed_errors():
    with pytest.raises(DTypeError, match="floating point"):
        GemmSpec(1, 2, 3, 4, "int32")
    with pytest.raises(ShapeError, match=">= 0"):
        GemmSpec(1, -2, 3, 4, "float32")
    with pytest.raises(ShapeError, match=r"\(batch, row, col\)"):
        GemmSpec(1, 2, 3, 4, "float32", a_strides=(4, 1))
    spec = GemmSpec(1, 2, 3, 4, "float64")
    with pytest.raises(ShapeError, match="multiple of the 8 float64 lanes"):
        gemm_source(spec, GemmTiling(4, 12, 4, 4, 12, 64))
    with pytest.raises(ShapeError, match="C identifier"):
        gemm_source(spec, name="not a name")
    with pytest.raises(ShapeError, match="multiple of mr"):
        GemmTiling(mc=10, nc=32, kc=8, mr=4, nr=32, vec_bytes=64)


@pytest.mark.parametrize("flags", [(), ("-DANYCHIP_GEMM_SCALAR",)], ids=["vector", "scalar"])
@pytest.mark.parametrize("m", [7, 10, 12])
def test_b_read_in_place_for_a_few_rows(m, flags, tmp):
    # M spans two register tiles at most (a class head's weight gradient g.T @ h): B is read
    # where it lies, with an edge row tile and an edge column sliver (n = 83)
    rng = np.random.default_rng(9)
    k, n = 100, 83
    g, h = rand((1, k, m), "float32", rng), rand((1, k, n), "float32", rng)
    spec = GemmSpec(1, m, n, k, "float32", a_strides=(0, 1, m), b_strides=(0, n, 1))
    assert "#define INPLACE_B 1L" in gemm_source(spec)
    out = np.empty((1, m, n), np.float32)
    run_and_check(g.transpose(0, 2, 1), h, out, "float32", "float32", tmp, flags=flags)


@pytest.mark.parametrize(
    "dtype,out_dtype",
    [("float32", None), ("float64", None), ("float16", "float16"), ("bfloat16", "float32")],
)
@pytest.mark.parametrize("shape", [(64, 64, 4096), (7, 13, 1000), (3, 70, 300), (30, 2, 257)])
def test_split_k_sums_every_thread_s_part(shape, dtype, out_dtype, tmp):
    # k much longer than m and n: each thread multiplies its own range of k, then the rows
    # of out are shared out to sum the parts (checked against float64 numpy)
    m, n, k = shape
    a, b, out, dt, odt = contiguous_case(1, m, n, k, dtype, out_dtype, seed=m + n)
    spec = GemmSpec(1, m, n, k, dt, odt)
    t = default_tiling(spec)
    assert t.split_k == (t.threads > 1)
    run_and_check(a, b, out, dt, odt, tmp)
    forced = replace(t, threads=2, split_k=True)  # also on a one-core host
    assert "#define SPLIT_K 1L" in gemm_source(spec, forced)
    run_and_check(a, b, out, dt, odt, tmp, tiling=forced)
    run_and_check(a, b, out, dt, odt, tmp, tiling=forced, flags=("-DANYCHIP_GEMM_SCALAR",))
    # views read in place (A transposed, out strided) and a batch looped inside the team
    at = np.ascontiguousarray(a.transpose(0, 2, 1)).transpose(0, 2, 1)
    wide = np.empty((2, m, 2 * n), out.dtype)[:1, :, ::2]
    run_and_check(at, b, wide, dt, odt, tmp, tiling=forced)


# one row block (M <= MC, a convolution's 64 output channels): each thread packs a B sliver
# and runs every row tile on it at once. Threads sharing one matrix, a batch over threads,
# A read in place, an edge row tile (m = 20 = 3 x 6 + 2), an edge sliver (n = 150), k split
ONE_ROW_BLOCK = [
    GemmTiling(mc=24, nc=128, kc=45, mr=6, nr=64, vec_bytes=64, unroll=4, threads=2),
    GemmTiling(mc=24, nc=64, kc=16, mr=6, nr=32, vec_bytes=64, threads=2, batch_parallel=True),
    GemmTiling(mc=20, nc=48, kc=45, mr=4, nr=16, vec_bytes=32, unroll=2, threads=1),
]


@pytest.mark.parametrize("flags", [(), ("-DANYCHIP_GEMM_SCALAR",)], ids=["vector", "scalar"])
@pytest.mark.parametrize("tiling", ONE_ROW_BLOCK, ids=["team", "batch", "single"])
def test_one_row_block_packs_slivers_as_used(tiling, flags, tmp):
    run_and_check(*contiguous_case(3, 20, 150, 45, seed=4), tmp, tiling=tiling, flags=flags)
    # a transposed (column-major) B, as a weight gradient x.T reads it
    rng = np.random.default_rng(5)
    a, bt = rand((3, 20, 45), "float32", rng), rand((3, 150, 45), "float32", rng)
    out = np.empty((3, 20, 150), np.float32)
    run_and_check(a, bt.transpose(0, 2, 1), out, "float32", "float32", tmp, tiling=tiling)


# ------------------------------------------------------------------ offset tables


def _taps(x: np.ndarray, kh: int, kw: int, p: int) -> np.ndarray:
    """(batch, C, Hp, Wp) -> (batch, C*kh*kw, p): row (c, i, j) is x's flat (c) plane
    from i * Wp + j on, what an implicit-GEMM convolution's K (or row) table addresses."""
    batch, c, hp, wp = x.shape
    flat = x.reshape(batch, c, hp * wp)
    rows = [
        flat[:, ci, i * wp + j : i * wp + j + p]
        for ci in range(c)
        for i in range(kh)
        for j in range(kw)
    ]
    return np.stack(rows, axis=1)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("tiling", [None, *SMALL_BLOCKS[:3]], ids=range(4))
def test_k_or_n_as_offset_tables(tiling, dtype, tmp):
    # k_dims: B's K = C x kh x kw rows of a padded image (a conv's forward); n_dims: B's
    # columns likewise (its weight gradient); against the gathered matrices in float64
    rng = np.random.default_rng(5)
    batch, c, hp, wp, kh, kw, o = 2, 5, 7, 9, 3, 2, 11
    p = (hp - kh) * wp  # wide output positions whose taps stay inside the image
    x = rand((batch, c, hp, wp), dtype, rng)
    w = rand((o, c * kh * kw), dtype, rng)
    ck, plane = c * kh * kw, hp * wp
    taps = _taps(x.astype(np.float64), kh, kw, p)  # (batch, ck, p)
    k_dims = ((c, plane), (kh, wp), (kw, 1))
    spec = GemmSpec(batch, o, p, ck, dtype, a_strides=(0, ck, 1), b_strides=(c * plane, 1, 1),
                    k_dims=k_dims)  # fmt: skip
    out = np.full((batch, o, p), np.nan, dtype)
    build(gemm_source(spec, tiling, "mm"), "mm", tmp)(out.ctypes.data, w.ctypes.data, x.ctypes.data)
    np.testing.assert_allclose(out, w.astype(np.float64) @ taps, rtol=1e-5, atol=1e-5)
    g = rand((batch, o, p), dtype, rng)
    spec = GemmSpec(batch, o, ck, p, dtype, a_strides=(o * p, p, 1), b_strides=(c * plane, 1, 1),
                    n_dims=k_dims)  # fmt: skip
    out = np.full((batch, o, ck), np.nan, dtype)
    build(gemm_source(spec, tiling, "mm"), "mm", tmp)(out.ctypes.data, g.ctypes.data, x.ctypes.data)
    want = g.astype(np.float64) @ taps.transpose(0, 2, 1)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def _conv_taps(x: np.ndarray, kh: int, kw: int, pads: tuple[int, int, int, int]) -> np.ndarray:
    """(batch, C, H, W) -> (batch, C*kh*kw, H' * W'): row (c, i, j), column (y, x) is
    x[c, y + i - top, x + j - left], 0 outside the image (zero padding, no copy made)."""
    top, bottom, left, right = pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    ho, wo = xp.shape[2] - kh + 1, xp.shape[3] - kw + 1
    rows = [xp[:, c, i : i + ho, j : j + wo].reshape(x.shape[0], -1)
            for c in range(x.shape[1]) for i in range(kh) for j in range(kw)]  # fmt: skip
    return np.stack(rows, axis=1)


@pytest.mark.parametrize("flags", [(), ("-DANYCHIP_GEMM_SCALAR",)], ids=["vector", "scalar"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    ("shape", "pads"),
    [
        ((3, 5, 7, 3, 3), (1, 1, 1, 1)),
        ((5, 1, 9, 3, 2), (2, 0, 0, 1)),
        ((2, 6, 1, 3, 3), (1, 1, 1, 1)),
        # 'same' with slivers spanning row changes (one contiguous copy, cut columns
        # zeroed): 3x3 and 5x5 (two columns cut at each side), rows of 70 and 13
        ((3, 4, 70, 3, 3), (1, 1, 1, 1)),
        ((2, 9, 13, 5, 5), (2, 2, 2, 2)),
    ],
    ids=["same", "uneven", "one-column", "same-wide", "same-5x5"],
)
@pytest.mark.parametrize("tiling", [None, *SMALL_BLOCKS[:3]], ids=range(4))
def test_k_and_n_tables_with_bounds(tiling, shape, pads, dtype, flags, tmp):
    # k_dims and n_dims together, b_bounds the padding: a convolution read from its
    # unpadded input, N = H' x W' in runs of one output row, out un-widened; NaN around
    # the image, so a padding tap that reads memory instead of a zero shows
    rng = np.random.default_rng(6)
    (c, h, w, kh, kw), (top, bottom, left, right) = shape, pads
    batch, o = 2, 11
    ho, wo = h + top + bottom - kh + 1, w + left + right - kw + 1
    x = rand((batch, c, h, w), dtype, rng)
    wt = rand((o, c * kh * kw), dtype, rng)
    ck = c * kh * kw
    # element (k, n) sits at c*H*W + (y + i - top)*W + (x + j - left): the view starts
    # top rows and left columns before the image; valid iff top <= i + y < top + H, etc.
    bounds = ((1, 0, top, top + h), (2, 1, left, left + w))
    spec = GemmSpec(batch, o, ho * wo, ck, dtype, a_strides=(0, ck, 1),
                    b_strides=(c * h * w, 1, 1), k_dims=((c, h * w), (kh, w), (kw, 1)),
                    n_dims=((ho, w), (wo, 1)), b_bounds=bounds)  # fmt: skip
    out = np.full((batch, o, ho * wo), np.nan, dtype)
    guard = 256  # NaN before and after the batch: a padding tap must not read them
    buf = np.full(guard + x.size + guard, np.nan, dtype)
    buf[guard : guard + x.size] = x.ravel()
    start = buf.ctypes.data + (guard - top * w - left) * x.itemsize
    build(gemm_source(spec, tiling, "mm"), "mm", tmp, flags)(out.ctypes.data, wt.ctypes.data, start)
    want = wt.astype(np.float64) @ _conv_taps(x.astype(np.float64), kh, kw, pads)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_offset_tables_must_cover_their_dimension():
    with pytest.raises(ShapeError, match=r"k_dims extents \[2, 3\] must multiply to 7"):
        GemmSpec(1, 2, 2, 7, "float32", k_dims=((2, 9), (3, 1)))
    with pytest.raises(ShapeError, match=r"k_dims with more than two n_dims loops"):
        GemmSpec(1, 2, 8, 2, "float32", k_dims=((2, 9),), n_dims=((2, 9), (2, 3), (2, 1)))
    with pytest.raises(ShapeError, match=r"b_bounds .* must name loops"):
        GemmSpec(
            1, 2, 2, 2, "float32", k_dims=((2, 9),), n_dims=((2, 9),), b_bounds=((1, 0, 0, 2),)
        )
