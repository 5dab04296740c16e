"""The design of the simulated chip: one frozen, validated configuration and named profiles.

Every cost in the timing model and every limit in the functional model comes from here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anychip.npu.energy import DDR_PJ_PER_BYTE, HBM2_PJ_PER_BYTE, EnergySpec, energy_for
from anychip.npu.errors import ConfigError

MATRIX_DTYPES = ("f16", "bf16", "i8", "f32")
VECTOR_DTYPES = ("f32", "f16", "bf16", "i32", "bool", "i64", "f64")
BUFFERS = ("l1", "l0a", "l0b", "l0c", "ub")
DATAFLOWS = ("ws", "os", "tile")  # weight-stationary, output-stationary, pipelined tile engine
TABLES = (*BUFFERS, "energy")  # fields written as TOML tables
DEFAULT_ENERGY = EnergySpec()  # frozen: one instance serves every config


@dataclass(frozen=True)
class BufferSpec:
    """One on-chip buffer: `size` bytes in `banks` banks, each moving `bank_width` B/cycle.

    >>> BufferSpec(65536, 4, 64).bandwidth
    256
    """

    size: int
    banks: int = 1
    bank_width: int = 64

    @property
    def bandwidth(self) -> int:
        """Bytes per cycle the buffer can read (or write) for an on-chip copy."""
        return self.banks * self.bank_width


@dataclass(frozen=True)
class NpuConfig:
    """A design point of the chip. Sizes in bytes, bandwidths in bytes per cycle.

    >>> cfg = PROFILES["cube"]
    >>> (cfg.matrix_m, cfg.matrix_n, cfg.matrix_k), cfg.tile_cycles
    ((16, 16, 16), 1)
    >>> cfg.replace(cores=1).peak_flops_per_cycle
    8192
    """

    name: str = "custom"
    clock_ghz: float = 1.0
    cores: int = 1
    # matrix unit: one MxNxK tile costs ceil(M*N*K / matrix_macs_per_cycle) cycles of
    # work; `matrix_dataflow` says how folds are scheduled (docs/npu-timing.md): 'ws' and
    # 'os' are systolic arrays (K x N and M x N processing elements) paying weight preload
    # and fill/drain per fold, overlapped between folds when `matrix_double_buffer`; 'tile'
    # is a pipelined cube (one tile per tile_cycles, its fill hidden in matrix_latency)
    matrix_m: int = 16
    matrix_n: int = 16
    matrix_k: int = 16
    matrix_macs_per_cycle: int = 4096
    matrix_latency: int = 16
    matrix_dtypes: tuple[str, ...] = MATRIX_DTYPES
    # f32 inputs run at a reduced rate: every fold or tile takes matrix_f32_cycles times
    # its 16-bit cycles (4: a quarter-rate f32 mode, as a 16-bit multiplier array split
    # four ways for 24-bit significands)
    matrix_f32_cycles: int = 4
    matrix_dataflow: str = "tile"
    matrix_double_buffer: bool = True
    # vector unit: `vector_lanes` 32-bit elements per cycle (16-bit dtypes: twice as many)
    vector_lanes: int = 64
    vector_latency: int = 8
    vector_dtypes: tuple[str, ...] = VECTOR_DTYPES
    # f64 arithmetic issues one lane group every vector_f64_cycles cycles (a narrow f64 pipe)
    vector_f64_cycles: int = 4
    # on-chip buffers (l1 may be absent: size 0)
    l1: BufferSpec = BufferSpec(0)
    l0a: BufferSpec = BufferSpec(65536, 16, 64)
    l0b: BufferSpec = BufferSpec(65536, 16, 64)
    l0c: BufferSpec = BufferSpec(262144, 8, 64)
    ub: BufferSpec = BufferSpec(262144, 8, 64)
    # DMA engines (one dma_in and one dma_out per core) and device memory
    dma_width: int = 128
    dma_latency: int = 300
    dram_size: int = 1 << 32
    dram_bandwidth: float = 256.0
    dram_burst: int = 64
    queue_depth: int = 16
    # device memory as it is: a row (page) of `dram_page` bytes is opened per run of a
    # transfer that enters it, costing `dram_activate` bytes' worth of bandwidth time; each
    # DMA engine keeps at most `dma_outstanding` requests of `dma_request` bytes in flight,
    # so latency x bandwidth bounds its rate; latency grows with load by `dram_queueing`
    dram_page: int = 2048
    dram_activate: int = 256
    dma_request: int = 256
    dma_outstanding: int = 64
    dram_queueing: float = 0.25
    # energy: pJ per MAC / element op / byte per memory level, static watts (npu/energy.py)
    energy: EnergySpec = DEFAULT_ENERGY
    # dynamic instructions a core may run before a run stops it as a runaway
    max_instructions: int = 10_000_000

    def __post_init__(self) -> None:
        _validate(self)

    # ---- derived figures -------------------------------------------------------------
    @property
    def tile_cycles(self) -> int:
        """Cycles the matrix unit is busy per MxNxK hardware tile."""
        tile = self.matrix_m * self.matrix_n * self.matrix_k
        return math.ceil(tile / self.matrix_macs_per_cycle)

    @property
    def peak_flops_per_cycle(self) -> int:
        """Matrix-unit FLOPs per cycle over all cores (a MAC counts as 2 FLOPs)."""
        tile = self.matrix_m * self.matrix_n * self.matrix_k
        return 2 * tile * self.cores // self.tile_cycles

    @property
    def peak_flops(self) -> float:
        """Matrix-unit FLOP/s over all cores at the configured clock."""
        return self.peak_flops_per_cycle * self.clock_ghz * 1e9

    @property
    def dram_bytes_per_s(self) -> float:
        return self.dram_bandwidth * self.clock_ghz * 1e9

    def buffer(self, name: str) -> BufferSpec:
        """The spec of buffer `name` ('l1', 'l0a', 'l0b', 'l0c', 'ub')."""
        spec: BufferSpec = getattr(self, name)
        return spec

    def replace(self, **changes: Any) -> NpuConfig:
        """A copy with some fields changed (validated again); 'l0a.size=...' style keys work.

        >>> PROFILES["edge"].replace(**{"ub.size": 1 << 20}).ub.size
        1048576
        """
        flat: dict[str, Any] = {}
        for key, value in changes.items():
            if "." in key:
                buf, attr = key.split(".", 1)
                if buf not in TABLES:
                    raise ConfigError(f"npu config: unknown key {key!r}")
                base = flat.get(buf, getattr(self, buf))
                if attr not in {f.name for f in dataclasses.fields(base)}:
                    raise ConfigError(f"npu config: unknown key {key!r}")
                flat[buf] = dataclasses.replace(base, **{attr: value})
            else:
                flat[key] = value
        unknown = set(flat) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"npu config: unknown key(s) {sorted(unknown)}")
        return dataclasses.replace(self, **flat)

    # ---- files -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data (buffers as sub-dicts), as written to TOML and JSON."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = dataclasses.asdict(v) if f.name in TABLES else v
        for k in ("matrix_dtypes", "vector_dtypes"):
            out[k] = list(out[k])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NpuConfig:
        """Builds and validates a config; unknown keys are an error, missing ones default."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"npu config: unknown key(s) {unknown}; known: {sorted(names)}")
        kw: dict[str, Any] = {}
        for key, value in data.items():
            if key in TABLES:
                spec = EnergySpec if key == "energy" else BufferSpec
                if not isinstance(value, dict):
                    raise ConfigError(f"npu config: {key} must be a table, got {value!r}")
                bad = sorted(set(value) - {f.name for f in dataclasses.fields(spec)})
                if bad:
                    raise ConfigError(f"npu config: unknown key(s) {bad} in [{key}]")
                kw[key] = spec(**value)
            elif key in ("matrix_dtypes", "vector_dtypes"):
                kw[key] = tuple(value)
            else:
                kw[key] = value
        return cls(**kw)

    def save(self, path: str | Path) -> None:
        """Writes `.json` as JSON and anything else as TOML."""
        p = Path(path)
        text = json.dumps(self.to_dict(), indent=2) if p.suffix == ".json" else to_toml(self)
        p.write_text(text)

    @classmethod
    def load(cls, path: str | Path) -> NpuConfig:
        """Reads a config saved by `save` (TOML, or JSON when the suffix is `.json`)."""
        p = Path(path)
        try:
            if p.suffix == ".json":
                data = json.loads(p.read_text())
            else:
                data = tomllib.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"npu config: cannot read {p}: {e}") from e
        return cls.from_dict(data)


def _validate(c: NpuConfig) -> None:
    """Raises ConfigError naming the first field that cannot describe a real design."""
    ints = {
        "cores": c.cores,
        "matrix_m": c.matrix_m,
        "matrix_n": c.matrix_n,
        "matrix_k": c.matrix_k,
        "matrix_macs_per_cycle": c.matrix_macs_per_cycle,
        "vector_lanes": c.vector_lanes,
        "matrix_f32_cycles": c.matrix_f32_cycles,
        "vector_f64_cycles": c.vector_f64_cycles,
        "dma_width": c.dma_width,
        "dram_size": c.dram_size,
        "dram_burst": c.dram_burst,
        "queue_depth": c.queue_depth,
        "dram_page": c.dram_page,
        "dma_request": c.dma_request,
        "dma_outstanding": c.dma_outstanding,
        "max_instructions": c.max_instructions,
    }
    for key, v in ints.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"npu config {c.name!r}: {key} must be an integer >= 1, got {v!r}")
    latencies = {"matrix_latency": c.matrix_latency, "vector_latency": c.vector_latency,
                 "dma_latency": c.dma_latency, "dram_activate": c.dram_activate}  # fmt: skip
    for key, v in latencies.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"npu config {c.name!r}: {key} must be an integer >= 0, got {v!r}")
    for key, fv in {"clock_ghz": c.clock_ghz, "dram_bandwidth": c.dram_bandwidth}.items():
        if not isinstance(fv, (int, float)) or isinstance(fv, bool) or not fv > 0:
            raise ConfigError(f"npu config {c.name!r}: {key} must be a number > 0, got {fv!r}")
    if not isinstance(c.dram_queueing, (int, float)) or not c.dram_queueing >= 0:
        raise ConfigError(f"npu config {c.name!r}: dram_queueing must be >= 0")
    _validate_matrix(c)
    _validate_energy(c)
    tile = c.matrix_m * c.matrix_n * c.matrix_k
    if c.matrix_macs_per_cycle > tile:
        raise ConfigError(
            f"npu config {c.name!r}: matrix_macs_per_cycle {c.matrix_macs_per_cycle} exceeds "
            f"the {c.matrix_m}x{c.matrix_n}x{c.matrix_k} tile's {tile} MACs"
        )
    for key, allowed in (("matrix_dtypes", MATRIX_DTYPES), ("vector_dtypes", VECTOR_DTYPES)):
        got = getattr(c, key)
        if not got or any(d not in allowed for d in got):
            raise ConfigError(
                f"npu config {c.name!r}: {key} {got!r} must be a non-empty subset of {allowed}"
            )
    for name in BUFFERS:
        b = c.buffer(name)
        if not isinstance(b, BufferSpec):
            raise ConfigError(f"npu config {c.name!r}: {name} must be a BufferSpec, got {b!r}")
        low = 0 if name == "l1" else 1
        if not isinstance(b.size, int) or b.size < low:
            raise ConfigError(
                f"npu config {c.name!r}: {name}.size must be an integer >= {low}, got {b.size!r}"
            )
        if (
            not isinstance(b.banks, int)
            or not isinstance(b.bank_width, int)
            or b.banks < 1
            or b.bank_width < 1
        ):
            raise ConfigError(
                f"npu config {c.name!r}: {name}.banks and {name}.bank_width must be >= 1"
            )
        if b.size % b.banks:
            raise ConfigError(
                f"npu config {c.name!r}: {name}.size {b.size} is not divisible by "
                f"its {b.banks} banks"
            )


def _validate_matrix(c: NpuConfig) -> None:
    if c.matrix_dataflow not in DATAFLOWS:
        raise ConfigError(
            f"npu config {c.name!r}: matrix_dataflow must be one of {DATAFLOWS}, "
            f"got {c.matrix_dataflow!r}"
        )
    if not isinstance(c.matrix_double_buffer, bool):
        raise ConfigError(f"npu config {c.name!r}: matrix_double_buffer must be true or false")
    if c.matrix_dataflow != "tile":
        rows = c.matrix_k if c.matrix_dataflow == "ws" else c.matrix_m
        pes = rows * c.matrix_n
        if c.matrix_macs_per_cycle % pes:
            raise ConfigError(
                f"npu config {c.name!r}: a {c.matrix_dataflow} array of {rows}x{c.matrix_n} "
                f"processing elements needs matrix_macs_per_cycle a multiple of {pes}, "
                f"got {c.matrix_macs_per_cycle}"
            )


def _validate_energy(c: NpuConfig) -> None:
    e = c.energy
    if not isinstance(e, EnergySpec):
        raise ConfigError(f"npu config {c.name!r}: energy must be an EnergySpec, got {e!r}")
    for f in dataclasses.fields(e):
        v = getattr(e, f.name)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"npu config {c.name!r}: energy.{f.name} must be a number >= 0")


def to_toml(cfg: NpuConfig) -> str:
    """The config as TOML text (scalars first, then one table per buffer)."""
    lines = [f"# anychip npu design {cfg.name!r}"]
    tables: list[str] = []
    for key, value in cfg.to_dict().items():
        if isinstance(value, dict):
            tables.append(f"\n[{key}]")
            tables += [f"{k} = {_toml_value(v)}" for k, v in value.items()]
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines + tables) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise ConfigError(f"npu config: cannot write {v!r} to TOML")


KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30

PROFILES: dict[str, NpuConfig] = {
    # A small inference design: one core, an output-stationary 16x16 array taking 4 k-steps
    # per cycle (a 16x16x16 tile every 4 cycles), narrow LPDDR-class memory.
    "edge": NpuConfig(
        name="edge", clock_ghz=1.0, cores=1,
        matrix_m=16, matrix_n=16, matrix_k=16, matrix_macs_per_cycle=1024, matrix_latency=8,
        matrix_dtypes=("f16", "i8", "f32"), matrix_dataflow="os", matrix_double_buffer=True,
        vector_lanes=16, vector_latency=6,
        vector_dtypes=("f32", "f16", "i32", "bool", "i64", "f64"),
        l1=BufferSpec(0), l0a=BufferSpec(32 * KIB, 4, 64), l0b=BufferSpec(32 * KIB, 4, 64),
        l0c=BufferSpec(64 * KIB, 4, 64), ub=BufferSpec(128 * KIB, 4, 32),
        dma_width=32, dma_latency=200, dram_size=1 * GIB, dram_bandwidth=16.0, dram_burst=32,
        queue_depth=8, dram_page=2048, dram_activate=256, dma_request=128,
        dma_outstanding=128, dram_queueing=0.25,
        energy=energy_for({"l0a": 32 * KIB, "l0b": 32 * KIB, "l0c": 64 * KIB,
                           "ub": 128 * KIB}, DDR_PJ_PER_BYTE, 0.2),
    ),
    # A training design: four cores, each a 128x128 weight-stationary systolic array with
    # double-buffered weights (a 128^3 tile per 128 cycles), HBM-class memory shared by all
    # cores' DMA engines.
    "datacenter": NpuConfig(
        name="datacenter", clock_ghz=1.5, cores=4,
        matrix_m=128, matrix_n=128, matrix_k=128, matrix_macs_per_cycle=16384,
        matrix_latency=16, matrix_dataflow="ws", matrix_double_buffer=True,
        vector_lanes=128, vector_latency=12,
        l1=BufferSpec(4 * MIB, 16, 64), l0a=BufferSpec(512 * KIB, 8, 128),
        l0b=BufferSpec(512 * KIB, 8, 128), l0c=BufferSpec(2 * MIB, 16, 128),
        ub=BufferSpec(2 * MIB, 16, 128),
        dma_width=512, dma_latency=500, dram_size=32 * GIB, dram_bandwidth=1024.0,
        dram_burst=64, queue_depth=32, dram_page=1024, dram_activate=128, dma_request=512,
        dma_outstanding=1024, dram_queueing=0.25,
        energy=energy_for({"l1": 4 * MIB, "l0a": 512 * KIB, "l0b": 512 * KIB,
                           "l0c": 2 * MIB, "ub": 2 * MIB}, HBM2_PJ_PER_BYTE, 30.0),
    ),
    # A cube/vector split: a pipelined 16x16x16 cube every cycle (fed 512 B/cycle of each
    # operand), separate L1, L0A/L0B/L0C and a unified buffer for the vector unit; two cores.
    "cube": NpuConfig(
        name="cube", clock_ghz=1.8, cores=2,
        matrix_m=16, matrix_n=16, matrix_k=16, matrix_macs_per_cycle=4096, matrix_latency=16,
        matrix_dataflow="tile",
        vector_lanes=64, vector_latency=8,
        l1=BufferSpec(1 * MIB, 8, 64), l0a=BufferSpec(64 * KIB, 16, 64),
        l0b=BufferSpec(64 * KIB, 16, 64), l0c=BufferSpec(256 * KIB, 8, 64),
        ub=BufferSpec(256 * KIB, 8, 64),
        dma_width=256, dma_latency=300, dram_size=8 * GIB, dram_bandwidth=256.0,
        dram_burst=64, queue_depth=16, dram_page=1024, dram_activate=128, dma_request=512,
        dma_outstanding=256, dram_queueing=0.25,
        energy=energy_for({"l1": 1 * MIB, "l0a": 64 * KIB, "l0b": 64 * KIB,
                           "l0c": 256 * KIB, "ub": 256 * KIB}, HBM2_PJ_PER_BYTE, 8.0),
    ),
}  # fmt: skip


def get_config(name_or_path: str | Path | NpuConfig) -> NpuConfig:
    """A profile by name, or a config loaded from a TOML/JSON file.

    >>> get_config("datacenter").cores
    4
    """
    if isinstance(name_or_path, NpuConfig):
        return name_or_path
    key = str(name_or_path)
    if key in PROFILES:
        return PROFILES[key]
    if Path(key).exists():
        return NpuConfig.load(key)
    raise ConfigError(f"npu: no profile or config file {key!r}; profiles: {sorted(PROFILES)}")
