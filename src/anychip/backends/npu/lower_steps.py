"""Steps and the ring they flow through: which iteration points a step covers (frames), a
step's loads, vector code and stores, and one core's instruction stream with its flags
(`_emit`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from anychip.backends.npu.lower_exprs import (
    Affine,
)
from anychip.ir.kernel import (
    Loop,
    Stmt,
)
from anychip.ir.ops import Ops
from anychip.npu.builder import Tile
from anychip.npu.isa import (
    DT,
    Barrier,
    Dma,
    Finish,
    Instr,
    Ref,
    ScatterAdd,
    SetFlag,
    Space,
    Unit,
    VBin,
    VCast,
    VCmp,
    VCmpS,
    VDup,
    VScalar,
    VScalarR,
    VSel,
    VUn,
    WaitFlag,
)

if TYPE_CHECKING:
    from anychip.backends.npu.lower import CoreLowering


SLOTS = 3  # unified-buffer slots steps rotate through (`CoreLowering.slots`, more for a
# row kernel): the loads of a step are issued up to SLOTS - 1 steps ahead
KEEP_REGIONS = 4  # a row kernel's group regions (`CoreLowering.keep`), groups in turn
ROW_SLOTS = 9  # a row kernel's slots, where its steps fit them (`lower_reuse.row_slots`)
_F_LOAD, _F_FREE, _F_OUT, _F_DONE, _F_ARGS, _F_SFREE, _F_KEEP = 0, 1, 2, 3, 4, 5, 6
_F_SORT = 7  # dma_out -> vector: a long sort's scatter has read its places (`lower_sort`)


class _TooBig(Exception):
    """A step's tiles do not fit the unified buffer: compile again with smaller tiles."""


# ---- frames: which iteration points a step covers --------------------------------------
@dataclass(frozen=True)
class Frame:
    """rows x cols points; loop variable v = base[v] + r*rstep[v] + c*cstep[v]."""

    rows: int
    cols: int
    base: dict[str, int]
    rstep: dict[str, int] = field(default_factory=dict)
    cstep: dict[str, int] = field(default_factory=dict)

    def at(self, a: Affine) -> tuple[int, int, int]:
        """(start, row stride, col stride) of an affine form over this frame."""
        c, ks = a
        start = c + sum(k * self.base[v] for v, k in ks.items())
        rs = sum(k * self.rstep.get(v, 0) for v, k in ks.items())
        cs = sum(k * self.cstep.get(v, 0) for v, k in ks.items())
        return start, rs, cs

    def grid(self) -> dict[str, np.ndarray]:
        r = np.arange(self.rows, dtype=np.int64)[:, None]
        c = np.arange(self.cols, dtype=np.int64)[None, :]
        return {
            v: b + r * self.rstep.get(v, 0) + c * self.cstep.get(v, 0) for v, b in self.base.items()
        }


def _blocks(extent: int, size: int) -> Iterator[tuple[int, int]]:
    for lo in range(0, extent, size):
        yield lo, min(size, extent - lo)


def _long_frames(
    base: dict[str, int], var: str, extent: int, elems: int, width: int
) -> list[Frame]:
    """Frames covering var = 0..extent-1 as (rows, width) boxes of consecutive points."""
    out: list[Frame] = []
    if extent == 0:
        return out
    cols = min(extent, width)
    rows = max(1, elems // cols)
    lo = 0
    while lo < extent:
        left = extent - lo
        if left >= cols:
            r = min(rows, left // cols)
            out.append(Frame(r, cols, {**base, var: lo}, {var: cols}, {var: 1}))
            lo += r * cols
        else:
            out.append(Frame(1, left, {**base, var: lo}, {var: cols}, {var: 1}))
            lo += left
    return out


def _has_loop(body: tuple[Stmt, ...]) -> bool:
    return any(isinstance(s, Loop) for s in body)


# ---- one step: loads, vector code, stores ------------------------------------------------
@dataclass
class Step:
    group: int = 0  # the group of rows it belongs to (`CoreLowering.new_group`)
    keep_loads: list[Instr] = field(default_factory=list)  # into the group's region
    loads: list[Instr] = field(default_factory=list)
    compute: list[Instr] = field(default_factory=list)
    stores: list[Instr] = field(default_factory=list)
    reads: list[tuple[int, int, int]] = field(default_factory=list)  # (buf, lo, hi) elements
    writes: list[tuple[int, int, int]] = field(default_factory=list)
    # its stores read only group memory whose reuse waits on flags of their own
    # (`lower_sort`): the vector work of the step `slots` later need not wait for them
    detached: bool = False


@dataclass
class Val:
    """A computed value: a tile (maybe broadcast) of the chip's element type `kind`."""

    tile: Tile
    kind: DT


class _AccState:
    def __init__(self, op: Ops, kind: DT, tile: Tile, partials: Tile | None) -> None:
        self.op, self.kind, self.tile, self.partials = op, kind, tile, partials
        self.used = 0  # partial columns holding values
        self.wrap = False  # an int8 sum or product, held in i16: wrapped to int8 when read


def _box_dma(dt: DT, dst: Ref, src: Ref, shape: tuple[int, int], dst_strides: tuple[int, int],
             src_strides: tuple[int, int], pad: tuple[int, int] | None = None) -> Dma:  # fmt: skip
    """A (rows, cols) box copy, walked so that device memory is read or written in runs:
    when the device-memory side is contiguous down the rows (a transposed box, `x.T`, a
    column of an accumulator form) the DMA walks columns outer, rows inner, and moves
    runs of `rows` elements instead of single elements."""
    d = dst_strides if dst.space == Space.DRAM else src_strides  # the device-memory side
    box, p = (1, *shape), (1, *(pad or shape))
    if abs(d[0]) == 1 and abs(d[1]) > 1 and shape[0] > 1 and p == box:
        t = (1, shape[1], shape[0])
        return Dma(dt, dst, src, t, (0, dst_strides[1], dst_strides[0]),
                   (0, src_strides[1], src_strides[0]), t)  # fmt: skip
    return Dma(dt, dst, src, box, (0, *dst_strides), (0, *src_strides), p)


_ELEMENTWISE = (VBin, VCast, VCmp, VCmpS, VDup, VScalar, VScalarR, VSel, VUn)


def _as_row(inst: Instr) -> Instr:
    """An elementwise instruction on a (rows, 1) column (a row kernel's per-row values:
    its mean, its `1 / sum`) as the same elements walked as one (1, rows) row. A column
    with a broadcast operand starts a lane group per row (rows cycles); as a row it is one
    group (`npu/costs.py` `vector_cycles`). Other instructions come back unchanged."""
    if not isinstance(inst, _ELEMENTWISE) or inst.shape[1] != 1 or inst.shape[0] == 1:
        return inst
    rows = inst.shape[0]
    new: dict[str, object] = {"shape": (1, rows)}
    for f in dataclasses.fields(inst):
        if f.name.endswith("_strides"):
            sr = getattr(inst, f.name)[0]
            new[f.name] = (sr * rows, sr)
    return dataclasses.replace(inst, **new)  # type: ignore[arg-type]


def _overlaps(reads: list[tuple[int, int, int]], dirty: list[tuple[int, int, int]]) -> bool:
    return any(b == d and lo < dhi and dlo < hi for b, lo, hi in reads for d, dlo, dhi in dirty)


def _ub_span(dt: DT, ref: Ref, shape: tuple[int, ...], strides: tuple[int, ...]) -> tuple[int, int]:
    """[lo, hi) bytes of `ub` a strided box at `ref` touches (its bounding interval)."""
    lo = sum(min(0, (k - 1) * s) for k, s in zip(shape, strides, strict=True))
    hi = sum(max(0, (k - 1) * s) for k, s in zip(shape, strides, strict=True))
    return ref.off + lo * dt.itemsize, ref.off + (hi + 1) * dt.itemsize


def _ub_clash(stores: list[Instr], loads: list[Instr]) -> bool:
    """True unless every store is a DMA or a scatter-add from `ub` (and flags) and every
    load a DMA into `ub` whose bytes none of the stores reads (an instruction of another
    form counts as a clash)."""
    reads: list[tuple[int, int]] = []
    for st in stores:
        if isinstance(st, SetFlag):
            continue
        if isinstance(st, ScatterAdd) and all(r.space == Space.UB and r.reg == 0
                                              for r in (st.src, st.index)):  # fmt: skip
            reads.append(_ub_span(st.dtype, st.src, (st.count, st.row_len), (st.src_stride, 1)))
            reads.append(_ub_span(st.op.dtype, st.index, (st.count,), (1,)))
            continue
        if not isinstance(st, Dma) or st.src.space != Space.UB or st.src.reg != 0:
            return True
        reads.append(_ub_span(st.dtype, st.src, st.shape, st.src_strides))
    for ld in loads:
        if not isinstance(ld, Dma) or ld.dst.space != Space.UB or ld.dst.reg != 0:
            return True
        lo, hi = _ub_span(ld.dtype, ld.dst, ld.pad, ld.dst_strides)
        if any(lo < rhi and rlo < hi for rlo, rhi in reads):
            return True
    return False


def _keep_loads(steps: list[Step], slots: int) -> tuple[dict[int, list[list[Instr]]], set[int]]:
    """Where each group's loads into its `ub` region go: {step i: the groups' loads issued
    right after step i's loads}, and the first steps of those groups (whose vector work
    waits for them). They follow the loads of a step before the group's first, and not
    before the loads of the step `slots` after the last step of group h - KEEP_REGIONS,
    which used the region last: those wait for that step's vector work (`_F_FREE`). The
    loads of `slots - 1` steps ahead go out before a step's vector work, so a group's
    rows load while the vector unit works on the groups before it. (A later step's
    loads wait for them too, `setf` counting all earlier work: a row kernel's steps load
    nothing else.)"""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    loads: dict[int, list[Instr]] = {}
    for i, st in enumerate(steps):
        first.setdefault(st.group, i)
        last[st.group] = i
        if st.keep_loads:
            loads.setdefault(st.group, []).extend(st.keep_loads)
    due: dict[int, list[list[Instr]]] = {}
    for h, group in sorted(loads.items()):
        back = last.get(h - KEEP_REGIONS)
        lo = 0 if back is None else back + slots
        at = max(lo, first[h] - 1)
        if at > first[h]:  # groups of fewer steps than loops: `lower_ir` tries fewer slots
            raise _TooBig
        while at > lo and at - slots >= 0 and steps[at - slots].stores:
            at -= 1  # not as the stores of the step it waits for start: both share ports
        due.setdefault(at, []).append(group)
    return due, {first[h] for h in loads}


def _emit(cl: CoreLowering) -> list[Instr]:
    """One core's stream: prologue, then the steps through a ring of `cl.slots` slots, the
    loads of steps i+1 .. i+slots-1 issued before the vector work of step i (multiple
    buffering). A step reading device memory an earlier step wrote waits until those
    stores are issued and then lets every unit drain (a barrier). The loads into a slot
    wait for the previous occupant's stores to land only where they overwrite what those
    stores read: a store's latency is otherwise off the loads' path (`_ub_clash`). A
    group's loads into its `ub` region (`CoreLowering.keep`) are issued early
    (`_keep_loads`), the vector unit waiting for them at the group's first step."""
    code: list[Instr] = list(cl.prologue)
    steps = list(cl.steps)
    slots = cl.slots
    due, first = _keep_loads(steps, slots)
    dirty: list[tuple[int, int, int]] = []
    n = len(steps)
    # sfree[i]: step i + slots's loads wait for step i's stores; the last slots steps'
    # flags are the drain's at the end
    sfree = [i + slots >= n or _ub_clash(steps[i].stores, steps[i + slots].loads)
             for i in range(n)]  # fmt: skip
    # out[i]: step i + slots's vector work waits for step i's stores (a step without
    # stores sets no flag: its wait would be for the stores before it, latency and all)
    out = [i + slots >= n or (bool(steps[i].stores) and not steps[i].detached)
           for i in range(n)]  # fmt: skip
    # a step without loads sets and waits for no _F_LOAD (nor for the loads before it)
    inn = [bool(st.loads) for st in steps]

    def load(i: int) -> None:
        if i >= slots:  # slot i % slots: read by step i - slots's vector work and stores
            code.append(WaitFlag(Unit.VECTOR, Unit.DMA_IN, _F_FREE))
            if sfree[i - slots]:
                code.append(WaitFlag(Unit.DMA_OUT, Unit.DMA_IN, _F_SFREE))
        code.extend(steps[i].loads)
        if inn[i]:
            code.append(SetFlag(Unit.DMA_IN, Unit.VECTOR, _F_LOAD))
        for group in due.get(i, []):
            code.extend(group)
            code.append(SetFlag(Unit.DMA_IN, Unit.VECTOR, _F_KEEP))

    def rest(i: int) -> None:
        if inn[i]:
            code.append(WaitFlag(Unit.DMA_IN, Unit.VECTOR, _F_LOAD))
        if i >= slots and out[i - slots]:
            code.append(WaitFlag(Unit.DMA_OUT, Unit.VECTOR, _F_OUT))
        if i in first:
            code.append(WaitFlag(Unit.DMA_IN, Unit.VECTOR, _F_KEEP))
        code.extend(steps[i].compute)
        code.append(SetFlag(Unit.VECTOR, Unit.DMA_IN, _F_FREE))
        if steps[i].stores:
            code.append(SetFlag(Unit.VECTOR, Unit.DMA_OUT, _F_DONE))
            code.append(WaitFlag(Unit.VECTOR, Unit.DMA_OUT, _F_DONE))
            code.extend(steps[i].stores)
        if out[i]:
            code.append(SetFlag(Unit.DMA_OUT, Unit.VECTOR, _F_OUT))
        if sfree[i]:
            code.append(SetFlag(Unit.DMA_OUT, Unit.DMA_IN, _F_SFREE))

    loaded = -1
    for i in range(len(steps)):
        if loaded < i:
            if _overlaps(steps[i].reads, dirty):
                code.append(Barrier())
                dirty = []
            load(i)
            loaded = i
        pending = [w for k in range(i, loaded + 1) for w in steps[k].writes]
        while loaded + 1 < min(len(steps), i + slots):
            nxt = loaded + 1
            if _overlaps(steps[nxt].reads, dirty + pending):
                break
            load(nxt)
            loaded = nxt
            pending += steps[nxt].writes
        rest(i)
        dirty.extend(steps[i].writes)
    for _ in range(min(len(steps), slots)):
        code.append(WaitFlag(Unit.VECTOR, Unit.DMA_IN, _F_FREE))
        code.append(WaitFlag(Unit.DMA_OUT, Unit.DMA_IN, _F_SFREE))
        code.append(WaitFlag(Unit.DMA_OUT, Unit.VECTOR, _F_OUT))
    code.append(Finish())
    return code
