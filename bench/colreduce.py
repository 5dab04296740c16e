"""Column reductions (`x.sum(0)`, a Linear layer's bias gradient) on device "cpu" against
torch.sum(dim=0): best of many `.realize()` calls on fresh lazy sums.

Run: PYTHONPATH=src python bench/colreduce.py [--no-interchange] [--repeat N]
(`--no-interchange` drops the interchange pass, to compare with the scalar strided loop).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import anychip as ac
from anychip.passes import pipeline


def best_ms(fn: object, repeat: int) -> float:
    assert callable(fn)
    fn()
    fn()  # compile and warm the dispatch cache
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--no-interchange", action="store_true")
    p.add_argument("--repeat", type=int, default=300)
    args = p.parse_args()
    if args.no_interchange:
        pipeline.PASSES[:] = [(n, f) for n, f in pipeline.PASSES if n != "interchange"]
    y = ac.ones(2, 16, device="cpu").realize()  # launch overhead: a (2, 16) column sum
    for shape in ((256, 512), (4096, 1024)):
        a = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        x = ac.tensor(a, device="cpu").realize()
        t = torch.from_numpy(a)
        ours = best_ms(lambda x=x: x.sum(0).realize(), args.repeat)
        ref = best_ms(lambda t=t: torch.sum(t, dim=0), args.repeat)
        err = np.abs(x.sum(0).numpy() - a.sum(0, dtype=np.float64)).max()
        tiny = best_ms(lambda y=y: y.sum(0).realize(), args.repeat)
        print(
            f"sum(0) {shape}: anychip {ours:.4f} ms (launch floor {tiny:.4f})"
            f"  torch {ref:.4f} ms  max err {err:.2e}"
        )


if __name__ == "__main__":
    main()
