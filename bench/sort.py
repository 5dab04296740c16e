"""sort and topk along rows of a (2048, 2048) float32 tensor: anychip's `cpu` device against
PyTorch (2 threads), best of N. Run: PYTHONPATH=src python bench/sort.py [--repeat N]."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

import anychip as ac


def best_ms(fn: Callable[[], object], repeat: int) -> float:
    """Fastest of `repeat` timed calls after one warm-up (compiles, fills caches)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--n", type=int, default=2048)
    args = ap.parse_args()
    torch.set_num_threads(2)
    a = np.random.default_rng(0).standard_normal((args.n, args.n)).astype(np.float32)
    x, t = ac.tensor(a, device="cpu"), torch.from_numpy(a)
    cases: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "sort(1)": (lambda: x.sort(1)[0].realize(), lambda: t.sort(1)[0]),
        "topk(8, 1)": (lambda: x.topk(8, 1)[0].realize(), lambda: t.topk(8, 1)[0]),
        "topk(n/2, 1)": (
            lambda: x.topk(args.n // 2, 1)[0].realize(),
            lambda: t.topk(args.n // 2, 1)[0],
        ),
    }
    print(f"{'op':<14}{'anychip ms':>12}{'torch ms':>10}")
    for name, (ours, theirs) in cases.items():
        print(f"{name:<14}{best_ms(ours, args.repeat):>12.2f}{best_ms(theirs, args.repeat):>10.2f}")


if __name__ == "__main__":
    main()
