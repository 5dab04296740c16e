"""Sorts of rows longer than a step's share of the unified buffer: each key's place in
the stable order counted on the vector unit, block against block, then scattered.

A key's place in the stable ascending order is the number of keys before it: smaller
keys, and equal keys at smaller positions. The row is cut into blocks of `bs` keys that
fit a step; for every pair of blocks (i, j) one step compares the (bs, 1) column of
block i's keys with the (1, bs) row of block j's (a (bs, bs) mask, `vcmp` with strides
of 0) and sums each row of the mask: block j's keys before each key of block i (every
key of an earlier block that is not greater, a later block's that are smaller, on the
diagonal a lower triangle from `viota` picks which). The counts of a block's keys are
summed over j in the group's part of `ub`; the block's positions (`viota`) are then
added (`scatter_add`) at those places into the output row, zeroed first. Top-k keeps
only places below k (the others add 0 at place 0).

Keys compare as integers that order as the `ref` device sorts: floats become their bits
with negatives' magnitudes negated (so -0.0 ties 0.0) and every NaN the quiet NaN's bits
(above +inf: last ascending); descending swaps the comparisons (NaN first). n keys cost
n^2 compares: slow, on the chip, and exact.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from anychip.backends.npu.lower_steps import (
    _F_SORT,
    SLOTS,
    Frame,
    _blocks,
    _box_dma,
    _TooBig,
)
from anychip.ir.kernel import SortRow
from anychip.npu.builder import Tile
from anychip.npu.isa import (
    DT,
    BinOp,
    CastMode,
    CmpOp,
    RedOp,
    ScatterAdd,
    SetFlag,
    Unit,
    UnOp,
    VBin,
    VCast,
    VCmp,
    VCmpS,
    VDup,
    VIota,
    VReduce,
    VScalar,
    VSel,
    VUn,
    WaitFlag,
)

if TYPE_CHECKING:
    from anychip.backends.npu.lower import CoreLowering

_FLOATS = (DT.F16, DT.BF16, DT.F32, DT.F64)
_PAIR_BYTES = 2  # per pair of a diagonal step: two masks (off the diagonal one)
_MOST = 240  # keys a block at most: the packed counts (`_count`) stay exact in i16


def row_bytes(n: int, k: int, sdt: DT, ddt: DT) -> int:
    """`ub` bytes the one-tile sort of one row of n keys takes (keys, widened keys,
    the i32 order, k outputs; 64-byte alignment each).

    >>> row_bytes(3000, 3000, DT.F32, DT.I64)  # past edge's 32 KiB slot
    48064
    """
    parts = (n * sdt.itemsize, n * 2 if sdt == DT.I8 else 0, n * 4, k * ddt.itemsize)
    return sum(-(-p // 64) * 64 for p in parts)


def block_size(slot: int, room: int, kdt: DT) -> int:
    """Keys a block: the largest multiple of 16 (up to _MOST) whose diagonal step fits a
    slot and whose triangle and per-block values fit the `room` bytes of group memory.

    >>> block_size(32768, 30000, DT.I32), block_size(32768, 8000, DT.I32)  # edge's slot
    (80, 48)
    """
    per_key = 64 + 2 * (4 + 8 + kdt.itemsize * 6)  # two blocks' keys through the transform
    bs = int((math.sqrt(per_key**2 + 4 * _PAIR_BYTES * (slot - 24 * 64)) - per_key)
             / (2 * _PAIR_BYTES))  # fmt: skip
    bs = min(bs, _MOST)
    while bs > 0 and bs * bs + bs * (kdt.itemsize + 28) + 8 * 64 > room:
        bs -= 16
    return bs // 16 * 16


def long_sort_row(
    cl: CoreLowering, s: SortRow, f: Frame, start: int, dstart: int, sdt: DT, ddt: DT
) -> None:
    """One row (f.rows == 1) of `s.n` keys at `start` sorted by counting, its first k
    places written at `dstart` (see the module docstring)."""
    if cl.slots > SLOTS:
        raise _TooBig  # again with the three larger slots
    n = s.n
    k = n if s.k is None else s.k
    kdt = DT.I64 if sdt in (DT.I64, DT.F64, DT.U32, DT.U64) else DT.I32
    bs = block_size(cl.slot_size, cl.const_top - cl.persist_top - 4 * 64, kdt)
    if bs < 16:
        raise _TooBig
    _zero_row(cl, s, dstart, k, ddt)
    tri = _triangle(cl, bs)
    ki = cl.persist(bs, 1, kdt)  # block i's keys as integers, for its steps
    acc = cl.persist(bs, 1, DT.I32)  # block i's keys' places so far
    # a block's places and positions, read by its scatter while later blocks count: two
    # pairs in turn, the vector unit waiting for the scatter two blocks back (_F_SORT)
    outs = [(cl.persist(bs, 1, DT.I32), cl.persist(bs, 1, ddt)) for _ in range(2)]
    nblocks = -(-n // bs)
    for b, (ilo, ia) in enumerate(_blocks(n, bs)):
        for jlo, jb in _blocks(n, bs):
            st = cl.open()
            if jlo == 0:
                raw = _load(cl, s, start + ilo * s.src_stride, ia, sdt)
                _keys(cl, raw, sdt, kdt, Tile(ki.ref, 1, ia, kdt))
            kj = cl.temp(1, jb, kdt)
            _keys(cl, _load(cl, s, start + jlo * s.src_stride, jb, sdt), sdt, kdt, kj)
            part = _count(cl, s.descending, Tile(ki.ref, ia, jb, kdt, 1, 0),
                          Tile(kj.ref, ia, jb, kdt, 0, 1), ilo, jlo, tri)  # fmt: skip
            a = acc.sub(0, 0, ia, 1)
            if jlo == 0:
                cl.v(VUn(UnOp.COPY, DT.I32, a.ref, part.ref, a.shape, a.strides, part.strides))
            elif jlo + jb < n:
                cl.v(VBin(BinOp.ADD, DT.I32, a.ref, a.ref, part.ref, a.shape, a.strides,
                          a.strides, part.strides))  # fmt: skip
            else:
                if b >= 2:
                    cl.v(WaitFlag(Unit.DMA_OUT, Unit.VECTOR, _F_SORT))
                place, pos = (t.sub(0, 0, ia, 1) for t in outs[b % 2])
                _scatter(cl, s, dstart, k, ddt, a, part, place, pos, ilo)
                st.writes.append((s.dst, dstart, dstart + s.dst_stride * (k - 1) + 1))
            cl.close()
    cl.open()  # the last scatters' flags, waited for before the group's memory is reused
    for _ in range(min(2, nblocks)):
        cl.v(WaitFlag(Unit.DMA_OUT, Unit.VECTOR, _F_SORT))
    cl.close()


def _zero_row(cl: CoreLowering, s: SortRow, dstart: int, k: int, ddt: DT) -> None:
    """The output row's k places set to 0 (the scatter adds into them)."""
    chunk = max(1, cl.slot_size // 2 // ddt.itemsize)
    for lo, m in _blocks(k, chunk):
        st = cl.open()
        t = cl.temp(1, m, ddt)
        cl.v(VDup(ddt, t.ref, 0.0, t.shape, t.strides))
        at = dstart + lo * s.dst_stride
        dst = cl.low.dram(s.dst, at * ddt.itemsize)
        st.stores.append(_box_dma(ddt, dst, t.ref, t.shape, (0, s.dst_stride), t.strides))
        st.writes.append((s.dst, at, at + s.dst_stride * (m - 1) + 1))
        cl.close()


def _load(cl: CoreLowering, s: SortRow, at: int, m: int, sdt: DT) -> Tile:
    """m keys of the row from element `at` of the source into a (1, m) tile."""
    st = cl.open()
    t = cl.temp(1, m, sdt)
    src = cl.low.dram(s.src, at * sdt.itemsize)
    st.loads.append(_box_dma(sdt, t.ref, src, t.shape, t.strides, (0, s.src_stride)))
    st.reads.append((s.src, at, at + s.src_stride * (m - 1) + 1))
    return t


def _keys(cl: CoreLowering, raw: Tile, sdt: DT, kdt: DT, out: Tile) -> None:
    """out (1, m) kdt = integers ordered as the keys `raw` sort (module docstring)."""
    shape, d = raw.shape, raw.strides
    low = -float(2 ** (8 * kdt.itemsize - 1))  # the sign bit
    if sdt not in _FLOATS:
        cl.v(VCast(kdt, sdt, out.ref, raw.ref, shape, out.strides, d, CastMode.TRUNC))
        if sdt == DT.U64:  # the same bits, the sign bit flipped: unsigned order as signed
            cl.v(VScalar(BinOp.XOR, kdt, out.ref, out.ref, low, shape, out.strides,
                         out.strides))  # fmt: skip
        return
    fdt = DT.F64 if kdt == DT.I64 else DT.F32
    x = raw
    if sdt != fdt:  # float16 and bfloat16 widen exactly
        x = cl.temp(1, raw.cols, fdt)
        cl.v(VCast(fdt, sdt, x.ref, raw.ref, shape, x.strides, d))
    bits = Tile(x.ref, 1, x.cols, kdt)  # the same bytes read as integers
    nan = cl.temp(1, x.cols, DT.BOOL)
    cl.v(VCmp(CmpOp.NE, fdt, nan.ref, x.ref, x.ref, shape, nan.strides, x.strides, x.strides))
    neg = cl.temp(1, x.cols, DT.BOOL)
    cl.v(VCmpS(CmpOp.LT, kdt, neg.ref, bits.ref, 0.0, shape, neg.strides, bits.strides))
    mag = cl.temp(1, x.cols, kdt)
    cl.v(VScalar(BinOp.XOR, kdt, mag.ref, bits.ref, low, shape, mag.strides, bits.strides))
    cl.v(VUn(UnOp.NEG, kdt, mag.ref, mag.ref, shape, mag.strides, mag.strides))
    cl.v(VSel(kdt, out.ref, neg.ref, mag.ref, bits.ref, shape, out.strides, neg.strides,
              mag.strides, bits.strides))  # fmt: skip
    qnan = float(0x7FF8 << 48) if kdt == DT.I64 else float(0x7FC00000)
    q = cl.const(qnan, kdt)
    cl.v(VSel(kdt, out.ref, nan.ref, q.ref, out.ref, shape, out.strides, nan.strides, (0, 0),
              out.strides))  # fmt: skip


def _triangle(cl: CoreLowering, bs: int) -> Tile:
    """(bs, bs) bool in group memory: [r, c] = c < r, key c of a block earlier than its
    key r (a diagonal step's ties), from a (1, bs) `viota` seen as a column and a row."""
    cl.open()
    idx = cl.temp(1, bs, DT.I16)
    cl.v(VIota(DT.I16, idx.ref, 0, 0, 0, 1, idx.shape, idx.strides))
    tri = cl.persist(bs, bs, DT.BOOL)
    cl.v(VCmp(CmpOp.GT, DT.I16, tri.ref, idx.ref, idx.ref, tri.shape, tri.strides, (1, 0),
              (0, 1)))  # fmt: skip
    cl.close()
    return tri


def _count(cl: CoreLowering, desc: bool, ki: Tile, kj: Tile, ilo: int, jlo: int,
           tri: Tile) -> Tile:  # fmt: skip
    """(ia, 1) i32: for each key of block i, block j's keys before it in the stable order
    (ki, kj: the blocks' keys broadcast to (ia, jb)). The (ia, jb) mask's 0/1 bytes are
    summed two to a 16-bit word (a row padded to even length with a 0): each word sum is
    evens + 256 * odds, both under 128 (jb <= _MOST), split by an `and` and a shift."""
    ia, jb = ki.shape
    kdt = ki.dtype
    shape = (ia, jb)
    w = jb + jb % 2

    def cmp(op: CmpOp) -> Tile:
        m = Tile(cl.temp(ia, w, DT.BOOL).ref, ia, jb, DT.BOOL, w, 1)
        cl.v(VCmp(op, kdt, m.ref, kj.ref, ki.ref, shape, m.strides, kj.strides, ki.strides))
        return m

    strict, ties = (CmpOp.GT, CmpOp.GE) if desc else (CmpOp.LT, CmpOp.LE)
    if jlo + jb <= ilo:  # block j wholly earlier: its ties come first too
        before = cmp(ties)
    elif jlo >= ilo + ia:  # wholly later
        before = cmp(strict)
    else:  # the diagonal (the same block): ties only at earlier positions, j < i
        assert (ilo, ia) == (jlo, jb)
        before, le = cmp(strict), cmp(ties)
        t = tri.sub(0, 0, ia, jb)
        cl.v(VSel(DT.BOOL, before.ref, t.ref, le.ref, before.ref, shape, before.strides,
                  t.strides, le.strides, before.strides))  # fmt: skip
    if w != jb:
        pad = before.sub(0, jb, ia, 1)
        cl.v(VDup(DT.BOOL, pad.ref, 0.0, pad.shape, pad.strides))
    words = Tile(before.ref, ia, w // 2, DT.I16)
    total = cl.temp(ia, 1, DT.I16)
    cl.v(VReduce(RedOp.SUM, DT.I16, 1, total.ref, words.ref, words.shape, total.strides,
                 words.strides))  # fmt: skip
    evens = cl.temp(ia, 1, DT.I16)
    cl.v(VScalar(BinOp.AND, DT.I16, evens.ref, total.ref, 255.0, evens.shape, evens.strides,
                 total.strides))  # fmt: skip
    cl.v(VScalar(BinOp.SHR, DT.I16, total.ref, total.ref, 8.0, total.shape, total.strides,
                 total.strides))  # fmt: skip
    cl.v(VBin(BinOp.ADD, DT.I16, evens.ref, evens.ref, total.ref, evens.shape, evens.strides,
              evens.strides, total.strides))  # fmt: skip
    part = cl.temp(ia, 1, DT.I32)
    cl.v(VCast(DT.I32, DT.I16, part.ref, evens.ref, part.shape, part.strides, evens.strides))
    return part


def _scatter(cl: CoreLowering, s: SortRow, dstart: int, k: int, ddt: DT, acc: Tile,
             part: Tile, place: Tile, pos: Tile, ilo: int) -> None:  # fmt: skip
    """Block i's places (acc + its last part, into `place`) get its positions (`pos`)
    added; places past k (top-k) add 0 at place 0 instead. `place` and `pos` are group
    memory: the scatter counts _F_SORT up when it has read them, and the step is
    `detached` (later steps need not wait for its slow element-wise adds)."""
    st = cl.open()
    cl.v(VBin(BinOp.ADD, DT.I32, place.ref, acc.ref, part.ref, place.shape, place.strides,
              acc.strides, part.strides))  # fmt: skip
    cl.v(VIota(ddt, pos.ref, 0, ilo, 1, 0, pos.shape, pos.strides))
    if k < s.n:
        keep = cl.temp(place.rows, 1, DT.BOOL)
        cl.v(VCmpS(CmpOp.LT, DT.I32, keep.ref, place.ref, float(k), place.shape, keep.strides,
                   place.strides))  # fmt: skip
        z32, zd = cl.const(0.0, DT.I32), cl.const(0.0, ddt)
        cl.v(VSel(DT.I32, place.ref, keep.ref, place.ref, z32.ref, place.shape, place.strides,
                  keep.strides, place.strides, (0, 0)))  # fmt: skip
        cl.v(VSel(ddt, pos.ref, keep.ref, pos.ref, zd.ref, pos.shape, pos.strides, keep.strides,
                  pos.strides, (0, 0)))  # fmt: skip
    table = cl.low.dram(s.dst, dstart * ddt.itemsize)
    st.stores.append(ScatterAdd(ddt, table, pos.ref, place.ref, place.rows, 1,
                                max(1, s.dst_stride), 1, k))  # fmt: skip
    st.stores.append(SetFlag(Unit.DMA_OUT, Unit.VECTOR, _F_SORT))
    st.detached = True
