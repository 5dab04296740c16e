"""C text for a generated GEMM's B operand read through offset tables (an implicit-GEMM
convolution): K rows, or columns, or both at an offset computed per index, with zero
padding as bounds. `anychip.codegen.gemm` picks these when a GemmSpec has k_dims / n_dims.
"""

from __future__ import annotations

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
    """The constants and helpers `PACK_B_ROWS_RUNS` reads: N's inner loop (extent NB_EX,
    stride NB_SX) and outer one (stride NB_SY), K's loops (NB_KD of them, extents b_kext,
    strides b_kstr), NB_ZMAX (the most columns a bound cuts at an output row's start or
    end), and the bounds as `b_row_ok(idx, y)` (the outer n loop's, or a k loop's alone)
    and `b_cols(idx, lo, hi)` (the inner loop's readable range), idx the K loops' indices."""
    inner = len(n_dims) - 1
    (ex, sx), sy = n_dims[inner], n_dims[0][1] if inner else 0
    rows, cols, zmax = ["1"], [], 0
    for kl, nl, lo, hi in bounds:
        if nl == inner:
            cols.append(f"    t = {lo}L - idx[{kl}];\n    if (t > *lo) *lo = t;")
            cols.append(f"    t = {hi}L - idx[{kl}];\n    if (t < *hi) *hi = t;")
            zmax = max(zmax, lo, ex - (hi - (k_dims[kl][0] - 1)))
        else:
            y = " + y" if nl >= 0 else ""
            rows.append(f"(t = idx[{kl}]{y}) >= {lo}L && t < {hi}L")
    ext = ", ".join(f"{e}L" for e, _ in k_dims)
    strides = ", ".join(f"{st}L" for _, st in k_dims)
    return (
        f"#define NB_EX {ex}L\n#define NB_SX {sx}L\n#define NB_SY {sy}L\n"
        f"#define NB_KD {len(k_dims)}\n#define NB_ZMAX {min(zmax, ex)}\n"
        f"static const long b_kext[NB_KD] = {{{ext}}}, b_kstr[NB_KD] = {{{strides}}};\n"
        "static inline int b_row_ok(const long *idx, long y) {\n    long t;\n"
        f"    (void)idx, (void)y, (void)t;\n    return {' && '.join(rows)};\n}}\n"
        "static inline void b_cols(const long *idx, long *lo, long *hi) {\n    long t;\n"
        "    (void)idx, (void)t;\n    *lo = 0;\n    *hi = NB_EX;\n"
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
# input); K row by K row (its loops' indices and offset stepped, not divided out), each
# run copied where b_row_ok() / b_cols() (the zero padding, GemmSpec.b_bounds) allow,
# zeros elsewhere. When N's loops fold in B (output rows as long as input rows: 'same'
# padding) the whole sliver is one contiguous span of the row: copied at once where its
# first and last columns are readable, then the few columns a bound cuts at each row
# change zeroed (3x faster than run by run: per-run bookkeeping cost more than copying).
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
    long idx[NB_KD], base = 0; /* K row k0 + k: its loops' indices and its offset */
    for (long i = k0, l = NB_KD - 1; l >= 0; --l) {
        idx[l] = i % b_kext[l];
        i /= b_kext[l];
        base += idx[l] * b_kstr[l];
    }
    const int span = NB_SY == NB_EX * NB_SX && nr == NR;
    const long xl = rx[nrun - 1] + (nr - rj[nrun - 1]) - 1; /* the last column's index */
    for (int k = 0; k < kc; ++k) {
        acc_t *restrict d = dst + k * NR;
        long lo, hi; /* the inner loop's readable indices [lo, hi) for this row */
        b_cols(idx, &lo, &hi);
        /* the valid rows are an interval: its first and last run tell for all */
        if (span && rx[0] >= lo && xl < hi && b_row_ok(idx, ry[0]) &&
            b_row_ok(idx, ry[nrun - 1])) {
            const in_t *src = b + base + n0 * NB_SX;
            for (int j = 0; j < NR; ++j) d[j] = LOAD_IN(src[j * NB_SX]);
            const long zl = lo, zr = NB_EX - hi; /* columns cut at a row's start, end */
            for (int r = 1; r < nrun; ++r) {
                for (int q = 0; q < NB_ZMAX; ++q)
                    if (q < zl && rj[r] + q < rj[r + 1]) d[rj[r] + q] = 0;
                for (int q = 1; q <= NB_ZMAX; ++q)
                    if (q <= zr && rj[r] - q >= rj[r - 1]) d[rj[r] - q] = 0;
            }
        } else {
            for (int r = 0; r < nrun; ++r) {
                const int j0 = rj[r], j1 = rj[r + 1];
                int a = j1, e = j1; /* columns [a, e) are read, the rest of the run zero */
                if (b_row_ok(idx, ry[r])) {
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
        for (int l = NB_KD - 1; l >= 0; --l) { /* the next K row: innermost loop first */
            base += b_kstr[l];
            if (++idx[l] < b_kext[l]) break;
            base -= b_kext[l] * b_kstr[l];
            idx[l] = 0;
        }
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
