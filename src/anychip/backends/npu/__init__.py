"""`npu`: the simulated accelerator as a device. Tensors live in the design's simulated
device memory; kernels are lowered from the kernel IR to npu instructions
(`backends/npu/lower.py`) and run on the functional simulator, the truth for values, with
its race, bounds and uninitialised-read checks on. `launch_stats` times the latest launch
with the timing model.

Devices: `npu` (the `datacenter` design), `npu:edge`, `npu:cube`, `npu:datacenter` and
`npu:PATH` for a TOML/JSON design file. See docs/npu-backend.md.
"""

from __future__ import annotations

import bisect
import functools
import struct
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anychip import dtypes
from anychip.backends.npu.lower import Compiled, lower_ir
from anychip.backends.npu.lower_exprs import NpuUnsupported
from anychip.backends.npu.spill import relocate
from anychip.dtypes import DType
from anychip.errors import ArgumentError, DeviceError, OutOfMemoryError
from anychip.npu.config import PROFILES, NpuConfig, get_config, to_toml
from anychip.npu.errors import NpuError
from anychip.npu.isa import Instr, SMov
from anychip.npu.program import Program
from anychip.npu.simulator import Simulator
from anychip.runtime.device import Backend, Buffer, Kernel, Scalar

__all__ = ["NpuBackend", "NpuUnsupported"]

DEFAULT = "datacenter"
ALIGN = 64


@functools.cache
def _design(variant: str) -> NpuConfig:
    """The design a canonical variant names ('' is the default)."""
    return get_config(variant or DEFAULT)


class DeviceMemory:
    """First-fit allocation of the design's device memory (64-byte aligned blocks)."""

    def __init__(self, device: str, size: int) -> None:
        self.device, self.size = device, size
        self.free: list[tuple[int, int]] = [(0, size)]  # (addr, bytes), sorted by addr
        self.used = 0
        self.lock = threading.Lock()

    def allocate(self, nbytes: int, what: str) -> int:
        n = max(ALIGN, -(-nbytes // ALIGN) * ALIGN)
        with self.lock:
            for i, (addr, size) in enumerate(self.free):
                if size >= n:
                    if size == n:
                        del self.free[i]
                    else:
                        self.free[i] = (addr + n, size - n)
                    self.used += n
                    return addr
        raise OutOfMemoryError(
            f"{what}: needs {nbytes} bytes of device memory on device {self.device!r}, "
            f"which holds {self.size} bytes with {self.used} in use "
            f"(largest free block {max((s for _, s in self.free), default=0)} bytes)"
        )

    def release(self, addr: int, nbytes: int) -> None:
        n = max(ALIGN, -(-nbytes // ALIGN) * ALIGN)
        with self.lock:
            self.used -= n
            i = bisect.bisect(self.free, (addr, 0))
            self.free.insert(i, (addr, n))
            # merge with the neighbours
            if i + 1 < len(self.free) and addr + n == self.free[i + 1][0]:
                self.free[i] = (addr, n + self.free[i + 1][1])
                del self.free[i + 1]
            if i > 0 and self.free[i - 1][0] + self.free[i - 1][1] == addr:
                self.free[i - 1] = (self.free[i - 1][0], self.free[i - 1][1] + self.free[i][1])
                del self.free[i]


class Mem:
    """A block of device memory; given back when the handle is dropped."""

    __slots__ = ("__weakref__", "addr", "nbytes")

    def __init__(self, memory: DeviceMemory, nbytes: int, what: str) -> None:
        self.addr = memory.allocate(nbytes, what)
        self.nbytes = nbytes
        weakref.finalize(self, memory.release, self.addr, nbytes)


@dataclass
class _Launch:
    """What the latest launch on a thread ran, timed on demand."""

    program: Program
    compiled: Compiled
    stats: dict[str, Any] | None = None


class NpuBackend(Backend):
    name = "npu"

    def __init__(self, variant: str = "") -> None:
        self.variant = variant
        self.device = f"npu:{variant}" if variant else "npu"
        self.config = _design(variant)
        self.design_text = to_toml(self.config)  # part of every program's cache key
        self.sim = Simulator(self.config, check_races=True)
        self.memory = DeviceMemory(self.device, self.config.dram_size)
        self.programs: dict[str, Compiled] = {}
        self.tables: dict[int, Mem] = {}  # id(compiled) -> its table in device memory
        self.argblock: Mem | None = None
        self.scratch: Mem | None = None
        self.local = threading.local()
        self.lock = threading.RLock()  # one simulator: one launch at a time
        self.stale = False  # memory was marked unwritten since the last run

    @classmethod
    def canonical_variant(cls, variant: str) -> str:
        if variant == DEFAULT or variant == "":
            return ""
        if variant in PROFILES:
            return variant
        path = Path(variant).expanduser()
        if not path.is_file():
            raise DeviceError(
                f"no npu design {variant!r}: profiles are {sorted(PROFILES)}, or give a "
                ".toml/.json design file"
            )
        full = str(path.resolve())
        try:
            _design(full)
        except (NpuError, OSError, ValueError) as e:
            raise DeviceError(f"npu design file {full}: {e}") from None
        return full

    @classmethod
    def create(cls, variant: str) -> Backend:
        return cls(variant)

    def memory_limit(self) -> int | None:
        return self.config.dram_size

    # ---- memory ----------------------------------------------------------------------
    def allocate(self, size: int, dtype: DType) -> Any:
        nbytes = size * dtype.itemsize
        mem = Mem(self.memory, nbytes, f"allocate ({dtype.name}, {size} elements)")
        self.sim.dram.ensure(mem.addr + max(nbytes, 1))
        with self.lock:
            # fresh memory reads as never written, so a kernel reading an output before
            # writing it faults; the simulator's operand cache assumes written bytes stay
            # written, so it is dropped before the next run (see docs/npu-backend.md)
            self.sim.dram.written[mem.addr : mem.addr + nbytes] = False
            self.stale = True
        return mem

    def copyin(self, handle: Any, data: np.ndarray) -> None:
        if data.dtype == np.bool_:
            data = (data.view(np.uint8) != 0).astype(np.uint8)
        with self.lock:
            self.sim.write(handle.addr, np.ascontiguousarray(data))

    def copyout(self, handle: Any, size: int, dtype: DType) -> np.ndarray:
        n = size * dtype.itemsize
        with self.lock:
            raw = self.sim.dram.data[handle.addr : handle.addr + n].copy()
        return raw.view(dtype.np)

    # ---- compile ---------------------------------------------------------------------
    def compile(self, kernel: Kernel) -> Any:
        from anychip.backends.npu import cache

        key = cache.key_of(kernel, self.design_text)
        got = self.programs.get(key)
        if got is None:
            got = cache.load(key)
            if got is None:
                try:
                    got = lower_ir(cache.kernel_ir(kernel), self.config)
                except NpuUnsupported as e:
                    raise NpuUnsupported(f"{e} (device {self.device!r})") from None
                cache.save(key, got)
            self.programs[key] = got
        return got

    # ---- launch ----------------------------------------------------------------------
    def launch(
        self, program: Any, out: Buffer, ins: list[Buffer], scalars: tuple[Scalar, ...] = ()
    ) -> None:
        comp: Compiled = program
        with self.lock:
            bufs = [out, *ins]
            pre: list[Instr] = [
                SMov(r, b.handle.addr) for r, b in zip(comp.buffer_regs(), bufs, strict=True) if r
            ]
            if comp.scalars:
                pre.append(SMov(comp.arg_reg, self._write_args(comp, scalars)))
            pre.append(SMov(comp.const_reg, self._table(comp)))
            if comp.scratch:
                pre.append(SMov(comp.scratch_reg, self._scratch(4 * comp.scratch)))
            cores = comp.cores
            if comp.relocs:  # buffers beyond the registers: their operands' addresses
                cores = relocate(cores, comp.relocs, [b.handle.addr for b in bufs])
            prog = Program(tuple(tuple(pre) + code for code in cores))
            if self.stale:
                self.sim._accesses.clear()
                self.stale = False
            self.sim.run(prog)
        run = _Launch(prog, comp)
        self.local.last = run

    def _write_args(self, comp: Compiled, scalars: tuple[Scalar, ...]) -> int:
        raw = bytearray()
        for d, v in zip(comp.scalars, scalars, strict=True):
            if d is dtypes.float32:
                raw += struct.pack("<fi", float(v), 0)
            elif d is dtypes.float64:
                raw += struct.pack("<d", float(v))
            elif d is dtypes.int64:
                raw += struct.pack("<q", int(v))
            else:
                iv = int(v)
                if not -(2**31) <= iv < 2**31:
                    raise ArgumentError(
                        f"npu: runtime scalar {iv} of kernel {comp.name} does not fit int32 "
                        f"on device {self.device!r}"
                    )
                raw += struct.pack("<ii", iv, 0)
        if self.argblock is None or self.argblock.nbytes < len(raw):
            self.argblock = Mem(self.memory, max(len(raw), 4096), "npu launch arguments")
            self.sim.dram.ensure(self.argblock.addr + self.argblock.nbytes)
        self.sim.write(self.argblock.addr, np.frombuffer(bytes(raw), np.uint8))
        return self.argblock.addr

    def _scratch(self, nbytes: int) -> int:
        """Device memory for computed gather indices (grown to the largest asked)."""
        if self.scratch is None or self.scratch.nbytes < nbytes:
            self.scratch = None
            self.scratch = Mem(self.memory, nbytes, "npu gather scratch")
            self.sim.dram.ensure(self.scratch.addr + nbytes)
        return self.scratch.addr

    def _table(self, comp: Compiled) -> int:
        mem = self.tables.get(id(comp))
        if mem is None:
            mem = Mem(self.memory, comp.consts.nbytes, f"npu tables of kernel {comp.name}")
            self.sim.dram.ensure(mem.addr + mem.nbytes)
            self.sim.write(mem.addr, comp.consts)
            self.tables[id(comp)] = mem
        return mem.addr

    def launch_stats(self) -> dict[str, Any] | None:
        run: _Launch | None = getattr(self.local, "last", None)
        return None if run is None else self._stats(run)

    def _stats(self, run: _Launch) -> dict[str, Any]:
        if run.stats is None:
            from anychip.npu.timing import simulate_timing

            rep = simulate_timing(run.program, self.config)
            cycles = rep.exact_cycles or 1.0
            units: dict[str, float] = {}
            for name, s in rep.units.items():
                unit = name.split(".", 1)[1]
                units[unit] = max(units.get(unit, 0.0), s.busy / cycles)
            run.stats = {
                "time_s": rep.seconds,
                "units": units,
                "flops": rep.flops + rep.vector_elements,
                "bytes": rep.dram_bytes,
            }
        return run.stats


BACKEND = NpuBackend
