"""npu simulator speed and kernel efficiency per profile: functional MAC/s and instructions/s,
timing-model speed, and the library kernels' utilisation, energy and watts (honest model).

Run: PYTHONPATH=src python bench/npu_bench.py [--quick] [--size 512] [--design NAME]
[--json out.json]. Every profile unless --design names one. BLAS is pinned to one thread
(set before numpy loads) so speeds are reproducible. Parts whose code is not on this
branch print a note and are reported as skipped. Targets (issue 11): >= 1e8 simulated
MAC/s and >= 1e5 instructions/s (functional), GEMM 2048^3 fp16 >= 85% of matrix peak on
datacenter and >= 80% on cube.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads: one BLAS thread, for the record

import argparse  # noqa: E402  (after pinning BLAS threads)
import importlib  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from anychip.npu.config import PROFILES, NpuConfig, get_config  # noqa: E402
from anychip.npu.isa import DT, Dma, Finish, Mma, Ref, SetFlag, Space, Unit, WaitFlag  # noqa: E402
from anychip.npu.program import DataDecl, Program  # noqa: E402
from anychip.npu.simulator import Simulator  # noqa: E402


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
    ran = sum(stats.instructions.values())
    return {
        "size": size,
        "design": cfg.name,
        "instructions": ran,
        "macs": stats.macs,
        "seconds": best,
        "macs_per_s": stats.macs / best,
        "instructions_per_s": ran / best,
        "target_macs_per_s": 1e8,
        "target_instructions_per_s": 1e5,
        "max_rel_error": err,
    }


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def timing_vs_functional(cfg: NpuConfig, size: int, func_s: float) -> dict[str, Any]:
    """(b) Wall time of the timing model (validation included) on the same program."""
    timing = _optional("anychip.npu.timing")
    if timing is None:
        return {"skipped": "anychip.npu.timing is not on this branch yet"}
    prog = hand_gemm(cfg, size, size, size)
    t0 = time.perf_counter()
    rep = timing.simulate_timing(prog, cfg)
    t = time.perf_counter() - t0
    ran = sum(s.instructions for s in rep.units.values())
    return {"size": size, "seconds": t, "functional_seconds": func_s,
            "ratio": t / func_s, "instructions_per_s": ran / t}  # fmt: skip


def _kernel_row(timing: Any, cfg: NpuConfig, kern: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    rep = timing.simulate_timing(kern.program, cfg)
    wall = time.perf_counter() - t0
    return {"cycles": rep.cycles, "seconds": rep.seconds, "utilisation": rep.utilisation,
            "bandwidth_utilisation": rep.bandwidth_utilisation,
            "roofline_fraction": rep.roofline_fraction, "bound": rep.bound,
            "energy_joules": rep.energy_joules, "average_watts": rep.average_watts,
            "gflops_per_watt": rep.flops_per_joule / 1e9, "timing_wall_s": wall}  # fmt: skip


GEMM_TARGET = {"datacenter": 0.85, "cube": 0.80}


def kernel_utilisation(cfg: NpuConfig, size: int, elements: int) -> dict[str, Any]:
    """(c) GEMM matrix utilisation, elementwise bandwidth utilisation, and their energy."""
    timing = _optional("anychip.npu.timing")
    kernels = _optional("anychip.npu.kernels")
    if timing is None or kernels is None:
        missing = [n for n, m in (("timing", timing), ("kernels", kernels)) if m is None]
        return {"skipped": f"anychip.npu.{' and anychip.npu.'.join(missing)} not on this branch"}
    gemm = _kernel_row(timing, cfg, kernels.gemm(cfg, size, size, size))
    gemm.update(size=size, target=GEMM_TARGET.get(cfg.name))
    ew = _kernel_row(timing, cfg, kernels.elementwise(cfg, "fma", elements))
    ew.update(elements=elements)
    return {"gemm": gemm, "elementwise": ew}


def bench_profile(cfg: NpuConfig, args: argparse.Namespace) -> dict[str, Any]:
    """Every part for one design, printed as it goes."""
    size = args.size
    if size % cfg.matrix_m or size % cfg.matrix_n or size % cfg.matrix_k:
        size = max(cfg.matrix_m, cfg.matrix_n, cfg.matrix_k) * 2
    res: dict[str, Any] = {}
    res["functional"] = f = functional_gemm(cfg, size, args.repeat)
    print(f"[{cfg.name}] (a) functional GEMM {size}^3 f16: {f['macs_per_s']:.3g} MAC/s, "
          f"{f['instructions_per_s']:.3g} instructions/s ({f['seconds']:.3f} s; targets "
          "1e8, 1e5)")  # fmt: skip
    res["timing"] = t = timing_vs_functional(cfg, size, f["seconds"])
    speed = t.get("skipped") or (
        f"{t['ratio']:.3f}x functional, {t['instructions_per_s']:.3g} instructions/s"
    )
    print(f"[{cfg.name}] (b) timing model:", speed)
    res["utilisation"] = u = kernel_utilisation(cfg, args.big, args.elements)
    if "skipped" in u:
        print(f"[{cfg.name}] (c) kernels:", u["skipped"])
        return res
    g, e = u["gemm"], u["elementwise"]
    target = f" (target {g['target']:.0%})" if g["target"] else ""
    print(f"[{cfg.name}] (c) gemm {args.big}^3: {g['utilisation']:.1%} of matrix peak{target}, "
          f"{g['energy_joules'] * 1e3:.3f} mJ, {g['average_watts']:.1f} W, "
          f"{g['gflops_per_watt']:.0f} GFLOP/s/W")  # fmt: skip
    print(f"[{cfg.name}] (c) fma x{args.elements}: {e['bandwidth_utilisation']:.1%} of "
          f"device-memory bandwidth, {e['energy_joules'] * 1e3:.3f} mJ, "
          f"{e['average_watts']:.1f} W")  # fmt: skip
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--design", help="one profile or config file (default: every profile)")
    p.add_argument("--size", type=int, default=512, help="functional GEMM size")
    p.add_argument("--big", type=int, default=2048, help="utilisation GEMM size")
    p.add_argument("--elements", type=int, default=1 << 24, help="elementwise kernel size")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="small sizes, one round")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args()
    if args.quick:
        args.size, args.big, args.repeat, args.elements = 128, 256, 1, 1 << 16
    designs = [get_config(args.design)] if args.design else list(PROFILES.values())
    res: dict[str, Any] = {"blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
                           "profiles": {}}  # fmt: skip
    for cfg in designs:
        res["profiles"][cfg.name] = bench_profile(cfg, args)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)


if __name__ == "__main__":
    main()
