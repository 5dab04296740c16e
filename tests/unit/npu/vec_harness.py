"""Runs one vector instruction on the functional simulator: inputs go to `ub` by DMA, the
instruction runs, its result comes back to device memory (flags order the three units)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from anychip.npu.config import PROFILES
from anychip.npu.isa import DT, Dma, Finish, Instr, Ref, SetFlag, Space, Unit, WaitFlag
from anychip.npu.program import Program
from anychip.npu.simulator import Simulator


def _io(dt: DT, dst: Ref, src: Ref, rows: int, cols: int) -> Dma:
    return Dma(dt, dst, src, (1, rows, cols), (0, cols, 1), (0, cols, 1), (1, rows, cols))


def run_vec(
    make: Callable[[list[Ref], Ref], Instr],
    inputs: Sequence[tuple[np.ndarray, DT]],
    out_dt: DT,
    out_shape: tuple[int, int] | None = None,
    design: str = "edge",
) -> np.ndarray:
    """The (rows, cols) result of `make(input refs in ub, output ref in ub)`; inputs are
    2-D host arrays and their chip types (bf16 given as float values)."""
    sim = Simulator(PROFILES[design])
    code: list[Instr] = []
    refs: list[Ref] = []
    off = 0
    for arr, dt in inputs:
        rows, cols = arr.shape
        addr = sim.put(arr, dt)
        ref = Ref(Space.UB, off)
        code.append(_io(dt, ref, Ref(Space.DRAM, addr), rows, cols))
        refs.append(ref)
        off += -(-rows * cols * dt.itemsize // 64) * 64
    rows, cols = out_shape or inputs[0][0].shape
    out = Ref(Space.UB, off)
    y = sim.alloc(rows * cols * out_dt.itemsize)
    code += [SetFlag(Unit.DMA_IN, Unit.VECTOR, 0), WaitFlag(Unit.DMA_IN, Unit.VECTOR, 0)]
    code.append(make(refs, out))
    code += [SetFlag(Unit.VECTOR, Unit.DMA_OUT, 0), WaitFlag(Unit.VECTOR, Unit.DMA_OUT, 0)]
    code += [_io(out_dt, Ref(Space.DRAM, y), out, rows, cols), Finish()]
    sim.run(Program((tuple(code),)))
    return sim.get(y, (rows, cols), out_dt)


def dense(rows: int, cols: int) -> tuple[int, int]:
    """Row-major strides of a (rows, cols) operand."""
    return (cols, 1)
