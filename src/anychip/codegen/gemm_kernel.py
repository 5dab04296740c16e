"""C text for the pieces of a generated GEMM: dtype conversions, panel packing, micro-kernel.

`anychip.codegen.gemm` assembles these into one self-contained C file; nothing here knows
about specs or tilings beyond plain integers, so each piece can be read on its own.
"""

from __future__ import annotations

# C storage type and conversions per dtype name. Halves are converted to float32 while
# packing, so the micro-kernel only ever sees float or double.
_F16_NATIVE = """\
#if defined(__FLT16_MAX__) && !defined(ANYCHIP_GEMM_SOFT_F16)
typedef _Float16 f16_t;
static inline float f16_load(f16_t x) { return (float)x; }
static inline f16_t f16_store(float x) { return (f16_t)x; }
#else
typedef uint16_t f16_t;
/* IEEE binary16 bits <-> float, round to nearest even (no _Float16 in this compiler) */
static inline float f16_load(f16_t h) {
    uint32_t s = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, u;
    float f;
    if (e == 0x1fu) u = s | 0x7f800000u | (m << 13);
    else if (e) u = s | ((e + 112u) << 23) | (m << 13);
    else { f = (float)m * 0x1p-24f; memcpy(&u, &f, 4); u |= s; }
    memcpy(&f, &u, 4);
    return f;
}
static inline f16_t f16_store(float x) {
    uint32_t u, a, s;
    memcpy(&u, &x, 4);
    s = (u >> 16) & 0x8000u;
    a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (f16_t)(s | 0x7e00u);     /* NaN */
    if (a >= 0x477ff000u) return (f16_t)(s | 0x7c00u);    /* rounds to inf */
    if (a < 0x38800000u) {                                /* subnormal: units of 2^-24 */
        float v;
        memcpy(&v, &a, 4);
        v = (v * 0x1p24f + 8388608.0f) - 8388608.0f;      /* round to nearest even */
        return (f16_t)(s | (uint32_t)v);
    }
    a += 0xfffu + ((a >> 13) & 1u);
    return (f16_t)(s | ((a - (112u << 23)) >> 13));
}
#endif
"""

_BF16 = """\
typedef uint16_t bf16_t; /* bfloat16 stored as its upper 16 bits */
static inline float bf16_load(bf16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline bf16_t bf16_store(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)0x7fc0u; /* NaN */
    return (bf16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);    /* round to nearest even */
}
"""

_CTYPE = {"float32": "float", "float64": "double", "float16": "f16_t", "bfloat16": "bf16_t"}
_LOAD = {"float32": "({x})", "float64": "({x})", "float16": "f16_load({x})"}
_LOAD["bfloat16"] = "bf16_load({x})"
_STORE = {"float32": "({x})", "float64": "({x})", "float16": "f16_store({x})"}
_STORE["bfloat16"] = "bf16_store({x})"


def conversions_c(in_dtype: str, out_dtype: str, acc_c: str) -> str:
    """typedefs `acc_t`, `in_t`, `out_t` and macros `LOAD_IN(x)`, `STORE_OUT(x)`."""
    names = {in_dtype, out_dtype}
    parts = []
    if "float16" in names:
        parts.append(_F16_NATIVE)
    if "bfloat16" in names:
        parts.append(_BF16)
    parts.append(f"typedef {acc_c} acc_t;")
    parts.append(f"typedef {_CTYPE[in_dtype]} in_t;")
    parts.append(f"typedef {_CTYPE[out_dtype]} out_t;")
    parts.append(f"#define LOAD_IN(x) ((acc_t){_LOAD[in_dtype].format(x='x')})")
    # float->half goes through float: `(acc_t)` first keeps double accumulators valid too
    store = _STORE[out_dtype].format(x="x")
    if out_dtype in ("float16", "bfloat16"):
        store = _STORE[out_dtype].format(x="(float)(x)")
    parts.append(f"#define STORE_OUT(x) ({store})")
    return "\n".join(parts) + "\n"


def pack_a_c(row_major: bool) -> str:
    """pack_a: A block (mc, kc) -> MR-row slivers, each (kc, MR) contiguous, zero padded.

    `row_major` picks the loop order that reads A's unit-stride dimension innermost."""
    if row_major:  # A[m, k] with SAK == 1: read rows, write with stride MR
        body = """\
        for (int i = 0; i < mr; ++i)
            for (int k = 0; k < kc; ++k) dst[k * MR + i] = LOAD_IN(src[i * SAM + k * SAK]);
        for (int i = mr; i < MR; ++i)
            for (int k = 0; k < kc; ++k) dst[k * MR + i] = 0;"""
    else:
        return _PACK_A_COLUMNS
    return f"""\
static void pack_a(acc_t *restrict dst, const in_t *restrict a, long m0, int mc, long k0, int kc) {{
    for (int s = 0; s < mc; s += MR) {{
        const int mr = mc - s < MR ? mc - s : MR;
        const in_t *src = a + (m0 + s) * SAM + k0 * SAK;
{body}
        dst += MR * kc;
    }}
}}
"""


def transpose16_c(indexed: bool) -> str:
    """TRANSPOSE16, or (`indexed`) its form whose column i starts at src + off[i]."""
    if not indexed:
        return TRANSPOSE16
    sig = "const float *restrict src)"
    return TRANSPOSE16.replace(
        sig, "const float *restrict src,\n                               const long *restrict off)"
    ).replace("src + i * SBN", "src + off[i]")


# A read down its columns (A^T stored row-major: a softmax gradient's transpose in attention's
# backward). One sliver at a time would walk all kc rows of A for MR values each, rows a
# power-of-two stride apart that share a few L1 sets: every sliver re-fetched every row from
# L2, and a copy of mr values GCC turns into a memmove call per row (3x slower GEMMs).
# Instead 8 rows at a time feed every sliver, so a row's cache lines
# stay in L1 while the slivers that need them pass.
_PACK_A_COLUMNS = """\
static void pack_a(acc_t *restrict dst, const in_t *restrict a, long m0, int mc, long k0, int kc) {
    for (int kb = 0; kb < kc; kb += 8) {
        const int ke = kc - kb < 8 ? kc : kb + 8;
        acc_t *d = dst;
        for (int s = 0; s < mc; s += MR) {
            const int mr = mc - s < MR ? mc - s : MR;
            const in_t *src = a + (m0 + s) * SAM + k0 * SAK;
            if (mr == MR) /* a constant trip count: moves, not a memmove call per row */
                for (int k = kb; k < ke; ++k)
                    for (int i = 0; i < MR; ++i) d[k * MR + i] = LOAD_IN(src[i * SAM + k * SAK]);
            else
                for (int k = kb; k < ke; ++k) {
                    for (int i = 0; i < mr; ++i) d[k * MR + i] = LOAD_IN(src[i * SAM + k * SAK]);
                    for (int i = mr; i < MR; ++i) d[k * MR + i] = 0;
                }
            d += MR * kc;
        }
    }
}
"""


# AVX-512 float32: a 16 x 16 block of a column-major B (16 columns, 16 k each, SBK == 1)
# transposed in registers into 16 rows of dst (stride NR): 16 loads and 16 stores instead
# of 256 scalar moves. Unpack pairs of columns, then 4 x 4 blocks within 128-bit lanes,
# then the lanes. The next lines of each column are prefetched: the reads are 16 long
# runs the hardware prefetcher follows poorly when B was just evicted to L3.
TRANSPOSE16 = """\
#if defined(__AVX512F__) && !defined(ANYCHIP_GEMM_SCALAR)
#include <immintrin.h>
#define PACK_B_T16 1
static inline void transpose16(float *restrict dst, const float *restrict src) {
    __m512 r[16], t[16];
    for (int i = 0; i < 16; ++i) {
        __builtin_prefetch(src + i * SBN + 64);
        r[i] = _mm512_loadu_ps(src + i * SBN);
    }
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);     /* per lane: a0 b0 a1 b1 */
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]); /* a2 b2 a3 b3 */
    }
    for (int i = 0; i < 16; i += 4) { /* r[i + j], lane L: column i..i+3 at k = 4L + j */
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int j = 0; j < 4; ++j) {
        const __m512 v0 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);
        const __m512 v1 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
        const __m512 w0 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xDD);
        const __m512 w1 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xDD);
        _mm512_storeu_ps(dst + j * NR, _mm512_shuffle_f32x4(v0, v1, 0x88));
        _mm512_storeu_ps(dst + (8 + j) * NR, _mm512_shuffle_f32x4(v0, v1, 0xDD));
        _mm512_storeu_ps(dst + (4 + j) * NR, _mm512_shuffle_f32x4(w0, w1, 0x88));
        _mm512_storeu_ps(dst + (12 + j) * NR, _mm512_shuffle_f32x4(w0, w1, 0xDD));
    }
}
#endif
"""

_PACK_B_T16_LOOP = """\
#ifdef PACK_B_T16 /* whole 16-column groups, 16 k at a time; the rest below */
    for (; j0 + 16 <= nr; j0 += 16) {
        int k = 0;
        for (; k + 16 <= kc; k += 16) transpose16(dst + k * NR + j0, src + k + j0 * SBN);
        for (; k < kc; ++k)
            for (int j = j0; j < j0 + 16; ++j) dst[k * NR + j] = src[k + j * SBN];
    }
#endif
"""


def pack_b_c(col_major: bool, float32: bool = False) -> str:
    """pack_b_sliver: columns [n0, n0+nr) of B's (kc, nc) panel -> (kc, NR), zero padded.

    `col_major` (SBK == 1, e.g. a transposed view) reads down each column innermost, 16
    rows at a time: the 16 (NR,) rows of dst being written stay in L1 while the columns are
    read, where whole-kc columns would scatter writes over a sliver larger than L1. With
    `float32` too, AVX-512 hosts transpose 16 x 16 blocks in registers (TRANSPOSE16)."""
    fast = _PACK_B_T16_LOOP if col_major and float32 else ""
    if col_major:
        body = """\
    for (int kb = 0; kb < kc; kb += 16) {
        const int ke = kb + 16 < kc ? kb + 16 : kc;
        for (int j = j0; j < nr; ++j)
            for (int k = kb; k < ke; ++k) dst[k * NR + j] = LOAD_IN(src[k * SBK + j * SBN]);
        for (int j = nr; j < NR; ++j)
            for (int k = kb; k < ke; ++k) dst[k * NR + j] = 0;
    }"""
    else:
        body = """\
    for (int k = 0; k < kc; ++k) {
        for (int j = j0; j < nr; ++j) dst[k * NR + j] = LOAD_IN(src[k * SBK + j * SBN]);
        for (int j = nr; j < NR; ++j) dst[k * NR + j] = 0;
    }"""
    head = TRANSPOSE16 if fast else ""
    return f"""\
{head}static void pack_b_sliver(acc_t *restrict dst, const in_t *restrict b, long k0, int kc,
                          long n0, int nr) {{
    const in_t *src = b + k0 * SBK + n0 * SBN;
    int j0 = 0;
{fast}{body}
}}
"""


# How each micro-kernel variant addresses A and B at k step u (row i, vector j), and how far
# it moves them per k step: packed panels, or A / B read in place (unit stride, no packing)
_A_AT = {"packed": "ap[{u} * MR + {i}]", "inplace": "ap[{i} * SAM + {u}]"}
_A_STEP = {"packed": "MR", "inplace": "1"}
_B_AT = {"packed": "bp + {u} * NR + {off}", "inplace": "bp + {u} * SBK + {off}"}
_B_STEP = {"packed": "NR", "inplace": "SBK"}
MICRO_NAMES = {("packed", "packed"): "micro", ("inplace", "packed"): "micro_ua"}
MICRO_NAMES[("packed", "inplace")] = "micro_ub"


def _fma_body(mr: int, nv: int, lanes: int, u: int, indent: str, a: str, b: str) -> list[str]:
    """One k step of the vector micro-kernel: nv B vectors times mr broadcast A values."""
    lines = [f"{indent}{{"]
    at = _B_AT[b]
    loads = ", ".join(f"b{j} = loadv({at.format(u=u, off=j * lanes)})" for j in range(nv))
    lines.append(f"{indent}    const vec_t {loads};")
    for i in range(mr):
        fmas = " ".join(f"c{i}_{j} += a * b{j};" for j in range(nv))
        a_at = _A_AT[a].format(u=u, i=i)
        lines.append(f"{indent}    {{ const vec_t a = bcast({a_at}); {fmas} }}")
    lines.append(f"{indent}}}")
    return lines


VECTOR_HELPERS = """\
typedef acc_t vec_t __attribute__((vector_size({vec_bytes})));
static inline vec_t bcast(acc_t x) {{ return (vec_t){{{zero}}}; }}
static inline vec_t loadv(const acc_t *p) {{ vec_t v; memcpy(&v, p, sizeof v); return v; }}
static inline void storev(acc_t *p, vec_t v) {{ memcpy(p, &v, sizeof v); }}
"""


def micro_vector_c(
    mr: int,
    nr: int,
    lanes: int,
    unroll: int,
    a: str = "packed",
    b: str = "packed",
    suffix: str = "",
) -> str:
    """micro: C[mr, nr] (= or +=) A(kc, MR) x B(kc, NR), accumulators held in registers;
    A and B from packed panels or (`a`/`b` = "inplace") read where they lie. An `nr` below
    NR (the edge variant, name + `suffix`) computes the first nr columns of a packed sliver.

    Written with GCC vector extensions so GCC and Clang emit (embedded-broadcast) FMAs."""
    nv = nr // lanes
    acc = ", ".join(f"c{i}_{j} = {{0}}" for i in range(mr) for j in range(nv))
    name = MICRO_NAMES[(a, b)] + suffix
    out = [
        f"static inline void {name}(int kc, const acc_t *restrict ap, const acc_t *restrict bp,",
        "                         acc_t *restrict c, long ldc, int first) {",
        f"    vec_t {acc};",
        "    int k = 0;",
        f"    for (; k + {unroll} <= kc; k += {unroll}) {{",
    ]
    for u in range(unroll):
        out += _fma_body(mr, nv, lanes, u, "        ", a, b)
    out += [f"        ap += {unroll} * {_A_STEP[a]};", f"        bp += {unroll} * {_B_STEP[b]};"]
    out += ["    }", "    for (; k < kc; ++k) {"]
    out += _fma_body(mr, nv, lanes, 0, "        ", a, b)
    out += [f"        ap += {_A_STEP[a]};", f"        bp += {_B_STEP[b]};", "    }"]
    out += ["    if (first) {"]
    for i in range(mr):
        st = " ".join(f"storev(c + {i} * ldc + {j * lanes}, c{i}_{j});" for j in range(nv))
        out.append(f"        {st}")
    out.append("    } else {")
    for i in range(mr):
        st = " ".join(
            f"storev(c + {i} * ldc + {j * lanes}, loadv(c + {i} * ldc + {j * lanes}) + c{i}_{j});"
            for j in range(nv)
        )
        out.append(f"        {st}")
    out += ["    }", "}"]
    return "\n".join(out) + "\n"


def micro_scalar_c(a: str = "packed", b: str = "packed") -> str:
    """The same contract as `micro_vector_c` in plain C loops (no vector extensions)."""
    a_row = "SAM" if a == "inplace" else "1"
    return f"""\
static inline void {MICRO_NAMES[(a, b)]}(int kc, const acc_t *restrict ap,
        const acc_t *restrict bp, acc_t *restrict c, long ldc, int first) {{
    acc_t acc[MR][NR] = {{{{0}}}};
    for (int k = 0; k < kc; ++k, ap += {_A_STEP[a]}, bp += {_B_STEP[b]})
        for (int i = 0; i < MR; ++i)
            for (int j = 0; j < NR; ++j) acc[i][j] += ap[i * {a_row}] * bp[j];
    for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) c[i * ldc + j] = acc[i][j] + (first ? 0 : c[i * ldc + j]);
}}
"""


def micro_c(
    mr: int,
    nr: int,
    lanes: int,
    unroll: int,
    vec_bytes: int,
    inplace: str = "",
    edge: int = 0,
) -> str:
    """The micro-kernels the driver calls: `micro` on packed panels, plus `micro_ua` (A read
    in place) or `micro_ub` (B read in place) when `inplace` is "a" or "b". Vector code
    where GCC vector extensions exist, else scalar. `edge` > 0 (the columns of N's last,
    narrower sliver) adds `micro_e` (and `micro_ua_e`) computing only as many vectors as
    those columns need, and defines EDGE_NR to that width (0 without them)."""
    variants = [("packed", "packed")]
    if inplace:
        variants.append(("inplace", "packed") if inplace == "a" else ("packed", "inplace"))
    scalar = "".join(micro_scalar_c(a, b) for a, b in variants)
    if vec_bytes == 0:
        return scalar + "#define EDGE_NR 0\n"
    zero = ", ".join(["x"] * lanes)
    vector = VECTOR_HELPERS.format(vec_bytes=vec_bytes, zero=zero)
    vector += "".join(micro_vector_c(mr, nr, lanes, unroll, a, b) for a, b in variants)
    edge_nr = -(-edge // lanes) * lanes if edge else 0
    if 0 < edge_nr < nr:  # a packed edge sliver, narrower than a full one
        vector += "".join(
            micro_vector_c(mr, edge_nr, lanes, unroll, a, "packed", "_e")
            for a, b in variants
            if b == "packed"
        )
    else:
        edge_nr = 0
    vector += f"#define EDGE_NR {edge_nr}\n"
    guard = "#if defined(__GNUC__) && !defined(ANYCHIP_GEMM_SCALAR)"
    return f"{guard}\n{vector}#else\n{scalar}#define EDGE_NR 0\n#endif\n"
