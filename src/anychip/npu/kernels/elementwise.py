"""Elementwise kernels on the vector unit: unary activations, binary ops and a*b+c over
flat arrays, streamed through the unified buffer at device-memory speed.

The array is split over cores; each core pipelines chunks (dma_in -> vector -> dma_out)
over up to three input slots and three result slots, so loads, compute and stores of
different chunks overlap.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from anychip.errors import DTypeError, ShapeError
from anychip.npu.builder import Builder, DramLayout, Ring, Tile, program
from anychip.npu.config import NpuConfig
from anychip.npu.isa import DT, BinOp, Space, Unit, UnOp
from anychip.npu.kernels.common import Kernel, chunks, need_shape, plan_chunks, split
from anychip.npu.program import DataDecl

UNARY = tuple(o.name.lower() for o in UnOp)
BINARY = tuple(o.name.lower() for o in BinOp)
OPS = (*UNARY, *BINARY, "fma")


def arity(op: str) -> int:
    """How many inputs `op` takes: 1 (relu, gelu, ...), 2 (add, mul, ...) or 3 (fma).

    >>> [arity(o) for o in ("gelu", "mul", "fma")]
    [1, 2, 3]
    """
    if op in UNARY:
        return 1
    if op in BINARY:
        return 2
    if op == "fma":
        return 3
    raise ShapeError(f"npu elementwise: unknown op {op!r}; ops: {', '.join(OPS)}")


def elementwise(config: NpuConfig, op: str, n: int, dtype: DT = DT.F32) -> Kernel:
    """out = op(a) | a op b | a * b + c (fma: two roundings) over `n` elements of `dtype`.

    Device data: inputs `a` (and `b`, `c`) and the output `out`, each (n,) of `dtype`.

    >>> from anychip.npu.config import PROFILES
    >>> k = elementwise(PROFILES["cube"], "fma", 1000)
    >>> [d.name for d in k.inputs], k.dram_bytes
    (['a', 'b', 'c'], 16000)
    """
    need_shape("elementwise", (n,))
    nin = arity(op)
    if dtype not in (DT.F32, DT.F16, DT.BF16) or dtype.name.lower() not in config.vector_dtypes:
        raise DTypeError(
            f"npu elementwise: dtype {dtype.name.lower()} is not a float type the vector unit "
            f"of design {config.name!r} supports ({', '.join(config.vector_dtypes)})"
        )
    lay = DramLayout()
    ins = [lay.add(name, dtype, (n,)) for name in "abc"[:nin]]
    out = lay.add("out", dtype, (n,), init="none")
    builders = []
    for core, (lo, hi) in enumerate(split(n, config.cores)):
        bld = Builder(config, core)
        _core(bld, op, lo, hi, ins, out)
        builders.append(bld)
    nbytes = (nin + 1) * n * dtype.itemsize
    return Kernel(f"elementwise_{op}", program(builders, lay.decls), tuple(ins), (out,), 0, nbytes)


def _core(bld: Builder, op: str, lo: int, hi: int, ins: list[DataDecl], out: DataDecl) -> None:
    """Inputs and results in separate rings: an input slot is free again as soon as the
    vector unit has read it, not only once its result has landed in device memory, so
    fewer bytes wait on device-memory latency and more are in flight (docs/npu-timing.md)."""
    dt, size = out.dtype, out.dtype.itemsize
    nslots, per = plan_chunks(bld.free_bytes(Space.UB), hi - lo, (len(ins) + 1) * size)
    per = max(1, per - per % (64 // size)) if per >= 64 // size else per  # aligned chunks
    in_ring = Ring(
        bld,
        [Unit.DMA_IN, Unit.VECTOR],
        [[bld.tile(Space.UB, 1, per, dt) for _ in ins] for _ in range(nslots)],
    )
    out_ring = Ring(bld, [Unit.VECTOR, Unit.DMA_OUT],
                    [bld.tile(Space.UB, 1, per, dt) for _ in range(nslots)])  # fmt: skip
    items = chunks(lo, hi, per)

    def view(tile: Tile, item: tuple[int, int]) -> Tile:
        return Tile(tile.ref, 1, item[1] - item[0], dt)  # (1, len)

    def load(item: tuple[int, int]) -> None:
        for tile, src in zip(in_ring.enter(0), ins, strict=True):
            bld.load(view(tile, item), src.addr + size * item[0], 1, item[1] - item[0], per)
        in_ring.leave(0)

    def compute_store(item: tuple[int, int]) -> None:
        t = [view(x, item) for x in in_ring.enter(1)]
        res = view(out_ring.enter(0), item)
        if op == "fma":
            bld.vbin(BinOp.MUL, res, t[0], t[1])
            bld.vbin(BinOp.ADD, res, res, t[2])
        elif len(t) == 2:
            bld.vbin(BinOp[op.upper()], res, t[0], t[1])
        else:
            bld.vun(UnOp[op.upper()], res, t[0])
        in_ring.leave(1)
        out_ring.leave(0)
        bld.store(out.addr + size * item[0], per, view(out_ring.enter(1), item))
        out_ring.leave(1)

    ahead = nslots - 1  # loads run this many chunks ahead of compute and store
    for i in range(len(items) + ahead):
        if i < len(items):
            load(items[i])
        if i >= ahead:
            compute_store(items[i - ahead])
    in_ring.drain()
    out_ring.drain()
    bld.finish()


def run_elementwise(config: NpuConfig, op: str, *arrays: Any, dtype: DT = DT.F32) -> np.ndarray:
    """op over same-shape arrays on the functional simulator; returns `dtype` values (bf16
    as float32) in the inputs' shape.

    >>> from anychip.npu.config import PROFILES
    >>> run_elementwise(PROFILES["edge"], "fma", [1.0, 2.0], [3.0, 4.0], [0.5, 0.5]).tolist()
    [3.5, 8.5]
    """
    xs = [np.asarray(a) for a in arrays]
    if len(xs) != arity(op) or any(x.shape != xs[0].shape for x in xs):
        raise ShapeError(
            f"npu elementwise {op}: needs {arity(op)} arrays of one shape, got "
            f"{[x.shape for x in xs]}"
        )
    kern = elementwise(config, op, xs[0].size, dtype)
    res, _ = kern.run(config, {name: x.ravel() for name, x in zip("abc", xs, strict=False)})
    return res["out"].reshape(xs[0].shape)
