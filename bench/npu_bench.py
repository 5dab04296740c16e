"""npu simulator speed and kernel efficiency: functional MAC/s, timing-model cost, rooflines.

Run: PYTHONPATH=src /work/venv/bin/python bench/npu_bench.py [--quick] [--size 512]
[--design datacenter] [--json out.json]. Parts whose code is not on this branch yet
(the timing model, the kernel library) print a note and are reported as skipped.
Targets (issue 4): >= 1e8 simulated MACs per second, timing <= 3x the functional time,
GEMM 2048^3 fp16 >= 90% of matrix peak, elementwise >= 80% of device-memory bandwidth.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from typing import Any

import numpy as np

from anychip.npu.config import NpuConfig, get_config
from anychip.npu.isa import DT, Dma, Finish, Mma, Ref, SetFlag, Space, Unit, WaitFlag
from anychip.npu.program import DataDecl, Program
from anychip.npu.simulator import Simulator


def hand_gemm(cfg: NpuConfig, m: int, n: int, k: int) -> Program:
    """C (m, n) f32 = A (m, k) f16 @ B (k, n) f16, tiles of the matrix unit's shape.

    Written by hand as the builder would: output tiles split over cores, A and B tiles
    double-buffered in L0A/L0B with dma_in -> matrix flags, the accumulator drained by
    dma_out. Needs m, n, k multiples of the tile shape.
    """
    tm, tn, tk = cfg.matrix_m, cfg.matrix_n, cfg.matrix_k
    assert m % tm == 0 and n % tn == 0 and k % tk == 0, "hand_gemm needs whole tiles"
    a_addr, b_addr = 0, m * k * 2
    c_addr = b_addr + k * n * 2
    data = (
        DataDecl("a", a_addr, DT.F16, (m, k)),
        DataDecl("b", b_addr, DT.F16, (k, n)),
        DataDecl("c", c_addr, DT.F32, (m, n), "none"),
    )
    tiles = [(i, j) for i in range(m // tm) for j in range(n // tn)]
    cores = []
    for core in range(cfg.cores):
        code: list[Any] = []
        step = 0
        for t, (i, j) in enumerate(tiles[core :: cfg.cores]):
            acc = Ref(Space.L0C, (t % 2) * tm * tn * 4)
            if t >= 2:  # the accumulator slot is free once dma_out drained it
                code.append(WaitFlag(Unit.DMA_OUT, Unit.MATRIX, 2 + t % 2))
            for kk in range(k // tk):
                slot = step % 2
                if step >= 2:  # the L0A/L0B slot is free once the matrix unit read it
                    code.append(WaitFlag(Unit.MATRIX, Unit.DMA_IN, slot))
                a_ref, b_ref = (
                    Ref(Space.L0A, slot * tm * tk * 2),
                    Ref(Space.L0B, slot * tk * tn * 2),
                )
                a_src = Ref(Space.DRAM, a_addr + (i * tm * k + kk * tk) * 2)
                b_src = Ref(Space.DRAM, b_addr + (kk * tk * n + j * tn) * 2)
                code += [
                    Dma(DT.F16, a_ref, a_src, (1, tm, tk), (0, tk, 1), (0, k, 1), (1, tm, tk)),
                    Dma(DT.F16, b_ref, b_src, (1, tk, tn), (0, tn, 1), (0, n, 1), (1, tk, tn)),
                    SetFlag(Unit.DMA_IN, Unit.MATRIX, slot),
                    WaitFlag(Unit.DMA_IN, Unit.MATRIX, slot),
                    Mma(DT.F16, acc, a_ref, b_ref, tm, tn, tk, int(kk > 0)),
                    SetFlag(Unit.MATRIX, Unit.DMA_IN, slot),
                ]
                step += 1
            c_dst = Ref(Space.DRAM, c_addr + (i * tm * n + j * tn) * 4)
            code += [
                SetFlag(Unit.MATRIX, Unit.DMA_OUT, t % 2),
                WaitFlag(Unit.MATRIX, Unit.DMA_OUT, t % 2),
                Dma(DT.F32, c_dst, acc, (1, tm, tn), (0, n, 1), (0, tn, 1), (1, tm, tn)),
                SetFlag(Unit.DMA_OUT, Unit.MATRIX, 2 + t % 2),
            ]
        # every setf must be waited on: take back the slots' last counts
        code += [WaitFlag(Unit.MATRIX, Unit.DMA_IN, s) for s in range(min(step, 2))]
        ntiles = len(tiles[core :: cfg.cores])
        code += [WaitFlag(Unit.DMA_OUT, Unit.MATRIX, 2 + t % 2) for t in range(min(ntiles, 2))]
        code.append(Finish())
        cores.append(tuple(code))
    return Program(tuple(cores), data)


def load_gemm(sim: Simulator, prog: Program, seed: int = 0) -> dict[str, np.ndarray]:
    """Writes random f16 A and B into device memory; returns the host arrays (f16)."""
    rng = np.random.default_rng(seed)
    out = {}
    for d in prog.data:
        sim.dram.ensure(d.addr + d.nbytes)
        if d.init != "none":
            out[d.name] = rng.standard_normal(d.shape).astype(np.float16)
            sim.write(d.addr, out[d.name])
    sim.top = max(d.addr + d.nbytes for d in prog.data)
    return out


def functional_gemm(cfg: NpuConfig, size: int, repeat: int) -> dict[str, Any]:
    """(a) Simulated MACs per wall-clock second of the functional simulator on a GEMM."""
    prog = hand_gemm(cfg, size, size, size)
    best = float("inf")
    for _ in range(repeat):
        sim = Simulator(cfg)
        host = load_gemm(sim, prog)
        t0 = time.perf_counter()
        stats = sim.run(prog)
        best = min(best, time.perf_counter() - t0)
    c = sim.get(prog.data[2].addr, (size, size), DT.F32)
    ref = host["a"].astype(np.float64) @ host["b"].astype(np.float64)
    err = float(np.abs(c - ref).max() / np.abs(ref).max())
    return {
        "size": size,
        "design": cfg.name,
        "instructions": prog.num_instructions,
        "macs": stats.macs,
        "seconds": best,
        "macs_per_s": stats.macs / best,
        "target_macs_per_s": 1e8,
        "max_rel_error": err,
    }


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def timing_vs_functional(cfg: NpuConfig, size: int, func_s: float) -> dict[str, Any]:
    """(b) Wall time of the timing model against the functional run of the same program."""
    timing = _optional("anychip.npu.timing")
    if timing is None:
        return {"skipped": "anychip.npu.timing is not on this branch yet"}
    prog = hand_gemm(cfg, size, size, size)
    t0 = time.perf_counter()
    timing.simulate_timing(prog, cfg)
    t = time.perf_counter() - t0
    return {"size": size, "seconds": t, "functional_seconds": func_s,
            "ratio": t / func_s, "target_ratio": 3.0}  # fmt: skip


def _report_field(report: Any, *names: str) -> Any:
    for name in names:
        v = report.get(name) if isinstance(report, dict) else getattr(report, name, None)
        if v is not None:
            return v
    return None


def kernel_utilisation(cfg: NpuConfig, size: int, elements: int) -> dict[str, Any]:
    """(c) GEMM matrix-unit utilisation and elementwise bandwidth utilisation (timing)."""
    timing = _optional("anychip.npu.timing")
    kernels = _optional("anychip.npu.kernels")
    if timing is None or kernels is None:
        missing = [n for n, m in (("timing", timing), ("kernels", kernels)) if m is None]
        return {"skipped": f"anychip.npu.{' and anychip.npu.'.join(missing)} not on this branch"}
    out: dict[str, Any] = {}
    gemm = kernels.gemm(cfg, size, size, size)
    rep = timing.simulate_timing(gemm.program, cfg)
    out["gemm"] = {"size": size, "cycles": rep.cycles, "utilisation": rep.utilisation,
                   "target": 0.9, "roofline_fraction": rep.roofline_fraction,
                   "bound": rep.bound}  # fmt: skip
    ew = kernels.elementwise(cfg, "fma", elements)
    rep = timing.simulate_timing(ew.program, cfg)
    out["elementwise"] = {"elements": elements, "cycles": rep.cycles,
                          "utilisation": rep.bandwidth_utilisation, "target": 0.8,
                          "roofline_fraction": rep.roofline_fraction,
                          "bound": rep.bound}  # fmt: skip
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--design", default="datacenter")
    p.add_argument("--size", type=int, default=512, help="functional GEMM size (cube)")
    p.add_argument("--big", type=int, default=2048, help="utilisation GEMM size")
    p.add_argument("--elements", type=int, default=1 << 24, help="elementwise kernel size")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="small sizes, one round")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args()
    cfg = get_config(args.design)
    if args.quick:
        args.size, args.big, args.repeat = cfg.matrix_m * 2, cfg.matrix_m * 4, 1
        args.elements = 1 << 16
    res: dict[str, Any] = {"design": cfg.name}
    res["functional"] = f = functional_gemm(cfg, args.size, args.repeat)
    print(f"(a) functional GEMM {args.size}^3 f16 on {cfg.name}: {f['macs_per_s']:.3g} MAC/s "
          f"({f['seconds']:.3f} s, {f['instructions']} instructions; target 1e8)")  # fmt: skip
    res["timing"] = t = timing_vs_functional(cfg, args.size, f["seconds"])
    print("(b) timing model:", t.get("skipped") or f"{t['ratio']:.3f}x functional (target <= 3)")
    res["utilisation"] = u = kernel_utilisation(cfg, args.big, args.elements)
    for name, part in [("kernels", u)] if "skipped" in u else u.items():
        print(
            f"(c) {name}:",
            part.get("skipped")
            or (
                f"{part['utilisation']:.1%} of peak (target {part['target']:.0%}), "
                f"{part['roofline_fraction']:.1%} of its {part['bound']} roofline"
            ),
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)


if __name__ == "__main__":
    main()
