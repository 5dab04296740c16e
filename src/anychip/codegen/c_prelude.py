"""C helpers every generated kernel includes: half/bfloat16 conversions, integer division
and power, with the `ref` backend's semantics (ir/primitives.py); argsort is in c_sort.py.

Halves are computed in float32 and rounded after every op (`RH`, `RB`), as numpy does.
"""

from __future__ import annotations

INT_TYPES = ("int8_t", "int16_t", "int32_t", "int64_t", "uint8_t", "uint32_t")

HEADER = r"""/* with AVX-512, simd loops use all of it (exp-heavy rows run ~1.4x faster) */
#if defined(__AVX512F__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("prefer-vector-width=512")
#endif
#include <math.h>
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
#else
#define AC_FMAF(a, b, c) ((a) * (b) + (c))
#endif
static inline __attribute__((always_inline)) float ac_expf(float x) {
  float c = x < -104.0f ? -104.0f : (x > 89.0f ? 89.0f : x);
  float k = (c * 1.44269504f + 12582912.0f) - 12582912.0f;  /* round to nearest */
  float r = (c - k * 0.693359375f) - k * -2.12194440e-4f;
  float p = 0.00019790353f;
  p = AC_FMAF(p, r, 0.0013944649f);
  p = AC_FMAF(p, r, 0.008333497f);
  p = AC_FMAF(p, r, 0.041666295f);
  p = AC_FMAF(p, r, 0.16666666f);
  p = AC_FMAF(p, r, 0.5f);
  float y = AC_FMAF(p, r * r, r) + 1.0f;
  int32_t n = (int32_t)k, n1 = n >> 1, n2 = n - n1;
  uint32_t u1 = (uint32_t)(n1 + 127) << 23, u2 = (uint32_t)(n2 + 127) << 23;
  float s1, s2;
  memcpy(&s1, &u1, 4);
  memcpy(&s2, &u2, 4);
  float out = (y * s1) * s2;
  return x != x ? x : out;
}
"""

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
