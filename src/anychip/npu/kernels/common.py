"""What every kernel of the library returns: a Program plus how to lay out its inputs and
read its outputs, and the helpers kernels share (splitting work over cores, running).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from anychip.errors import ShapeError
from anychip.npu import numerics as nx
from anychip.npu.config import NpuConfig
from anychip.npu.program import DataDecl, Program
from anychip.npu.simulator import RunStats, Simulator

Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class Kernel:
    """A built kernel: its program, its device data, and its useful work.

    `inputs`/`outputs` are the DataDecls the host fills and reads (also in `program.data`);
    `flops` counts useful floating-point operations (2 per multiply-accumulate) and
    `dram_bytes` the least device-memory traffic any schedule needs (each input read once,
    each output written once): the numerators of utilisation and bandwidth figures.
    """

    name: str
    program: Program
    inputs: tuple[DataDecl, ...]
    outputs: tuple[DataDecl, ...]
    flops: int = 0
    dram_bytes: int = 0

    def run(
        self, config: NpuConfig, arrays: Mapping[str, Any], check_races: bool = True
    ) -> tuple[dict[str, Array], RunStats]:
        """Runs on the functional simulator: writes `arrays` (host values, rounded to each
        input's dtype), executes, returns the outputs (float32 for bf16) and the run stats.

        >>> from anychip.npu.config import PROFILES
        >>> from anychip.npu.kernels import elementwise
        >>> k = elementwise(PROFILES["edge"], "relu", 5)
        >>> k.run(PROFILES["edge"], {"a": [-1, 2, -3, 4, 0]})[0]["out"].tolist()
        [0.0, 2.0, 0.0, 4.0, 0.0]
        """
        sim = Simulator(config, check_races=check_races)
        for d in self.inputs:
            if d.name not in arrays:
                raise ShapeError(f"npu kernel {self.name}: input {d.name!r} missing")
            values = np.asarray(arrays[d.name])
            if values.size != int(np.prod(d.shape)):
                raise ShapeError(
                    f"npu kernel {self.name}: input {d.name!r} has shape {values.shape}, "
                    f"the kernel was built for {d.shape}"
                )
            sim.write(d.addr, nx.to_storage(values.reshape(d.shape), d.dtype))
        stats = sim.run(self.program)
        outs = {d.name: sim.get(d.addr, d.shape, d.dtype) for d in self.outputs}
        return outs, stats


def split(total: int, parts: int) -> list[tuple[int, int]]:
    """`total` items as up to `parts` contiguous (start, stop) ranges of near-equal size.

    >>> split(10, 4)
    [(0, 3), (3, 6), (6, 8), (8, 10)]
    """
    parts = max(1, min(parts, total))
    base, extra = divmod(total, parts)
    out, start = [], 0
    for p in range(parts):
        stop = start + base + (1 if p < extra else 0)
        out.append((start, stop))
        start = stop
    return out


def chunks(start: int, stop: int, size: int) -> list[tuple[int, int]]:
    """[start, stop) cut into pieces of at most `size`.

    >>> chunks(0, 10, 4)
    [(0, 4), (4, 8), (8, 10)]
    """
    return [(s, min(s + size, stop)) for s in range(start, stop, size)]


def need_shape(name: str, dims: Sequence[int]) -> None:
    """ShapeError unless every problem dimension is a positive integer."""
    if any(not isinstance(d, (int, np.integer)) or d < 1 for d in dims):
        raise ShapeError(f"npu kernel {name}: sizes must be integers >= 1, got {tuple(dims)}")


def plan_chunks(
    free: int, total: int, unit_bytes: int, scratch: int = 0, max_slots: int = 3, parts: int = 4
) -> tuple[int, int]:
    """(slots, items per chunk) for a ring of slots in `free` bytes of a buffer.

    Each chunk item takes `unit_bytes` in every slot and `scratch` bytes once (temporaries
    only the compute unit touches). Chunks are capped so that `total` items make at least
    `parts` chunks (pipelining needs several); alignment gaps are allowed for.

    >>> plan_chunks(1 << 16, 1000, 64)
    (3, 250)
    """
    for slots in range(max_slots, 0, -1):
        room = free - 64 * 4 * (slots + 4)
        per = room // (slots * unit_bytes + scratch) if room > 0 else 0
        if per >= 1:
            return slots, max(1, min(per, -(-total // parts)))
    raise ShapeError(
        f"npu kernel: one item of {unit_bytes} bytes per slot (plus {scratch} scratch) does "
        f"not fit the {free} free bytes of the unified buffer"
    )
