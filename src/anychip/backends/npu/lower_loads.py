"""Loads of a core's lowering (`CoreLowering`): device-memory reads as DMA boxes, tables of
addresses, gathers through the scratch, what a step loads before its vector code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from anychip.backends.npu.lower_exprs import (
    NpuUnsupported,
    _affine,
    _dt,
    _np_eval,
    _stmt_exprs,
    _vk,
)
from anychip.backends.npu.lower_steps import (
    Frame,
    Step,
    Val,
    _box_dma,
)
from anychip.ir.kernel import (
    Expr,
    Load,
    Stmt,
    walk_exprs,
)
from anychip.npu.builder import Tile
from anychip.npu.isa import (
    DT,
    Dma,
    Gather,
    Ref,
    Space,
    UnOp,
    VUn,
)

if TYPE_CHECKING:
    from anychip.backends.npu.lower import CoreLowering


def table(cl: CoreLowering, e: Expr, f: Frame) -> Val:
    """A static integer expression: its values, computed now, DMA'd from the table."""
    vals = _np_eval(e, f.grid(), cl.low.lets)
    vals = np.broadcast_to(vals, (f.rows, f.cols))
    if vals.size and (vals.min() < -(2**31) or vals.max() >= 2**31):
        raise NpuUnsupported(f"npu: index values beyond int32 in kernel {cl.low.ir.name}")
    t = cl.temp(f.rows, f.cols, DT.I32)
    off = cl.low.add_table(vals.astype(np.int32))
    cl.open().loads.append(cl.dma_in_table(t, off))
    return cl.cast(Val(t, DT.I32), _dt(e.dtype))


def dma_in_table(cl: CoreLowering, t: Tile, off: int) -> Dma:
    n = t.rows * t.cols
    src = Ref(Space.DRAM, off * 4, cl.low.const_reg)
    return Dma(DT.I32, t.ref, src, (1, 1, n), (0, 0, 1), (0, 0, 1), (1, 1, n))


def load(cl: CoreLowering, e: Load, f: Frame) -> Val:
    low = cl.low
    decl = low.ir.bufs[e.buf]
    sdt = _dt(decl.dtype)
    vk = _vk(sdt)
    st = cl.open()
    a = _affine(e.index, low.lets)
    box = (f.rows, f.cols) if e.valid is None else cl.origin_box(e.valid, f)
    pos = None if a is None or box is None else f.at(a)
    if pos is not None and box is not None and pos[0] >= 0:
        start, rs, cs = pos
        rows, cols = box  # the guard's true points; the DMA pads the rest with 0
        lo = start + min(rs, 0) * (rows - 1) + min(cs, 0) * (cols - 1)
        hi = start + max(rs, 0) * (rows - 1) + max(cs, 0) * (cols - 1)
        if lo < 0 or hi >= decl.size:
            raise NpuUnsupported(f"npu: load of b{e.buf} out of its bounds in {low.ir.name}")
        key = (e.buf, start, rs, cs, f.rows, f.cols)
        kept = cl.kept.get(key) if e.valid is None else None
        if kept is not None:  # loaded by an earlier inner loop of this group of rows
            return cl.widen(kept)
        t = None
        if e.valid is None and e.buf in low.reread:
            t = cl.keep(f.rows, f.cols, sdt)
            if t is not None:
                cl.kept[key] = t
        to = st.loads if t is None else st.keep_loads  # the group's: loaded early
        t = t if t is not None else cl.temp(f.rows, f.cols, sdt)
        src = cl.low.dram(e.buf, start * sdt.itemsize)
        to.append(_box_dma(sdt, t.ref, src, (rows, cols), (f.cols, 1), (rs, cs),
                           (f.rows, f.cols)))  # fmt: skip
        st.reads.append((e.buf, lo, hi + 1))
        return cl.widen(t)
    if low.is_static(e.index) and (e.valid is None or low.is_static(e.valid)):
        grid = f.grid()
        idx = np.broadcast_to(_np_eval(e.index, grid, low.lets), (f.rows, f.cols))
        ok = np.ones((f.rows, f.cols), bool)
        if e.valid is not None:
            ok = np.broadcast_to(_np_eval(e.valid, grid, low.lets) != 0, ok.shape)
        if not ok.any():  # every point reads the padding
            return Val(cl.const(0.0, vk), vk)
        idx = np.where(ok, idx, idx[ok].min())  # a position it reads anyway
        if idx.size and (idx.min() < 0 or idx.max() >= decl.size):
            raise NpuUnsupported(f"npu: load of b{e.buf} out of its bounds in {low.ir.name}")
        it = cl.temp(f.rows, f.cols, DT.I32)
        st.loads.append(cl.dma_in_table(it, low.add_table(idx.astype(np.int32))))
        t = cl.gather(e.buf, sdt, it, f)
        st.reads.append((e.buf, int(idx.min()), int(idx.max()) + 1))
        if ok.all():
            return cl.widen(t)
        mt = cl.temp(f.rows, f.cols, DT.I32)
        st.loads.append(cl.dma_in_table(mt, low.add_table(ok.astype(np.int32))))
        m = cl.cast(Val(mt, DT.I32), DT.BOOL)
        return cl.select(m, cl.widen(t), Val(cl.const(0.0, vk), vk))
    got = cl.gathers.get(e)
    if got is None:
        raise NpuUnsupported(f"npu: load b{e.buf}[...] was not prepared in {low.ir.name}")
    n = f.rows * f.cols
    it = cl.temp(f.rows, f.cols, DT.I32)
    st.loads.append(cl.dma_scratch(it, got[0], into=True))
    st.reads.append((-1, got[0], got[0] + n))
    t = cl.gather(e.buf, sdt, it, f)
    st.reads.append((e.buf, 0, decl.size))
    if got[1] < 0:
        return cl.widen(t)
    mt = cl.temp(f.rows, f.cols, DT.I32)
    st.loads.append(cl.dma_scratch(mt, got[1], into=True))
    st.reads.append((-1, got[1], got[1] + n))
    m = cl.cast(Val(mt, DT.I32), DT.BOOL)
    return cl.select(m, cl.widen(t), Val(cl.const(0.0, vk), vk))


def origin_box(cl: CoreLowering, guard: Expr, f: Frame) -> tuple[int, int] | None:
    """(rows, cols) when a guard the compiler can evaluate holds exactly on the
    frame's leading box of that size (the whole frame, or short of a loop's tail past
    an axis' end): the guarded load is one DMA box padded with zeros. Else None."""
    if not cl.low.is_static(guard):
        return None
    ok = np.broadcast_to(_np_eval(guard, f.grid(), cl.low.lets) != 0, (f.rows, f.cols))
    rows, cols = int(ok[:, 0].sum()), int(ok[0].sum())
    if rows == 0 or ok.sum() != rows * cols or not ok[:rows, :cols].all():
        return None
    return rows, cols


def widen(cl: CoreLowering, t: Tile) -> Val:
    """A loaded tile as a vector value (int8 widened to i16, see `_vk`)."""
    return cl.cast(Val(t, t.dtype), DT.I16) if t.dtype == DT.I8 else Val(t, t.dtype)


def dma_scratch(cl: CoreLowering, t: Tile, off: int, into: bool) -> Dma:
    """A dense (rows, cols) i32 tile to (or from, `into`) the scratch at `off`."""
    n = t.rows * t.cols
    mem = Ref(Space.DRAM, off * 4, cl.low.scratch_reg)
    dst, src = (t.ref, mem) if into else (mem, t.ref)
    return Dma(DT.I32, dst, src, (1, 1, n), (0, 0, 1), (0, 0, 1), (1, 1, n))


def prepare(cl: CoreLowering, stmts: tuple[Stmt, ...] | list[Stmt], f: Frame) -> None:
    """Data-dependent loads (gathers by computed indices) of `stmts`: each gets a step
    of its own before the step that reads it, computing the element numbers (and the
    guard) on the vector unit and storing them to device-memory scratch; the reading
    step DMAs them back (after a barrier: they are fresh) and gathers."""
    cl.gathers = {}
    low = cl.low
    for e in _stmt_exprs(stmts):
        for x in reversed(walk_exprs(e)):
            if not isinstance(x, Load) or x in cl.gathers or not low.dependent(x):
                continue
            cl.close()
            st = cl.open()
            n = f.rows * f.cols
            idx = cl.ev(low.subst(x.index), f)
            mask_off = -1
            if x.valid is not None:
                m = cl.ev(low.subst(x.valid), f)
                idx = cl.select(m, idx, Val(cl.const(0.0, idx.kind), idx.kind))
                mv = cl.cast(Val(cl.view(m.tile, f.rows, f.cols), m.kind), DT.I32)
                mask_off = cl.scratch_out(st, mv, n)
            iv = cl.cast(Val(cl.view(idx.tile, f.rows, f.cols), idx.kind), DT.I32)
            cl.gathers[x] = (cl.scratch_out(st, iv, n), mask_off)
            cl.close()


def scratch_out(cl: CoreLowering, st: Step, v: Val, n: int) -> int:
    """Stores i32 `v` (made dense in this step's slot) to fresh scratch; its offset."""
    t = cl.temp(v.tile.rows, v.tile.cols, DT.I32)
    cl.v(VUn(UnOp.COPY, DT.I32, t.ref, v.tile.ref, t.shape, t.strides, v.tile.strides))
    off = cl.low.scratch_top
    cl.low.scratch_top += -(-n // 16) * 16
    st.stores.append(cl.dma_scratch(t, off, into=False))
    st.writes.append((-1, off, off + n))
    return off


def gather(cl: CoreLowering, buf: int, sdt: DT, it: Tile, f: Frame) -> Tile:
    """Element gather: `it` holds (rows, cols) element numbers of buffer `buf`."""
    t = cl.temp(f.rows, f.cols, sdt)
    table = cl.low.dram(buf, 0)
    n = f.rows * f.cols
    cl.open().loads.append(Gather(sdt, t.ref, table, it.ref, n, 1, 1, 1, cl.low.ir.bufs[buf].size))
    return t
