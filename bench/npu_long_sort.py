"""Simulated time of an argsort whose rows are longer than a step's share of the unified
buffer (`backends/npu/lower_sort.py`: places counted block against block, scattered).

    PYTHONPATH=src python bench/npu_long_sort.py --design npu:cube --shape 2x8000

The figure is the timing model's for the one kernel; the order is checked against numpy's
stable argsort first. Prints the busy share of each unit (the vector unit's compares and
dma_out's scattered adds bound it).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import anychip as ac
from anychip.runtime.device import get_backend


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--design", default="npu:edge")
    p.add_argument("--shape", default="2x3000", help="rows x keys, e.g. 2x3000")
    p.add_argument("--descending", action="store_true")
    args = p.parse_args()
    rows, n = (int(v) for v in args.shape.split("x"))
    a = np.random.default_rng(0).standard_normal((rows, n)).astype(np.float32)
    t0 = time.perf_counter()
    got = ac.tensor(a, device=args.design).argsort(1, descending=args.descending).numpy()
    host = time.perf_counter() - t0
    key = -a if args.descending else a
    want = np.argsort(key, 1, kind="stable")
    assert np.array_equal(got, want), "argsort differs from numpy's stable order"
    st = get_backend(args.design).launch_stats()
    assert st is not None
    busy = ", ".join(f"{u} {v:.0%}" for u, v in st["units"].items() if v)
    print(f"{args.design} argsort {rows}x{n}: {st['time_s'] * 1e6:.1f} us simulated "
          f"({busy}); host {host:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
