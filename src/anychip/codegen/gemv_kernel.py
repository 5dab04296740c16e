"""C text for matrix-vector products, the GEMMs whose M or N is 1: one dot product per row.

`anychip.codegen.gemm` renders these instead of the blocked GEMM when a (rows, K) operand
has unit-stride rows: A @ column vector, or row vector @ B.T (a Linear layer at batch 1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anychip.codegen import gemm_driver as gd, gemm_kernel as gk

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
# axpys: out[r * OS] = sum_k v[k] * mat[k * RS + r] for r in [r0, r1), in blocks of JB
# outputs whose float accumulators stay in L1 while the K rows stream past; four rows per
# pass halve the accumulator traffic; the inner loop is plain C the compiler vectorises
_AXPYS = """\
#define JB 2048L
static void axpys(out_t *out, const acc_t *mat, const acc_t *v, acc_t *restrict acc,
                  long r0, long r1) {
    for (long jb = r0; jb < r1; jb += JB) {
        const long w = r1 - jb < JB ? r1 - jb : JB;
        const acc_t *m = mat + jb;
        for (long j = 0; j < w; ++j) acc[j] = 0;
        long k = 0;
        for (; k + 4 <= K; k += 4) {
            const acc_t v0 = v[k], v1 = v[k + 1], v2 = v[k + 2], v3 = v[k + 3];
            const acc_t *restrict p0 = m + k * RS, *restrict p1 = p0 + RS;
            const acc_t *restrict p2 = p1 + RS, *restrict p3 = p2 + RS;
            for (long j = 0; j < w; ++j)
                acc[j] += v0 * p0[j] + v1 * p1[j] + v2 * p2[j] + v3 * p3[j];
        }
        for (; k < K; ++k) {
            const acc_t v0 = v[k], *restrict p0 = m + k * RS;
            for (long j = 0; j < w; ++j) acc[j] += v0 * p0[j];
        }
        for (long j = 0; j < w; ++j) out[(jb + j) * OS] = STORE_OUT(acc[j]);
    }
}
"""

# one matrix: a strided vector is first gathered into this thread's buffer
_GEMV_ONE = """\
static void gemv_one(out_t *out, const acc_t *mat, const acc_t *vec, char *ws, int tid,
                     int nth) {
    const acc_t *v = vec;
    if (VS != 1) {
        acc_t *vbuf = (acc_t *)ws;
        for (long k = 0; k < K; ++k) vbuf[k] = vec[k * VS];
        v = vbuf;
    }
    {call}
}
"""


def gemv_c(*, name: str, matrix: str, form: str, vec_bytes: int, lanes: int, threads: int) -> str:
    """The kernels and the exported entry `name(out, a, b)`: `matrix` ("a" or "b") is the
    argument holding the matrix, `form` "dot" (its rows are contiguous: one dot product per
    output) or "axpy" (its columns are: scaled rows summed). Needs the defines ROWS, K, RS,
    VS, OS, MB, VB, SCB (outputs; row/vector/out strides; per-batch strides), SZ_V, SZ_T,
    WS_BYTES, and `workspace()`."""
    if form == "axpy":
        kernels = _AXPYS
        call = "axpys(out, mat, v, (acc_t *)(ws + SZ_V), ROWS * tid / nth, ROWS * (tid + 1) / nth);"
    else:
        kernels = _DOTS_SCALAR
        if vec_bytes:
            kernels = _DOTS_VECTOR.format(vec_bytes=vec_bytes, lanes=lanes) + kernels + "#endif\n"
        call = "dots(out, mat, v, ROWS * tid / nth, ROWS * (tid + 1) / nth);"
    vector = "b" if matrix == "a" else "a"
    args = (
        f"(out_t *)out + i * SCB, (const acc_t *){matrix} + i * MB, "
        f"(const acc_t *){vector} + i * VB, ws + tid * SZ_T, tid, nth"
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
    return kernels + _GEMV_ONE.replace("{call}", call) + entry


def gemv_source(
    spec: GemmSpec, threads: int, vec_bytes: int, name: str, matrix: str, form: str
) -> str:
    """The whole C file for `spec` (one of M, N is 1; `matrix` and `form` as in `gemv_c`),
    with the blocked GEMM's calling contract. A strided vector is gathered per thread."""
    size = spec.acc_dtype.itemsize
    (sa, sb, sc), k = (spec.a_strides, spec.b_strides, spec.c_strides), spec.k
    if matrix == "a":  # A with b's column: out[i, :, 0]
        rows, rs, (vs, os_, mb, vb) = (
            spec.m,
            sa[1 if form == "dot" else 2],
            (sb[1], sc[1], sa[0], sb[0]),
        )
    else:  # a's row with B: out[i, 0, :]
        rows, rs, (vs, os_, mb, vb) = (
            spec.n,
            sb[2 if form == "dot" else 1],
            (sa[2], sc[2], sb[0], sa[0]),
        )
    sz_v = -(-k * size // 64) * 64
    sz_t = sz_v + (2048 * size if form == "axpy" else 0)  # per thread: vector, accumulators
    consts = {"BATCH": spec.batch, "ROWS": rows, "K": k, "RS": rs, "VS": vs, "OS": os_}
    consts |= {"MB": mb, "VB": vb, "SCB": sc[0], "SZ_V": sz_v, "SZ_T": sz_t}
    consts["WS_BYTES"] = max(64, threads * sz_t)
    defines = "".join(f"#define {key} {v}L\n" for key, v in consts.items())
    acc_c = "double" if size == 8 else "float"
    body = gemv_c(
        name=name, matrix=matrix, form=form, vec_bytes=vec_bytes, lanes=vec_bytes // size,
        threads=threads,
    )  # fmt: skip
    header = f"/* anychip GEMV ({form}): {spec}\n   threads={threads} vec_bytes={vec_bytes} */\n"
    conversions = gk.conversions_c(spec.dtype.name, spec.out_dtype.name, acc_c)
    return "\n".join((header, gd.INCLUDES, defines, conversions, gd.WORKSPACE, body))
