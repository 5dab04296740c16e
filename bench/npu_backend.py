"""Simulated time of Tensor expressions on the `npu` devices, against each design's
device-memory bandwidth (the roofline of a memory-bound kernel).

    PYTHONPATH=src python bench/npu_backend.py [--n 1048576] [--designs npu,npu:cube,npu:edge]

Each figure is the timing model's (deterministic), for the latest launch of the
expression; the functional simulator computes the values, checked against numpy.
"""

from __future__ import annotations

import argparse

import numpy as np

import anychip as ac
from anychip.runtime.device import get_backend


def relu_chain(design: str, n: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(n).astype(np.float32) for _ in range(3)]
    a, b, c = (ac.tensor(x, device=design) for x in xs)
    y = (a * b + c).relu()
    got = y.numpy()
    assert np.array_equal(got, np.maximum(xs[0] * xs[1] + xs[2], 0))
    be = get_backend(design)
    st = be.launch_stats()
    assert st is not None
    floor = 16 * n / be.config.dram_bytes_per_s  # 3 loads and 1 store of 4 bytes
    return {"time_s": st["time_s"], "floor_s": floor, "share": floor / st["time_s"],
            "vector": st["units"]["vector"]}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1 << 20)
    p.add_argument("--designs", default="npu,npu:cube,npu:edge")
    args = p.parse_args()
    print(f"(a*b+c).relu() over {args.n} float32 elements")
    print(f"{'design':<12} {'simulated':>12} {'DRAM floor':>12} {'of bandwidth':>13} {'vector':>7}")
    for d in args.designs.split(","):
        r = relu_chain(d, args.n)
        print(
            f"{d:<12} {r['time_s'] * 1e6:>10.1f}us {r['floor_s'] * 1e6:>10.1f}us "
            f"{r['share']:>12.1%} {r['vector']:>7.0%}"
        )


if __name__ == "__main__":
    main()
