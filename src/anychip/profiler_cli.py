"""`anychip npu profile SCRIPT.py --design edge,cube,datacenter`: choose a chip by running
your model. The script's step runs under `anychip.profile()` on `npu:<design>` for each
design, and the designs are printed side by side (docs/profiler.md, "Choose a chip").

The script defines `make_step(device)`: it builds the model, optimiser and batch on `device`
and returns a function of no arguments running one step (returning the tensors it computes,
e.g. the loss, which are realised inside the profile).
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anychip.errors import ArgumentError, DeviceError

if TYPE_CHECKING:  # the frontend is imported when a profile runs, not to build the parser
    from anychip.npu.config import NpuConfig
    from anychip.profiler import KernelEvent, KernelStats

DEFAULT_DESIGNS = "edge,cube,datacenter"


def add_parser(subs: Any) -> None:
    """The `profile` action of `anychip npu`."""
    p = subs.add_parser("profile", help="run a script's model step on each design, side by side")
    p.add_argument("script", help="a Python file defining make_step(device) -> step()")
    p.add_argument("--design", default=DEFAULT_DESIGNS, help="comma-separated profiles or files")
    p.add_argument(
        "--device",
        help="run every step on this device instead of npu:<design> (e.g. cpu: host wall "
        "times, each design's roofline from the counted work)",
    )
    p.add_argument("--warmup", type=int, default=1, help="unprofiled steps first (default 1)")
    p.add_argument("--steps", type=int, default=1, help="profiled steps, averaged (default 1)")
    p.add_argument("--top", type=int, default=3, help="kernels listed per design (default 3)")
    p.add_argument("--plot", metavar="PNG", help="write a bar chart (needs matplotlib)")
    p.add_argument("--trace", metavar="DIR", help="write DIR/<design>.json Chrome traces")


@dataclass(frozen=True)
class Roofline:
    """A design's peak rates: matrix-unit and vector-unit FLOP/s, device-memory bytes/s."""

    matrix_flops: float
    vector_flops: float
    bytes_per_s: float

    @classmethod
    def of(cls, cfg: NpuConfig) -> Roofline:
        """All cores at the design's clock; the vector unit does one op per 32-bit lane per
        cycle (the float32 rate: 16-bit dtypes would go twice as fast)."""
        hz = cfg.clock_ghz * 1e9
        return cls(cfg.peak_flops, cfg.vector_lanes * cfg.cores * hz, cfg.dram_bytes_per_s)

    def bound(self, events: list[KernelEvent]) -> tuple[float, str]:
        """The least time the roofline allows `events` (each kernel on its own roof: the
        longest of its matrix work, vector work and traffic at peak), and the resource that
        bounds most of it ('matrix', 'vector' or 'memory')."""
        by: dict[str, float] = {"matrix": 0.0, "vector": 0.0, "memory": 0.0}
        for e in events:
            times = {
                "matrix": e.matrix_flops / self.matrix_flops,
                "vector": (e.flops - e.matrix_flops) / self.vector_flops,
                "memory": e.bytes / self.bytes_per_s,
            }
            worst = max(times, key=lambda k: times[k])
            by[worst] += times[worst]
        return sum(by.values()), max(by, key=lambda k: by[k])


@dataclass(frozen=True)
class DesignResult:
    """One design's profile of `steps` steps; figures are per step."""

    design: str
    device: str
    events: list[KernelEvent]
    steps: int
    roof: Roofline
    wall_s: float  # host time the profiled steps took (a simulator's cost, on npu)

    @property
    def simulated(self) -> bool:
        return any(e.simulated for e in self.events)

    @property
    def step_time_s(self) -> float:
        return sum(e.time_s for e in self.events) / self.steps

    @property
    def flops(self) -> float:
        return sum(e.flops for e in self.events) / self.steps

    @property
    def traffic(self) -> float:
        return sum(e.bytes for e in self.events) / self.steps

    @property
    def bound(self) -> tuple[float, str]:
        t, kind = self.roof.bound(self.events)
        return t / self.steps, kind

    def utilisation(self, unit: str) -> float | None:
        """Time-weighted busy fraction of `unit` ('matrix', 'vector') over the step, or None
        where the device reports no units (host devices)."""
        from anychip.profiler.report import unit_fractions

        return unit_fractions(self.events).get(unit) if self.simulated else None

    def top(self, n: int) -> list[KernelStats]:
        from anychip.profiler import key_averages

        return key_averages(self.events)[:n]


def load_step_factory(script: str) -> Callable[[str], Callable[[], Any]]:
    """The `make_step` a script defines (run as a module named `__anychip_profile__`, so
    its `if __name__ == "__main__":` block does not run)."""
    path = Path(script)
    if not path.is_file():
        raise ArgumentError(f"npu profile: no script file {script!r}")
    sys.path.insert(0, str(path.resolve().parent))  # the script may import its neighbours
    try:
        namespace = runpy.run_path(str(path), run_name="__anychip_profile__")
    finally:
        sys.path.pop(0)
    make_step = namespace.get("make_step")
    if not callable(make_step):
        raise ArgumentError(
            f"npu profile: {script} defines no make_step(device): it must build the model "
            "on `device` and return a function of no arguments running one step"
        )
    factory: Callable[[str], Callable[[], Any]] = make_step
    return factory


def profile_designs(
    script: str,
    designs: list[str],
    device: str | None = None,
    warmup: int = 1,
    steps: int = 1,
) -> list[DesignResult]:
    """Run the script's step on `npu:<design>` for each design (or on `device` for all,
    run once) and profile `steps` steps after `warmup` unprofiled ones."""
    from anychip.npu.config import PROFILES, get_config

    if steps < 1 or warmup < 0:
        raise ArgumentError(f"npu profile: --steps {steps} must be >= 1, --warmup {warmup} >= 0")
    configs = [get_config(d) for d in designs]  # a bad design fails before anything runs
    make_step = load_step_factory(script)
    runs: dict[str, tuple[list[KernelEvent], float]] = {}
    results = []
    for name, cfg in zip(designs, configs, strict=True):
        dev = device or f"npu:{name}"
        if dev not in runs:
            runs[dev] = _run_steps(make_step, dev, warmup, steps)
        events, wall = runs[dev]
        label = Path(name).stem if name not in PROFILES else name  # a design file: its stem
        results.append(DesignResult(label, dev, events, steps, Roofline.of(cfg), wall))
    return results


def _run_steps(
    make_step: Callable[[str], Callable[[], Any]], device: str, warmup: int, steps: int
) -> tuple[list[KernelEvent], float]:
    import anychip as ac
    from anychip.runtime.device import canonical

    try:
        canonical(device, op="npu profile")
    except DeviceError as e:
        hint = " (--device cpu runs the step on the host)" if device.startswith("npu") else ""
        raise DeviceError(f"{e}{hint}") from None
    ac.manual_seed(0)  # the same model and batch on every design
    step = make_step(device)
    for _ in range(warmup):
        _realise(step())
    t0 = time.perf_counter()
    with ac.profile() as prof:
        for _ in range(steps):
            _realise(step())
    return prof.events, time.perf_counter() - t0


def _realise(value: Any) -> None:
    """Compute the tensors a step returned (a loss, a tuple or dict of tensors)."""
    from anychip import Tensor

    if isinstance(value, Tensor):
        value.realize()
    elif isinstance(value, (list, tuple)):
        for v in value:
            _realise(v)
    elif isinstance(value, dict):
        for v in value.values():
            _realise(v)


def side_by_side(results: list[DesignResult], top: int = 3) -> str:
    """The designs as columns: time, utilisation, traffic, roofline, top kernels."""
    from anychip.profiler.report import fmt_time, si

    def pct(f: float | None) -> str:
        return "-" if f is None else f"{100 * f:.1f}%"

    rows: list[tuple[str, list[str]]] = [
        ("device", [r.device for r in results]),
        ("step time", [fmt_time(r.step_time_s) for r in results]),
        ("time from", ["timing model" if r.simulated else "host clock" for r in results]),
        ("kernels per step", [f"{len(r.events) / r.steps:g}" for r in results]),
        ("matrix utilisation", [pct(r.utilisation("matrix")) for r in results]),
        ("vector utilisation", [pct(r.utilisation("vector")) for r in results]),
        ("device-memory traffic", [si(r.traffic, "B") for r in results]),
        ("achieved bandwidth", [si(_rate(r.traffic, r.step_time_s), "B/s") for r in results]),
        ("FLOPs", [si(r.flops) for r in results]),
        ("roofline bound", [f"{fmt_time(r.bound[0])} ({r.bound[1]})" for r in results]),
        # a chip's bound over a host's measured time would compare two machines: not shown
        ("of roofline", [pct(_of_roofline(r)) for r in results]),
        ("host wall time", [fmt_time(r.wall_s / r.steps) for r in results]),
    ]
    for i in range(min(top, max(len(r.top(top)) for r in results))):
        cells = []
        for r in results:
            ks = r.top(top)
            cells.append(f"{_short(ks[i].name)} {100 * ks[i].share:.0f}%" if i < len(ks) else "")
        rows.append((f"top kernel {i + 1}" if top > 1 else "top kernel", cells))
    label_w = max(len(label) for label, _ in rows)
    widths = [
        max(len(r.design), *(len(cells[j]) for _, cells in rows)) for j, r in enumerate(results)
    ]
    head = " " * label_w + "".join(f"  {r.design:>{w}}" for r, w in zip(results, widths))
    lines = [head]
    for label, cells in rows:
        lines.append(f"{label:<{label_w}}" + "".join(f"  {c:>{w}}" for c, w in zip(cells, widths)))
    return "\n".join(lines)


def _of_roofline(r: DesignResult) -> float | None:
    return _rate(r.bound[0], r.step_time_s) if r.simulated else None


def _short(name: str, width: int = 30) -> str:
    return name if len(name) <= width else name[: width - 2] + ".."


def _rate(amount: float, seconds: float) -> float:
    return amount / seconds if seconds > 0 else 0.0


def plot(results: list[DesignResult], path: str) -> None:
    """Bars per design: step time against its roofline bound; utilisation of the matrix
    unit, the vector unit and device-memory bandwidth."""
    plt = _pyplot()
    import numpy as np

    x = np.arange(len(results))
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(max(6.0, 1.8 * len(results)), 7.0))
    source = "simulated" if all(r.simulated for r in results) else "measured"
    ax.bar(x - 0.2, [r.step_time_s * 1e3 for r in results], 0.4, label=f"step time ({source})")
    ax.bar(x + 0.2, [r.bound[0] * 1e3 for r in results], 0.4, label="roofline bound")
    ax.set_ylabel("ms per step")
    ax.set_xticks(x, [r.design for r in results])
    ax.legend()
    ax.set_title("step time by design")
    bw = [_rate(r.traffic, r.step_time_s) / r.roof.bytes_per_s for r in results]
    for k, (label, vals) in enumerate(
        [
            ("matrix", [r.utilisation("matrix") or 0.0 for r in results]),
            ("vector", [r.utilisation("vector") or 0.0 for r in results]),
            ("memory bandwidth", bw),
        ]
    ):
        ax2.bar(x + (k - 1) * 0.27, [100 * v for v in vals], 0.27, label=label)
    ax2.set_ylabel("utilisation (%)")
    ax2.set_xticks(x, [r.design for r in results])
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ArgumentError(
            "npu profile --plot needs matplotlib, which is not installed: "
            "pip install 'anychip[plot]'"
        ) from None
    return plt


def run(args: argparse.Namespace) -> int:
    """`anychip npu profile`: print the side-by-side report (and write the plot, traces)."""
    if args.plot:
        _pyplot()  # fail before the steps run, not after
    designs = [d.strip() for d in args.design.split(",") if d.strip()]
    if not designs:
        raise ArgumentError(f"npu profile: --design {args.design!r} names no design")
    results = profile_designs(args.script, designs, args.device, args.warmup, args.steps)
    print(
        f"npu profile {args.script}: {args.steps} step(s) after {args.warmup} warm-up, "
        "figures per step"
    )
    print(side_by_side(results, args.top))
    if args.trace:
        from anychip.profiler import chrome_trace

        os.makedirs(args.trace, exist_ok=True)
        for r in results:
            out = Path(args.trace) / f"{r.design}.json"
            out.write_text(_json(chrome_trace(r.events)))
            print(f"wrote {out}")
    if args.plot:
        plot(results, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _json(data: Any) -> str:
    import json

    return json.dumps(data)
