"""Simulated time of Tensor expressions on the `npu` devices, against each design's
device-memory bandwidth (the roofline of a memory-bound kernel).

    PYTHONPATH=src python bench/npu_backend.py [--n 1048576] [--designs npu,npu:cube,npu:edge]
        [--rows 4096x1024] [--row-design npu]

Each figure is the timing model's (deterministic), for the latest launch of the
expression; the functional simulator computes the values, checked against numpy.
"""

from __future__ import annotations

import argparse

import numpy as np

import anychip as ac
import anychip.nn.functional as F
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


def row_kernel(design: str, op: str, rows: int, cols: int) -> dict[str, float]:
    """softmax or layer norm over (rows, cols) float32 rows, values checked in float64."""
    x = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32)
    t = ac.tensor(x, device=design)
    x64 = x.astype(np.float64)
    if op == "softmax":
        got = t.softmax(-1).numpy()
        e = np.exp(x64 - x64.max(-1, keepdims=True))
        want = e / e.sum(-1, keepdims=True)
    else:
        got = F.layer_norm(t, (cols,)).numpy()
        want = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    assert np.allclose(got, want, rtol=1e-5, atol=1e-5)
    be = get_backend(design)
    st = be.launch_stats()
    assert st is not None
    floor = 2 * x.nbytes / be.config.dram_bytes_per_s  # the rows read once, written once
    return {"time_s": st["time_s"], "floor_s": floor, "share": floor / st["time_s"],
            "vector": st["units"]["vector"]}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1 << 20)
    p.add_argument("--designs", default="npu,npu:cube,npu:edge")
    p.add_argument("--rows", default="4096x1024", help="softmax/layer norm shape")
    p.add_argument("--row-design", default="npu", help="the design of the row kernels")
    args = p.parse_args()
    print(f"(a*b+c).relu() over {args.n} float32 elements")
    print(f"{'design':<12} {'simulated':>12} {'DRAM floor':>12} {'of bandwidth':>13} {'vector':>7}")
    for d in args.designs.split(","):
        r = relu_chain(d, args.n)
        print(
            f"{d:<12} {r['time_s'] * 1e6:>10.1f}us {r['floor_s'] * 1e6:>10.1f}us "
            f"{r['share']:>12.1%} {r['vector']:>7.0%}"
        )
    rows, cols = (int(v) for v in args.rows.split("x"))
    print(f"rows of ({rows}, {cols}) float32 on {args.row_design}")
    for op in ("softmax", "layer_norm"):
        r = row_kernel(args.row_design, op, rows, cols)
        print(
            f"{op:<12} {r['time_s'] * 1e6:>10.1f}us {r['floor_s'] * 1e6:>10.1f}us "
            f"{r['share']:>12.1%} {r['vector']:>7.0%}"
        )


if __name__ == "__main__":
    main()
