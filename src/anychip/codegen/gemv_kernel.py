"""C text for matrix-vector products, the GEMMs whose M or N is 1: one dot product per row.

`anychip.codegen.gemm` renders these instead of the blocked GEMM when a (rows, K) operand
has unit-stride rows: A @ column vector, or row vector @ B.T (a Linear layer at batch 1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anychip.codegen import gemm_kernel as gk

if TYPE_CHECKING:  # gemm imports this module
    from anychip.codegen.gemm import GemmSpec

# dots: out[r * OS] = sum_k mat[r * RS + k] * v[k] for r in [r0, r1); four rows share each
# load of v, two vectors per row keep eight FMA chains in flight
_DOTS_VECTOR = """\
#if defined(__GNUC__) && !defined(ANYCHIP_GEMM_SCALAR)
typedef acc_t vec_t __attribute__((vector_size({vec_bytes})));
#define LANES {lanes}
static inline vec_t loadv(const acc_t *p) {{ vec_t v; memcpy(&v, p, sizeof v); return v; }}
static inline acc_t hsum(vec_t x) {{
    acc_t s = 0;
    for (int i = 0; i < LANES; ++i) s += x[i];
    return s;
}}
static void dots(out_t *out, const acc_t *mat, const acc_t *v, long r0, long r1) {{
    long r = r0;
    for (; r + 4 <= r1; r += 4) {{
        const acc_t *m0 = mat + r * RS, *m1 = m0 + RS, *m2 = m1 + RS, *m3 = m2 + RS;
        vec_t s0 = {{0}}, s1 = {{0}}, s2 = {{0}}, s3 = {{0}};
        vec_t t0 = {{0}}, t1 = {{0}}, t2 = {{0}}, t3 = {{0}};
        long k = 0;
        for (; k + 2 * LANES <= K; k += 2 * LANES) {{
            const vec_t v0 = loadv(v + k), v1 = loadv(v + k + LANES);
            s0 += loadv(m0 + k) * v0; t0 += loadv(m0 + k + LANES) * v1;
            s1 += loadv(m1 + k) * v0; t1 += loadv(m1 + k + LANES) * v1;
            s2 += loadv(m2 + k) * v0; t2 += loadv(m2 + k + LANES) * v1;
            s3 += loadv(m3 + k) * v0; t3 += loadv(m3 + k + LANES) * v1;
        }}
        acc_t d0 = hsum(s0 + t0), d1 = hsum(s1 + t1), d2 = hsum(s2 + t2), d3 = hsum(s3 + t3);
        for (; k < K; ++k) {{
            d0 += m0[k] * v[k]; d1 += m1[k] * v[k]; d2 += m2[k] * v[k]; d3 += m3[k] * v[k];
        }}
        out[r * OS] = STORE_OUT(d0); out[(r + 1) * OS] = STORE_OUT(d1);
        out[(r + 2) * OS] = STORE_OUT(d2); out[(r + 3) * OS] = STORE_OUT(d3);
    }}
    for (; r < r1; ++r) {{
        const acc_t *m0 = mat + r * RS;
        vec_t s0 = {{0}}, t0 = {{0}};
        long k = 0;
        for (; k + 2 * LANES <= K; k += 2 * LANES) {{
            s0 += loadv(m0 + k) * loadv(v + k);
            t0 += loadv(m0 + k + LANES) * loadv(v + k + LANES);
        }}
        acc_t d0 = hsum(s0 + t0);
        for (; k < K; ++k) d0 += m0[k] * v[k];
        out[r * OS] = STORE_OUT(d0);
    }}
}}
#else
"""

_DOTS_SCALAR = """\
static void dots(out_t *out, const acc_t *mat, const acc_t *v, long r0, long r1) {
    for (long r = r0; r < r1; ++r) {
        acc_t d = 0;
        for (long k = 0; k < K; ++k) d += mat[r * RS + k] * v[k];
        out[r * OS] = STORE_OUT(d);
    }
}
"""

# one matrix: a strided vector is first gathered into this thread's buffer
_GEMV_ONE = """\
static void gemv_one(out_t *out, const acc_t *mat, const acc_t *vec, acc_t *vbuf, int tid,
                     int nth) {
    const acc_t *v = vec;
    if (VS != 1) {
        for (long k = 0; k < K; ++k) vbuf[k] = vec[k * VS];
        v = vbuf;
    }
    dots(out, mat, v, ROWS * tid / nth, ROWS * (tid + 1) / nth);
}
"""


def gemv_c(*, name: str, matrix: str, vector: str, vec_bytes: int, lanes: int, threads: int) -> str:
    """The dot kernels and the exported entry `name(out, a, b)`; `matrix`/`vector` say
    which argument ("a" or "b") is which. Needs the defines ROWS, K, RS, VS, OS, MB, VB,
    SCB (row/vector/out strides; per-batch strides), SZ_V, WS_BYTES, and `workspace()`."""
    dots = _DOTS_SCALAR
    if vec_bytes:
        dots = _DOTS_VECTOR.format(vec_bytes=vec_bytes, lanes=lanes) + _DOTS_SCALAR + "#endif\n"
    args = (
        f"(out_t *)out + i * SCB, (const acc_t *){matrix} + i * MB, "
        f"(const acc_t *){vector} + i * VB, (acc_t *)(ws + tid * SZ_V), tid, nth"
    )
    entry = f"""\
__attribute__((visibility("default"))) void {name}(void *out, const void *a, const void *b) {{
    char *ws = workspace();
#pragma omp parallel num_threads({threads}) if ({threads} > 1)
    {{
#ifdef _OPENMP
        const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
#else
        const int tid = 0, nth = 1;
#endif
        for (long i = 0; i < BATCH; ++i) gemv_one({args});
    }}
}}
"""
    return dots + _GEMV_ONE + entry


def gemv_source(spec: GemmSpec, threads: int, vec_bytes: int, name: str, matrix: str) -> str:
    """The whole C file for `spec` when `matrix` ("a": out = A @ column vector b, or "b":
    out = row vector a @ B) has unit-stride rows (of A, or of B.T) and the same calling
    contract as the blocked GEMM. The vector is gathered per thread when strided."""
    size = spec.acc_dtype.itemsize
    (sa, sb, sc), k = (spec.a_strides, spec.b_strides, spec.c_strides), spec.k
    if matrix == "a":  # rows of A dotted with b's column: out[i, :, 0]
        rows, (rs, vs, os_, mb, vb) = spec.m, (sa[1], sb[1], sc[1], sa[0], sb[0])
    else:  # columns of B dotted with a's row: out[i, 0, :]
        rows, (rs, vs, os_, mb, vb) = spec.n, (sb[2], sa[2], sc[2], sb[0], sa[0])
    sz_v = -(-k * size // 64) * 64
    consts = {"BATCH": spec.batch, "ROWS": rows, "K": k, "RS": rs, "VS": vs, "OS": os_}
    consts |= {"MB": mb, "VB": vb, "SCB": sc[0], "SZ_V": sz_v, "WS_BYTES": threads * sz_v}
    defines = "".join(f"#define {key} {v}L\n" for key, v in consts.items())
    acc_c = "double" if size == 8 else "float"
    body = gemv_c(
        name=name, matrix=matrix, vector="b" if matrix == "a" else "a",
        vec_bytes=vec_bytes, lanes=vec_bytes // size, threads=threads,
    )  # fmt: skip
    header = f"/* anychip GEMV: {spec}\n   threads={threads} vec_bytes={vec_bytes} */\n"
    conversions = gk.conversions_c(spec.dtype.name, spec.out_dtype.name, acc_c)
    return "\n".join((header, gk.INCLUDES, defines, conversions, gk.WORKSPACE, body))
