"""C text for a generated GEMM's blocked loops: the macro-kernel over one A block and the
B slivers, the per-thread workspace, the driver over N, K and M blocks (or K ranges split
between threads) and the exported entry. `anychip.codegen.gemm` assembles these with the
pieces of `gemm_kernel` (conversions, packing, micro-kernels) into one C file.
"""

from __future__ import annotations

INCLUDES = """\
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
"""

# macro: one (mc, kc) A block times B slivers [s0, s1) of the (kc, nc) panel. With
# INPLACE_A (INPLACE_B) full row tiles (column slivers) are read from a (b) where they lie
# and only the edge tile (sliver) was packed, at the start of apack (bpack).
_MACRO = """\
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

"""

WORKSPACE = """\
/* glibc's per-thread destructor list (what C++ thread_local uses; no key limit): the
   workspace is freed when its thread exits. Weak, so a libc without it only keeps it. */
extern int __cxa_thread_atexit_impl(void (*)(void *), void *, void *) __attribute__((weak));
extern void *__dso_handle;
static void workspace_free(void *ws) { free(ws); }

static char *workspace(void) { /* one per calling thread, freed when the thread exits */
    static _Thread_local char *ws;
    if (!ws) {
        if (!(ws = aligned_alloc(64, WS_BYTES))) {
            fprintf(stderr, "anychip gemm: cannot allocate %ld bytes of workspace\\n", WS_BYTES);
            abort();
        }
        if (__cxa_thread_atexit_impl)
            __cxa_thread_atexit_impl(workspace_free, ws, &__dso_handle);
    }
    return ws;
}
"""

_DRIVER = """\
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
"""


def _entry_c(name: str, threads: int, batch_parallel: bool, split_k: bool = False) -> str:
    args = "(out_t *)out + i * SCB, (const in_t *)a + i * SAB, (const in_t *)b + i * SBB"
    sig = f"void {name}(void *out, const void *a, const void *b)"
    if threads == 1:
        body = f"""\
    char *ws = workspace();
    for (long i = 0; i < BATCH; ++i) gemm_one({args}, ws, 0, 0, 1, 0, K);"""
    elif split_k:  # each thread a k range into its own scratch, then the sums
        body = f"""\
    char *ws = workspace();
#pragma omp parallel num_threads({threads})
    {{
#ifdef _OPENMP
        const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
#else
        const int tid = 0, nth = 1;
#endif
        for (long i = 0; i < BATCH; ++i) {{
            gemm_one({args}, ws, tid, 0, 1, K * tid / nth, K * (tid + 1) / nth);
            sync_team(nth);
            sum_parts((out_t *)out + i * SCB, ws, tid, nth);
            sync_team(nth);
        }}
    }}"""
    elif batch_parallel:
        body = f"""\
    char *ws = workspace();
#pragma omp parallel for num_threads({threads}) schedule(static)
    for (long i = 0; i < BATCH; ++i) {{
#ifdef _OPENMP
        const int slot = omp_get_thread_num();
#else
        const int slot = 0;
#endif
        gemm_one({args}, ws, slot, 0, 1, 0, K);
    }}"""
    else:
        body = f"""\
    char *ws = workspace();
#pragma omp parallel num_threads({threads})
    {{
#ifdef _OPENMP
        const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
#else
        const int tid = 0, nth = 1;
#endif
        for (long i = 0; i < BATCH; ++i) gemm_one({args}, ws, 0, tid, nth, 0, K);
    }}"""
    return f'__attribute__((visibility("default"))) {sig} {{\n{body}\n}}\n'


def _trivial_entry_c(name: str, zero_k: bool) -> str:
    """m, n or batch is 0 (nothing to write) or k is 0 (out is all zeros)."""
    body = "    (void)out;\n"
    if zero_k:
        body = """\
    for (long i = 0; i < BATCH; ++i)
        for (long m = 0; m < M; ++m)
            for (long n = 0; n < N; ++n)
                ((out_t *)out)[i * SCB + m * SCM + n * SCN] = STORE_OUT((acc_t)0);
"""
    sig = f"void {name}(void *out, const void *a, const void *b)"
    return f"{sig} {{\n{body}    (void)a;\n    (void)b;\n}}\n"


def driver_c(
    *,
    name: str,
    header: str,
    defines: str,
    conversions: str,
    pack_a: str,
    pack_b: str,
    micro: str,
    threads: int,
    batch_parallel: bool,
    empty: bool,
    zero_k: bool,
    split_k: bool = False,
) -> str:
    """The whole C file: the pieces above plus the blocked loops and the exported entry."""
    if empty or zero_k:
        entry = _trivial_entry_c(name, zero_k and not empty)
        return "\n".join((header, INCLUDES, defines, conversions, entry))
    entry = _entry_c(name, threads, batch_parallel, split_k)
    return "\n".join(
        (
            header,
            INCLUDES,
            defines,
            conversions,
            pack_a,
            pack_b,
            micro,
            WORKSPACE,
            _MACRO + _DRIVER,
            entry,
        )
    )
