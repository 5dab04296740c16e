"""float32 matmul throughput: anychip's generated GEMM against numpy (OpenBLAS), one process.

Run: PYTHONPATH=src /work/venv/bin/python bench/bench_gemm.py [--sizes 512 1024 2048]
[--repeat 5] [--tuned] [--json out.json]. `--tuned` renders with `tuned_tiling` (the tilings
`anychip tune` cached for this machine) instead of the untuned defaults. Machines here are
shared, so each figure is the best of `repeat` rounds that alternate anychip and numpy (3
timed calls each, after a pause that lets the other library's threads go idle).
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are removed from this process's environment (it
re-executes itself) so numpy runs its best kernel.
"""

from __future__ import annotations

import os
import sys

_FORCED = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if any(v in os.environ for v in _FORCED):  # before numpy loads OpenBLAS
    env = {k: v for k, v in os.environ.items() if k not in _FORCED}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)

import argparse  # noqa: E402
import ctypes  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from anychip.codegen.gemm import (  # noqa: E402
    GemmSpec,
    GemmTiling,
    default_tiling,
    gemm_source,
    host_info,
)
from anychip.runtime.tune import tuned_tiling  # noqa: E402

IDLE_PAUSE_S = 0.3


def openblas_kernel() -> str:
    """Which OpenBLAS core numpy uses: threadpoolctl if installed, else OpenBLAS itself."""
    try:
        import threadpoolctl  # type: ignore[import-not-found]

        info = [i for i in threadpoolctl.threadpool_info() if i.get("internal_api") == "openblas"]
        if info:
            return f"{info[0].get('architecture')} ({info[0].get('num_threads')} threads)"
    except ImportError:
        pass
    libs = glob.glob(os.path.join(os.path.dirname(np.__file__) + ".libs", "*openblas*"))
    for path in libs:
        lib = ctypes.CDLL(path)
        for sym in ("scipy_openblas_get_corename64_", "openblas_get_corename"):
            if hasattr(lib, sym):
                fn = getattr(lib, sym)
                fn.restype = ctypes.c_char_p
                return f"{fn().decode()} (threadpoolctl not installed; asked OpenBLAS)"
    return "unknown (threadpoolctl not installed)"


def build(src: str, name: str, tmp: str) -> Callable[..., None]:
    cc = os.environ.get("CC", "cc")
    c, so = Path(tmp, f"{name}.c"), Path(tmp, f"{name}.so")
    c.write_text(src)
    cmd = [cc, "-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", str(c), "-o", str(so)]
    subprocess.run(cmd, check=True)
    fn = ctypes.CDLL(str(so))[name]
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p] * 3
    return fn  # type: ignore[no-any-return]


def best_time(fn: Callable[[], object], repeat: int) -> float:
    """Best of `repeat` timed calls, after a pause and one warm-up call. The pause lets the
    previous library's worker threads go idle: OpenBLAS's busy-wait for a while after each
    call and would take a core from whoever runs next."""
    time.sleep(IDLE_PAUSE_S)
    fn()  # warm up: workspace allocation, page faults, thread pool
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_size(n: int, repeat: int, tmp: str, tiling: GemmTiling | None) -> dict[str, float]:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    spec = GemmSpec(1, n, n, n, "float32")
    fn = build(gemm_source(spec, tiling, f"mm{n}"), f"mm{n}", tmp)
    ours = theirs = float("inf")
    for _ in range(repeat):  # alternate the two so a noisy neighbour hurts both alike
        ours = min(ours, best_time(lambda: fn(out.ctypes.data, a.ctypes.data, b.ctypes.data), 3))
        theirs = min(theirs, best_time(lambda: np.matmul(a, b), 3))
    ref = a.astype(np.float64) @ b.astype(np.float64)
    err = float(np.abs(out - ref).max() / np.abs(ref).max())
    flop = 2.0 * n**3
    return {"n": n, "anychip_gflops": flop / ours / 1e9, "numpy_gflops": flop / theirs / 1e9,
            "ratio": theirs / ours, "max_rel_err": err}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--json", type=str, default=None)
    p.add_argument("--tuned", action="store_true", help="use the tuned tilings (anychip tune)")
    args = p.parse_args()
    host = host_info()
    print(f"host: {host}")
    print(f"numpy {np.__version__}, OpenBLAS kernel: {openblas_kernel()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            spec = GemmSpec(1, n, n, n, "float32")
            t = tuned_tiling(spec) if args.tuned else default_tiling(spec)
            r = bench_size(n, args.repeat, tmp, t)
            rows.append(r)
            print(f"  {n}: tiling {t}")
    print(f"{'size':>6} {'anychip GFLOP/s':>16} {'numpy GFLOP/s':>14} {'ratio':>7} {'rel err':>8}")
    for r in rows:
        print(f"{r['n']:>6} {r['anychip_gflops']:>16.1f} {r['numpy_gflops']:>14.1f} "
              f"{r['ratio']:>6.2f}x {r['max_rel_err']:>8.1e}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"host": str(host), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
