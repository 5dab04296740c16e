/* anychip GEMM: GemmSpec(batch=2, m=100, n=70, k=50, dtype=anychip.float32, out_dtype=anychip.float32, a_strides=(5000, 50, 1), b_strides=(3500, 1, 50), c_strides=(7000, 70, 1), k_dims=(), n_dims=(), b_bounds=())
   tiling: GemmTiling(mc=56, nc=64, kc=32, mr=14, nr=32, vec_bytes=64, unroll=2, threads=2, batch_parallel=False, split_k=False) */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define BATCH 2L
#define M 100L
#define N 70L
#define K 50L
#define MC 56L
#define NC 64L
#define KC 32L
#define MR 14L
#define NR 32L
#define SAB 5000L
#define SAM 50L
#define SAK 1L
#define SBB 3500L
#define SBK 1L
#define SBN 50L
#define SCB 7000L
#define SCM 70L
#define SCN 1L
#define LDC 70L
#define SZ_A 7168L
#define SZ_B 8192L
#define SZ_S 0L
#define OFF_A 8192L
#define OFF_S 22528L
#define WS_BYTES 22528L
#define DIRECT 1L
#define SPLIT_K 0L
#define INPLACE_A 0L
#define INPLACE_B 0L

typedef float acc_t;
typedef float in_t;
typedef float out_t;
#define LOAD_IN(x) ((acc_t)(x))
#define STORE_OUT(x) ((x))

static void pack_a(acc_t *restrict dst, const in_t *restrict a, long m0, int mc, long k0, int kc) {
    for (int s = 0; s < mc; s += MR) {
        const int mr = mc - s < MR ? mc - s : MR;
        const in_t *src = a + (m0 + s) * SAM + k0 * SAK;
        for (int i = 0; i < mr; ++i)
            for (int k = 0; k < kc; ++k) dst[k * MR + i] = LOAD_IN(src[i * SAM + k * SAK]);
        for (int i = mr; i < MR; ++i)
            for (int k = 0; k < kc; ++k) dst[k * MR + i] = 0;
        dst += MR * kc;
    }
}

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
static void pack_b_sliver(acc_t *restrict dst, const in_t *restrict b, long k0, int kc,
                          long n0, int nr) {
    const in_t *src = b + k0 * SBK + n0 * SBN;
    int j0 = 0;
#ifdef PACK_B_T16 /* whole 16-column groups, 16 k at a time; the rest below */
    for (; j0 + 16 <= nr; j0 += 16) {
        int k = 0;
        for (; k + 16 <= kc; k += 16) transpose16(dst + k * NR + j0, src + k + j0 * SBN);
        for (; k < kc; ++k)
            for (int j = j0; j < j0 + 16; ++j) dst[k * NR + j] = src[k + j * SBN];
    }
#endif
    for (int kb = 0; kb < kc; kb += 16) {
        const int ke = kb + 16 < kc ? kb + 16 : kc;
        for (int j = j0; j < nr; ++j)
            for (int k = kb; k < ke; ++k) dst[k * NR + j] = LOAD_IN(src[k * SBK + j * SBN]);
        for (int j = nr; j < NR; ++j)
            for (int k = kb; k < ke; ++k) dst[k * NR + j] = 0;
    }
}

#if defined(__GNUC__) && !defined(ANYCHIP_GEMM_SCALAR)
typedef acc_t vec_t __attribute__((vector_size(64)));
static inline vec_t bcast(acc_t x) { return (vec_t){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }
static inline vec_t loadv(const acc_t *p) { vec_t v; memcpy(&v, p, sizeof v); return v; }
static inline void storev(acc_t *p, vec_t v) { memcpy(p, &v, sizeof v); }
static inline void micro(int kc, const acc_t *restrict ap, const acc_t *restrict bp,
                         acc_t *restrict c, long ldc, int first) {
    vec_t c0_0 = {0}, c0_1 = {0}, c1_0 = {0}, c1_1 = {0}, c2_0 = {0}, c2_1 = {0}, c3_0 = {0}, c3_1 = {0}, c4_0 = {0}, c4_1 = {0}, c5_0 = {0}, c5_1 = {0}, c6_0 = {0}, c6_1 = {0}, c7_0 = {0}, c7_1 = {0}, c8_0 = {0}, c8_1 = {0}, c9_0 = {0}, c9_1 = {0}, c10_0 = {0}, c10_1 = {0}, c11_0 = {0}, c11_1 = {0}, c12_0 = {0}, c12_1 = {0}, c13_0 = {0}, c13_1 = {0};
    int k = 0;
    for (; k + 2 <= kc; k += 2) {
        {
            const vec_t b0 = loadv(bp + 0 * NR + 0), b1 = loadv(bp + 0 * NR + 16);
            { const vec_t a = bcast(ap[0 * MR + 0]); c0_0 += a * b0; c0_1 += a * b1; }
            { const vec_t a = bcast(ap[0 * MR + 1]); c1_0 += a * b0; c1_1 += a * b1; }
            { const vec_t a = bcast(ap[0 * MR + 2]); c2_0 += a * b0; c2_1 += a * b1; }
            { const vec_t a = bcast(ap[0 * MR + 3]); c3_0 += a * b0; c3_1 += a * b1; }
            { const vec_t a = bcast(ap[0 * MR + 4]); c4_0 += a * b0; c4_1 += a * b1; }
            { const vec_t a = bcast(ap[0 * MR + 5]); c5_0 += a * b0; c5_1 += a * b1; }
            { const vec_t a = bcast(ap[0 * MR + 6]); c6_0 += a * b0; c6_1 += a * b1; }
            { const vec_t a = bcast(ap[0 * MR + 7]); c7_0 += a * b0; c7_1 += a * b1; }
            { const vec_t a = bcast(ap[0 * MR + 8]); c8_0 += a * b0; c8_1 += a * b1; }
            { const vec_t a = bcast(ap[0 * MR + 9]); c9_0 += a * b0; c9_1 += a * b1; }
            { const vec_t a = bcast(ap[0 * MR + 10]); c10_0 += a * b0; c10_1 += a * b1; }
            { const vec_t a = bcast(ap[0 * MR + 11]); c11_0 += a * b0; c11_1 += a * b1; }
            { const vec_t a = bcast(ap[0 * MR + 12]); c12_0 += a * b0; c12_1 += a * b1; }
            { const vec_t a = bcast(ap[0 * MR + 13]); c13_0 += a * b0; c13_1 += a * b1; }
        }
        {
            const vec_t b0 = loadv(bp + 1 * NR + 0), b1 = loadv(bp + 1 * NR + 16);
            { const vec_t a = bcast(ap[1 * MR + 0]); c0_0 += a * b0; c0_1 += a * b1; }
            { const vec_t a = bcast(ap[1 * MR + 1]); c1_0 += a * b0; c1_1 += a * b1; }
            { const vec_t a = bcast(ap[1 * MR + 2]); c2_0 += a * b0; c2_1 += a * b1; }
            { const vec_t a = bcast(ap[1 * MR + 3]); c3_0 += a * b0; c3_1 += a * b1; }
            { const vec_t a = bcast(ap[1 * MR + 4]); c4_0 += a * b0; c4_1 += a * b1; }
            { const vec_t a = bcast(ap[1 * MR + 5]); c5_0 += a * b0; c5_1 += a * b1; }
            { const vec_t a = bcast(ap[1 * MR + 6]); c6_0 += a * b0; c6_1 += a * b1; }
            { const vec_t a = bcast(ap[1 * MR + 7]); c7_0 += a * b0; c7_1 += a * b1; }
            { const vec_t a = bcast(ap[1 * MR + 8]); c8_0 += a * b0; c8_1 += a * b1; }
            { const vec_t a = bcast(ap[1 * MR + 9]); c9_0 += a * b0; c9_1 += a * b1; }
            { const vec_t a = bcast(ap[1 * MR + 10]); c10_0 += a * b0; c10_1 += a * b1; }
            { const vec_t a = bcast(ap[1 * MR + 11]); c11_0 += a * b0; c11_1 += a * b1; }
            { const vec_t a = bcast(ap[1 * MR + 12]); c12_0 += a * b0; c12_1 += a * b1; }
            { const vec_t a = bcast(ap[1 * MR + 13]); c13_0 += a * b0; c13_1 += a * b1; }
        }
        ap += 2 * MR;
        bp += 2 * NR;
    }
    for (; k < kc; ++k) {
        {
            const vec_t b0 = loadv(bp + 0 * NR + 0), b1 = loadv(bp + 0 * NR + 16);
            { const vec_t a = bcast(ap[0 * MR + 0]); c0_0 += a * b0; c0_1 += a * b1; }
            { const vec_t a = bcast(ap[0 * MR + 1]); c1_0 += a * b0; c1_1 += a * b1; }
            { const vec_t a = bcast(ap[0 * MR + 2]); c2_0 += a * b0; c2_1 += a * b1; }
            { const vec_t a = bcast(ap[0 * MR + 3]); c3_0 += a * b0; c3_1 += a * b1; }
            { const vec_t a = bcast(ap[0 * MR + 4]); c4_0 += a * b0; c4_1 += a * b1; }
            { const vec_t a = bcast(ap[0 * MR + 5]); c5_0 += a * b0; c5_1 += a * b1; }
            { const vec_t a = bcast(ap[0 * MR + 6]); c6_0 += a * b0; c6_1 += a * b1; }
            { const vec_t a = bcast(ap[0 * MR + 7]); c7_0 += a * b0; c7_1 += a * b1; }
            { const vec_t a = bcast(ap[0 * MR + 8]); c8_0 += a * b0; c8_1 += a * b1; }
            { const vec_t a = bcast(ap[0 * MR + 9]); c9_0 += a * b0; c9_1 += a * b1; }
            { const vec_t a = bcast(ap[0 * MR + 10]); c10_0 += a * b0; c10_1 += a * b1; }
            { const vec_t a = bcast(ap[0 * MR + 11]); c11_0 += a * b0; c11_1 += a * b1; }
            { const vec_t a = bcast(ap[0 * MR + 12]); c12_0 += a * b0; c12_1 += a * b1; }
            { const vec_t a = bcast(ap[0 * MR + 13]); c13_0 += a * b0; c13_1 += a * b1; }
        }
        ap += MR;
        bp += NR;
    }
    if (first) {
        storev(c + 0 * ldc + 0, c0_0); storev(c + 0 * ldc + 16, c0_1);
        storev(c + 1 * ldc + 0, c1_0); storev(c + 1 * ldc + 16, c1_1);
        storev(c + 2 * ldc + 0, c2_0); storev(c + 2 * ldc + 16, c2_1);
        storev(c + 3 * ldc + 0, c3_0); storev(c + 3 * ldc + 16, c3_1);
        storev(c + 4 * ldc + 0, c4_0); storev(c + 4 * ldc + 16, c4_1);
        storev(c + 5 * ldc + 0, c5_0); storev(c + 5 * ldc + 16, c5_1);
        storev(c + 6 * ldc + 0, c6_0); storev(c + 6 * ldc + 16, c6_1);
        storev(c + 7 * ldc + 0, c7_0); storev(c + 7 * ldc + 16, c7_1);
        storev(c + 8 * ldc + 0, c8_0); storev(c + 8 * ldc + 16, c8_1);
        storev(c + 9 * ldc + 0, c9_0); storev(c + 9 * ldc + 16, c9_1);
        storev(c + 10 * ldc + 0, c10_0); storev(c + 10 * ldc + 16, c10_1);
        storev(c + 11 * ldc + 0, c11_0); storev(c + 11 * ldc + 16, c11_1);
        storev(c + 12 * ldc + 0, c12_0); storev(c + 12 * ldc + 16, c12_1);
        storev(c + 13 * ldc + 0, c13_0); storev(c + 13 * ldc + 16, c13_1);
    } else {
        storev(c + 0 * ldc + 0, loadv(c + 0 * ldc + 0) + c0_0); storev(c + 0 * ldc + 16, loadv(c + 0 * ldc + 16) + c0_1);
        storev(c + 1 * ldc + 0, loadv(c + 1 * ldc + 0) + c1_0); storev(c + 1 * ldc + 16, loadv(c + 1 * ldc + 16) + c1_1);
        storev(c + 2 * ldc + 0, loadv(c + 2 * ldc + 0) + c2_0); storev(c + 2 * ldc + 16, loadv(c + 2 * ldc + 16) + c2_1);
        storev(c + 3 * ldc + 0, loadv(c + 3 * ldc + 0) + c3_0); storev(c + 3 * ldc + 16, loadv(c + 3 * ldc + 16) + c3_1);
        storev(c + 4 * ldc + 0, loadv(c + 4 * ldc + 0) + c4_0); storev(c + 4 * ldc + 16, loadv(c + 4 * ldc + 16) + c4_1);
        storev(c + 5 * ldc + 0, loadv(c + 5 * ldc + 0) + c5_0); storev(c + 5 * ldc + 16, loadv(c + 5 * ldc + 16) + c5_1);
        storev(c + 6 * ldc + 0, loadv(c + 6 * ldc + 0) + c6_0); storev(c + 6 * ldc + 16, loadv(c + 6 * ldc + 16) + c6_1);
        storev(c + 7 * ldc + 0, loadv(c + 7 * ldc + 0) + c7_0); storev(c + 7 * ldc + 16, loadv(c + 7 * ldc + 16) + c7_1);
        storev(c + 8 * ldc + 0, loadv(c + 8 * ldc + 0) + c8_0); storev(c + 8 * ldc + 16, loadv(c + 8 * ldc + 16) + c8_1);
        storev(c + 9 * ldc + 0, loadv(c + 9 * ldc + 0) + c9_0); storev(c + 9 * ldc + 16, loadv(c + 9 * ldc + 16) + c9_1);
        storev(c + 10 * ldc + 0, loadv(c + 10 * ldc + 0) + c10_0); storev(c + 10 * ldc + 16, loadv(c + 10 * ldc + 16) + c10_1);
        storev(c + 11 * ldc + 0, loadv(c + 11 * ldc + 0) + c11_0); storev(c + 11 * ldc + 16, loadv(c + 11 * ldc + 16) + c11_1);
        storev(c + 12 * ldc + 0, loadv(c + 12 * ldc + 0) + c12_0); storev(c + 12 * ldc + 16, loadv(c + 12 * ldc + 16) + c12_1);
        storev(c + 13 * ldc + 0, loadv(c + 13 * ldc + 0) + c13_0); storev(c + 13 * ldc + 16, loadv(c + 13 * ldc + 16) + c13_1);
    }
}
static inline void micro_e(int kc, const acc_t *restrict ap, const acc_t *restrict bp,
                         acc_t *restrict c, long ldc, int first) {
    vec_t c0_0 = {0}, c1_0 = {0}, c2_0 = {0}, c3_0 = {0}, c4_0 = {0}, c5_0 = {0}, c6_0 = {0}, c7_0 = {0}, c8_0 = {0}, c9_0 = {0}, c10_0 = {0}, c11_0 = {0}, c12_0 = {0}, c13_0 = {0};
    int k = 0;
    for (; k + 2 <= kc; k += 2) {
        {
            const vec_t b0 = loadv(bp + 0 * NR + 0);
            { const vec_t a = bcast(ap[0 * MR + 0]); c0_0 += a * b0; }
            { const vec_t a = bcast(ap[0 * MR + 1]); c1_0 += a * b0; }
            { const vec_t a = bcast(ap[0 * MR + 2]); c2_0 += a * b0; }
            { const vec_t a = bcast(ap[0 * MR + 3]); c3_0 += a * b0; }
            { const vec_t a = bcast(ap[0 * MR + 4]); c4_0 += a * b0; }
            { const vec_t a = bcast(ap[0 * MR + 5]); c5_0 += a * b0; }
            { const vec_t a = bcast(ap[0 * MR + 6]); c6_0 += a * b0; }
            { const vec_t a = bcast(ap[0 * MR + 7]); c7_0 += a * b0; }
            { const vec_t a = bcast(ap[0 * MR + 8]); c8_0 += a * b0; }
            { const vec_t a = bcast(ap[0 * MR + 9]); c9_0 += a * b0; }
            { const vec_t a = bcast(ap[0 * MR + 10]); c10_0 += a * b0; }
            { const vec_t a = bcast(ap[0 * MR + 11]); c11_0 += a * b0; }
            { const vec_t a = bcast(ap[0 * MR + 12]); c12_0 += a * b0; }
            { const vec_t a = bcast(ap[0 * MR + 13]); c13_0 += a * b0; }
        }
        {
            const vec_t b0 = loadv(bp + 1 * NR + 0);
            { const vec_t a = bcast(ap[1 * MR + 0]); c0_0 += a * b0; }
            { const vec_t a = bcast(ap[1 * MR + 1]); c1_0 += a * b0; }
            { const vec_t a = bcast(ap[1 * MR + 2]); c2_0 += a * b0; }
            { const vec_t a = bcast(ap[1 * MR + 3]); c3_0 += a * b0; }
            { const vec_t a = bcast(ap[1 * MR + 4]); c4_0 += a * b0; }
            { const vec_t a = bcast(ap[1 * MR + 5]); c5_0 += a * b0; }
            { const vec_t a = bcast(ap[1 * MR + 6]); c6_0 += a * b0; }
            { const vec_t a = bcast(ap[1 * MR + 7]); c7_0 += a * b0; }
            { const vec_t a = bcast(ap[1 * MR + 8]); c8_0 += a * b0; }
            { const vec_t a = bcast(ap[1 * MR + 9]); c9_0 += a * b0; }
            { const vec_t a = bcast(ap[1 * MR + 10]); c10_0 += a * b0; }
            { const vec_t a = bcast(ap[1 * MR + 11]); c11_0 += a * b0; }
            { const vec_t a = bcast(ap[1 * MR + 12]); c12_0 += a * b0; }
            { const vec_t a = bcast(ap[1 * MR + 13]); c13_0 += a * b0; }
        }
        ap += 2 * MR;
        bp += 2 * NR;
    }
    for (; k < kc; ++k) {
        {
            const vec_t b0 = loadv(bp + 0 * NR + 0);
            { const vec_t a = bcast(ap[0 * MR + 0]); c0_0 += a * b0; }
            { const vec_t a = bcast(ap[0 * MR + 1]); c1_0 += a * b0; }
            { const vec_t a = bcast(ap[0 * MR + 2]); c2_0 += a * b0; }
            { const vec_t a = bcast(ap[0 * MR + 3]); c3_0 += a * b0; }
            { const vec_t a = bcast(ap[0 * MR + 4]); c4_0 += a * b0; }
            { const vec_t a = bcast(ap[0 * MR + 5]); c5_0 += a * b0; }
            { const vec_t a = bcast(ap[0 * MR + 6]); c6_0 += a * b0; }
            { const vec_t a = bcast(ap[0 * MR + 7]); c7_0 += a * b0; }
            { const vec_t a = bcast(ap[0 * MR + 8]); c8_0 += a * b0; }
            { const vec_t a = bcast(ap[0 * MR + 9]); c9_0 += a * b0; }
            { const vec_t a = bcast(ap[0 * MR + 10]); c10_0 += a * b0; }
            { const vec_t a = bcast(ap[0 * MR + 11]); c11_0 += a * b0; }
            { const vec_t a = bcast(ap[0 * MR + 12]); c12_0 += a * b0; }
            { const vec_t a = bcast(ap[0 * MR + 13]); c13_0 += a * b0; }
        }
        ap += MR;
        bp += NR;
    }
    if (first) {
        storev(c + 0 * ldc + 0, c0_0);
        storev(c + 1 * ldc + 0, c1_0);
        storev(c + 2 * ldc + 0, c2_0);
        storev(c + 3 * ldc + 0, c3_0);
        storev(c + 4 * ldc + 0, c4_0);
        storev(c + 5 * ldc + 0, c5_0);
        storev(c + 6 * ldc + 0, c6_0);
        storev(c + 7 * ldc + 0, c7_0);
        storev(c + 8 * ldc + 0, c8_0);
        storev(c + 9 * ldc + 0, c9_0);
        storev(c + 10 * ldc + 0, c10_0);
        storev(c + 11 * ldc + 0, c11_0);
        storev(c + 12 * ldc + 0, c12_0);
        storev(c + 13 * ldc + 0, c13_0);
    } else {
        storev(c + 0 * ldc + 0, loadv(c + 0 * ldc + 0) + c0_0);
        storev(c + 1 * ldc + 0, loadv(c + 1 * ldc + 0) + c1_0);
        storev(c + 2 * ldc + 0, loadv(c + 2 * ldc + 0) + c2_0);
        storev(c + 3 * ldc + 0, loadv(c + 3 * ldc + 0) + c3_0);
        storev(c + 4 * ldc + 0, loadv(c + 4 * ldc + 0) + c4_0);
        storev(c + 5 * ldc + 0, loadv(c + 5 * ldc + 0) + c5_0);
        storev(c + 6 * ldc + 0, loadv(c + 6 * ldc + 0) + c6_0);
        storev(c + 7 * ldc + 0, loadv(c + 7 * ldc + 0) + c7_0);
        storev(c + 8 * ldc + 0, loadv(c + 8 * ldc + 0) + c8_0);
        storev(c + 9 * ldc + 0, loadv(c + 9 * ldc + 0) + c9_0);
        storev(c + 10 * ldc + 0, loadv(c + 10 * ldc + 0) + c10_0);
        storev(c + 11 * ldc + 0, loadv(c + 11 * ldc + 0) + c11_0);
        storev(c + 12 * ldc + 0, loadv(c + 12 * ldc + 0) + c12_0);
        storev(c + 13 * ldc + 0, loadv(c + 13 * ldc + 0) + c13_0);
    }
}
#define EDGE_NR 16
#else
static inline void micro(int kc, const acc_t *restrict ap,
        const acc_t *restrict bp, acc_t *restrict c, long ldc, int first) {
    acc_t acc[MR][NR] = {{0}};
    for (int k = 0; k < kc; ++k, ap += MR, bp += NR)
        for (int i = 0; i < MR; ++i)
            for (int j = 0; j < NR; ++j) acc[i][j] += ap[i * 1] * bp[j];
    for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) c[i * ldc + j] = acc[i][j] + (first ? 0 : c[i * ldc + j]);
}
#define EDGE_NR 0
#endif

/* glibc's per-thread destructor list (what C++ thread_local uses; no key limit): the
   workspace is freed when its thread exits. Weak, so a libc without it only keeps it. */
extern int __cxa_thread_atexit_impl(void (*)(void *), void *, void *) __attribute__((weak));
extern void *__dso_handle;
static void workspace_free(void *ws) { free(ws); }

static char *workspace(void) { /* one per calling thread, freed when the thread exits */
    static _Thread_local char *ws;
    if (!ws) {
        if (!(ws = aligned_alloc(64, WS_BYTES))) {
            fprintf(stderr, "anychip gemm: cannot allocate %ld bytes of workspace\n", WS_BYTES);
            abort();
        }
        if (__cxa_thread_atexit_impl)
            __cxa_thread_atexit_impl(workspace_free, ws, &__dso_handle);
    }
    return ws;
}

static void macro(acc_t *ct, const acc_t *apack, const acc_t *bpack, const in_t *a,
                  const in_t *b, long ic, int mc, long jc, int nc, long pc, int s0, int s1,
                  int kc, int first, int one_sliver) {
    for (int s = s0; s < s1; ++s) {
        const int nr = nc - s * NR < NR ? nc - s * NR : NR;
        const int ub = INPLACE_B && nr == NR;
        const acc_t *bp = ub ? (const acc_t *)(b + pc * SBK + (jc + (long)s * NR) * SBN)
                             : bpack + (INPLACE_B || one_sliver ? 0 : (long)s * NR * kc);
        /* the last, narrow sliver of N: the edge kernel computes only its EDGE_NR columns */
        const int ew = EDGE_NR && nr <= EDGE_NR, width = ew ? EDGE_NR : NR;
        for (int ir = 0; ir < mc; ir += MR) {
            const int mr = mc - ir < MR ? mc - ir : MR, full = mr == MR && nr == width;
            const int ua = INPLACE_A && mr == MR;
            const acc_t *ap = ua ? (const acc_t *)(a + (ic + ir) * SAM + pc * SAK)
                                 : apack + (INPLACE_A ? 0 : (long)ir * kc);
            acc_t *cp = ct + (ic + ir) * LDC + jc + (long)s * NR;
            _Alignas(64) acc_t tmp[MR * NR]; /* edge tile: the full tile, then its corner */
            acc_t *dst = full ? cp : tmp;
            const long ld = full ? LDC : NR;
            const int f = full ? first : 1;
#if EDGE_NR && INPLACE_A
            if (ew && ua) micro_ua_e(kc, ap, bp, dst, ld, f); else
#endif
#if EDGE_NR
            if (ew && !ua) micro_e(kc, ap, bp, dst, ld, f); else
#endif
#if INPLACE_A
            if (ua) micro_ua(kc, ap, bp, dst, ld, f); else
#elif INPLACE_B
            if (ub) micro_ub(kc, ap, bp, dst, ld, f); else
#endif
            micro(kc, ap, bp, dst, ld, f);
            if (!full)
                for (int i = 0; i < mr; ++i)
                    for (int j = 0; j < nr; ++j)
                        cp[i * LDC + j] = tmp[i * NR + j] + (first ? 0 : cp[i * LDC + j]);
        }
    }
}

static void sync_team(int nth) {
#ifdef _OPENMP
    if (nth > 1) {
#pragma omp barrier
    }
#endif
    (void)nth;
}

/* one matrix, or its k range [k_lo, k_hi): tid of nth threads share the B panel; slot
   picks the worker's own buffers (a batch worker's, or a split-K thread's) */
static void gemm_one(out_t *out, const in_t *a, const in_t *b, char *ws, int slot,
                     int tid, int nth, long k_lo, long k_hi) {
    acc_t *bpack = (acc_t *)(ws + slot * SZ_B);
    acc_t *apack = (acc_t *)(ws + OFF_A + (slot + tid) * SZ_A);
    acc_t *ct = DIRECT ? (acc_t *)out : (acc_t *)(ws + OFF_S + slot * SZ_S);
    for (long jc = 0; jc < N; jc += NC) {
        const int nc = N - jc < NC ? (int)(N - jc) : NC;
        const int nsl = (nc + NR - 1) / NR, nic = (int)((M + MC - 1) / MC);
        /* split N slivers too when there are fewer row blocks than threads */
        const int njg = (nth + nic - 1) / nic < nsl ? (nth + nic - 1) / nic : nsl;
        for (long pc = k_lo; pc < k_hi; pc += KC) {
            const int kc = k_hi - pc < KC ? (int)(k_hi - pc) : KC;
            if (nic == 1 && njg == nth && !INPLACE_B) {
                /* one row block and each thread's own slivers: pack each sliver just before
                   the row tiles use it, into one buffer that stays in L1/L2, where packing
                   the whole (kc, nc) panel first sends it out to L3 and back (small M: a
                   convolution's 64 x 576 x 3136, the B panel 7 MB) */
                const int skip = INPLACE_A ? (int)(M / MR * MR) : 0; /* rows read in place */
                if (M > skip) pack_a(apack, a, skip, (int)M - skip, pc, kc);
                /* this thread's buffer: where its first sliver would sit in the panel */
                acc_t *mine = bpack + (long)(tid * nsl / nth) * NR * kc;
                for (int s = tid * nsl / nth; s < (tid + 1) * nsl / nth; ++s) {
                    pack_b_sliver(mine, b, pc, kc, jc + (long)s * NR,
                                  nc - s * NR < NR ? nc - s * NR : NR);
                    macro(ct, apack, mine, a, b, 0, (int)M, jc, nc, pc, s, s + 1, kc,
                          pc == k_lo, 1);
                }
                sync_team(nth); /* the next block's packing reuses these buffers */
                continue;
            }
            for (int s = tid * nsl / nth; s < (tid + 1) * nsl / nth; ++s)
                if (!INPLACE_B || nc - s * NR < NR) /* in place: pack the edge sliver only */
                    pack_b_sliver(bpack + (INPLACE_B ? 0 : (long)s * NR * kc), b, pc, kc,
                                  jc + (long)s * NR, nc - s * NR < NR ? nc - s * NR : NR);
            sync_team(nth);
            for (int t = tid; t < nic * njg; t += nth) {
                const long ic = (long)(t / njg) * MC;
                const int mc = M - ic < MC ? (int)(M - ic) : MC, jg = t % njg;
                const int skip = INPLACE_A ? mc / MR * MR : 0; /* rows read in place */
                if (mc > skip) pack_a(apack, a, ic + skip, mc - skip, pc, kc);
                macro(ct, apack, bpack, a, b, ic, mc, jc, nc, pc, jg * nsl / njg,
                      (jg + 1) * nsl / njg, kc, pc == k_lo, 0);
            }
            sync_team(nth);
        }
    }
    if (!DIRECT && !SPLIT_K) { /* accumulated in acc_t scratch: to out's dtype, strides */
        for (long m = tid; m < M; m += nth)
            for (long n = 0; n < N; ++n) out[m * SCM + n * SCN] = STORE_OUT(ct[m * LDC + n]);
        sync_team(nth);
    }
}

/* split K: rows [tid*M/nth, ...) of out = the sum of every thread's partial product */
static void sum_parts(out_t *out, char *ws, int tid, int nth) {
    for (long m = M * tid / nth; m < M * (tid + 1) / nth; ++m)
        for (long n = 0; n < N; ++n) {
            acc_t v = 0;
            for (int t = 0; t < nth; ++t) v += ((const acc_t *)(ws + OFF_S + t * SZ_S))[m * N + n];
            out[m * SCM + n * SCN] = STORE_OUT(v);
        }
}

__attribute__((visibility("default"))) void anychip_gemm_golden(void *out, const void *a, const void *b) {
    char *ws = workspace();
#pragma omp parallel num_threads(2)
    {
#ifdef _OPENMP
        const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
#else
        const int tid = 0, nth = 1;
#endif
        for (long i = 0; i < BATCH; ++i) gemm_one((out_t *)out + i * SCB, (const in_t *)a + i * SAB, (const in_t *)b + i * SBB, ws, 0, tid, nth, 0, K);
    }
}
