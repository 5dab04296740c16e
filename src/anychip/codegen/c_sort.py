"""C source of the stable argsort (and top-k selection) that sort kernels call, one function
per key dtype, with the `ref` backend's order (ir/primitives.py ARGSORT).

Keys are mapped to unsigned integers whose order is the wanted one: floats flip the sign
bit (or all bits when negative), -0.0 becomes 0.0 (they tie, as in numpy) and every NaN the
largest key; descending order complements every bit, which keeps ties tied, so one stable
ascending sort serves both. Rows are sorted by LSD radix sort (stable by construction,
insertion sort for short rows) in a per-thread scratch buffer reused across rows; top-k
with small k keeps a sorted buffer of the best k instead.
"""

from __future__ import annotations

from anychip.dtypes import DType

# scratch memory for sorting, one per thread, grown on demand and kept for the next row
# (OpenMP threads are pooled, so a kernel's rows reuse it); up to 4 MiB of it per thread
# lives until the process ends
SCRATCH = r"""static _Thread_local void *ac_sort_buf;
static _Thread_local size_t ac_sort_cap;
static void *ac_sort_scratch(size_t bytes) {
  if (bytes > ac_sort_cap) {
    free(ac_sort_buf);
    ac_sort_buf = malloc(bytes);
    if (!ac_sort_buf) abort();
    ac_sort_cap = bytes;
  }
  return ac_sort_buf;
}
static void ac_sort_release(void) {  /* big rows amortise their malloc: keep only <= 4 MiB */
  if (ac_sort_cap > ((size_t)1 << 22)) {
    free(ac_sort_buf);
    ac_sort_buf = NULL;
    ac_sort_cap = 0;
  }
}
"""

# Stable sort of n keys `key` (u{w}: unsigned, w bits); writes the first k source positions
# to dst[i*ds]. `ix` and the second key/index halves are scratch of n entries each.
_KEYSORT = r"""static void ac_keysort_u{w}(uint{w}_t *key, int64_t *ix, uint{w}_t *key2,
                             int64_t *ix2, int64_t n, int64_t k, int64_t *dst, int64_t ds) {{
  if (k < n && k <= 32) {{  /* top-k: the best k so far, sorted; a tie never displaces */
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) {{
      uint{w}_t v = key[i];
      if (m == k) {{
        if (v >= key2[k - 1]) continue;
        m--;
      }}
      int64_t j = m++;
      for (; j > 0 && key2[j - 1] > v; j--) {{ key2[j] = key2[j - 1]; ix2[j] = ix2[j - 1]; }}
      key2[j] = v;
      ix2[j] = i;
    }}
    for (int64_t i = 0; i < k; i++) dst[i * ds] = ix2[i];
    return;
  }}
  for (int64_t i = 0; i < n; i++) ix[i] = i;
  if (n <= 48) {{  /* short rows: stable insertion sort */
    for (int64_t i = 1; i < n; i++) {{
      uint{w}_t v = key[i];
      int64_t j = i;
      for (; j > 0 && key[j - 1] > v; j--) {{ key[j] = key[j - 1]; ix[j] = ix[j - 1]; }}
      key[j] = v;
      ix[j] = i;
    }}
  }} else {{  /* LSD radix sort by bytes; a byte equal in every key needs no pass */
    int64_t count[{bytes}][256];
    memset(count, 0, sizeof count);
    for (int64_t i = 0; i < n; i++)
      for (int b = 0; b < {bytes}; b++) count[b][(key[i] >> (8 * b)) & 0xff]++;
    for (int b = 0; b < {bytes}; b++) {{
      int64_t *c = count[b], sum = 0;
      if (c[key[0] >> (8 * b) & 0xff] == n) continue;
      for (int d = 0; d < 256; d++) {{ int64_t t = c[d]; c[d] = sum; sum += t; }}
      for (int64_t i = 0; i < n; i++) {{
        int64_t o = c[(key[i] >> (8 * b)) & 0xff]++;
        key2[o] = key[i];
        ix2[o] = ix[i];
      }}
      uint{w}_t *tk = key; key = key2; key2 = tk;
      int64_t *ti = ix; ix = ix2; ix2 = ti;
    }}
  }}
  for (int64_t i = 0; i < k; i++) dst[i * ds] = ix[i];
}}
"""

# One dtype's entry point: keys of the strided row, flipped for descending order, sorted.
_ARGSORT = r"""static void argsort_{n}(int64_t *dst, int64_t ds, const {t} *src, int64_t ss,
                        int64_t n, int desc, int64_t k) {{
  if (n <= 0 || k <= 0) return;
  uint{w}_t flip = desc ? ~(uint{w}_t)0 : 0;
  size_t half = (size_t)n * (sizeof(uint{w}_t) + sizeof(int64_t));
  char *buf = (char *)ac_sort_scratch(2 * half);
  uint{w}_t *key = (uint{w}_t *)buf, *key2 = (uint{w}_t *)(buf + half);
  int64_t *ix = (int64_t *)(key + n), *ix2 = (int64_t *)(key2 + n);
  for (int64_t i = 0; i < n; i++) {{
    {v} x = {load}(src[i * ss]);
    {key}
    key[i] = u ^ flip;
  }}
  ac_keysort_u{w}(key, ix, key2, ix2, n, k, dst, ds);
  ac_sort_release();
}}
"""


def _key_code(d: DType, value: str) -> str:
    """C statements turning value `x` of dtype `d` into `u`, its ascending-order key."""
    if d.is_floating_point:
        w = 64 if d.itemsize == 8 else 32
        sign, mag_max = (1 << (w - 1)), "0x7ff0000000000000" if w == 64 else "0x7f800000"
        return (
            f"uint{w}_t u; memcpy(&u, &x, sizeof u);\n"
            f"    if ((u & ~(uint{w}_t){sign}u) > {mag_max}u) u = ~(uint{w}_t)0;  /* NaN */\n"
            f"    else if ((u & ~(uint{w}_t){sign}u) == 0) u = (uint{w}_t){sign}u;  /* +-0 */\n"
            f"    else u = (u & (uint{w}_t){sign}u) ? ~u : u | (uint{w}_t){sign}u;"
        )
    w = 64 if d.itemsize == 8 else 32
    if d.kind == "i":  # two's complement: flipping the sign bit orders it as unsigned
        return f"uint{w}_t u = (uint{w}_t)(int{w}_t)x ^ ((uint{w}_t)1 << {w - 1});"
    return f"uint{w}_t u = (uint{w}_t)x;"


def key_bits(d: DType) -> int:
    """Width of `d`'s sort keys: 64 for 8-byte dtypes, else 32."""
    return 64 if d.itemsize == 8 else 32


def keysort(bits: int) -> str:
    """C source of `ac_keysort_u<bits>`, the stable sort of unsigned keys."""
    return _KEYSORT.format(w=bits, bytes=bits // 8)


def argsort(d: DType, storage: str, value: str, load: str) -> str:
    """C source of `argsort_<d.name>(dst, ds, src, ss, n, desc, k)` over keys stored as
    `storage`, read as `value` through `load` (needs SCRATCH and keysort(key_bits(d))).

    >>> from anychip import dtypes
    >>> "argsort_int32" in argsort(dtypes.int32, "int32_t", "int32_t", "")
    True
    """
    w = key_bits(d)
    return _ARGSORT.format(n=d.name, t=storage, v=value, load=load, w=w, key=_key_code(d, value))
