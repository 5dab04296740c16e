"""Embedding-bag (sum mode): out[b] = sum of weight rows indices[offsets[b]:offsets[b+1]],
with the gather DMA driven by an on-chip index list and the sums on the vector unit.

Bag boundaries (offsets) are fixed when the program is built, as a host knows them when it
launches a batch; the indices are device data. Bags are split over cores; each core pipelines
chunks of consecutive indices (index load + gather -> bag sums -> store of finished bags).
A bag longer than a chunk is summed piece by piece into a carry row.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from anychip.errors import ShapeError
from anychip.npu.builder import Builder, DramLayout, Tile, pipeline, program
from anychip.npu.config import NpuConfig
from anychip.npu.isa import DT, BinOp, RedOp, Space, Unit
from anychip.npu.kernels.common import Kernel, need_shape, plan_chunks, split
from anychip.npu.program import DataDecl


@dataclass
class _Chunk:
    """Indices [lo, hi) and the bag pieces (bag, start, stop, first, last) that cover them."""

    lo: int
    hi: int
    pieces: list[tuple[int, int, int, bool, bool]] = field(default_factory=list)

    @property
    def finished(self) -> list[int]:
        """The bags whose last piece is in this chunk (consecutive bag numbers)."""
        return [p[0] for p in self.pieces if p[4]]


def _chunks(bounds: list[tuple[int, int]], cap: int) -> list[_Chunk]:
    """Packs bags (start, stop) in order into chunks of at most `cap` indices and `cap`
    finished bags, cutting long bags into pieces."""
    out: list[_Chunk] = []
    cur = _Chunk(bounds[0][0], bounds[0][0]) if bounds else _Chunk(0, 0)
    for bag, (s, e) in enumerate(bounds):
        pos, first = s, True
        while True:
            if cur.hi - cur.lo == cap or len(cur.finished) == cap:
                out.append(cur)
                cur = _Chunk(pos, pos)
            take = min(cap - (cur.hi - cur.lo), e - pos)
            last = pos + take == e
            cur.pieces.append((bag, pos, pos + take, first, last))
            cur.hi, pos, first = pos + take, pos + take, False
            if last:
                break
    if cur.pieces:
        out.append(cur)
    return out


def _bounds(offsets: Sequence[int], num_indices: int) -> list[tuple[int, int]]:
    offs = [int(o) for o in offsets]
    ok = bool(offs) and offs[0] == 0 and all(a <= b for a, b in itertools.pairwise(offs))
    if not ok or offs[-1] > num_indices:
        raise ShapeError(
            f"npu embedding_bag: offsets must start at 0, not decrease and stay <= "
            f"{num_indices} indices, got {offs[:8]}{'...' if len(offs) > 8 else ''}"
        )
    ends = [*offs[1:], num_indices]
    return list(zip(offs, ends, strict=True))


def embedding_bag(
    config: NpuConfig, num_embeddings: int, dim: int, offsets: Sequence[int], num_indices: int
) -> Kernel:
    """out (bags, dim) f32: bag b sums weight rows indices[offsets[b]:offsets[b+1]] (the
    last bag runs to the end; an empty bag gives zeros), as torch's embedding_bag(mode='sum').

    Device data: `weight` (num_embeddings, dim) f32, `indices` (num_indices,) i32, `out`.

    >>> from anychip.npu.config import PROFILES
    >>> k = embedding_bag(PROFILES["edge"], 10, 4, [0, 2], 5)
    >>> [d.name for d in k.inputs], k.outputs[0].shape
    (['weight', 'indices'], (2, 4))
    """
    need_shape("embedding_bag", (num_embeddings, dim, num_indices))
    bounds = _bounds(offsets, num_indices)
    lay = DramLayout()
    weight = lay.add("weight", DT.F32, (num_embeddings, dim))
    indices = lay.add("indices", DT.I32, (num_indices,), init="zeros")
    out = lay.add("out", DT.F32, (len(bounds), dim), init="none")
    builders = []
    for core, (b0, b1) in enumerate(split(len(bounds), config.cores)):
        bld = Builder(config, core)
        _core(bld, bounds[b0:b1], b0, (weight, indices, out))
        builders.append(bld)
    nbytes = 4 * (num_indices + num_indices * dim + len(bounds) * dim)
    prog = program(builders, lay.decls)
    return Kernel("embedding_bag", prog, (weight, indices), (out,), 0, nbytes)


def _core(
    bld: Builder, bounds: list[tuple[int, int]], bag0: int, decls: tuple[DataDecl, ...]
) -> None:
    weight, indices, out = decls
    rows, dim = weight.shape
    # per chunk item (one index and one output row per slot): index, gathered row, out row
    total = max(bounds[-1][1] - bounds[0][0], len(bounds))
    nslots, cap = plan_chunks(bld.free_bytes(Space.UB), total, 4 + 8 * dim)
    slots = [
        (bld.tile(Space.UB, 1, cap, DT.I32), bld.tile(Space.UB, cap, dim, DT.F32),
         bld.tile(Space.UB, cap, dim, DT.F32))
        for _ in range(nslots)
    ]  # fmt: skip
    carry, part = bld.tile(Space.UB, 1, dim, DT.F32), bld.tile(Space.UB, 1, dim, DT.F32)

    def load(slot: tuple[Tile, Tile, Tile], ch: _Chunk) -> None:
        n = ch.hi - ch.lo
        if n:  # the chunk's indices, then the rows they name
            idx = Tile(slot[0].ref, 1, n, DT.I32)
            bld.load(idx, indices.addr + 4 * ch.lo, 1, n, n)
            bld.gather(Tile(slot[1].ref, n, dim, DT.F32), weight.addr, idx.ref, n, rows, dim)

    def compute(slot: tuple[Tile, Tile, Tile], ch: _Chunk) -> None:
        done = ch.finished
        for bag, s, e, first, last in ch.pieces:
            got = slot[1].sub(s - ch.lo, 0, e - s, dim)  # (e - s, dim) gathered rows
            dst = slot[2].sub(bag - done[0], 0, 1, dim) if last else (carry if first else part)
            if e == s:  # an empty bag (or nothing left of one): zeros
                bld.vdup(dst, 0.0)
            else:  # (e - s, dim) rows -> (1, dim) column sums
                bld.vreduce(RedOp.SUM, dst, got, axis=0)
            if not first:  # add what earlier chunks summed of this bag
                bld.vbin(BinOp.ADD, dst if last else carry, dst, carry)

    def store(slot: tuple[Tile, Tile, Tile], ch: _Chunk) -> None:
        done = ch.finished
        if done:
            at = out.addr + 4 * (bag0 + done[0]) * dim
            bld.store(at, dim, slot[2].sub(0, 0, len(done), dim))

    units = [Unit.DMA_IN, Unit.VECTOR, Unit.DMA_OUT]
    pipeline(bld, units, slots, _chunks(bounds, cap), [load, compute, store])
    bld.finish()


def run_embedding_bag(
    config: NpuConfig, weight: Any, indices: Any, offsets: Sequence[int]
) -> np.ndarray:
    """embedding_bag(indices, weight, offsets, mode='sum') on the functional simulator.

    >>> from anychip.npu.config import PROFILES
    >>> w = np.arange(6.0).reshape(3, 2)
    >>> run_embedding_bag(PROFILES["edge"], w, [0, 2, 2, 1], [0, 3]).tolist()
    [[8.0, 11.0], [2.0, 3.0]]
    """
    w, idx = np.asarray(weight), np.asarray(indices)
    if w.ndim != 2 or idx.ndim != 1:
        raise ShapeError(
            f"npu embedding_bag: needs weight (rows, dim) and 1-D indices, got {w.shape}, "
            f"{idx.shape}"
        )
    kern = embedding_bag(config, w.shape[0], w.shape[1], offsets, idx.size)
    res, _ = kern.run(config, {"weight": w, "indices": idx})
    return res["out"]
