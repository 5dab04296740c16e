"""Our own GEMM code generator: Goto/BLIS-style blocked matrix products rendered as C.

`gemm_source(spec, tiling, name)` returns one self-contained C file; no BLAS anywhere.

The contract for the caller (the cpu backend's compiler and scheduler):

- Build: `cc -O3 -march=native -fopenmp -fPIC -shared` (OpenMP optional: without it the
  kernel runs on one thread). The file includes only libc headers.
- It exports exactly one function: `void <name>(void *out, const void *a, const void *b)`.
  It computes, for every batch index `i < batch`, `out[i] = a[i] @ b[i]` with
  `a[i]` of shape (m, k), `b[i]` of shape (k, n), `out[i]` of shape (m, n).
- Element (i, r, c) of each operand lives at `base + i*s0 + r*s1 + c*s2` elements, where
  (s0, s1, s2) are `spec.a_strides` / `b_strides` / `c_strides`: transposed, sliced,
  negatively strided or stride-0 broadcast views are read in place, never copied first.
  The pointers point at element (0, 0, 0) of each view.
- Storage: float32 / float64 as usual, float16 as IEEE binary16, bfloat16 as uint16 bits.
  Halves are widened to float32 and accumulated in float32; float64 accumulates in float64.
- The caller allocates `out` (every element the strides address is written; its previous
  contents are ignored) and keeps it disjoint from `a` and `b`.
- The kernel keeps one workspace per calling thread (packed panels, `workspace_bytes`),
  allocated on first use and reused by later calls; it aborts with a message if that
  allocation fails. Calls from different threads may run concurrently.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from anychip.codegen import gemm_driver, gemm_kernel as gk, gemm_tables, gemv_kernel
from anychip.dtypes import DType, float64, to_dtype
from anychip.errors import CompileError, DTypeError, ShapeError

Strides = tuple[int, int, int]
_ALIGN = 64  # bytes: packed panels start on a cache line (and any vector width)


@dataclass(frozen=True)
class HostInfo:
    """What the tiling defaults need to know about the machine (hashable: a cache key part)."""

    vec_bytes: int  # widest vector register the compiler targets: 64 AVX-512, 32 AVX2, 16 NEON
    vec_regs: int  # architectural vector registers: 32 with AVX-512/NEON, else 16
    l1_bytes: int  # per-core L1 data cache
    l2_bytes: int  # per-core L2 cache
    cores: int  # cores this process may run on


@dataclass(frozen=True)
class GemmTiling:
    """How to compute a GEMM: cache blocks, register tile, vector width, unroll, threads.

    mc x kc of A is packed to sit in L2, a kc x nr sliver of B sits in L1, the micro-kernel
    keeps an mr x nr tile of C in registers (nr a multiple of the vector lanes; vec_bytes=0
    renders only the scalar kernel). `batch_parallel` splits threads over the batch instead
    of over the M/N blocks of each matrix.

    >>> GemmTiling(mc=64, nc=64, kc=32, mr=4, nr=16, vec_bytes=32, unroll=2, threads=1).mr
    4
    """

    mc: int
    nc: int
    kc: int
    mr: int
    nr: int
    vec_bytes: int
    unroll: int = 4
    threads: int = 1
    batch_parallel: bool = False
    split_k: bool = False  # threads take k ranges into private sums (few tiles, long k)

    def __post_init__(self) -> None:
        for f in ("mc", "nc", "kc", "mr", "nr", "unroll", "threads"):
            if getattr(self, f) < 1:
                raise ShapeError(f"gemm tiling: {f} must be >= 1, got {self}")
        if self.mc % self.mr or self.nc % self.nr:
            raise ShapeError(f"gemm tiling: mc must be a multiple of mr, nc of nr: {self}")
        if self.vec_bytes not in (0, 8, 16, 32, 64):
            raise ShapeError(f"gemm tiling: vec_bytes must be 0, 8, 16, 32 or 64: {self}")


def _strides(value: Any, rows: int, cols: int, what: str) -> Strides:
    if value == ():
        return (rows * cols, cols, 1)
    s = tuple(int(v) for v in value)
    if len(s) != 3:
        raise ShapeError(f"gemm: {what} strides must be (batch, row, col), got {value!r}")
    return (s[0], s[1], s[2])


@dataclass(frozen=True)
class GemmSpec:
    """What to compute: `out[i] = a[i] @ b[i]` for i < batch; a (m, k), b (k, n), out (m, n).

    Strides are in elements, (batch, row, col) per operand; `()` means contiguous.
    `dtype` is A's and B's element type, `out_dtype` the result's (default: dtype).
    `k_dims`: B's K as several loops, (extent, b stride) each, outermost first, when it is
    not one stride (an implicit-GEMM convolution reads K = C x kh x kw from the padded
    input); `n_dims`: B's columns likewise (its weight gradient). B's packing then walks an
    offset per row (column), the b stride it replaces unused. Both together (at most two
    loops of N, output rows x columns): the forward reading the unpadded input, its N the
    un-widened output positions H' x W'. `b_bounds`: (k loop, n loop, lo, hi) each, indices
    into k_dims and n_dims: B[k, n] is 0 (and not read) unless lo <= that k loop's index +
    that n loop's index < hi, the convolution's zero padding (n loop -1: the k loop's
    index alone).

    >>> s = GemmSpec(2, 3, 4, 5, "float32", b_strides=(0, 1, 5))  # b: one (4,5) matrix, .T
    >>> s.a_strides, s.b_strides, s.out_dtype.name, s.acc_dtype.name
    ((15, 5, 1), (0, 1, 5), 'float32', 'float32')
    """

    batch: int
    m: int
    n: int
    k: int
    dtype: DType
    out_dtype: DType = None  # type: ignore[assignment]  # filled in from dtype
    a_strides: Strides = field(default=())  # type: ignore[assignment]
    b_strides: Strides = field(default=())  # type: ignore[assignment]
    c_strides: Strides = field(default=())  # type: ignore[assignment]
    k_dims: tuple[tuple[int, int], ...] = ()
    n_dims: tuple[tuple[int, int], ...] = ()
    b_bounds: tuple[tuple[int, int, int, int], ...] = ()

    def __post_init__(self) -> None:
        dims = (self.batch, self.m, self.n, self.k)
        if any(not isinstance(d, int) or d < 0 for d in dims):
            raise ShapeError(f"gemm: batch, m, n, k must be ints >= 0, got {dims}")
        for what, size, loops in (("k", self.k, self.k_dims), ("n", self.n, self.n_dims)):
            extents = [d[0] for d in loops]
            if loops and (min(extents) < 1 or _prod(extents) != size):
                raise ShapeError(f"gemm: {what}_dims extents {extents} must multiply to {size}")
        if self.k_dims and len(self.n_dims) > 2:
            raise ShapeError("gemm: k_dims with more than two n_dims loops is not supported")
        for kl, nl, _, _ in self.b_bounds:
            if not (0 <= kl < len(self.k_dims) and -1 <= nl < len(self.n_dims)):
                raise ShapeError(
                    f"gemm: b_bounds {self.b_bounds} must name loops of k_dims and n_dims"
                )
        dt = to_dtype(self.dtype)
        out = dt if self.out_dtype is None else to_dtype(self.out_dtype)
        for d in (dt, out):
            if not d.is_floating_point:
                raise DTypeError(
                    f"gemm: dtypes must be floating point, got {dt.name} -> {out.name}"
                )
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "dtype", dt)
        set_(self, "out_dtype", out)
        set_(self, "a_strides", _strides(self.a_strides, self.m, self.k, "a"))
        set_(self, "b_strides", _strides(self.b_strides, self.k, self.n, "b"))
        set_(self, "c_strides", _strides(self.c_strides, self.m, self.n, "c"))

    @property
    def acc_dtype(self) -> DType:
        """float64 for float64 inputs; float32 otherwise (halves accumulate in float32)."""
        return float64 if self.dtype is float64 else to_dtype("float32")

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.m * self.n * self.k


# ---------------------------------------------------------------- host detection


def _compiler_macros() -> str:
    cc = os.environ.get("CC", "cc")
    for flags in (["-march=native"], []):
        try:
            r = subprocess.run(
                [*shlex.split(cc), *flags, "-dM", "-E", "-x", "c", os.devnull],  # CC may carry args
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return ""
        if r.returncode == 0:
            return r.stdout
    return ""


def _vector_isa() -> tuple[int, int]:
    """(vector bytes, vector registers) from the compiler's macros, else /proc/cpuinfo."""
    macros = _compiler_macros()
    if macros:
        defined = set(re.findall(r"#define (\w+)", macros))
        if "__AVX512F__" in defined:
            return 64, 32
        if "__AVX__" in defined:
            return 32, 16
        if "__aarch64__" in defined:
            return 16, 32
        return 16, 16  # SSE2 / NEON / anything GCC's generic vectors lower well
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return 16, 16
    if "avx512f" in flags:
        return 64, 32
    if "avx2" in flags or "avx" in flags:
        return 32, 16
    return (16, 32) if "asimd" in flags else (16, 16)


def _cache_bytes(level: int, default: int) -> int:
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for idx in sorted(os.listdir(base)):
            d = os.path.join(base, idx)
            with open(os.path.join(d, "level")) as f:
                lvl = int(f.read())
            with open(os.path.join(d, "type")) as f:
                kind = f.read().strip()
            if lvl == level and kind in ("Data", "Unified"):
                with open(os.path.join(d, "size")) as f:
                    size = f.read().strip()
                mult = {"K": 1 << 10, "M": 1 << 20}.get(size[-1], 1)
                return int(size.rstrip("KM")) * mult
    except (OSError, ValueError):
        pass
    return default


@functools.cache
def host_info() -> HostInfo:
    """Detect this machine once per process (compiler macros, /sys caches, affinity and
    OMP_NUM_THREADS).

    >>> host_info().vec_bytes in (16, 32, 64)
    True
    """
    vec, regs = _vector_isa()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # OMP_NUM_THREADS caps the threads a kernel is planned for, as it caps OpenMP's teams
    asked = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if asked.isdigit() and int(asked) > 0:
        cores = min(cores or 1, int(asked))
    return HostInfo(vec, regs, _cache_bytes(1, 32 << 10), _cache_bytes(2, 1 << 20), cores or 1)


# ---------------------------------------------------------------- tiling choice


def _prod(xs: Iterable[int]) -> int:
    p = 1
    for x in xs:
        p *= x
    return p


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _imbalance(size: int, tile: int, parts: int) -> float:
    """Work of the busiest of `parts` threads over the mean, splitting whole tiles."""
    tiles = -(-max(size, 1) // tile)
    return -(-tiles // parts) * parts / tiles


def _register_tile(spec: GemmSpec, host: HostInfo) -> tuple[int, int, int]:
    """(mr, nr, vec_bytes): as many accumulators as the registers hold (nv = nr//lanes
    vectors of B, one broadcast of A, mr*nv accumulators). With 32 registers a wide, short
    tile (6 x 4 vectors) measured faster than a tall one (14 x 2): fewer A broadcasts per
    FMA and fewer C rows to stream; with 16 registers 6 x 2 is the classic choice."""
    size = spec.acc_dtype.itemsize
    lanes = host.vec_bytes // size
    nv = min(4 if host.vec_regs >= 32 else 2, -(-max(spec.n, 1) // lanes))
    mr = min(14, (host.vec_regs - nv - 1) // nv, max(spec.m, 1))
    return mr, nv * lanes, host.vec_bytes


def default_tiling(spec: GemmSpec, host: HostInfo | None = None) -> GemmTiling:
    """A good tiling without search: register tile from the vector ISA, blocks from caches.

    >>> t = default_tiling(GemmSpec(1, 1024, 1024, 1024, "float32"))
    >>> t.nr % (t.vec_bytes // 4) == 0 and t.mc % t.mr == 0
    True
    """
    host = host or host_info()
    mr, nr, vec = _register_tile(spec, host)
    return blocked_tiling(spec, mr, nr, vec, host=host)


def blocked_tiling(
    spec: GemmSpec,
    mr: int,
    nr: int,
    vec_bytes: int,
    *,
    kc: int = 0,
    l2_share: float = 0.5,
    unroll: int = 4,
    host: HostInfo | None = None,
) -> GemmTiling:
    """Cache blocks and threading around a given (mr, nr) register tile: kc=0 sizes a B
    sliver to L1, `l2_share` is the part of L2 an (mc, kc) block of A may fill.

    >>> t = blocked_tiling(GemmSpec(1, 300, 300, 300, "float32"), 6, 16, 32, kc=64)
    >>> (t.mr, t.nr, t.kc, t.mc % 6)
    (6, 16, 64, 0)
    """
    host = host or host_info()
    size = spec.acc_dtype.itemsize
    # kc: an (mr, kc) sliver of A takes a quarter of L1 (B's slivers stream from L2, which
    # feeds the nr-wide loads fast enough); a long kc also means fewer passes over C.
    # Measured best at 256-512 on AVX-512 hosts; a B sliver filling all of L1 was slower.
    if not kc:
        kc = max(128, min(512, host.l1_bytes // (4 * mr * size)) // 8 * 8)
        # a k a little above kc in one block rather than a full block and a thin tail
        # (k = 784: 309 -> 347 GFLOP/s at 256x512 on AVX-512; neutral on larger shapes)
        kc = max(spec.k, 1) if spec.k * 5 <= kc * 8 else kc
    kc = min(kc, max(spec.k, 1))
    threads = host.cores if spec.flops >= (1 << 21) else 1
    per_thread = spec.batch >= threads and (spec.batch % threads == 0 or spec.batch >= 4 * threads)
    batch_parallel = threads > 1 and per_thread
    # mc: A's (mc, kc) block in part of L2, with a multiple of `threads` row blocks of
    # near-equal height so no thread waits at the barrier for another's extra block
    mc = max(mr, int(host.l2_bytes * l2_share) // (kc * size) // mr * mr)
    m = max(spec.m, 1)
    split = 1 if batch_parallel else threads
    if m <= mc and _imbalance(spec.n, nr, split) < _imbalance(m, mr, split):
        split = 1  # one row block: the kernel splits the columns between threads instead
    blocks = _round_up(-(-m // mc), split)
    mc = _round_up(-(-m // blocks), mr)
    nc = min(_round_up(4096, nr), _round_up(max(spec.n, 1), nr))
    # k much longer than m and n (a weight gradient over a big batch, 64x64x4096): too few
    # register tiles to share, so threads take halves of k instead (145 -> 334 GFLOP/s)
    split_k = threads > 1 and not batch_parallel and spec.k > 2 * max(spec.m, spec.n)
    return GemmTiling(mc, nc, kc, mr, nr, vec_bytes, unroll, threads, batch_parallel, split_k)


def candidate_tilings(spec: GemmSpec, host: HostInfo | None = None) -> list[GemmTiling]:
    """A small search space around the default: register tile, kc, unroll.

    >>> len(candidate_tilings(GemmSpec(1, 256, 256, 256, "float32"))) > 1
    True
    """
    base = default_tiling(spec, host)
    lanes = max(1, base.vec_bytes // spec.acc_dtype.itemsize)
    out = [base]
    for mr, nv in ((base.mr, base.nr // lanes), (8, 2), (6, 2), (4, 3), (12, 1)):
        for kc in (base.kc, 128, 256, 384):
            for unroll in (1, 4):
                nr = nv * lanes
                mc = max(mr, base.mc // mr * mr)
                nc = _round_up(base.nc, nr)
                t = replace(base, mr=mr, nr=nr, kc=min(kc, max(spec.k, 1)), mc=mc, nc=nc)
                t = replace(t, unroll=unroll)
                if t not in out:
                    out.append(t)
    return out


def tune(
    spec: GemmSpec,
    candidates: Iterable[GemmTiling] | None,
    time_fn: Callable[[str, GemmTiling], float],
    name: str = "anychip_gemm",
) -> GemmTiling:
    """Return the fastest candidate tiling. `time_fn(source, tiling)` compiles and times one
    candidate's C source (seconds, lower is better) and raises CompileError to skip it.
    `candidates=None` searches `candidate_tilings(spec)`. Caching is the caller's job.

    >>> spec = GemmSpec(1, 8, 8, 8, "float32")
    >>> cands = [default_tiling(spec), replace(default_tiling(spec), unroll=1)]
    >>> tune(spec, cands, lambda src, t: float(t.unroll)).unroll
    1
    """
    best: tuple[float, GemmTiling] | None = None
    errors = []
    for t in candidate_tilings(spec) if candidates is None else candidates:
        try:
            secs = time_fn(gemm_source(spec, t, name), t)
        except CompileError as e:
            errors.append(str(e))
            continue
        if best is None or secs < best[0]:
            best = (secs, t)
    if best is None:
        raise CompileError(f"gemm tune: no candidate tiling built for {spec}: {errors[:1]}")
    return best[1]


# ---------------------------------------------------------------- rendering


def fold_broadcast_batch(spec: GemmSpec) -> GemmSpec:
    """A stride-0 B shared by a batch of row-stacked A's is one taller GEMM (packs B once).
    `gemm_source` does this itself; tilings are chosen for the folded spec.

    >>> fold_broadcast_batch(GemmSpec(4, 10, 20, 30, "float32", b_strides=(0, 20, 1))).m
    40
    """
    sa, sb, sc = spec.a_strides, spec.b_strides, spec.c_strides
    if spec.batch > 1 and sb[0] == 0 and sa[0] == spec.m * sa[1] and sc[0] == spec.m * sc[1]:
        m = spec.batch * spec.m
        return replace(spec, batch=1, m=m, a_strides=(0, sa[1], sa[2]), c_strides=(0, *sc[1:]))
    return spec


def _check(spec: GemmSpec, t: GemmTiling, name: str) -> None:
    if not re.fullmatch(r"[A-Za-z_]\w*", name):
        raise ShapeError(f"gemm: kernel name must be a C identifier, got {name!r}")
    lanes = t.vec_bytes // spec.acc_dtype.itemsize
    if t.vec_bytes and (lanes == 0 or t.nr % lanes):
        raise ShapeError(
            f"gemm: nr={t.nr} must be a multiple of the {lanes} {spec.acc_dtype.name} lanes "
            f"of a {t.vec_bytes}-byte vector"
        )


def _dense_rows(spec: GemmSpec, t: GemmTiling) -> bool:
    """A's rows are k-contiguous, all of k is one block and rows lie at most a page apart:
    an (mc, kc) block of A is then (nearly) one contiguous run that the hardware prefetcher
    streams, so reading it in place beats packing it (fwd 256x512x784: 335 -> 358 GFLOP/s
    warm, 310 -> 330 cold). Strided rows (k split over blocks, or rows a page or more
    apart) stay packed: their lines alias in the caches (2048x2048: in place was slower)."""
    sa = spec.a_strides
    return sa[2] == 1 and t.kc >= spec.k and 0 < sa[1] * spec.acc_dtype.itemsize <= 4096


def _inplace(spec: GemmSpec, t: GemmTiling) -> str:
    """Which operand the micro-kernel reads where it lies instead of packing: "a" when all
    of N fits one register tile (each A element is then used once per k block, so packing
    it costs as much as the product: matrix-vector, narrow heads) or A's block is dense
    rows (`_dense_rows`); "b" when M spans at most two register tiles (B is then read at
    most twice, cheaper than packing it: a weight gradient g.T @ h of a 10-class head,
    10x512x256, 48 -> 15 us). Only unit-stride rows in the accumulator's own dtype
    (packing is what widens halves)."""
    if spec.dtype is not spec.acc_dtype or spec.k_dims or spec.n_dims:
        return ""
    if spec.a_strides[2] == 1 and spec.n <= t.nr:
        return "a"
    if spec.b_strides[2] == 1 and spec.m <= 2 * t.mr:
        return "b"
    return "a" if _dense_rows(spec, t) else ""


def _edge(spec: GemmSpec, t: GemmTiling) -> int:
    """Columns in N's last sliver when it is narrower than NR (0 otherwise): they get a
    narrower micro-kernel (n = 784 = 12 x 64 + 16 would compute 64 columns for 16)."""
    return spec.n % t.nc % t.nr if spec.n > t.nr else 0


def _gemv(spec: GemmSpec) -> tuple[str, str] | None:
    """M or N of 1 (matrix times vector, a Linear layer at batch 1): (which argument holds
    the matrix, "dot" when its rows along k are contiguous or "axpy" when its other
    dimension is); such products read each matrix element once, so packing would only add
    traffic. None otherwise. Halves take the blocked path (packing widens them)."""
    if spec.dtype is not spec.acc_dtype or spec.k == 0 or spec.batch * spec.m * spec.n == 0:
        return None
    if spec.k_dims or spec.n_dims:
        return None
    sa, sb = spec.a_strides, spec.b_strides
    for matrix, vector_dim, k_unit, other_unit in (
        ("a", spec.n, sa[2] == 1, sa[1] == 1),
        ("b", spec.m, sb[1] == 1, sb[2] == 1),
    ):
        if vector_dim == 1 and (k_unit or other_unit):
            return matrix, "dot" if k_unit else "axpy"
    return None


def _defines(spec: GemmSpec, t: GemmTiling, direct: bool) -> str:
    size = spec.acc_dtype.itemsize
    # B panels and scratch C: one per batch worker or split-K thread
    slots = t.threads if t.batch_parallel or t.split_k else 1
    sz_b = _round_up(t.kc * t.nc * size, _ALIGN)
    sz_a = _round_up(t.mc * t.kc * size, _ALIGN)
    sz_s = 0 if direct else _round_up(spec.m * spec.n * size, _ALIGN)
    consts = {
        "BATCH": spec.batch, "M": spec.m, "N": spec.n, "K": spec.k,
        "MC": t.mc, "NC": t.nc, "KC": t.kc, "MR": t.mr, "NR": t.nr,
        "SAB": spec.a_strides[0], "SAM": spec.a_strides[1], "SAK": spec.a_strides[2],
        "SBB": spec.b_strides[0], "SBK": spec.b_strides[1], "SBN": spec.b_strides[2],
        "SCB": spec.c_strides[0], "SCM": spec.c_strides[1], "SCN": spec.c_strides[2],
        "LDC": spec.c_strides[1] if direct else spec.n,
        "SZ_A": sz_a, "SZ_B": sz_b, "SZ_S": sz_s,
        "OFF_A": slots * sz_b, "OFF_S": slots * sz_b + t.threads * sz_a,
        "WS_BYTES": max(_ALIGN, slots * (sz_b + sz_s) + t.threads * sz_a),
        "DIRECT": int(direct), "SPLIT_K": int(t.split_k),
        "INPLACE_A": int(_inplace(spec, t) == "a"), "INPLACE_B": int(_inplace(spec, t) == "b"),
    }  # fmt: skip
    return "".join(f"#define {k} {v}L\n" for k, v in consts.items())


def gemm_source(
    spec: GemmSpec, tiling: GemmTiling | None = None, name: str = "anychip_gemm"
) -> str:
    """The C source of `void name(void *out, const void *a, const void *b)` for `spec`
    (see the module docstring for the calling contract). `tiling=None` uses the default.

    >>> src = gemm_source(GemmSpec(1, 2, 3, 4, "float32"), name="mm")
    >>> "void mm(void *out, const void *a, const void *b)" in src
    True
    """
    spec = fold_broadcast_batch(spec)
    t = tiling or default_tiling(spec)
    _check(spec, t, name)
    # clamp blocks to the problem so small GEMMs get small workspaces
    t = replace(
        t,
        mc=min(t.mc, _round_up(max(spec.m, 1), t.mr)),
        nc=min(t.nc, _round_up(max(spec.n, 1), t.nr)),
        kc=min(t.kc, max(spec.k, 1)),
        split_k=t.split_k and t.threads > 1 and not t.batch_parallel and spec.k >= t.threads,
    )
    gemv = _gemv(spec)
    if gemv:
        return gemv_kernel.gemv_source(spec, t.threads, t.vec_bytes, name, *gemv)
    acc = spec.acc_dtype
    direct = spec.out_dtype is acc and spec.c_strides[2] == 1 and not t.split_k
    lanes = t.vec_bytes // acc.itemsize
    acc_c = "double" if acc is float64 else "float"
    return gemm_driver.driver_c(
        name=name,
        header=f"/* anychip GEMM: {spec}\n   tiling: {t} */\n",
        defines=_defines(spec, t, direct),
        conversions=gk.conversions_c(spec.dtype.name, spec.out_dtype.name, acc_c),
        pack_a=gk.pack_a_c(row_major=spec.a_strides[2] == 1 and spec.a_strides[1] != 1),
        pack_b=_pack_b(spec),
        micro=gk.micro_c(
            t.mr, t.nr, lanes, t.unroll, t.vec_bytes, _inplace(spec, t), _edge(spec, t)
        ),
        threads=t.threads,
        batch_parallel=t.batch_parallel,
        split_k=t.split_k,
        empty=spec.batch * spec.m * spec.n == 0,
        zero_k=spec.k == 0,
    )


def _pack_b(spec: GemmSpec) -> str:
    """pack_b: strided, or through offset tables when B's K, N or both are several loops."""
    sb, f32 = spec.b_strides, spec.dtype.name == "float32"
    if spec.k_dims or spec.n_dims:
        return gemm_tables.pack_b_tables_c(spec.k_dims, spec.n_dims, spec.b_bounds, f32)
    return gk.pack_b_c(col_major=sb[1] == 1 and sb[2] != 1, float32=f32)
