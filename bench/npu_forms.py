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

Case = tuple[str, tuple[int, ...], Callable[[ac.Tensor], ac.Tensor], Callable[..., np.ndarray]]
CASES: list[Case] = [
    ("cumsum(1) rows", (512, 1000), lambda t: t.cumsum(1), lambda a: np.cumsum(a, 1)),
    ("cumsum(0) columns", (512, 100), lambda t: t.cumsum(0), lambda a: np.cumsum(a, 0)),
    ("cumsum(0) float16", (512, 100), lambda t: t.half().cumsum(0).float(), None),  # type: ignore[list-item]
    ("argsort(1)", (512, 1000), lambda t: t.argsort(1), lambda a: np.argsort(a, 1, "stable")),
    ("amax(1) middle axis", (16, 256, 100), lambda t: t.amax(1), lambda a: a.max(1)),
    ("amax(2) last axis", (16, 100, 256), lambda t: t.amax(2), lambda a: a.max(2)),
]


def run(design: str, case: Case) -> tuple[float, float, float]:
    """(simulated seconds, device-memory floor seconds, host seconds) of one case."""
    _, shape, fn, ref = case
    a = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    x = ac.tensor(a, device=design)
    t0 = time.perf_counter()
    got = fn(x).numpy()
    host = time.perf_counter() - t0
    if ref is not None:
        np.testing.assert_allclose(got, ref(a), rtol=1e-4, atol=1e-3)
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
    for case in CASES:
        sim, floor, host = run(args.design, case)
        print(f"{case[0]:<22} {str(case[1]):<15} {sim * 1e6:>9.1f}us {floor * 1e6:>9.1f}us "
              f"{host:>6.2f}s")  # fmt: skip


if __name__ == "__main__":
    main()
