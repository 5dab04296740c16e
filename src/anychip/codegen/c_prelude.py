"""C helpers every generated kernel includes: half/bfloat16 conversions, integer division
and power, with the `ref` backend's semantics (ir/primitives.py); argsort is in c_sort.py.

Halves are computed in float32 and rounded after every op (`RH`, `RB`), as numpy does.
float32 exp, log, erf, sin and pow are our own branch-free functions (`ac_expf`...), within
1.5 ulp of float64 (tests/unit/test_c_math.py), so `omp simd` loops vectorise them (libm's
scalar calls would not).
"""

from __future__ import annotations

INT_TYPES = ("int8_t", "int16_t", "int32_t", "int64_t", "uint8_t", "uint32_t", "uint64_t")

HEADER = r"""#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__FLT16_MAX__)
typedef _Float16 half_t;
static inline float h2f(half_t x) { return (float)x; }
static inline half_t f2h(float x) { return (half_t)x; }
#define RH(x) ((float)(_Float16)(x))
#else
/* no _Float16 in this compiler: IEEE binary16 bits with round-to-nearest-even by hand */
typedef uint16_t half_t;
static inline float h2f(half_t h) {
  uint32_t s = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, u;
  if (e == 0x1f) u = s | 0x7f800000u | (m << 13);
  else if (e) u = s | ((e + 112) << 23) | (m << 13);
  else if (!m) u = s;
  else { e = 113; while (!(m & 0x400)) { m <<= 1; e--; } u = s | (e << 23) | ((m & 0x3ff) << 13); }
  float f; memcpy(&f, &u, 4); return f;
}
static inline half_t f2h(float f) {
  uint32_t u; memcpy(&u, &f, 4);
  uint32_t s = (u >> 16) & 0x8000, a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) return (half_t)(s | 0x7c00 | (a > 0x7f800000u ? 0x200 : 0));
  if (a >= 0x477ff000u) return (half_t)(s | 0x7c00);
  if (a < 0x38800000u) {  /* subnormal or zero: round at the fixed 2^-24 step */
    float q = fabsf(f) * 16777216.0f; return (half_t)(s | (uint32_t)nearbyintf(q));
  }
  uint32_t r = a + 0xfff + ((a >> 13) & 1) - 0x38000000u;
  return (half_t)(s | (r >> 13));
}
#define RH(x) h2f(f2h((float)(x)))
#endif
static inline float bf2f(uint16_t b) {
  uint32_t u = (uint32_t)b << 16; float f; memcpy(&f, &u, 4); return f;
}
static inline uint16_t f2bf(float f) {
  uint32_t u; memcpy(&u, &f, 4);
  if (f != f) return 0x7fc0;
  return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}
#define RB(x) bf2f(f2bf((float)(x)))
#define MAXOP(a, b) (((a) != (a) || (a) > (b)) ? (a) : (b))
#define MINOP(a, b) (((a) != (a) || (a) < (b)) ? (a) : (b))
#define SDIV(a, b) ((b) == 0 ? 0 : (b) == -1 ? -(a) : (a) / (b))
#define SMOD(a, b) ((b) == 0 || (b) == -1 ? 0 : (a) % (b))
#define UDIV(a, b) ((b) == 0 ? 0 : (a) / (b))
#define UMOD(a, b) ((b) == 0 ? 0 : (a) % (b))
#pragma omp declare reduction(nanmax_f : float : omp_out = MAXOP(omp_out, omp_in)) \
  initializer(omp_priv = -INFINITY)
#pragma omp declare reduction(nanmin_f : float : omp_out = MINOP(omp_out, omp_in)) \
  initializer(omp_priv = INFINITY)
#pragma omp declare reduction(nanmax_d : double : omp_out = MAXOP(omp_out, omp_in)) \
  initializer(omp_priv = -INFINITY)
#pragma omp declare reduction(nanmin_d : double : omp_out = MINOP(omp_out, omp_in)) \
  initializer(omp_priv = INFINITY)
/* exp in float32 without branches or library calls, so `omp simd` loops vectorise it:
   x = k ln2 + r with |r| <= ln2/2 (ln2 split hi + lo: k * hi is exact), exp(r) by a
   degree-7 polynomial fitted on that interval (< 1 ulp), times 2^k built in two halves
   so results that overflow give inf and tiny ones round once into the subnormals. */
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
#define AC_FMAF(a, b, c) __builtin_fmaf(a, b, c) /* fused: one rounding, one instruction */
#define AC_FMA(a, b, c) __builtin_fma(a, b, c)
#else
#define AC_FMAF(a, b, c) ((a) * (b) + (c))
#define AC_FMA(a, b, c) ((a) * (b) + (c))
#endif
/* exp(r) for |r| <= ln2/2: the degree-7 polynomial ac_expf and ac_erff share */
static inline __attribute__((always_inline)) float ac_exp_poly(float r) {
  float p = 0.00019790353f;
  p = AC_FMAF(p, r, 0.0013944649f);
  p = AC_FMAF(p, r, 0.008333497f);
  p = AC_FMAF(p, r, 0.041666295f);
  p = AC_FMAF(p, r, 0.16666666f);
  p = AC_FMAF(p, r, 0.5f);
  return AC_FMAF(p, r * r, r) + 1.0f;
}
static inline __attribute__((always_inline)) float ac_expf(float x) {
  /* below -104 the result is 0: compute from 0 and select 0 at the end, since scaling
     down to a subnormal or zero costs a microcode assist per lane on x86 (a masked -inf
     softmax entry would pay it for every masked score) */
  float c = x < -104.0f ? 0.0f : (x > 89.0f ? 89.0f : x);
  float k = (c * 1.44269504f + 12582912.0f) - 12582912.0f;  /* round to nearest */
  float r = (c - k * 0.693359375f) - k * -2.12194440e-4f;
  float y = ac_exp_poly(r);
  int32_t n = (int32_t)k, n1 = n >> 1, n2 = n - n1;
  uint32_t u1 = (uint32_t)(n1 + 127) << 23, u2 = (uint32_t)(n2 + 127) << 23;
  float s1, s2;
  memcpy(&s1, &u1, 4);
  memcpy(&s2, &u2, 4);
  float out = (y * s1) * s2;
  return x != x ? x : (x < -104.0f ? 0.0f : out);
}
/* natural log in float32, branch-free like ac_expf: subnormals are scaled by 2^23 first,
   x = 2^k m with m in [sqrt(1/2), sqrt(2)) read off the bits, f = m - 1 (exact), and
   log(1 + f) = f - f^2/2 + f^3 P(f), P of degree 7 fitted on that interval (0.1 ulp);
   k ln2 is added as hi + lo so (k hi + f) is exact. Specials: 0 -> -inf, x < 0 -> NaN. */
static inline __attribute__((always_inline)) float ac_logf(float x) {
  /* every select below is bit arithmetic, not `?:`: GCC would otherwise turn some into
     branches around the polynomial that if-conversion cannot flatten (fma calls) */
  uint32_t xb, u, t, um, ob;
  memcpy(&xb, &x, 4);
  uint32_t sub = -(uint32_t)(x < 1.17549435e-38f), sc = 0x3f800000u + (sub & (23u << 23));
  float scale;
  memcpy(&scale, &sc, 4);
  float xs = x * scale;
  memcpy(&u, &xs, 4);
  t = u - 0x3f3504f3u; /* bits of sqrt(1/2): the exponent field of t is k */
  float k = (float)(((int32_t)t >> 23) - (int32_t)(sub & 23u));
  um = (t & 0x007fffffu) + 0x3f3504f3u;
  float m;
  memcpy(&m, &um, 4);
  float f = m - 1.0f, f2 = f * f;
  float p = -0.07634438f;
  p = AC_FMAF(p, f, 0.12761563f);
  p = AC_FMAF(p, f, -0.13160197f);
  p = AC_FMAF(p, f, 0.1420176f);
  p = AC_FMAF(p, f, -0.16623355f);
  p = AC_FMAF(p, f, 0.20001227f);
  p = AC_FMAF(p, f, -0.25000823f);
  p = AC_FMAF(p, f, 0.3333333f);
  float lo = AC_FMAF(k, -2.12194440e-4f, f2 * f * p) - 0.5f * f2;
  float kh = k * 0.693359375f, s = kh + f; /* exact product; s rounds only when k != 0 */
  float out = s + (lo + (f - (s - kh)));    /* so add back its error (|kh| > |f|) */
  /* outside (0, inf): NaN and inf pass, 0 -> -inf, x < 0 -> NaN */
  uint32_t keep = -(uint32_t)((x > 0.0f) & (x < INFINITY));
  uint32_t neg = -(uint32_t)(x < 0.0f), zero = -(uint32_t)(x == 0.0f);
  uint32_t sb = (xb & ~(neg | zero)) | (0x7fc00000u & neg) | (0xff800000u & zero);
  memcpy(&ob, &out, 4);
  ob = (ob & keep) | (sb & ~keep);
  memcpy(&out, &ob, 4);
  return out;
}
/* pow in float32 as 2^(y log2|x|) in double, where a float's log and the product are exact
   enough (< 2^-33 relative) that the result rounds once to float: log by the atanh series
   of s = f / (2 + f), f = m - 1 as in ac_logf; 2^r, |r| <= 1/2, by Taylor to degree 10.
   C99's special cases (negative bases, 0, +-1, inf, NaN) are bit-mask selects at the end. */
static inline __attribute__((always_inline)) float ac_powf(float x, float y) {
  double d = fabs((double)x), ln2 = 0.69314718055994531; /* subnormal floats are normal here */
  uint64_t u, t, um;
  memcpy(&u, &d, 8);
  t = u - 0x3fe6a09e667f3bcdull; /* bits of sqrt(1/2) */
  double k = (double)((int64_t)t >> 52);
  um = (t & 0x000fffffffffffffull) + 0x3fe6a09e667f3bcdull;
  double m, f, sr, s2, q;
  memcpy(&m, &um, 8);
  f = m - 1.0;
  sr = f / (2.0 + f);
  s2 = sr * sr;
  q = AC_FMA(s2, 1.0 / 15, 1.0 / 13);
  q = AC_FMA(q, s2, 1.0 / 11);
  q = AC_FMA(q, s2, 1.0 / 9);
  q = AC_FMA(q, s2, 1.0 / 7);
  q = AC_FMA(q, s2, 1.0 / 5);
  q = AC_FMA(q, s2, 1.0 / 3);
  double l2 = k + AC_FMA(2.0 * sr * s2, q, 2.0 * sr) * (1.0 / ln2);
  uint64_t lb, zm = -(uint64_t)(d == 0.0), im = -(uint64_t)(d == INFINITY); /* log2 0, inf */
  memcpy(&lb, &l2, 8);
  lb = (lb & ~(zm | im)) | (0xfff0000000000000ull & zm) | (0x7ff0000000000000ull & im);
  memcpy(&l2, &lb, 8);
  double e = (double)y * l2;
  uint64_t eb, lo = -(uint64_t)(e < -200.0), hi = -(uint64_t)(e > 200.0); /* +-200: beyond */
  memcpy(&eb, &e, 8);                                                  /* float's range */
  eb = (eb & ~(lo | hi)) | (0xc069000000000000ull & lo) | (0x4069000000000000ull & hi);
  memcpy(&e, &eb, 8);
  double n = (e + 6755399441055744.0) - 6755399441055744.0, r = (e - n) * ln2, p = 1.0 / 3628800;
  p = AC_FMA(p, r, 1.0 / 362880);
  p = AC_FMA(p, r, 1.0 / 40320);
  p = AC_FMA(p, r, 1.0 / 5040);
  p = AC_FMA(p, r, 1.0 / 720);
  p = AC_FMA(p, r, 1.0 / 120);
  p = AC_FMA(p, r, 1.0 / 24);
  p = AC_FMA(p, r, 1.0 / 6);
  p = AC_FMA(p, r, 0.5);
  p = AC_FMA(p, r, 1.0);
  p = AC_FMA(p, r, 1.0);
  uint64_t sb = (uint64_t)((int64_t)n + 1023) << 52;
  double scale;
  memcpy(&scale, &sb, 8);
  float out = (float)(p * scale);
  /* y's parity: floats from 2^24 up are even integers; inf counts as even here */
  float ay = fabsf(y);
  uint32_t yb, xb, ob;
  memcpy(&yb, &y, 4);
  yb &= -(uint32_t)(ay < 16777216.0f); /* y, or 0 where converting to int would overflow */
  float yc;
  memcpy(&yc, &yb, 4);
  int32_t yi = (int32_t)yc;
  uint32_t yint = -(uint32_t)((ay >= 16777216.0f) | ((float)yi == y));
  memcpy(&xb, &x, 4);
  memcpy(&ob, &out, 4);
  ob |= xb & ((uint32_t)yi << 31) & yint; /* negative base, odd integer power */
  uint32_t nan = -(uint32_t)((x != x) | (y != y) | ((x < 0.0f) & (x > -INFINITY) & ~yint & 1u));
  uint32_t one = -(uint32_t)((y == 0.0f) | (x == 1.0f) | ((x == -1.0f) & (ay == INFINITY)));
  ob = (ob & ~nan) | (0x7fc00000u & nan);
  ob = (ob & ~one) | (0x3f800000u & one);
  memcpy(&out, &ob, 4);
  return out;
}
/* erf in float32, odd: |x| < 1 by x + x Q(x^2) (degree 6, fitted, 1e-9 relative); above,
   1 - erfc(|x|) with erfc(a) = exp(-a^2 + H(a - 2.5)), H of degree 8 fitted to
   log erfc(a) + a^2 on [1, 4] (erf rounds to 1 beyond 3.92, so a is clamped to 4).
   Both halves are computed and selected, so the loop stays branch-free (the inlined exp
   skips ac_expf's clamps and two-step scaling: erf 1.5x faster). */
static inline __attribute__((always_inline)) float ac_erff(float x) {
  float a = fabsf(x), a2 = a * a;
  float q = 7.806903e-05f; /* erf(x) = x + x Q(x^2): the leading 2/sqrt(pi) - 1 rounds finer */
  q = AC_FMAF(q, a2, -0.0007997853f);
  q = AC_FMAF(q, a2, 0.005187162f);
  q = AC_FMAF(q, a2, -0.026853347f);
  q = AC_FMAF(q, a2, 0.11283579f);
  q = AC_FMAF(q, a2, -0.37612626f);
  q = AC_FMAF(q, a2, 0.12837917f);
  float small = AC_FMAF(x, q, x);
  float c = a > 4.0f ? 4.0f : a, t = c - 2.5f;
  float h = 1.5998181e-06f;
  h = AC_FMAF(h, t, -1.3301710e-05f);
  h = AC_FMAF(h, t, 7.7454926e-05f);
  h = AC_FMAF(h, t, -0.0004201731f);
  h = AC_FMAF(h, t, 0.0021650814f);
  h = AC_FMAF(h, t, -0.010858487f);
  h = AC_FMAF(h, t, 0.056106392f);
  h = AC_FMAF(h, t, -0.35268068f);
  h = AC_FMAF(h, t, -1.5568153f);
  /* exp(e), e = h - c^2 in [-17.6, -0.5]: ac_expf without its clamps and split scaling */
  float e = h - c * c, k = (e * 1.44269504f + 12582912.0f) - 12582912.0f;
  float r = (e - k * 0.693359375f) - k * -2.12194440e-4f;
  uint32_t sb = (uint32_t)((int32_t)k + 127) << 23;
  float scale;
  memcpy(&scale, &sb, 4);
  float big = copysignf(1.0f - ac_exp_poly(r) * scale, x);
  return a < 1.0f ? small : (x != x ? x : big);
}
"""

# sin of float32 |x| = M 2^E (M the 24-bit significand) in double: the table gives 2^E mod 2 pi
# as hi (29 bits, so M hi is exact) + lo, and y = M hi + M lo < 2^27 keeps x's quadrant; then
# y = k pi/2 + r by pi/2 in three parts (k P1, k P2 exact) and sin/cos(r), |r| <= pi/4, by
# Taylor polynomials (error < 2^-30). Correct over the whole float32 range, branch-free (the
# table read is a gather), computed 8 lanes wide in double, rounded once to float (< 0.6 ulp).
_SIN = """static const double AC_SIN_T[512] = {{{table}}};
static inline __attribute__((always_inline)) float ac_sinf(float x) {{
  uint32_t xb, fe;
  memcpy(&xb, &x, 4);
  fe = (xb >> 23) & 0xff;
  double m = (double)((xb & 0x7fffffu) | (fe ? 0x800000u : 0u)); /* subnormals: no hidden bit */
  int32_t i = 2 * (int32_t)fe; /* a signed 32-bit index: GCC gathers with it, not unsigned */
  double yh = m * AC_SIN_T[i], yl = m * AC_SIN_T[i + 1];
  double kr = yh * 0.63661977236758134 + 6755399441055744.0; /* 1.5 2^52: rounds to integer */
  uint64_t kb;
  memcpy(&kb, &kr, 8);
  double k = kr - 6755399441055744.0;
  double r = ((yh - k * {p1}) - k * {p2}) + (yl - k * {p3});
  double r2 = r * r;
  double s = AC_FMA(r2, -1.0 / 39916800, 1.0 / 362880);
  s = AC_FMA(s, r2, -1.0 / 5040);
  s = AC_FMA(s, r2, 1.0 / 120);
  s = AC_FMA(s, r2, -1.0 / 6);
  s = AC_FMA(s * r2, r, r);
  double c = AC_FMA(r2, -1.0 / 3628800, 1.0 / 40320);
  c = AC_FMA(c, r2, -1.0 / 720);
  c = AC_FMA(c, r2, 1.0 / 24);
  c = AC_FMA(c, r2, -0.5);
  c = AC_FMA(c, r2, 1.0);
  float out = (float)((kb & 1) ? c : s);
  uint32_t ob, finite = -(uint32_t)(fe != 0xff);
  memcpy(&ob, &out, 4);
  ob ^= ((uint32_t)kb & 2u) << 30 ^ (xb & 0x80000000u); /* quadrants 2, 3 and x < 0 negate */
  ob = (ob & finite) | (0x7fc00000u & ~finite);         /* inf, NaN -> NaN */
  memcpy(&out, &ob, 4);
  return out;
}}
"""


def _pi_fixed(bits: int) -> int:
    """floor(pi 2^bits) within 1, by Machin's formula in integers (guard bits absorb error)."""

    def atan_inv(n: int, scale: int) -> int:
        total, term, k = 0, scale // n, 0
        while term:
            total += term // (2 * k + 1) if k % 2 == 0 else -(term // (2 * k + 1))
            term //= n * n
            k += 1
        return total

    scale = 1 << (bits + 32)
    return (16 * atan_inv(5, scale) - 4 * atan_inv(239, scale)) >> 32


def _split(v: int, frac_bits: int, keep: int) -> tuple[float, int]:
    """The top `keep` significant bits of v / 2^frac_bits as a float, and the rest of v."""
    drop = max(v.bit_length() - keep, 0)
    hi = (v >> drop) << drop
    return hi / (1 << frac_bits), v - hi


def sin_source() -> str:
    """C source of `ac_sinf` and its table of 2^E mod 2 pi, one entry pair per exponent field."""
    n = 320
    pi = _pi_fixed(n)
    table = []
    for fe in range(256):
        e = max(fe, 1) - 150  # x = M 2^e with M an integer
        t = (1 << (e + n)) % (2 * pi) if e + n >= 0 else 0
        hi, rest = _split(t, n, 29)
        table += [hi if e > 2 else 2.0**e, rest / (1 << n) if e > 2 else 0.0]
    p1, rest = _split(pi >> 1, n, 26)
    p2, rest = _split(rest, n, 26)
    return _SIN.format(
        table=", ".join(v.hex() for v in table),
        p1=p1.hex(),
        p2=p2.hex(),
        p3=(rest / (1 << n)).hex(),
    )


HEADER += sin_source()

_IPOW = """static inline {t} ipow_{t}({t} a, {t} b) {{
  uint64_t r = 1, x = (uint64_t)(int64_t)a;
  if (b <= 0) return 1;
  for (uint64_t e = (uint64_t)b; e; e >>= 1) {{ if (e & 1) r *= x; x *= x; }}
  return ({t})r;
}}
"""


def ipow(ctype: str) -> str:
    """C source of `ipow_<ctype>`, integer power wrapping like numpy (b < 0 gives 1)."""
    return _IPOW.format(t=ctype)
