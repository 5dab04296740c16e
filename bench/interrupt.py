"""Chunked kernels (issue 9, item 9): what chunking costs, and how fast Ctrl-C stops a kernel.

Run: PYTHONPATH=src python bench/interrupt.py [--repeat 5] [--skip-latency]

1. Long kernels, chunked (the default) against one call (ANYCHIP_CHUNK_WORK set so high
   nothing chunks), with numpy's time for the same work as the peer; best of `repeat`
   rounds that alternate the two, since machines here are shared.
2. Small kernels never chunk: the eager time of `x + 1` on 1024 floats (run this script
   with another checkout's src on PYTHONPATH to compare trees).
3. Latency: a child process starts a kernel of minutes, gets SIGINT a second in, and
   reports when its KeyboardInterrupt arrived: on cpu chunked and unchunked (cut off after
   `--cutoff` seconds), and on ref.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import anychip as ac
from anychip.runtime import eager_cache

ROOT = Path(__file__).resolve().parents[1]
ONE_CALL = str(10**18)  # ANYCHIP_CHUNK_WORK that chunks nothing


def _best(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _timed(work: str | None, fn: Callable[[], ac.Tensor], repeat: int) -> float:
    """Seconds of fn().realize() with ANYCHIP_CHUNK_WORK=work (None: the default)."""
    if work is None:
        os.environ.pop("ANYCHIP_CHUNK_WORK", None)
    else:
        os.environ["ANYCHIP_CHUNK_WORK"] = work
    eager_cache.clear_cache()  # plans hold programs built under the other setting
    fn().realize()  # compile and warm up
    return _best(lambda: fn().realize(), repeat)


def long_kernels(repeat: int) -> None:
    rng = np.random.default_rng(0)
    v = rng.standard_normal(1 << 26).astype(np.float32)
    m = rng.standard_normal((1 << 13, 1 << 13)).astype(np.float32)
    g = rng.standard_normal((4096, 4096)).astype(np.float32)
    w = rng.standard_normal((4, 1 << 24)).astype(np.float32)
    x, xm, xg, xw = (ac.tensor(a, device="cpu") for a in (v, m, g, w))
    cases: list[tuple[str, Callable[[], ac.Tensor], Callable[[], object]]] = [
        ("exp(x*2+1), 2^26", lambda: (x * 2 + 1).exp(), lambda: np.exp(v * 2 + 1)),
        ("sum, 2^26", lambda: x.sum(), lambda: v.sum()),
        ("sum(0), 8192^2", lambda: xm.sum(0), lambda: m.sum(0)),
        ("sum(1), 8192^2", lambda: xm.sum(1), lambda: m.sum(1)),
        ("sum(1), 4 x 2^24", lambda: xw.sum(1), lambda: w.sum(1)),
        ("cumsum(1), 4 x 2^24", lambda: xw.cumsum(1), lambda: w.cumsum(1)),
        ("matmul 4096^3", lambda: xg @ xg, lambda: g @ g),
    ]
    print(f"{'kernel':<22} {'chunked ms':>11} {'one call ms':>12} {'ratio':>7} {'numpy ms':>9}")
    for name, fn, peer in cases:
        chunked, whole = float("inf"), float("inf")
        for _ in range(2):  # alternate: load on a shared machine hits both alike
            chunked = min(chunked, _timed(None, fn, repeat))
            whole = min(whole, _timed(ONE_CALL, fn, repeat))
        ref = _best(peer, repeat)
        print(
            f"{name:<22} {chunked * 1e3:11.2f} {whole * 1e3:12.2f} {chunked / whole:7.3f} "
            f"{ref * 1e3:9.2f}"
        )
    os.environ.pop("ANYCHIP_CHUNK_WORK", None)


def small_kernel(repeat: int) -> None:
    x = ac.ones(1024, device="cpu").realize()
    (x + 1).realize()
    n = 2000
    per = _best(lambda: [(x + 1).realize() for _ in range(n)], repeat) / n
    print(f"small kernel x + 1 (1024 floats), eager: {per * 1e6:.2f} us per op")


CHILD = """
import sys, time
import anychip as ac
from anychip.runtime.device import get_backend
from anychip.runtime.realize import plan
device = sys.argv[1]
a = ac.arange(2**16 if device == "cpu" else 2048, device=device).float().reshape(-1, 1)
b = ac.arange(2**18 if device == "cpu" else 2048, device=device).float().reshape(1, -1)
x = (a * b * 1e-6).sin()
t = x.exp().sum() if device == "cpu" else (x @ x.t()).sum()
get_backend(device).compile_many([w.kernel for w in plan([t.node]) if w.kernel is not None])
print("running", flush=True)
try:
    t.item()
except KeyboardInterrupt:
    print(time.monotonic(), flush=True)
"""


def latency(device: str, work: str | None, cutoff: float) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    if work is not None:
        env["ANYCHIP_CHUNK_WORK"] = work
    p = subprocess.Popen(
        [sys.executable, "-c", CHILD, device], env=env, stdout=subprocess.PIPE, text=True
    )
    assert p.stdout is not None
    p.stdout.readline()
    time.sleep(1.0)
    sent = time.monotonic()
    p.send_signal(signal.SIGINT)
    try:
        out, _ = p.communicate(timeout=cutoff)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return f"> {cutoff:.0f} s (cut off)"
    return f"{(float(out.split()[0]) - sent) * 1e3:.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cutoff", type=float, default=30.0)
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--small-only", action="store_true")
    args = ap.parse_args()
    small_kernel(args.repeat)
    if args.small_only:
        return
    long_kernels(args.repeat)
    if not args.skip_latency:
        print("Ctrl-C to KeyboardInterrupt:")
        print(f"  cpu, chunked:  {latency('cpu', None, args.cutoff)}")
        print(f"  cpu, one call: {latency('cpu', ONE_CALL, args.cutoff)}")
        print(f"  ref, blocks:   {latency('ref', None, args.cutoff)}")


if __name__ == "__main__":
    main()
