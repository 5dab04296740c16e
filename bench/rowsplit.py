"""Row reductions (layer_norm, softmax, `x.sum(-1)`) on device "cpu" against torch: the
compiled program's launch timed directly (best of N), no dispatch or graph work around it.

Run: PYTHONPATH=src python bench/rowsplit.py [--no-rowsplit] [--repeat N]
(`--no-rowsplit` drops the rowsplit pass: one vector accumulator per row, as before).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

import anychip as ac
from anychip.backends.cpu import CpuBackend
from anychip.passes import pipeline


def best_ms(fn: Any, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def launch_ms(make: Any, repeat: int) -> float:
    """Realise `make()` once, keeping its last launch, then time that launch alone."""
    seen: list[tuple[Any, ...]] = []
    orig = CpuBackend.launch

    def spy(self: CpuBackend, program: Any, out: Any, ins: Any) -> None:
        seen.append((self, program, out, ins))
        orig(self, program, out, ins)

    CpuBackend.launch = spy  # type: ignore[method-assign]
    try:
        make().realize()
    finally:
        CpuBackend.launch = orig  # type: ignore[method-assign]
    be, prog, out, ins = seen[-1]
    return best_ms(lambda: be.launch(prog, out, ins), repeat)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--no-rowsplit", action="store_true")
    p.add_argument("--repeat", type=int, default=30)
    args = p.parse_args()
    if args.no_rowsplit:
        pipeline.PASSES[:] = [(n, f) for n, f in pipeline.PASSES if n != "rowsplit"]
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4096, 1024), dtype=np.float32)
    w, b = rng.standard_normal(1024, dtype=np.float32), rng.standard_normal(1024, dtype=np.float32)
    x, xw, xb = (ac.tensor(v, device="cpu").realize() for v in (a, w, b))
    t, tw, tb = (torch.from_numpy(v) for v in (a, w, b))
    cases = [
        (
            "layer_norm",
            lambda: ac.nn.functional.layer_norm(x, (1024,), xw, xb),
            lambda: torch.nn.functional.layer_norm(t, (1024,), tw, tb),
        ),
        ("softmax", lambda: x.softmax(-1), lambda: torch.softmax(t, -1)),
        ("sum(-1)", lambda: x.sum(-1), lambda: t.sum(-1)),
    ]
    for name, ours, ref in cases:
        mine = launch_ms(ours, args.repeat)
        theirs = best_ms(ref, args.repeat)
        print(f"{name:10s} (4096, 1024) f32: anychip {mine:.3f} ms  torch {theirs:.3f} ms")


if __name__ == "__main__":
    main()
