"""Simulated time of the npu lowering's scan, sort and combining-store forms against the
device-memory floor, and the host time to compile and simulate each kernel once.

    PYTHONPATH=src python bench/npu_forms.py [--design npu]

Each figure is the timing model's for the one kernel the op launches; values are checked
against numpy first.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

import anychip as ac
from anychip.runtime.device import get_backend

Op = Callable[[ac.Tensor], ac.Tensor]
Ref = Callable[[np.ndarray], np.ndarray]
# (name, shape, dtype, op, numpy reference)
CASES: list[tuple[str, tuple[int, ...], str, Op, Ref]] = [
    ("cumsum(1) rows", (512, 1000), "float32", lambda t: t.cumsum(1), lambda a: a.cumsum(1)),
    ("cumsum(0) line form", (512, 100), "float32", lambda t: t.cumsum(0), lambda a: a.cumsum(0)),
    ("cumsum(0) float16", (512, 100), "float16", lambda t: t.cumsum(0), lambda a: a.cumsum(0)),
    ("argsort(1)", (512, 1000), "float32", lambda t: t.argsort(1),
     lambda a: np.argsort(a, 1, kind="stable")),
    ("argsort(1) long rows", (2, 3000), "float32", lambda t: t.argsort(1),
     lambda a: np.argsort(a, 1, kind="stable")),  # past a step's ub share on edge and cube
    ("sum(1) int8", (512, 1000), "int8", lambda t: t.sum(1, dtype=ac.int8),
     lambda a: a.astype(np.int8).sum(1, dtype=np.int8)),  # wraps as int8
    ("sum(1) int16", (512, 1000), "int16", lambda t: t.sum(1, dtype=ac.int16),
     lambda a: a.astype(np.int16).sum(1, dtype=np.int16)),
    ("amax(1) middle axis", (16, 256, 100), "float32", lambda t: t.amax(1), lambda a: a.max(1)),
    ("amax(2) last axis", (16, 100, 256), "float32", lambda t: t.amax(2), lambda a: a.max(2)),
]  # fmt: skip


def run(design: str, shape: tuple[int, ...], dtype: str, op: Op, ref: Ref
        ) -> tuple[float, float, float]:  # fmt: skip
    """(simulated seconds, device-memory floor seconds, host seconds) of one case."""
    a = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    x = ac.tensor(a, device=design)
    t0 = time.perf_counter()
    got = op(x).numpy()
    host = time.perf_counter() - t0
    want = ref(a.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-2 if dtype == "float16" else 1e-4, atol=1e-2)
    be = get_backend(design)
    st = be.launch_stats()
    assert st is not None
    floor = (a.nbytes + got.nbytes) / be.config.dram_bytes_per_s
    return st["time_s"], floor, host


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--design", default="npu")
    args = p.parse_args()
    print(f"{'kernel':<22} {'shape':<15} {'simulated':>11} {'DRAM floor':>11} {'host':>7}")
    for name, shape, dtype, op, ref in CASES:
        sim, floor, host = run(args.design, shape, dtype, op, ref)
        print(f"{name:<22} {shape!s:<15} {sim * 1e6:>9.1f}us {floor * 1e6:>9.1f}us "
              f"{host:>6.2f}s")  # fmt: skip


if __name__ == "__main__":
    main()
