"""Stores of a core's lowering (`CoreLowering`): computed tiles written back as DMA boxes,
guarded stores, combining stores (max/min/prod), scatter-add and row sorts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from anychip.backends.npu import lower_sort
from anychip.backends.npu.lower_exprs import (
    _BIN,
    _BOOL_BIN,
    NpuUnsupported,
    _affine,
    _dt,
    _np_eval,
)
from anychip.backends.npu.lower_steps import (
    Frame,
    Val,
    _box_dma,
)
from anychip.ir.kernel import (
    SortRow,
    Store,
)
from anychip.ir.ops import Ops
from anychip.npu.builder import Tile
from anychip.npu.isa import (
    DT,
    CastMode,
    Ref,
    ScatterAdd,
    Space,
    UnOp,
    VCast,
    VSort,
    VUn,
)

if TYPE_CHECKING:
    from anychip.backends.npu.lower import CoreLowering


def store(cl: CoreLowering, s: Store, f: Frame) -> None:
    """buf[index] = value over the frame as strided-box DMAs: one box, or where a guard
    holds only on part of the frame (a loop's tail past an axis' end) the boxes where
    it holds. A combining store other than add (a column max, `b0[i] max= x`) reads
    the box back, combines on the vector unit and writes it (a later step reading it
    waits behind a barrier)."""
    if s.combine is Ops.ADD:
        cl.scatter_add(s, f)
        return
    boxes = cl.guard_boxes(s, f)
    if boxes:  # else the guard is false on the whole frame
        cl.store_val(s, f, cl.ev(s.value, f), boxes)


def store_val(cl: CoreLowering, s: Store, f: Frame, v: Val, boxes: list[tuple[int, int, int, int]]
              ) -> None:  # fmt: skip
    """`store` of the value `v` into `boxes` of the frame (`guard_boxes`), combining by
    `s.combine` through a read-back."""
    low = cl.low
    decl = low.ir.bufs[s.buf]
    sdt = _dt(decl.dtype)
    a = _affine(s.index, low.lets)
    pos = None if a is None else f.at(a)
    if pos is None or pos[1] < 0 or pos[2] < 0 or pos[0] < 0:
        raise NpuUnsupported(f"npu: store b{s.buf}[{s.index}] is not a strided box")
    start, rs, cs = pos
    if (f.rows > 1 and rs == 0) or (f.cols > 1 and cs == 0):
        raise NpuUnsupported(f"npu: store b{s.buf}[{s.index}] writes one element twice")
    whole = cl.view(v.tile, f.rows, f.cols)
    st = cl.open()
    for r0, c0, rows, cols in boxes:
        at = start + r0 * rs + c0 * cs
        hi = at + rs * (rows - 1) + cs * (cols - 1)
        if hi >= decl.size:
            raise NpuUnsupported(f"npu: store into b{s.buf} past its end in {low.ir.name}")
        dst = cl.low.dram(s.buf, at * sdt.itemsize)
        src = whole.sub(r0, c0, rows, cols)
        if s.combine is not None:
            src = cl.combine_old(s, sdt, src, dst, (rs, cs)).tile
            st.reads.append((s.buf, at, hi + 1))
        if v.kind != sdt or not cl.in_slot(src):
            out = cl.temp(rows, cols, sdt)  # stores read only this step's slot
            cl.put(out, src, v.kind)
            src = out
        st.stores.append(_box_dma(sdt, dst, src.ref, (rows, cols), (rs, cs), src.strides))
        st.writes.append((s.buf, at, hi + 1))


def in_slot(cl: CoreLowering, t: Tile) -> bool:
    """True for a tile this step computed into its slot, rows apart and columns
    adjacent: a store reads it in place (the slot's next step waits for the store)."""
    base = cl.slot_base[(len(cl.steps) - 1) % cl.slots]
    sr, sc = t.strides
    return (
        t.ref.space == Space.UB and t.ref.reg == 0 and sc == 1 and sr >= t.cols
        and base <= t.ref.off < base + cl.slot_top
    )  # fmt: skip


def put(cl: CoreLowering, out: Tile, src: Tile, kind: DT) -> None:
    """Copies `src` (values of `kind`) into `out` in `out`'s storage type (i16 values
    of an int8 buffer wrap into i8)."""
    if kind == out.dtype:
        cl.v(VUn(UnOp.COPY, kind, out.ref, src.ref, out.shape, out.strides, src.strides))
    else:
        cl.v(VCast(out.dtype, kind, out.ref, src.ref, out.shape, out.strides, src.strides,
                     CastMode.TRUNC))  # fmt: skip


def guard_boxes(cl: CoreLowering, s: Store, f: Frame) -> list[tuple[int, int, int, int]]:
    """(r0, c0, rows, cols) boxes of `f` covering the points where the store's guard
    holds (the whole frame without one): rows whose true points are one run of
    columns, consecutive rows with the same run merged. The compiler evaluates the
    guard (it depends on loop variables only); a guard on loaded data, or one true on
    scattered columns, is not lowered."""
    low = cl.low
    if s.valid is None:
        return [(0, 0, f.rows, f.cols)]
    if not low.is_static(s.valid):
        raise NpuUnsupported(
            f"npu: store into b{s.buf} guarded by loaded data in kernel {low.ir.name}"
        )
    ok = np.broadcast_to(_np_eval(s.valid, f.grid(), low.lets) != 0, (f.rows, f.cols))
    boxes: list[tuple[int, int, int, int]] = []
    for r in range(f.rows):
        cols = np.flatnonzero(ok[r])
        if cols.size == 0:
            continue
        c0, n = int(cols[0]), int(cols[-1]) + 1 - int(cols[0])
        if n != cols.size:
            raise NpuUnsupported(
                f"npu: store into b{s.buf} guarded on scattered columns in {low.ir.name}"
            )
        last = boxes[-1] if boxes else None
        if last is not None and last[0] + last[2] == r and last[1::2] == (c0, n):
            boxes[-1] = (last[0], c0, last[2] + 1, n)
        else:
            boxes.append((r, c0, 1, n))
    return boxes


def combine_old(cl: CoreLowering, s: Store, sdt: DT, src: Tile, dst: Ref, strides: tuple[int, int]
                ) -> Val:  # fmt: skip
    """combine(buf's current box at `dst`, src): the old values DMA'd in this step (int8
    widened to i16, as src holds it: sums and products wrap into int8 at the store)."""
    assert s.combine is not None
    ops = _BOOL_BIN if sdt == DT.BOOL and s.combine in _BOOL_BIN else _BIN
    if s.combine not in ops:
        raise NpuUnsupported(f"npu: {s.combine} store in kernel {cl.low.ir.name}")
    old = cl.temp(src.rows, src.cols, sdt)
    cl.open().loads.append(_box_dma(sdt, old.ref, dst, old.shape, old.strides, strides))
    was = cl.widen(old)
    return cl.bin(ops[s.combine], was, Val(src, was.kind))


def scatter_add(cl: CoreLowering, s: Store, f: Frame) -> None:
    """buf[index] += value at every point (in order; repeated places accumulate), as
    one element-wise `scatter_add` on dma_out; where `valid` is false, 0 is added to
    an element the store reaches anyway (or to element 0)."""
    low = cl.low
    decl = low.ir.bufs[s.buf]
    sdt = _dt(decl.dtype)
    if sdt == DT.I8:
        raise NpuUnsupported(f"npu: an int8 scatter-add in kernel {low.ir.name}")
    st = cl.open()
    n = f.rows * f.cols
    it = cl.temp(f.rows, f.cols, DT.I32)
    ok: Val | None = None
    if low.is_static(s.index) and (s.valid is None or low.is_static(s.valid)):
        grid = f.grid()
        idx = np.broadcast_to(_np_eval(s.index, grid, low.lets), (f.rows, f.cols))
        okv = np.ones((f.rows, f.cols), bool)
        if s.valid is not None:
            okv = np.broadcast_to(_np_eval(s.valid, grid, low.lets) != 0, okv.shape)
        if not okv.any():
            return
        idx = np.where(okv, idx, idx[okv].min())
        if idx.min() < 0 or idx.max() >= decl.size:
            raise NpuUnsupported(f"npu: scatter into b{s.buf} out of bounds in {low.ir.name}")
        st.loads.append(cl.dma_in_table(it, low.add_table(idx.astype(np.int32))))
        if not okv.all():
            mt = cl.temp(f.rows, f.cols, DT.I32)
            st.loads.append(cl.dma_in_table(mt, low.add_table(okv.astype(np.int32))))
            ok = cl.cast(Val(mt, DT.I32), DT.BOOL)
    else:
        iv = cl.ev(s.index, f)
        if s.valid is not None:
            ok = cl.ev(s.valid, f)
            iv = cl.select(ok, iv, Val(cl.const(0.0, iv.kind), iv.kind))
        i32 = cl.cast(Val(cl.view(iv.tile, f.rows, f.cols), iv.kind), DT.I32)
        cl.v(VUn(UnOp.COPY, DT.I32, it.ref, i32.tile.ref, it.shape, it.strides,
                   i32.tile.strides))  # fmt: skip
    v = cl.ev(s.value, f)
    if v.kind != sdt:
        v = cl.cast(v, sdt)
    if ok is not None:
        v = cl.select(ok, v, Val(cl.const(0.0, sdt), sdt))
    src = cl.view(v.tile, f.rows, f.cols)
    out = cl.temp(f.rows, f.cols, sdt)
    cl.v(VUn(UnOp.COPY, sdt, out.ref, src.ref, out.shape, out.strides, src.strides))
    table = cl.low.dram(s.buf, 0)
    st.stores.append(ScatterAdd(sdt, table, out.ref, it.ref, n, 1, 1, 1, decl.size))
    st.writes.append((s.buf, 0, decl.size))


def sort_row(cl: CoreLowering, s: SortRow, f: Frame) -> None:
    """`vargsort` of the frame's rows of keys (one row of `s.n` keys per point, DMA'd
    in as one box), its first k columns widened to the output's integer type and
    stored. A row longer than a step's share of the unified buffer is sorted by counting
    (`lower_sort`)."""
    low = cl.low
    sdt, ddt = _dt(low.ir.bufs[s.src].dtype), _dt(low.ir.bufs[s.dst].dtype)
    a, b = _affine(s.src_base, low.lets), _affine(s.dst_base, low.lets)
    if a is None or b is None:
        raise NpuUnsupported(f"npu: sort rows not at strided places in {low.ir.name}")
    (start, rs, _), (dstart, drs, _) = f.at(a), f.at(b)
    k = s.n if s.k is None else s.k
    if min(start, rs, dstart, drs, s.src_stride, s.dst_stride) < 0:
        raise NpuUnsupported(f"npu: sort rows with negative strides in {low.ir.name}")
    if f.rows == 1 and lower_sort.row_bytes(s.n, k, sdt, ddt) > cl.slot_size:
        lower_sort.long_sort_row(cl, s, f, start, dstart, sdt, ddt)
        return
    st = cl.open()
    keys = cl.temp(f.rows, s.n, sdt)
    src = cl.low.dram(s.src, start * sdt.itemsize)
    st.loads.append(_box_dma(sdt, keys.ref, src, keys.shape, keys.strides, (rs, s.src_stride)))
    st.reads.append((s.src, start, start + rs * (f.rows - 1) + s.src_stride * (s.n - 1) + 1))
    keys = cl.widen(keys).tile
    order = cl.temp(f.rows, s.n, DT.I32)
    cl.v(VSort(keys.dtype, int(s.descending), order.ref, keys.ref, keys.shape, order.strides,
                 keys.strides))  # fmt: skip
    first = order.sub(0, 0, f.rows, k)
    out = cl.temp(f.rows, k, ddt)
    cl.v(VCast(ddt, DT.I32, out.ref, first.ref, out.shape, out.strides, first.strides,
                 CastMode.TRUNC))  # fmt: skip
    dst = cl.low.dram(s.dst, dstart * ddt.itemsize)
    st.stores.append(_box_dma(ddt, dst, out.ref, out.shape, (drs, s.dst_stride), out.strides))
    st.writes.append((s.dst, dstart, dstart + drs * (f.rows - 1) + s.dst_stride * (k - 1) + 1))
