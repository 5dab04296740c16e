"""C text for a generated GEMM's B operand read through offset tables (an implicit-GEMM
convolution): K rows, or columns, or both at an offset computed per index, with zero
padding as bounds. `anychip.codegen.gemm` picks these when a GemmSpec has k_dims / n_dims.
"""

from __future__ import annotations

import math

from anychip.codegen.gemm_kernel import transpose16_c

Loops = tuple[tuple[int, int], ...]  # (extent, stride) per loop, outermost first
Bounds = tuple[tuple[int, int, int, int], ...]  # (k loop, n loop, lo, hi) each


def pack_b_tables_c(k_dims: Loops, n_dims: Loops, bounds: Bounds, float32: bool) -> str:
    """pack_b_sliver for B whose K (`k_dims`), columns (`n_dims`) or both are several
    loops; `bounds` (k loop, n loop, lo, hi): B[k, n] is 0 unless lo <= that k loop's index
    + that n loop's index < hi (n loop -1: the k loop's index alone)."""
    if k_dims and n_dims:
        return _runs(k_dims, n_dims, bounds) + PACK_B_ROWS_RUNS
    if k_dims:
        return _offsets("b_k", k_dims) + PACK_B_ROWS_INDEXED
    t16 = transpose16_c(indexed=True) if float32 else ""
    return t16 + _offsets("b_n", n_dims) + PACK_B_COLUMNS_INDEXED


def _offsets(fn: str, loops: Loops) -> str:
    """C for `long fn(long i)`: the offset of flat index i over `loops` ((extent, stride)
    outermost first), innermost peeled first (constant divisors: multiplies and shifts)."""
    body = ["    long o = 0;"]
    for j, (e, st) in enumerate(reversed(loops)):
        last = j == len(loops) - 1
        body.append(f"    o += {'i' if last else f'(i % {e}L)'} * {st}L;")
        if not last:
            body.append(f"    i /= {e}L;")
    return f"static inline long {fn}(long i) {{\n" + "\n".join(body) + "\n    return o;\n}\n"


def _runs(k_dims: Loops, n_dims: Loops, bounds: Bounds) -> str:
    """The helpers `PACK_B_ROWS_RUNS` reads: N's inner loop (extent NB_EX, stride NB_SX)
    and outer one (stride NB_SY), `b_k`, and the bounds as `b_row_ok(kk, y)` (the outer n
    loop's, or a k loop's alone) and `b_cols(kk, lo, hi)` (the inner loop's readable range)."""
    inner = len(n_dims) - 1
    (ex, sx), sy = n_dims[inner], n_dims[0][1] if inner else 0

    def kidx(loop: int) -> str:  # that K loop's index of flat K row kk
        below = math.prod(e for e, _ in k_dims[loop + 1 :])
        return f"((kk / {below}L) % {k_dims[loop][0]}L)"

    rows, cols = ["1"], []
    for kl, nl, lo, hi in bounds:
        if nl == inner:
            cols.append(f"    t = {lo}L - {kidx(kl)};\n    if (t > *lo) *lo = t;")
            cols.append(f"    t = {hi}L - {kidx(kl)};\n    if (t < *hi) *hi = t;")
        else:
            y = " + y" if nl >= 0 else ""
            rows.append(f"(t = {kidx(kl)}{y}) >= {lo}L && t < {hi}L")
    return (
        f"#define NB_EX {ex}L\n#define NB_SX {sx}L\n#define NB_SY {sy}L\n"
        + _offsets("b_k", k_dims)
        + "static inline int b_row_ok(long kk, long y) {\n    long t;\n"
        + f"    (void)kk, (void)y, (void)t;\n    return {' && '.join(rows)};\n}}\n"
        + "static inline void b_cols(long kk, long *lo, long *hi) {\n    long t;\n"
        + "    (void)kk, (void)t;\n    *lo = 0;\n    *hi = NB_EX;\n"
        + "".join(c + "\n" for c in cols)
        + "}\n"
    )


# B whose K is several loops (GemmSpec.k_dims: an implicit-GEMM convolution, K = C x kh x kw,
# a row of B the padded input shifted by that tap): each row's start from b_k(), then the
# row read along N as usual.
PACK_B_ROWS_INDEXED = """\
static void pack_b_sliver(acc_t *restrict dst, const in_t *restrict b, long k0, int kc,
                          long n0, int nr) {
    for (int k = 0; k < kc; ++k) {
        const in_t *src = b + b_k(k0 + k) + n0 * SBN;
        for (int j = 0; j < nr; ++j) dst[k * NR + j] = LOAD_IN(src[j * SBN]);
        for (int j = nr; j < NR; ++j) dst[k * NR + j] = 0;
    }
}
"""

# B whose K and N are both several loops (GemmSpec.k_dims and n_dims: an implicit-GEMM
# convolution read from its unpadded input, N = H' x W' output positions): the sliver's
# columns split into runs along N's inner loop (one output row each, contiguous in the
# input), and each K row's run copied from b_k() on where b_row_ok() / b_cols() (the zero
# padding, GemmSpec.b_bounds) allow, zeros elsewhere.
PACK_B_ROWS_RUNS = """\
static void pack_b_sliver(acc_t *restrict dst, const in_t *restrict b, long k0, int kc,
                          long n0, int nr) {
    long ry[NR + 1], rx[NR + 1]; /* run r: outer index, first inner index, first column */
    int rj[NR + 1], nrun = 0;
    for (int j = 0; j < nr;) {
        const long x = (n0 + j) % NB_EX;
        ry[nrun] = (n0 + j) / NB_EX;
        rx[nrun] = x;
        rj[nrun++] = j;
        j += NB_EX - x < nr - j ? (int)(NB_EX - x) : nr - j;
    }
    rj[nrun] = nr;
    for (int k = 0; k < kc; ++k) {
        const long kk = k0 + k, base = b_k(kk);
        acc_t *restrict d = dst + k * NR;
        long lo, hi; /* the inner loop's readable indices [lo, hi) for this row */
        b_cols(kk, &lo, &hi);
        for (int r = 0; r < nrun; ++r) {
            const int j0 = rj[r], j1 = rj[r + 1];
            int a = j1, e = j1; /* columns [a, e) are read, the rest of the run zero */
            if (b_row_ok(kk, ry[r])) {
                const long s = lo - rx[r], t = hi - rx[r];
                a = j0 + (s < 0 ? 0 : s < j1 - j0 ? (int)s : j1 - j0);
                e = j0 + (t < a - j0 ? a - j0 : t < j1 - j0 ? (int)t : j1 - j0);
            }
            const long off = base + ry[r] * NB_SY + (rx[r] - j0) * NB_SX;
            for (int j = j0; j < a; ++j) d[j] = 0;
            for (int j = a; j < e; ++j) d[j] = LOAD_IN(b[off + j * NB_SX]);
            for (int j = e; j < j1; ++j) d[j] = 0;
        }
        for (int j = nr; j < NR; ++j) d[j] = 0;
    }
}
"""

# B whose columns are several loops (GemmSpec.n_dims: a convolution's weight gradient,
# columns C x kh x kw of the padded input's taps, each a run along K): each column's start
# from b_n(), then read down the columns as `pack_b_c(col_major=True)` does, AVX-512
# float32 16 x 16 blocks transposed in registers from those starts.
PACK_B_COLUMNS_INDEXED = """\
static void pack_b_sliver(acc_t *restrict dst, const in_t *restrict b, long k0, int kc,
                          long n0, int nr) {
    long off[NR];
    for (int j = 0; j < nr; ++j) off[j] = b_n(n0 + j) + k0 * SBK;
    int j0 = 0;
#ifdef PACK_B_T16
    if (SBK == 1)
        for (; j0 + 16 <= nr; j0 += 16) {
            int k = 0;
            for (; k + 16 <= kc; k += 16) transpose16(dst + k * NR + j0, b + k, off + j0);
            for (; k < kc; ++k)
                for (int j = j0; j < j0 + 16; ++j) dst[k * NR + j] = b[off[j] + k];
        }
#endif
    for (int kb = 0; kb < kc; kb += 16) {
        const int ke = kb + 16 < kc ? kb + 16 : kc;
        for (int j = j0; j < nr; ++j)
            for (int k = kb; k < ke; ++k) dst[k * NR + j] = LOAD_IN(b[off[j] + k * SBK]);
        for (int j = nr; j < NR; ++j)
            for (int k = kb; k < ke; ++k) dst[k * NR + j] = 0;
    }
}
"""
