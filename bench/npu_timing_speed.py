"""Speed of the npu timing model against the functional simulator on the same GEMM programs.

Run: PYTHONPATH=src /work/venv/bin/python bench/npu_timing_speed.py [--repeat 3]
The issue's bound: timing no more than 3x slower than functional simulation alone. Also
prints the modelled utilisation of the hand-written double-buffered and serial GEMMs for
2048^3 fp16 on `datacenter` (timing only: no data needed).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit" / "npu"))

from timing_programs import gemm_program

from anychip.npu.config import PROFILES
from anychip.npu.isa import DT
from anychip.npu.simulator import Simulator
from anychip.npu.timing import simulate_timing

CASES = [
    ("datacenter", (512, 512, 512), (256, 256, 128)),
    ("cube", (512, 512, 512), (128, 128, 64)),
    ("cube", (256, 256, 256), (32, 32, 32)),
    ("edge", (256, 256, 256), (32, 32, 32)),
]


def _best(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'design':<11}{'m,n,k':>16}{'blocks':>14}{'instrs':>8}{'functional':>12}"
          f"{'timing':>10}{'ratio':>7}")  # fmt: skip
    for name, (m, n, k), blocks in CASES:
        cfg = PROFILES[name]
        sim = Simulator(cfg)
        a = sim.put(rng.standard_normal((m, k)), DT.F16)
        b = sim.put(rng.standard_normal((k, n)), DT.F16)
        c = sim.alloc(m * n * 4)
        prog = gemm_program(cfg, (m, n, k), blocks, (a, b, c))
        t_func = _best(lambda: sim.run(prog), args.repeat)  # noqa: B023
        t_time = _best(lambda: simulate_timing(prog, cfg), args.repeat)  # noqa: B023
        count = len(simulate_timing(prog, cfg).events)
        print(f"{name:<11}{f'{m},{n},{k}':>16}{','.join(map(str, blocks)):>14}{count:>8}"
              f"{t_func:>11.4f}s{t_time:>9.4f}s{t_time / t_func:>7.3f}")  # fmt: skip
    dc = PROFILES["datacenter"]
    for overlap in (True, False):
        prog = gemm_program(dc, (2048, 2048, 2048), (512, 512, 128), overlap=overlap)
        r = simulate_timing(prog, dc)
        print(f"\n2048^3 fp16 GEMM on datacenter, overlap={overlap}:\n{r}")


if __name__ == "__main__":
    main()
