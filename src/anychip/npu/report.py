"""The timing model's answer: cycles, time, per-unit busy and stall cycles, bytes, roofline.

`TimingReport` renders as text (`str(report)`), as plain data (`to_dict()`, JSON-ready) and
as one flat CSV row (`to_row()`); its `events` feed `npu/trace.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from anychip.npu.config import NpuConfig
from anychip.npu.isa import Instr, Unit

# (core, unit, instruction index, instruction, start, end, complete) in cycles: the unit
# is occupied over [start, end); its results are visible from `complete` (latency included).
# For a waitf, [start, end) is the time the unit spent waiting.
Event = tuple[int, Unit, int, Instr, float, float, float]
STALL_CAUSES = ("sync", "bandwidth", "queue")


@dataclass(eq=False)
class UnitStats:
    """One unit's cycles: `busy` working, and stalls by cause.

    Causes: 'sync' (held by a waitf, or the scalar unit by a barrier), 'bandwidth' (a
    transfer slowed by other transfers sharing device memory), 'queue' (a unit starved
    because the scalar unit had not issued its next instruction yet; for the scalar unit,
    a full queue).

    >>> UnitStats(busy=10.0).to_dict()
    {'instructions': 0, 'busy': 10.0, 'stalls': {'sync': 0.0, 'bandwidth': 0.0, 'queue': 0.0}}
    """

    instructions: int = 0
    busy: float = 0.0
    stalls: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STALL_CAUSES, 0.0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "instructions": self.instructions,
            "busy": _num(self.busy),
            "stalls": {c: _num(self.stalls[c]) for c in STALL_CAUSES},
        }


def _num(x: float) -> float:
    return round(float(x), 3)


@dataclass(eq=False)
class TimingReport:
    """What `simulate_timing` found. Cycles are at the design's clock; bytes are useful bytes.

    `dram_traffic` is device-memory bytes with every contiguous run rounded up to whole
    bursts: what the bandwidth had to carry, and what the roofline uses.
    """

    config: NpuConfig
    core_cycles: list[float]
    units: dict[str, UnitStats]
    bytes_moved: dict[str, int]
    dram_traffic: int
    macs: int
    vector_elements: int
    events: list[Event] = field(default_factory=list, repr=False)
    port_bytes: dict[str, int] = field(default_factory=dict)  # on-chip reads + writes
    macs_by_dtype: dict[str, int] = field(default_factory=dict)
    vector_f64_elements: int = 0  # of vector_elements, those computed in f64

    # ---- headline figures ----------------------------------------------------------------
    @property
    def exact_cycles(self) -> float:
        """The finish time of the last core, in (possibly fractional) cycles."""
        return max(self.core_cycles, default=0.0)

    @property
    def cycles(self) -> int:
        """Total cycles: the last core's finish, rounded up to a whole cycle."""
        return math.ceil(self.exact_cycles - 1e-6)

    @property
    def seconds(self) -> float:
        return self.cycles / (self.config.clock_ghz * 1e9)

    @property
    def flops(self) -> int:
        """Matrix-unit floating-point (or integer) operations: 2 per multiply-accumulate."""
        return 2 * self.macs

    @property
    def achieved_flops(self) -> float:
        """FLOP/s over the whole run."""
        return self.flops / self.seconds if self.seconds else 0.0

    @property
    def utilisation(self) -> float:
        """Achieved FLOP/s as a fraction of the design's matrix peak (all cores)."""
        return self.achieved_flops / self.config.peak_flops

    @property
    def dram_bytes(self) -> int:
        """Useful bytes moved between device memory and the buffers, both ways."""
        return sum(n for k, n in self.bytes_moved.items() if "dram" in k)

    @property
    def bandwidth_utilisation(self) -> float:
        """Device-memory traffic per cycle as a fraction of the design's bandwidth."""
        return self.dram_traffic / (self.exact_cycles * self.config.dram_bandwidth or 1.0)

    # ---- roofline ------------------------------------------------------------------------
    @property
    def intensity(self) -> float:
        """Arithmetic intensity: matrix FLOPs per byte of device-memory traffic."""
        return self.flops / self.dram_traffic if self.dram_traffic else math.inf

    @property
    def compute_cycles(self) -> float:
        """Cycles the FLOPs need at the design's peak."""
        return self.flops / self.config.peak_flops_per_cycle

    @property
    def memory_cycles(self) -> float:
        """Cycles the device-memory traffic needs at full bandwidth."""
        return self.dram_traffic / self.config.dram_bandwidth

    @property
    def bound(self) -> str:
        """'compute' or 'bandwidth': which roof limits this program's intensity."""
        return "compute" if self.compute_cycles >= self.memory_cycles else "bandwidth"

    @property
    def roofline_cycles(self) -> float:
        """The least cycles the roofline allows: max(compute_cycles, memory_cycles)."""
        return max(self.compute_cycles, self.memory_cycles)

    @property
    def roofline_fraction(self) -> float:
        """roofline_cycles / cycles: 1.0 means on the roofline."""
        return self.roofline_cycles / self.exact_cycles if self.exact_cycles else 0.0

    # ---- energy (the design's EnergySpec, docs/npu-timing.md) --------------------------------
    @property
    def energy(self) -> dict[str, float]:
        """Joules by where they went: 'matrix', 'vector', each buffer, 'dram', 'static'."""
        e = self.config.energy
        f32_ops = self.vector_elements - self.vector_f64_elements
        vector = f32_ops * e.vector_op + self.vector_f64_elements * e.vector_op_f64
        out = {"matrix": sum(n * e.mac(dt) for dt, n in self.macs_by_dtype.items()) * 1e-12,
               "vector": vector * 1e-12}  # fmt: skip
        for name, nbytes in sorted(self.port_bytes.items()):
            out[name] = nbytes * getattr(e, name) * 1e-12
        out["dram"] = self.dram_traffic * e.dram * 1e-12
        out["static"] = e.static_w * self.seconds
        return out

    @property
    def energy_joules(self) -> float:
        """Total energy of the run: dynamic (operations and bytes) plus static."""
        return sum(self.energy.values())

    @property
    def average_watts(self) -> float:
        """energy_joules / seconds."""
        return self.energy_joules / self.seconds if self.seconds else 0.0

    @property
    def flops_per_joule(self) -> float:
        """Matrix FLOPs per joule (= FLOP/s per watt): performance per watt."""
        return self.flops / self.energy_joules if self.energy_joules else 0.0

    # ---- output ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (no trace events)."""
        return {
            "design": self.config.name,
            "clock_ghz": self.config.clock_ghz,
            "cores": len(self.core_cycles),
            "cycles": self.cycles,
            "seconds": self.seconds,
            "core_cycles": [_num(c) for c in self.core_cycles],
            "macs": self.macs,
            "flops": self.flops,
            "achieved_flops": self.achieved_flops,
            "peak_flops": self.config.peak_flops,
            "utilisation": self.utilisation,
            "vector_elements": self.vector_elements,
            "bytes_moved": dict(sorted(self.bytes_moved.items())),
            "dram_bytes": self.dram_bytes,
            "dram_traffic": self.dram_traffic,
            "bandwidth_utilisation": self.bandwidth_utilisation,
            "intensity": self.intensity if self.dram_traffic else None,
            "bound": self.bound,
            "roofline_cycles": _num(self.roofline_cycles),
            "roofline_fraction": self.roofline_fraction,
            "energy_joules": self.energy_joules,
            "average_watts": self.average_watts,
            "flops_per_joule": self.flops_per_joule,
            "energy": self.energy,
            "units": {name: s.to_dict() for name, s in self.units.items()},
        }

    def to_row(self) -> dict[str, Any]:
        """One flat row for a CSV file: nested keys joined with '.'."""
        row: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            elif isinstance(value, list):
                for k, v in enumerate(value):
                    walk(f"{prefix}.{k}", v)
            else:
                row[prefix] = value

        walk("", self.to_dict())
        return row

    def render(self) -> str:
        """A human-readable summary: headline, roofline, bytes, then a table of units."""
        cfg = self.config
        lines = [
            f"npu timing on design {cfg.name!r} ({cfg.clock_ghz:g} GHz, "
            f"{len(self.core_cycles)} of {cfg.cores} cores)",
            f"  total      {self.cycles} cycles = {self.seconds * 1e6:.3f} us",
            f"  matrix     {self.flops:.4g} FLOP, {self.achieved_flops / 1e12:.3f} TFLOP/s of "
            f"{cfg.peak_flops / 1e12:.3f} peak = {100 * self.utilisation:.1f}% utilisation",
            f"  memory     {self.dram_traffic} B device traffic, "
            f"{100 * self.bandwidth_utilisation:.1f}% of {cfg.dram_bandwidth:g} B/cycle",
            f"  roofline   {self.bound}-bound at {self._intensity_text()}: "
            f"limit {self.roofline_cycles:.0f} cycles, reached "
            f"{100 * self.roofline_fraction:.1f}%",
            f"  energy     {self.energy_joules * 1e6:.3f} uJ, {self.average_watts:.2f} W average, "
            f"{self.flops_per_joule / 1e9:.1f} GFLOP/J ("
            + ", ".join(f"{k} {v * 1e6:.3g}" for k, v in self.energy.items() if v)
            + " uJ)",
            "  bytes      "
            + (", ".join(f"{k} {v}" for k, v in sorted(self.bytes_moved.items())) or "none"),
            f"  {'unit':<16}{'instrs':>9}{'busy':>12}{'sync':>12}{'bandwidth':>12}"
            f"{'queue':>12}{'busy%':>8}",
        ]
        total = self.exact_cycles or 1.0
        for name, s in self.units.items():
            if not s.instructions:
                continue
            lines.append(
                f"  {name:<16}{s.instructions:>9}{s.busy:>12.0f}{s.stalls['sync']:>12.0f}"
                f"{s.stalls['bandwidth']:>12.0f}{s.stalls['queue']:>12.0f}"
                f"{100 * s.busy / total:>7.1f}%"
            )
        return "\n".join(lines)

    def _intensity_text(self) -> str:
        return f"{self.intensity:.2f} FLOP/B" if self.dram_traffic else "no device traffic"

    def __str__(self) -> str:
        return self.render()
