"""Accumulators of a core's lowering (`CoreLowering`): reductions' partial sums and their
folds, scans with a carry, and line loops (a reduction over a middle axis as row tiles).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anychip import dtypes
from anychip.backends.npu.lower_exprs import (
    _COMBINE,
    _LINE_FOLD,
    _RED,
    NpuUnsupported,
    _affine,
    _dt,
    _identity,
    _vk,
)
from anychip.backends.npu.lower_steps import (
    Frame,
    Val,
    _AccState,
    _blocks,
    _has_loop,
)
from anychip.ir.kernel import (
    Acc,
    Alu,
    Expr,
    Let,
    Load,
    Loop,
    Store,
    Update,
    walk_exprs,
)
from anychip.ir.ops import Ops
from anychip.npu.builder import Tile
from anychip.npu.isa import (
    DT,
    BinOp,
    CastMode,
    RedOp,
    UnOp,
    VBin,
    VCast,
    VDup,
    VReduce,
    VScan,
    VUn,
)

if TYPE_CHECKING:
    from anychip.backends.npu.lower import CoreLowering

PARTIALS = 64  # per-step partial sums kept before they are folded (float sums)


def init_acc(cl: CoreLowering, s: Acc, rows: int) -> None:
    kind = _vk(_dt(s.dtype))  # int8 as i16: sums and products wrap modulo 2^16, so
    t = cl.persist(rows, 1, kind)  # modulo 2^8 too; wrapped to int8 when read
    cl.v(VDup(kind, t.ref, _identity(s.op, kind), t.shape, t.strides))
    parts = None
    if s.op is Ops.SUM and kind.is_float:
        cols = min(PARTIALS, (cl.const_top - cl.persist_top) // (16 * rows))
        if cols >= 2:
            parts = cl.persist(rows, cols, kind)
    cl.accs[s.var] = _AccState(s.op, kind, t, parts)
    cl.accs[s.var].wrap = s.dtype is dtypes.int8 and s.op in (Ops.SUM, Ops.PROD)
    cl.carries.pop(s.var, None)


def update(cl: CoreLowering, s: Update, f: Frame, outer_rows: int, whole: bool = False) -> None:
    """acc op= the reduction of `s.value` over the frame's columns. A float sum keeps
    one partial per step, folded later, unless the frame is its `whole` loop."""
    acc = cl.accs[s.var]
    x = cl.ev(s.value, f)
    x = Val(cl.view(x.tile, f.rows, f.cols), x.kind)
    if x.kind != acc.kind:
        x = cl.cast(x, acc.kind)
    red = _RED[acc.op]
    dt = acc.kind
    part = cl.temp(f.rows, 1, dt)
    cl.v(VReduce(red, dt, 1, part.ref, x.tile.ref, x.tile.shape, part.strides,
                   x.tile.strides))  # fmt: skip
    if f.rows != outer_rows:  # a long loop's rows: fold them too (outer is one point)
        p2 = cl.temp(1, 1, dt)
        cl.v(VReduce(red, dt, 0, p2.ref, part.ref, part.shape, p2.strides, part.strides))
        part = p2
    if acc.partials is not None and not whole:
        if acc.used == acc.partials.cols:
            cl.fold(acc)
        col = acc.partials.sub(0, acc.used, acc.tile.rows, 1)
        cl.v(VUn(UnOp.COPY, dt, col.ref, part.ref, col.shape, col.strides, part.strides))
        acc.used += 1
        return
    t = acc.tile
    cl.v(VBin(_COMBINE[acc.op], dt, t.ref, t.ref, part.ref, t.shape, t.strides,
                t.strides, part.strides))  # fmt: skip


def fold(cl: CoreLowering, acc: _AccState) -> None:
    """acc += the sum of the partial columns in use (one rounding for the lot)."""
    if acc.partials is None or acc.used == 0:
        return
    t, dt = acc.tile, acc.kind
    p = acc.partials.sub(0, 0, t.rows, acc.used)
    tmp = cl.temp(t.rows, 1, dt)
    cl.v(VReduce(RedOp.SUM, dt, 1, tmp.ref, p.ref, p.shape, tmp.strides, p.strides))
    cl.v(VBin(BinOp.ADD, dt, t.ref, t.ref, tmp.ref, t.shape, t.strides, t.strides,
                tmp.strides))  # fmt: skip
    acc.used = 0


def finish_acc(cl: CoreLowering, name: str) -> Tile:
    acc = cl.accs[name]
    if acc.used:
        cl.fold(acc)
    t = acc.tile
    if acc.wrap:  # the i16 sum's low byte, sign-extended (`vcastt` wraps)
        low = cl.temp(t.rows, t.cols, DT.I8)
        cl.v(VCast(DT.I8, DT.I16, low.ref, t.ref, t.shape, low.strides, t.strides,
                   CastMode.TRUNC))  # fmt: skip
        cl.v(VCast(DT.I16, DT.I8, t.ref, low.ref, t.shape, t.strides, low.strides))
    return t


def scan(cl: CoreLowering, s: Update, f: Frame) -> None:
    """A running sum along the frame's columns (rows are independent scans): `vcumsum`
    of the step's values plus the carry of the earlier steps; the running values
    stand for the accumulator in the rest of this step, and the last column is the
    next carry. Halves scan and carry in f32 (rounded once per element)."""
    acc = cl.accs[s.var]
    if acc.op is not Ops.SUM or acc.kind == DT.BOOL:
        raise NpuUnsupported(f"npu: a running {acc.op.name} in kernel {cl.low.ir.name}")
    kind = DT.F32 if acc.kind in (DT.F16, DT.BF16) else acc.kind
    carry = cl.carries.get(s.var)
    if carry is None:
        carry = acc.tile
        if kind != acc.kind:
            carry = cl.persist(acc.tile.rows, 1, kind)
            cl.v(VDup(kind, carry.ref, 0.0, carry.shape, carry.strides))
        cl.carries[s.var] = carry
    x = cl.ev(s.value, f)
    x = cl.cast(Val(cl.view(x.tile, f.rows, f.cols), x.kind), kind)
    run = cl.temp(f.rows, f.cols, kind)
    cl.v(VScan(kind, 1, run.ref, x.tile.ref, run.shape, run.strides, x.tile.strides))
    got = cl.bin(BinOp.ADD, Val(run, kind), Val(carry, kind))
    last = got.tile.sub(0, f.cols - 1, f.rows, 1)
    cl.v(VUn(UnOp.COPY, kind, carry.ref, last.ref, carry.shape, carry.strides,
               last.strides))  # fmt: skip
    cl.env[s.var] = cl.cast(got, DT.I8 if acc.wrap else acc.kind)  # int8: wrapped, as i16


def line_loop(cl: CoreLowering, s: Loop, f: Frame) -> bool:
    """A serial loop around one inner loop, the cpu's line forms (`passes/lower.py`
    `reduce_into_rows`, `scan_rows`): its values become a tile's rows and the inner
    loop its columns, so a block of rows is one step, not a step (and a barrier) per
    row. A store to the same place on every row (`out[b, d] max= x[b, l, d]`) folds
    the rows with one reduction and combines once per block; a store of the row above
    plus a value (`out[r] = out[r - 1] + x[r]`) is a `vcumsum` down the columns plus
    a carry row. False, emitting nothing, for any other body."""
    low = cl.low
    inner = s.body[0]
    if len(s.body) != 1 or not isinstance(inner, Loop) or _has_loop(inner.body):
        return False
    if f.cols != 1:  # outer points are the frame's rows only
        return False
    if any(not isinstance(t, Let | Store) for t in inner.body) or inner.extent * 2 > low.elems:
        return False
    probe = Frame(2, inner.extent, {**f.base, s.var: 1, inner.var: 0}, {s.var: 1},
                  {inner.var: 1})  # fmt: skip
    stores = [t for t in inner.body if isinstance(t, Store)]
    got = {t: cl.line_form(t, probe) for t in stores}
    forms = {t: x for t, x in got.items() if x is not None}
    if not stores or len(forms) < len(stores):
        return False
    mark, saved = cl.persist_top, dict(cl.env)
    for r in range(f.rows):
        cl.persist_top = mark  # each row's carries start over
        base = {v: b + r * f.rstep.get(v, 0) for v, b in f.base.items()}
        carries: dict[Store, Tile] = {}
        for lo, n in _blocks(s.extent, low.elems // inner.extent):
            g = Frame(n, inner.extent, {**base, s.var: lo, inner.var: 0}, {s.var: 1},
                      {inner.var: 1})  # fmt: skip
            cl.prepare(inner.body, g)
            cl.open()
            for t in inner.body:
                if isinstance(t, Let):
                    cl.let(t, g, keep=False)
                elif isinstance(t, Store):
                    cl.line_store(t, g, forms[t], carries)
            cl.close()
            cl.env = dict(saved)
    cl.persist_top = mark
    return True


def line_form(cl: CoreLowering, t: Store, f: Frame) -> Expr | None:
    """What a line loop computes for store `t` over frame `f` (rows: the serial loop):
    the value to fold (a combining store to the same place on every row) or to scan
    (`t.value` is the row above plus this value); None for any other store."""
    low = cl.low
    a = _affine(t.index, low.lets)
    if a is None:
        return None
    start, rs, cs = f.at(a)
    reads_self = [x for x in walk_exprs(t.value) if isinstance(x, Load) and x.buf == t.buf]
    if t.combine is not None:
        return t.value if rs == 0 and cs != 0 and t.valid is None and not reads_self else None
    v = t.value
    if not (isinstance(v, Alu) and v.op is Ops.ADD and rs != 0 and len(reads_self) == 1):
        return None
    above, x = v.srcs if isinstance(v.srcs[0], Load) and v.srcs[0].buf == t.buf else v.srcs[::-1]
    b = _affine(above.index, low.lets) if isinstance(above, Load) else None
    if b is None or f.at(b) != (start - rs, rs, cs) or above in walk_exprs(x):
        return None
    return x


def line_store(cl: CoreLowering, t: Store, f: Frame, x: Expr, carries: dict[Store, Tile]) -> None:
    """One block of rows of a line loop's store (see `line_loop`)."""
    v = cl.ev(x, f)
    v = Val(cl.view(v.tile, f.rows, f.cols), v.kind)
    kind = v.kind
    if t.combine is not None:  # fold the rows, then combine with the stored row
        red = _LINE_FOLD[(t.combine, kind == DT.BOOL)]
        part = cl.temp(1, f.cols, kind)
        cl.v(VReduce(red, kind, 0, part.ref, v.tile.ref, v.tile.shape, part.strides,
                       v.tile.strides))  # fmt: skip
        one = Frame(1, f.cols, f.base, {}, f.cstep)
        cl.store_val(t, one, Val(part, kind), cl.guard_boxes(t, one))
        return
    carry = carries.get(t)
    if carry is None:
        carry = carries[t] = cl.persist(1, f.cols, kind)
        cl.v(VDup(kind, carry.ref, 0.0, carry.shape, carry.strides))
    run = cl.temp(f.rows, f.cols, kind)
    cl.v(VScan(kind, 0, run.ref, v.tile.ref, run.shape, run.strides, v.tile.strides))
    got = cl.bin(BinOp.ADD, Val(run, kind), Val(carry, kind))
    last = got.tile.sub(f.rows - 1, 0, 1, f.cols)
    cl.v(VUn(UnOp.COPY, kind, carry.ref, last.ref, carry.shape, carry.strides,
               last.strides))  # fmt: skip
    boxes = cl.guard_boxes(t, f)
    if boxes:
        cl.store_val(t, f, got, boxes)
