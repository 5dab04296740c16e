"""Row-wise vector kernels: softmax and layer norm over the last dimension of (rows, cols).

Rows are split over cores; each core pipelines chunks of whole rows through the unified
buffer (dma_in -> vector -> dma_out, up to three slots), so one row must fit the buffer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from anychip.errors import ShapeError
from anychip.npu.builder import Builder, DramLayout, Tile, pipeline, program
from anychip.npu.config import NpuConfig
from anychip.npu.isa import DT, BinOp, RedOp, Space, Unit, UnOp
from anychip.npu.kernels.common import Kernel, chunks, need_shape, plan_chunks, split

PIPE = [Unit.DMA_IN, Unit.VECTOR, Unit.DMA_OUT]


def softmax(config: NpuConfig, rows: int, cols: int) -> Kernel:
    """out = softmax(x, dim=-1) for x (rows, cols) f32: max, subtract, exp, sum, divide.

    >>> from anychip.npu.config import PROFILES
    >>> k = softmax(PROFILES["edge"], 3, 4)
    >>> [d.name for d in k.inputs + k.outputs]
    ['x', 'out']
    """
    need_shape("softmax", (rows, cols))
    lay = DramLayout()
    x = lay.add("x", DT.F32, (rows, cols))
    out = lay.add("out", DT.F32, (rows, cols), init="none")
    builders = []
    for core, (lo, hi) in enumerate(split(rows, config.cores)):
        bld = Builder(config, core)
        _softmax_core(bld, lo, hi, cols, x.addr, out.addr)
        builders.append(bld)
    nbytes = 8 * rows * cols
    return Kernel("softmax", program(builders, lay.decls), (x,), (out,), 0, nbytes)


def _softmax_core(bld: Builder, lo: int, hi: int, cols: int, src: int, dst: int) -> None:
    nslots, rb = plan_chunks(bld.free_bytes(Space.UB), hi - lo, 4 * cols, scratch=4)
    slots = [bld.tile(Space.UB, rb, cols, DT.F32) for _ in range(nslots)]
    red = bld.tile(Space.UB, rb, 1, DT.F32)  # (rb, 1) row max, then row sum

    def compute(slot: Tile, item: tuple[int, int]) -> None:
        n = item[1] - item[0]
        t, r = Tile(slot.ref, n, cols, DT.F32), red.sub(0, 0, n, 1)
        bld.vreduce(RedOp.MAX, r, t, axis=1)
        bld.vbin(BinOp.SUB, t, t, r.bcast_cols(cols))  # x - max: exp cannot overflow
        bld.vun(UnOp.EXP, t, t)
        bld.vreduce(RedOp.SUM, r, t, axis=1)
        bld.vbin(BinOp.DIV, t, t, r.bcast_cols(cols))

    _rows_pipeline(bld, slots, chunks(lo, hi, rb), src, dst, cols, compute)


def layer_norm(config: NpuConfig, rows: int, cols: int, eps: float = 1e-5) -> Kernel:
    """out = (x - mean) / sqrt(var + eps) * gamma + beta over the last dim; x (rows, cols),
    gamma and beta (cols,), all f32; var is the biased variance (as torch's layer_norm).

    >>> from anychip.npu.config import PROFILES
    >>> [d.name for d in layer_norm(PROFILES["edge"], 3, 4).inputs]
    ['x', 'gamma', 'beta']
    """
    need_shape("layer_norm", (rows, cols))
    lay = DramLayout()
    x = lay.add("x", DT.F32, (rows, cols))
    gamma = lay.add("gamma", DT.F32, (cols,))
    beta = lay.add("beta", DT.F32, (cols,))
    out = lay.add("out", DT.F32, (rows, cols), init="none")
    builders = []
    for core, (lo, hi) in enumerate(split(rows, config.cores)):
        bld = Builder(config, core)
        _layer_norm_core(bld, lo, hi, cols, (x.addr, gamma.addr, beta.addr, out.addr), eps)
        builders.append(bld)
    nbytes = 8 * rows * cols + 8 * cols
    return Kernel("layer_norm", program(builders, lay.decls), (x, gamma, beta), (out,), 0, nbytes)


def _layer_norm_core(
    bld: Builder, lo: int, hi: int, cols: int, addrs: tuple[int, int, int, int], eps: float
) -> None:
    src, gamma, beta, dst = addrs
    g, bt = bld.tile(Space.UB, 1, cols, DT.F32), bld.tile(Space.UB, 1, cols, DT.F32)
    bld.load(g, gamma, 1, cols, cols)
    bld.load(bt, beta, 1, cols, cols)
    ready = bld.flag((Unit.DMA_IN, Unit.VECTOR))
    bld.set(Unit.DMA_IN, Unit.VECTOR, ready)
    # each chunk row needs a row in every slot, plus one of the (rb, cols) square scratch
    free = bld.free_bytes(Space.UB)
    nslots, rb = plan_chunks(free, hi - lo, 4 * cols, scratch=4 * cols + 4)
    slots = [bld.tile(Space.UB, rb, cols, DT.F32) for _ in range(nslots)]
    sq, stat = bld.tile(Space.UB, rb, cols, DT.F32), bld.tile(Space.UB, rb, 1, DT.F32)
    pending = [ready]  # the flag the first compute waits on: gamma and beta have landed

    def compute(slot: Tile, item: tuple[int, int]) -> None:
        while pending:
            bld.wait(Unit.DMA_IN, Unit.VECTOR, pending.pop())
        n = item[1] - item[0]
        t, s, q = Tile(slot.ref, n, cols, DT.F32), stat.sub(0, 0, n, 1), sq.sub(0, 0, n, cols)
        bld.vreduce(RedOp.SUM, s, t, axis=1)
        bld.vscalar(BinOp.DIV, s, s, cols)  # (n, 1) mean
        bld.vbin(BinOp.SUB, t, t, s.bcast_cols(cols))  # centred first: a two-pass variance
        bld.vbin(BinOp.MUL, q, t, t)
        bld.vreduce(RedOp.SUM, s, q, axis=1)
        bld.vscalar(BinOp.DIV, s, s, cols)
        bld.vscalar(BinOp.ADD, s, s, eps)
        bld.vun(UnOp.RSQRT, s, s)  # (n, 1) 1 / sqrt(var + eps)
        bld.vbin(BinOp.MUL, t, t, s.bcast_cols(cols))
        bld.vbin(BinOp.MUL, t, t, g.bcast_rows(n))
        bld.vbin(BinOp.ADD, t, t, bt.bcast_rows(n))

    _rows_pipeline(bld, slots, chunks(lo, hi, rb), src, dst, cols, compute)


def _rows_pipeline(
    bld: Builder, slots: list[Tile], items: list[tuple[int, int]], src: int, dst: int,
    cols: int, compute: Any,
) -> None:  # fmt: skip
    """Loads chunks of rows [r0, r1) of a (rows, cols) f32 array, computes, stores them."""

    def load(slot: Tile, item: tuple[int, int]) -> None:
        n = item[1] - item[0]
        bld.load(Tile(slot.ref, n, cols, DT.F32), src + 4 * item[0] * cols, n, cols, cols)

    def store(slot: Tile, item: tuple[int, int]) -> None:
        n = item[1] - item[0]
        bld.store(dst + 4 * item[0] * cols, cols, Tile(slot.ref, n, cols, DT.F32))

    pipeline(bld, PIPE, slots, items, [load, compute, store])
    bld.finish()


def _check2d(name: str, x: np.ndarray) -> None:
    if x.ndim != 2:
        raise ShapeError(f"npu {name}: needs a 2-D (rows, cols) input, got shape {x.shape}")


def run_softmax(config: NpuConfig, x: Any) -> np.ndarray:
    """softmax(x, dim=-1) of a 2-D array on the functional simulator (f32).

    >>> from anychip.npu.config import PROFILES
    >>> run_softmax(PROFILES["edge"], np.zeros((1, 4))).tolist()
    [[0.25, 0.25, 0.25, 0.25]]
    """
    x = np.asarray(x)
    _check2d("softmax", x)
    out, _ = softmax(config, x.shape[0], x.shape[1]).run(config, {"x": x})
    return out["out"]


def run_layer_norm(
    config: NpuConfig, x: Any, gamma: Any, beta: Any, eps: float = 1e-5
) -> np.ndarray:
    """layer_norm(x, (cols,), gamma, beta, eps) of a 2-D array on the functional simulator.

    >>> from anychip.npu.config import PROFILES
    >>> run_layer_norm(PROFILES["edge"], [[1.0, 3.0]], [1.0, 1.0], [0.0, 0.0], 0.0).tolist()
    [[-1.0, 1.0]]
    """
    x = np.asarray(x)
    _check2d("layer_norm", x)
    kern = layer_norm(config, x.shape[0], x.shape[1], eps=eps)
    out, _ = kern.run(config, {"x": x, "gamma": gamma, "beta": beta})
    return out["out"]
