"""Speed of the npu functional simulator, BLAS pinned to one thread: MAC/s and instructions/s.

Run: PYTHONPATH=src python bench/npu_sim_speed.py [--size 512] [--rows 20000] [--repeat 2]
Per profile: (a) simulated MACs per second on the hand-written tiled GEMM of
bench/npu_bench.py (size^3 f16, tiles of the matrix unit's shape, double-buffered);
(b) simulated instructions per second on a stream of small vector steps (a row of 256 f32
in, added to a resident row, out: dma, flags, vadd, dma, three slots). Both with race
checks on, as a user runs it. Seconds are the process's CPU time (the best of --repeat),
so other load on a shared machine counts less; wall time is printed beside it.
Targets (issue 11): >= 1e8 MAC/s and >= 1e5 instructions/s on every profile.

--matmul float32 (or float16) times instead a user's `a @ b` of size^3 tensors on each
design through the Tensor API (compiled once, then launched with fresh data --repeat
times): the functional simulator's MAC/s and the timing model's simulated time, at the
float32 matmul precision --precision; the result is checked against float64 numpy.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads BLAS
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from anychip.npu.builder import Builder, pipeline, program
from anychip.npu.config import PROFILES, NpuConfig
from anychip.npu.isa import DT, BinOp, Space, Unit
from anychip.npu.program import DataDecl, Program
from anychip.npu.simulator import Simulator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from npu_bench import hand_gemm, load_gemm

ROW = 256


def vector_stream(cfg: NpuConfig, rows: int) -> Program:
    """out[r] = x[r] + y for `rows` rows of ROW f32 on core 0: many small instructions."""
    x_addr, out_addr = 0, rows * ROW * 4
    y_addr = 2 * rows * ROW * 4
    b = Builder(cfg)
    y = b.tile(Space.UB, 1, ROW, DT.F32)
    b.load(y, y_addr, 1, ROW, ROW)
    b.barrier()
    slots = [(b.tile(Space.UB, 1, ROW, DT.F32), b.tile(Space.UB, 1, ROW, DT.F32))
             for _ in range(3)]  # fmt: skip
    pipeline(b, [Unit.DMA_IN, Unit.VECTOR, Unit.DMA_OUT], slots, list(range(rows)), [
        lambda s, r: b.load(s[0], x_addr + r * ROW * 4, 1, ROW, ROW) and None,
        lambda s, r: b.vbin(BinOp.ADD, s[1], s[0], y) and None,
        lambda s, r: b.store(out_addr + r * ROW * 4, ROW, s[1]) and None,
    ])  # fmt: skip
    data = (DataDecl("x", x_addr, DT.F32, (rows, ROW)),
            DataDecl("out", out_addr, DT.F32, (rows, ROW), "none"),
            DataDecl("y", y_addr, DT.F32, (ROW,)))  # fmt: skip
    return program([b], data)


def _best(cfg: NpuConfig, prog: Program, load: Any, repeat: int) -> tuple[float, float, Any]:
    cpu, wall, stats = float("inf"), float("inf"), None
    for _ in range(repeat):
        sim = Simulator(cfg)
        load(sim)
        t, w = time.process_time(), time.perf_counter()
        stats = sim.run(prog)
        cpu, wall = min(cpu, time.process_time() - t), min(wall, time.perf_counter() - w)
    return cpu, wall, stats


def measure(name: str, size: int, rows: int, repeat: int) -> dict[str, Any]:
    """Both figures for one profile."""
    cfg = PROFILES[name]
    gemm = hand_gemm(cfg, size, size, size)
    cpu, wall, stats = _best(cfg, gemm, lambda sim: load_gemm(sim, gemm), repeat)
    out: dict[str, Any] = {"design": name, "gemm_size": size, "macs": stats.macs,
                           "gemm_cpu_s": cpu, "gemm_wall_s": wall,
                           "macs_per_s": stats.macs / cpu}  # fmt: skip
    stream = vector_stream(cfg, rows)
    rng = np.random.default_rng(0)

    def load(sim: Simulator) -> None:
        for d in stream.data:
            sim.dram.ensure(d.addr + d.nbytes)
            if d.init != "none":
                sim.write(d.addr, rng.standard_normal(d.shape).astype(np.float32))

    cpu, wall, stats = _best(cfg, stream, load, repeat)
    n = sum(stats.instructions.values())
    out.update(stream_rows=rows, instructions=n, stream_cpu_s=cpu, stream_wall_s=wall,
               instructions_per_s=n / cpu)  # fmt: skip
    return out


def tensor_matmul(name: str, size: int, dtype: str, repeat: int) -> dict[str, Any]:
    """a @ b of (size, size) tensors on `npu:name` through the Tensor API."""
    import anychip as ac
    from anychip.runtime.device import get_backend

    device = f"npu:{name}"
    rng = np.random.default_rng(0)
    dt = getattr(ac, dtype)
    cpu, wall, err = float("inf"), float("inf"), 0.0
    st: dict[str, Any] | None = None
    for r in range(repeat + 1):  # the first compiles (and fills the program cache)
        x, y = (rng.standard_normal((size, size)).astype(np.float32) for _ in range(2))
        a, b = ac.tensor(x, device=device).to(dt).realize(), ac.tensor(y, device=device).to(dt)
        b = b.realize()
        t, w = time.process_time(), time.perf_counter()
        c = (a @ b).realize()
        if r:
            cpu, wall = min(cpu, time.process_time() - t), min(wall, time.perf_counter() - w)
        st = get_backend(c.device).launch_stats()  # the matmul's launch, before any cast
        ref = a.float().numpy().astype(np.float64) @ b.float().numpy().astype(np.float64)
        got = c.float().numpy().astype(np.float64)
        err = max(err, float(np.max(np.abs(got - ref) / (np.abs(x) @ np.abs(y)))))
    assert st is not None
    macs = size**3
    return {"design": name, "size": size, "dtype": dtype, "cpu_s": cpu, "wall_s": wall,
            "macs_per_s": macs / cpu, "sim_time_s": st["time_s"], "units": st["units"],
            "max_err_rel_to_abs_products": err}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=512, help="GEMM size (a multiple of 128)")
    p.add_argument("--rows", type=int, default=20000, help="rows of the vector stream")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--designs", default="datacenter,edge,cube")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument(
        "--matmul",
        choices=("float32", "float16"),
        help="time a Tensor API a @ b of this dtype instead (see above)",
    )
    p.add_argument("--precision", default="highest", help="float32 matmul precision")
    args = p.parse_args()
    res = []
    print(f"BLAS threads pinned: OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}")
    if args.matmul:
        import anychip as ac

        ac.set_float32_matmul_precision(args.precision)
        for name in args.designs.split(","):
            r = tensor_matmul(name, args.size, args.matmul, args.repeat)
            res.append(r)
            busy = ", ".join(f"{u} {v:.0%}" for u, v in sorted(r["units"].items()))
            print(f"{name:>10}: {args.matmul} a @ b {args.size}^3 ({args.precision}): "
                  f"{r['macs_per_s']:.3g} MAC/s ({r['cpu_s']:.3f} s cpu, {r['wall_s']:.3f} s "
                  f"wall), simulated {r['sim_time_s'] * 1e6:.1f} us ({busy}); max error "
                  f"{r['max_err_rel_to_abs_products']:.2g} of |a| @ |b|")  # fmt: skip
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=2))
        return
    for name in args.designs.split(","):
        r = measure(name, args.size, args.rows, args.repeat)
        res.append(r)
        print(f"{name:>10}: {r['macs_per_s']:.3g} MAC/s (GEMM {args.size}^3, "
              f"{r['gemm_cpu_s']:.2f} s cpu, {r['gemm_wall_s']:.2f} s wall), "
              f"{r['instructions_per_s']:.3g} instructions/s ({r['instructions']} "
              f"instructions, {r['stream_cpu_s']:.2f} s cpu, {r['stream_wall_s']:.2f} s wall)"
              "; targets 1e8 and 1e5")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
