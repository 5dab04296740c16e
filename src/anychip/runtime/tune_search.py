"""The autotuner's search: candidate tilings per GEMM, timed on this machine, the fastest kept.

`search` walks the stages (register tile and vector width, cache blocks, unrolling) in this
process; `tune_spec` runs it in a child process. Caching is `anychip.runtime.tune`'s job.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from anychip.codegen import gemm
from anychip.codegen.gemm import GemmSpec, GemmTiling, HostInfo
from anychip.errors import CompileError, ShapeError

# the flags the cpu backend builds kernels with: tilings are timed as they will run
CFLAGS = ("-O3", "-march=native", "-fopenmp", "-fPIC", "-shared")
TimeFn = Callable[[GemmSpec, GemmTiling], float]  # seconds per call; CompileError skips


@dataclass(frozen=True)
class TileChoice:
    """What the search picks per shape class; cache blocks and threads follow from it for
    each exact spec (`gemm.blocked_tiling`), so one choice serves a whole class.

    >>> c = TileChoice(mr=6, nr=16, vec_bytes=32, kc=128)
    >>> c.tiling(GemmSpec(1, 300, 300, 300, "float32")).kc
    128
    """

    mr: int
    nr: int
    vec_bytes: int
    kc: int = 0  # 0: sized so a (kc, nr) sliver of B fills L1
    l2_share: float = 0.5  # part of L2 an (mc, kc) block of A may fill
    unroll: int = 4

    def tiling(self, spec: GemmSpec, host: HostInfo | None = None) -> GemmTiling:
        if not 0.0 < self.l2_share <= 1.0 or self.kc < 0:
            raise ShapeError(f"gemm tune: kc >= 0 and 0 < l2_share <= 1 expected: {self}")
        return gemm.blocked_tiling(
            spec, self.mr, self.nr, self.vec_bytes,
            kc=self.kc, l2_share=self.l2_share, unroll=self.unroll, host=host,
        )  # fmt: skip


def default_choice(spec: GemmSpec, host: HostInfo | None = None) -> TileChoice:
    """The choice behind `gemm.default_tiling` (no search)."""
    t = gemm.default_tiling(spec, host)
    return TileChoice(t.mr, t.nr, t.vec_bytes)


# ---------------------------------------------------------------- the search space


def register_stage(spec: GemmSpec, best: TileChoice, host: HostInfo) -> list[TileChoice]:
    """Stage 1: register tiles and vector widths (the host's, and half of it): for each
    count of B vectors per row, as many rows as the registers hold."""
    size = spec.acc_dtype.itemsize
    out = [best]
    for vec in (host.vec_bytes, host.vec_bytes // 2):
        lanes = vec // size
        if lanes < 2:
            continue
        for nv in (1, 2, 3, 4):
            if nv > 1 and (nv - 1) * lanes >= max(spec.n, 1):
                break  # a tile wider than the matrix computes only padding
            mr = min(16, (host.vec_regs - nv - 1) // nv, max(spec.m, 1))
            c = replace(best, mr=mr, nr=nv * lanes, vec_bytes=vec)
            if c not in out:
                out.append(c)
    return out


def block_stage(spec: GemmSpec, best: TileChoice, host: HostInfo) -> list[TileChoice]:
    """Stage 2: kc and the share of L2 an A block fills, around the best register tile."""
    kcs = [kc for kc in (128, 256, 384, 512) if kc < 2 * max(spec.k, 1)]
    more = [replace(best, kc=kc, l2_share=s) for s in (0.5, 0.25) for kc in kcs]
    return [best] + [c for c in more if c != best]


def unroll_stage(spec: GemmSpec, best: TileChoice, host: HostInfo) -> list[TileChoice]:
    """Stage 3: how many k steps the micro-kernel's loop body holds."""
    return [best] + [replace(best, unroll=u) for u in (1, 2, 4, 8) if u != best.unroll]


STAGES = (register_stage, block_stage, unroll_stage)


@dataclass(frozen=True)
class TuneResult:
    """The outcome of one search: the choice, the tiling it gives `spec`, both speeds."""

    shape_class: str
    choice: TileChoice
    tiling: GemmTiling
    default_gflops: float
    tuned_gflops: float


def search(
    spec: GemmSpec,
    choices: Iterable[TileChoice] | None = None,
    time_fn: TimeFn | None = None,
    host: HostInfo | None = None,
) -> TuneResult:
    """Time candidates on this machine and return the fastest. `choices=None` walks
    `STAGES` (each stage varies the best so far); `time_fn=None` compiles and runs each.
    The default tiling is timed with every stage's candidates, and kept unless one beats it.

    >>> spec = GemmSpec(1, 8, 8, 8, "float32")
    >>> fake = lambda s, t: float(t.unroll)  # pretend less unrolling is faster
    >>> search(spec, [TileChoice(4, 8, 32, unroll=u) for u in (1, 2)], fake).choice.unroll
    1
    """
    host = host or gemm.host_info()
    spec = gemm.fold_broadcast_batch(spec)
    with contextlib.ExitStack() as stack:
        if time_fn is None:
            time_fn = _Bench(spec, Path(stack.enter_context(tempfile.TemporaryDirectory())))
        return _search(spec, choices, time_fn, host)


def _search(
    spec: GemmSpec,
    choices: Iterable[TileChoice] | None,
    time_fn: TimeFn,
    host: HostInfo,
    rounds: int = 3,
) -> TuneResult:
    # best time per tiling (choices that give the same tiling share it); a shared machine
    # is noisy, so each stage times its candidates in `rounds` interleaved rounds
    timed: dict[GemmTiling, float] = {}
    errors: list[str] = []

    def measure(c: TileChoice) -> float:
        t = c.tiling(spec, host)
        if not math.isinf(timed.get(t, 0.0)):
            try:
                timed[t] = min(timed.get(t, math.inf), time_fn(spec, t))
            except CompileError as e:
                timed[t] = math.inf
                errors.append(str(e))
        return timed[t]

    def secs(c: TileChoice) -> float:
        return timed[c.tiling(spec, host)]

    default = default_choice(spec, host)
    stages: Sequence[Callable[[GemmSpec, TileChoice, HostInfo], list[TileChoice]]] = STAGES
    if choices is not None:
        fixed = list(choices)
        stages = [lambda s, b, h: fixed]
    best = default
    for stage in stages:
        cands = [default, *stage(spec, best, host)]  # the default is always in the running
        for _ in range(rounds):
            for c in cands:
                measure(c)
        best = min(cands, key=secs)
    if math.isinf(secs(best)):
        raise CompileError(f"gemm tune: no candidate built for {spec}: {errors[:1]}")
    gflops = spec.flops / 1e9
    return TuneResult(
        shape_class(spec),
        best,
        best.tiling(spec, host),
        gflops / secs(default),
        gflops / secs(best),
    )


# ---------------------------------------------------------------- timing on this machine

_STORAGE: dict[str, Any] = {"float32": np.float32, "float64": np.float64}
_STORAGE |= {"float16": np.float16, "bfloat16": np.uint16}  # bfloat16 as its upper 16 bits


def _operand(
    dims: tuple[int, int, int], strides: tuple[int, int, int], dtype: str, rng: Any
) -> tuple[np.ndarray, int]:
    """A buffer covering every element `strides` address, and the address of element 0."""
    lo = sum(min(0, (d - 1) * s) for d, s in zip(dims, strides) if d > 0)
    hi = sum(max(0, (d - 1) * s) for d, s in zip(dims, strides) if d > 0)
    values = rng.uniform(-1.0, 1.0, hi - lo + 1).astype(np.float32)
    if dtype == "bfloat16":
        buf = (values.view(np.uint32) >> 16).astype(np.uint16)
    else:
        buf = values.astype(_STORAGE[dtype])
    return buf, buf.ctypes.data - lo * buf.itemsize


class _Bench:
    """Compiles candidates into `tmp` and times them on random operands of `spec`."""

    def __init__(self, spec: GemmSpec, tmp: Path) -> None:
        rng = np.random.default_rng(0)
        s = spec
        self.a = _operand((s.batch, s.m, s.k), s.a_strides, s.dtype.name, rng)
        self.b = _operand((s.batch, s.k, s.n), s.b_strides, s.dtype.name, rng)
        self.c = _operand((s.batch, s.m, s.n), s.c_strides, s.out_dtype.name, rng)
        self.tmp = tmp
        self.built: dict[GemmTiling, Any] = {}

    def __call__(self, spec: GemmSpec, tiling: GemmTiling) -> float:
        args = (self.c[1], self.a[1], self.b[1])
        fn = self.built.get(tiling)
        if fn is None:
            src = gemm.gemm_source(spec, tiling, "tune_gemm")
            fn = self.built[tiling] = build(src, "tune_gemm", self.tmp)
        fn(*args)  # warm-up: workspace, page faults, caches, the OpenMP team
        best, start, calls = math.inf, time.perf_counter(), 0
        while calls < 3 or (calls < 100 and time.perf_counter() - start < 0.05):
            t0 = time.perf_counter()
            fn(*args)
            best, calls = min(best, time.perf_counter() - t0), calls + 1
        return best


def build(src: str, name: str, tmp: Path) -> Any:
    """Compile C `src` with CC (default cc) and CFLAGS into `tmp`; return `name` there."""
    cc = os.environ.get("CC", "cc")
    key = hashlib.sha256(src.encode()).hexdigest()[:16]
    c, so = tmp / f"{key}.c", tmp / f"{key}.so"
    c.write_text(src)
    try:
        argv = [*shlex.split(cc), *CFLAGS, str(c), "-o", str(so)]  # CC may carry arguments
        r = subprocess.run(argv, capture_output=True, text=True)
    except (OSError, ValueError) as e:
        raise CompileError(f"gemm tune: cannot run the C compiler {cc!r}: {e}") from e
    if r.returncode:
        raise CompileError(f"gemm tune: {cc} failed on {c}:\n{r.stderr[-2000:]}")
    fn = ctypes.CDLL(str(so))[name]
    fn.restype, fn.argtypes = None, [ctypes.c_void_p] * 3
    return fn


# ---------------------------------------------------------------- shape classes, machines


def _layout(strides: tuple[int, int, int], batch: int) -> str:
    """r: rows contiguous, c: columns contiguous (a transposed view), s: neither; 0: the
    batch is broadcast."""
    kind = "r" if strides[2] == 1 else "c" if strides[1] == 1 else "s"
    return kind + ("0" if batch > 1 and strides[0] == 0 else "")


def _bucket(d: int) -> int:
    return 1 << (max(d, 1) - 1).bit_length()  # the next power of two: 7 -> 8, 1024 -> 1024


def shape_class(spec: GemmSpec) -> str:
    """The cache key of a spec: dtypes, batch/m/n/k rounded up to powers of two, layouts.

    >>> shape_class(GemmSpec(1, 1000, 7, 1024, "float32", b_strides=(0, 1, 1024)))
    'float32->float32 1x1024x8x1024 r,c,r'
    """
    spec = gemm.fold_broadcast_batch(spec)
    dims = "x".join(str(_bucket(d)) for d in (spec.batch, spec.m, spec.n, spec.k))
    lay = ",".join(_layout(s, spec.batch) for s in (spec.a_strides, spec.b_strides, spec.c_strides))
    return f"{spec.dtype.name}->{spec.out_dtype.name} {dims} {lay}"


# ---------------------------------------------------------------- a search in a child process


def _spec_json(spec: GemmSpec) -> dict[str, Any]:
    s = spec
    return {"batch": s.batch, "m": s.m, "n": s.n, "k": s.k, "dtype": s.dtype.name,
            "out_dtype": s.out_dtype.name, "a_strides": s.a_strides, "b_strides": s.b_strides,
            "c_strides": s.c_strides}  # fmt: skip


def tune_spec(spec: GemmSpec) -> TuneResult:
    """`search(spec)` in a child Python process: the many candidate kernels it loads (and
    their workspaces) go away with it, and a crash in one cannot take this process down."""
    src_root = str(Path(__file__).resolve().parents[2])  # the folder holding `anychip`
    paths = [src_root, os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))
    code = "from anychip.runtime.tune_search import _child; _child()"
    r = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(_spec_json(spec)),
        capture_output=True,
        text=True,
        env=env,
    )
    if r.returncode:
        raise CompileError(f"gemm tune: the search for {spec} failed:\n{r.stderr[-2000:]}")
    d = json.loads(r.stdout.strip().splitlines()[-1])
    return TuneResult(
        d["shape_class"],
        TileChoice(**d["choice"]),
        GemmTiling(**d["tiling"]),
        d["default_gflops"],
        d["tuned_gflops"],
    )


def _child() -> None:
    d = json.loads(sys.stdin.read())
    for key in ("a_strides", "b_strides", "c_strides"):
        d[key] = tuple(d[key])
    result = search(GemmSpec(**d))
    print(json.dumps(asdict(result)))
