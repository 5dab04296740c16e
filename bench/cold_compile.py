"""Cold and warm start of one MLP training step on device "cpu": a fresh process with an
empty kernel cache, compiling one process at a time (ANYCHIP_COMPILE_JOBS=1) and in
parallel (the default), then a fresh process on the warm cache (every entry checksummed
before it is loaded). Each figure is the best of N fresh processes.

Run: PYTHONPATH=src python bench/cold_compile.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

STEP = """
import time
import numpy as np
import anychip as ac
from anychip.backends.cpu import compiler
rng = np.random.default_rng(0)
x = ac.tensor(rng.random((64, 32), dtype=np.float32), device="cpu")
w1 = ac.tensor(rng.random((32, 48), dtype=np.float32), device="cpu", requires_grad=True)
w2 = ac.tensor(rng.random((48, 10), dtype=np.float32), device="cpu", requires_grad=True)
t0 = time.perf_counter()
y = (x @ w1).relu() @ w2
loss = (y - y.amax(1, keepdim=True)).exp().sum(1).log().mean() + (w1 * w1).sum() * 1e-3
loss.backward()
w1.grad.numpy(), w2.grad.numpy()
print(time.perf_counter() - t0, compiler.COMPILES[0])
"""


def step(cache: str, jobs: str | None) -> tuple[float, int]:
    env = {**os.environ, "ANYCHIP_CACHE_DIR": cache}
    env.pop("ANYCHIP_COMPILE_JOBS", None)
    if jobs:
        env["ANYCHIP_COMPILE_JOBS"] = jobs
    out = subprocess.run(
        [sys.executable, "-c", STEP], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return float(out[0]), int(out[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    best: dict[str, tuple[float, int]] = {}
    for _ in range(args.repeat):  # alternate, so machine load hits both alike
        for label, jobs in (("cold, 1 job", "1"), ("cold, parallel", None)):
            with tempfile.TemporaryDirectory() as cache:
                t, n = step(cache, jobs)
                if t < best.get(label, (float("inf"), 0))[0]:
                    best[label] = (t, n)
                if jobs is None:
                    w = step(cache, None)
                    if w[0] < best.get("warm", (float("inf"), 0))[0]:
                        best["warm"] = w
    print(f"{'MLP step on cpu':<16} {'seconds':>8} {'compiles':>9}  (cpus: {os.cpu_count()})")
    for label, (t, n) in best.items():
        print(f"{label:<16} {t:>8.2f} {n:>9}")
    ratio = best["cold, 1 job"][0] / best["cold, parallel"][0]
    print(f"parallel speed-up: {ratio:.2f}x")


if __name__ == "__main__":
    main()
