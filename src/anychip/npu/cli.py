"""`anychip npu ...`: run a program file on a chosen design, emit a library kernel as a
program file, sweep a kernel over design variants into a CSV (and a PNG plot), and profile
a model's step on several designs (`profile`, in anychip/profiler_cli.py).

The timing model (`anychip.npu.timing`) is imported lazily; without it `run` prints the
functional report only, and `sweep` (which needs cycles) says so.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import itertools
import sys
from pathlib import Path
from typing import Any

import numpy as np

from anychip import profiler_cli
from anychip.cli import command
from anychip.errors import Error
from anychip.npu.config import NpuConfig, get_config
from anychip.npu.errors import ConfigError
from anychip.npu.isa import DT
from anychip.npu.kernels import Kernel, elementwise, embedding_bag, gemm, layer_norm, softmax
from anychip.npu.program import DataDecl, Program
from anychip.npu.simulator import Simulator

KERNELS = ("gemm", "softmax", "layer_norm", "elementwise", "embedding_bag")
DEFAULT_SHAPES = {
    "gemm": (512, 512, 512),
    "softmax": (1024, 1024),
    "layer_norm": (1024, 1024),
    "elementwise": (1 << 20,),
    "embedding_bag": (100_000, 128, 512, 32),
}


def _configure(p: argparse.ArgumentParser) -> None:
    subs = p.add_subparsers(dest="npu_command", metavar="ACTION", required=True)
    run = subs.add_parser("run", help="assemble/load a program file, run it, print its report")
    run.add_argument("program", help="assembly text (.s) or a binary program (ANPU magic)")
    _design(run)
    run.add_argument("--seed", type=int, default=0, help="seed for .data init=random")
    run.add_argument("--no-timing", action="store_true", help="functional report only")
    run.add_argument("--no-race-check", action="store_true", help="skip race detection")
    run.add_argument("--trace", help="write a Chrome/Perfetto trace JSON here")
    emit = subs.add_parser("emit", help="write a library kernel as an assembly program file")
    emit.add_argument("kernel", choices=KERNELS)
    _design(emit)
    _shape(emit)
    emit.add_argument("--op", default="fma", help="elementwise op (relu, gelu, add, fma...)")
    emit.add_argument("--out", "-o", required=True, help="output .s file")
    sweep = subs.add_parser("sweep", help="time a kernel over design variants: CSV + PNG")
    sweep.add_argument("kernel", choices=KERNELS)
    _design(sweep)
    _shape(sweep)
    sweep.add_argument("--op", default="fma", help="elementwise op (relu, gelu, add, fma...)")
    sweep.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="a design field to vary (matrix_unit=16,32,64 sets matrix_m/n/k; "
        "ub.size=256K,1M; dram_bandwidth=128,256); several --param give their product",
    )
    sweep.add_argument("--out", "-o", default="sweep.csv", help="CSV file (PNG beside it)")
    profiler_cli.add_parser(subs)  # `npu profile SCRIPT.py`: choose a chip by running a model


def _design(p: argparse.ArgumentParser) -> None:
    p.add_argument("--design", default="edge", help="edge|datacenter|cube or a .toml/.json file")


def _shape(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shape",
        help="problem size, comma-separated: gemm M,N,K; softmax/layer_norm ROWS,COLS; "
        "elementwise N; embedding_bag ROWS,DIM,BAGS,BAG_LEN",
    )


@command("npu", "the simulated accelerator: run programs, emit kernels, sweep designs", _configure)
def _npu(args: argparse.Namespace) -> int:
    action = {"run": _run, "emit": _emit, "sweep": _sweep, "profile": profiler_cli.run}[
        args.npu_command
    ]
    return action(args)


# ---- run ------------------------------------------------------------------------------
def load_program(path: str | Path) -> Program:
    """A program from a file: binary when it starts with the ANPU magic, else assembly."""
    from anychip.npu.asm import assemble

    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"npu run: cannot read {p}: {e}") from e
    if raw.startswith(b"ANPU"):
        return Program.from_bytes(raw)
    return assemble(raw.decode())


def fill(sim: Simulator, decls: tuple[DataDecl, ...], seed: int) -> None:
    """Writes each `.data` array's initial values (outputs, init='none', stay unwritten)."""
    from anychip.npu import numerics as nx

    rng = np.random.default_rng(seed)
    for d in decls:
        n = int(np.prod(d.shape))
        if d.init == "none":
            sim.dram.ensure(d.addr + d.nbytes)
            continue
        if d.init == "zeros":
            values = np.zeros(n)
        elif d.init == "range":
            values = np.arange(n, dtype=np.float64)
        else:
            values = rng.standard_normal(n)
        sim.write(d.addr, nx.to_storage(values.reshape(d.shape), d.dtype))


def _run(args: argparse.Namespace) -> int:
    cfg = get_config(args.design)
    prog = load_program(args.program)
    sim = Simulator(cfg, check_races=not args.no_race_check)
    fill(sim, prog.data, args.seed)
    stats = sim.run(prog)
    print(f"npu run {args.program} on design {cfg.name!r}: {len(prog.cores)} core(s), "
          f"{prog.num_instructions} instructions")  # fmt: skip
    units = ", ".join(f"{u} {n}" for u, n in sorted(stats.instructions.items()))
    print(f"  functional: {units or 'no unit instructions'}; {stats.macs} MACs; no faults")
    for d in prog.data:
        if d.init == "none":
            v = sim.get(d.addr, d.shape, d.dtype).astype(np.float64)
            print(f"  output {d.name} {d.dtype.name.lower()}{list(d.shape)}: min {v.min():.6g} "
                  f"max {v.max():.6g} mean {v.mean():.6g} sum {v.sum():.6g}")  # fmt: skip
    if args.no_timing:
        return 0
    timing = _timing()
    if timing is None:
        print("  (no timing model on this build: anychip.npu.timing is not installed)")
        return 0
    report = timing.simulate_timing(prog, cfg)
    print(report.render() if hasattr(report, "render") else str(report))
    if args.trace:
        importlib.import_module("anychip.npu.trace").write_trace(report, args.trace)
        print(f"  trace written to {args.trace} (open in ui.perfetto.dev)")
    return 0


def _timing() -> Any:
    try:
        return importlib.import_module("anychip.npu.timing")
    except ModuleNotFoundError as e:
        if e.name != "anychip.npu.timing":  # the model is there but broken: say so
            raise
        return None


# ---- kernels by name ----------------------------------------------------------------------
def build_kernel(name: str, cfg: NpuConfig, shape: tuple[int, ...], op: str = "fma") -> Kernel:
    """A library kernel by name for a problem `shape` (see `--shape`).

    >>> from anychip.npu.config import PROFILES
    >>> build_kernel("gemm", PROFILES["edge"], (20, 30, 40)).flops
    48000
    """
    want = len(DEFAULT_SHAPES[name])
    if len(shape) != want:
        raise ConfigError(f"npu {name}: --shape takes {want} sizes, got {shape}")
    if name == "gemm":
        return gemm(cfg, shape[0], shape[1], shape[2])
    if name == "softmax":
        return softmax(cfg, shape[0], shape[1])
    if name == "layer_norm":
        return layer_norm(cfg, shape[0], shape[1])
    if name == "elementwise":
        return elementwise(cfg, op, shape[0], DT.F32)
    rows, dim, bags, bag_len = shape
    return embedding_bag(cfg, rows, dim, [b * bag_len for b in range(bags)], bags * bag_len)


def _parse_shape(name: str, text: str | None) -> tuple[int, ...]:
    if not text:
        return DEFAULT_SHAPES[name]
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise ConfigError(
            f"npu {name}: --shape must be comma-separated integers: {text!r}"
        ) from None


def _emit(args: argparse.Namespace) -> int:
    from anychip.npu.asm import disassemble

    cfg = get_config(args.design)
    kern = build_kernel(args.kernel, cfg, _parse_shape(args.kernel, args.shape), args.op)
    text = disassemble(kern.program)
    head = f"# {kern.name} for design {cfg.name!r}, shape {args.shape or 'default'}\n"
    Path(args.out).write_text(head + text)
    print(f"wrote {args.out}: {kern.program.num_instructions} instructions")
    return 0


# ---- sweep ---------------------------------------------------------------------------------
_SUFFIX = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _value(text: str) -> int | float:
    t = text.strip()
    mult = _SUFFIX.get(t[-1:].upper(), 1)
    t = t[:-1] if mult > 1 else t
    try:
        return int(t) * mult
    except ValueError:
        try:
            return float(t) * mult
        except ValueError:
            raise ConfigError(f"npu sweep: {text!r} is not a number (suffixes K, M, G)") from None


def parse_params(specs: list[str]) -> list[tuple[str, list[int | float]]]:
    """`KEY=V1,V2` strings as (key, values), in order.

    >>> parse_params(["matrix_unit=16,32", "ub.size=256K"])
    [('matrix_unit', [16, 32]), ('ub.size', [262144])]
    """
    out = []
    for spec in specs:
        key, eq, vals = spec.partition("=")
        if not eq or not key or not vals:
            raise ConfigError(f"npu sweep: --param wants KEY=V1,V2,..., got {spec!r}")
        out.append((key.strip(), [_value(v) for v in vals.split(",")]))
    return out


def variant(cfg: NpuConfig, point: dict[str, int | float]) -> NpuConfig:
    """`cfg` with a design point's changes. `matrix_unit=v` makes a v x v x v tile and scales
    the MACs per cycle with the array's face, (v / matrix_m)^2, capped at v^3.

    >>> from anychip.npu.config import PROFILES
    >>> c = variant(PROFILES["datacenter"], {"matrix_unit": 64, "ub.size": 1 << 20})
    >>> c.matrix_m, c.matrix_macs_per_cycle, c.ub.size
    (64, 4096, 1048576)
    """
    changes: dict[str, Any] = {k: v for k, v in point.items() if k != "matrix_unit"}
    if "matrix_unit" in point:
        v = int(point["matrix_unit"])
        macs = round(cfg.matrix_macs_per_cycle * (v / cfg.matrix_m) ** 2)
        changes = {"matrix_m": v, "matrix_n": v, "matrix_k": v,
                   "matrix_macs_per_cycle": max(1, min(v**3, macs)), **changes}  # fmt: skip
    name = ",".join(f"{k}={v}" for k, v in point.items())
    return cfg.replace(name=f"{cfg.name}[{name}]", **changes)


def _sweep(args: argparse.Namespace) -> int:
    timing = _timing()
    if timing is None:
        print("anychip npu sweep: needs the timing model (anychip.npu.timing), which this "
              "build does not have", file=sys.stderr)  # fmt: skip
        return 1
    base = get_config(args.design)
    params = parse_params(args.param)
    shape = _parse_shape(args.kernel, args.shape)
    keys = [k for k, _ in params]
    rows: list[dict[str, Any]] = []
    for values in itertools.product(*[v for _, v in params]):
        point = dict(zip(keys, values, strict=True))
        row: dict[str, Any] = {"kernel": args.kernel, "shape": "x".join(map(str, shape)), **point}
        try:
            cfg = variant(base, point)
            kern = build_kernel(args.kernel, cfg, shape, args.op)
            rep = timing.simulate_timing(kern.program, cfg)
        except Error as e:  # a design point that cannot exist or cannot hold the kernel
            row["error"] = str(e)
            print(f"  {point}: skipped: {e}")
        else:
            row.update(
                cycles=rep.cycles,
                time_us=rep.seconds * 1e6,
                utilisation=rep.utilisation,
                bandwidth_utilisation=rep.bandwidth_utilisation,
                achieved_tflops=rep.achieved_flops / 1e12,
                dram_traffic=rep.dram_traffic,
                energy_uj=rep.energy_joules * 1e6,
                average_watts=rep.average_watts,
                gflops_per_watt=rep.flops_per_joule / 1e9,
            )
            print(
                f"  {point}: {rep.cycles} cycles, {rep.seconds * 1e6:.2f} us, matrix "
                f"{100 * rep.utilisation:.1f}%, DRAM {100 * rep.bandwidth_utilisation:.1f}%, "
                f"{rep.energy_joules * 1e6:.3g} uJ, {rep.average_watts:.3g} W, "
                f"{rep.flops_per_joule / 1e9:.3g} GFLOP/s/W"
            )
        rows.append(row)
    _write_csv(Path(args.out), rows)
    print(f"wrote {args.out} ({len(rows)} design points)")
    _plot(Path(args.out).with_suffix(".png"), rows, keys, args.kernel)
    return 0


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def _plot(path: Path, rows: list[dict[str, Any]], keys: list[str], kernel: str) -> None:
    """Time, utilisation and performance per watt per design point, if matplotlib (the `plot`
    extra) is present."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  (matplotlib is not installed: pip install 'anychip[plot]' for a PNG plot)")
        return
    ok = [r for r in rows if "cycles" in r]
    labels = ["\n".join(f"{k}={r[k]}" for k in keys) or "base" for r in ok]
    fig, (ax, ax3) = plt.subplots(2, 1, figsize=(max(6.0, 1.2 * len(ok)), 7.5))
    x = np.arange(len(ok))
    ax.bar(x, [r["time_us"] for r in ok], color="tab:blue")
    ax.set_ylabel("time (us)")
    ax.set_xticks(x, labels, fontsize=7)
    ax2 = ax.twinx()
    ax2.plot(x, [100 * r["utilisation"] for r in ok], "o-", color="tab:red", label="matrix")
    ax2.plot(x, [100 * r["bandwidth_utilisation"] for r in ok], "s--", color="tab:green",
             label="DRAM")  # fmt: skip
    ax2.set_ylabel("utilisation (%)")
    ax2.set_ylim(0, 105)
    ax2.legend(loc="upper right")
    ax.set_title(f"npu sweep: {kernel}")
    # performance per watt: matrix GFLOP/s per W for matrix kernels, else GB/s per W
    if any(r["gflops_per_watt"] for r in ok):
        ax3.bar(x, [r["gflops_per_watt"] for r in ok], color="tab:purple")
        ax3.set_ylabel("GFLOP/s per W")
    else:
        ax3.bar(x, [r["dram_traffic"] / r["energy_uj"] / 1e3 for r in ok], color="tab:purple")
        ax3.set_ylabel("GB/s per W (device memory)")
    ax3.set_xticks(x, labels, fontsize=7)
    ax3.set_title("performance per watt")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")
