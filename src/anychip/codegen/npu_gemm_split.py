"""The vector-unit code that turns float32 GEMM operands into 16-bit matrix-unit pieces:
bfloat16 pieces by Veltkamp's split, or float16 pieces of power-of-two scaled values, with
the scales computed on chip from each row's (column's) largest magnitude.

Used by `codegen/npu_gemm.py` (one core's schedule); docs/npu-gemm.md has the error bounds.
float16 keeps 11 significant bits but only exponents -24..15, so a float32 row of A (column
of B) is first multiplied by `2^(141 - E)`, E the biased exponent of its largest |value|:
the row's maximum lands in [2^14, 2^15), exactly, and the epilogue multiplies the f32
accumulator back by the inverse scales of its row and column.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from anychip.npu.builder import Builder, Tile
from anychip.npu.isa import DT, BinOp, RedOp, Ref, Space, UnOp

Step = tuple[tuple[int, ...], int, int, int]  # (batch index, i0, j0, k0)

VELTKAMP = float(2**16 + 1)  # splits the 8 leading bits off an f32 (24-bit) significand
# a scaled maximum lands in [2^TOP, 2^(TOP+1)): float16's largest finite value is
# 65504 < 2^16, so a rounded piece never overflows
TOP = 14
# scale exponents stay in [2^-114, 2^126] (biased 13..253): a row whose maximum is below
# 2^-112 (zero rows included) is scaled by 2^126, and 1 / scale is a normal float32
MAX_SCALE_BIASED = 253
# a tile's scales are read until its epilogue, which is emitted up to four steps after
# the next tiles' scales are computed (npu_gemm's operands are prepared three steps ahead)
SCALE_SLOTS = 4


def piece_tiles(dst: Ref, rows: int, cols: int, dt: DT, n: int, side: bool) -> list[Tile]:
    """The n (rows, cols) piece tiles of a pieces slot at `dst`: stacked one after another,
    or (`side`) side by side in each row of a (rows, n * cols) tile."""
    if side:
        return [Tile(dataclasses.replace(dst, off=dst.off + q * cols * dt.itemsize), rows, cols,
                     dt, n * cols) for q in range(n)]  # fmt: skip
    step = rows * cols * dt.itemsize
    return [Tile(dataclasses.replace(dst, off=dst.off + q * step), rows, cols, dt)
            for q in range(n)]  # fmt: skip


def split_bf16(bld: Builder, x: Tile, pieces: Sequence[Tile], scratch: Sequence[Tile]) -> None:
    """x (f32) -> bf16 pieces x0, x1[, x2], all in f32 arithmetic: Veltkamp's split
    (g = x * (2^16 + 1); hi = g + (x - g)) gives the leading 8 bits exactly, so each piece
    is exact in bf16 and each residual exact in f32 (the last piece is rounded when only
    two are kept). `x` and both scratch tiles are overwritten."""
    t, r = scratch
    cur, tmp = x, r  # the value still to split, and a free tile
    for q in range(len(pieces) - 1):
        bld.vscalar(BinOp.MUL, t, cur, VELTKAMP)  # g
        bld.vbin(BinOp.SUB, tmp, cur, t)  # x - g
        bld.vbin(BinOp.ADD, t, t, tmp)  # hi: 8 leading bits
        bld.vcast(pieces[q], t)  # exact
        bld.vbin(BinOp.SUB, r, cur, t)  # the residual, exact
        cur, tmp = r, x  # x's slot is free once r holds x - hi
    bld.vcast(pieces[-1], cur)


def split_f16(bld: Builder, x: Tile, scale: Tile, pieces: Sequence[Tile], t: Tile) -> None:
    """x (f32) * scale (a broadcast row or column of powers of two) -> f16 pieces: each
    piece is the float16 rounding of what the earlier ones leave (x - p0 - ... is exact in
    f32), so three pieces hold all 24 bits of a value down to 2^-24 / 2^TOP of its row's
    maximum. `x` is overwritten (it ends as the last residual); `t` is scratch."""
    bld.vbin(BinOp.MUL, x, x, scale)  # exact: a power of two, no overflow or underflow
    for q, p in enumerate(pieces):
        bld.vcast(p, x)  # round to nearest even
        if q + 1 < len(pieces):
            bld.vcast(t, p)  # exact
            bld.vbin(BinOp.SUB, x, x, t)  # the residual, exact


def max_abs(bld: Builder, run: Tile, x: Tile, t: Tile, tmp: Tile, axis: int, first: bool) -> None:
    """run = max(run, max |x| along `axis`): axis 1 gives a (rows, 1) maximum per row,
    axis 0 a (1, cols) one per column; `first` starts it; `t` (x's shape) and `tmp` (run's)
    are scratch. NaN propagates (an inf or NaN maximum scales its row to 2^-114)."""
    bld.vun(UnOp.ABS, t, x)
    bld.vreduce(RedOp.MAX, run if first else tmp, t, axis)
    if not first:
        bld.vbin(BinOp.MAX, run, run, tmp)


def pow2_scales(bld: Builder, run: Tile, scale: Tile, inverse: Tile, tmp: Tile) -> None:
    """From maxima `run` (f32, >= 0): scale = 2^(141 - E) and inverse = 1 / scale, E the
    maximum's biased exponent, clamped to [2^-114, 2^126], by integer ops on the f32 bits
    (exact; no host work). `tmp` (run's shape) is scratch."""
    bits, e = run.as_dtype(DT.I32), tmp.as_dtype(DT.I32)
    bld.vscalar(BinOp.SHR, e, bits, 23)
    bld.vscalar(BinOp.AND, e, e, 255)  # E: 0 for zero and subnormal maxima, 255 inf/NaN
    bld.vscalar(BinOp.MUL, e, e, -1)
    bld.vscalar(BinOp.ADD, e, e, 127 + 127 + TOP)  # the scale's biased exponent
    bld.vscalar(BinOp.MIN, e, e, MAX_SCALE_BIASED)
    bld.vscalar(BinOp.SHL, scale.as_dtype(DT.I32), e, 23)
    bld.vscalar(BinOp.MUL, e, e, -1)
    bld.vscalar(BinOp.ADD, e, e, 254)  # the inverse's biased exponent, >= 1
    bld.vscalar(BinOp.SHL, inverse.as_dtype(DT.I32), e, 23)


def unscale(bld: Builder, part: Tile, row_inv: Tile, col_inv: Tile, f: Tile) -> None:
    """part (rows, cols) *= row_inv (rows, 1) * col_inv (1, cols): their product first (a
    power of two, exact unless the output itself is beyond float32's range), so the
    accumulator is rounded once."""
    rows, cols = part.shape
    bld.vbin(BinOp.MUL, f, row_inv.bcast_cols(cols), col_inv.bcast_rows(rows))
    bld.vbin(BinOp.MUL, part, part, f)


class Scales:
    """One core's scales for float16 pieces: for each tile, (scale, inverse) of its rows
    of A and of its columns of B in one of SCALE_SLOTS slots (A's advance only when a
    tile starts another row block, B's another column block), the running maxima they
    come from, and the epilogue's unscale. All on the vector unit, in program order."""

    def __init__(self, bld: Builder, steps: Sequence[Step], tm: int, tn: int,
                 factors: int, scratch: Ref) -> None:  # fmt: skip
        def vec(n: int) -> Ref:
            return bld.alloc(Space.UB, 4 * n)

        self.bld, self.scratch = bld, scratch
        self.slots = (
            [(vec(tm), vec(tm)) for _ in range(SCALE_SLOTS)],  # rows of A
            [(vec(tn), vec(tn)) for _ in range(SCALE_SLOTS)],  # columns of B
        )
        self.maxima = ((vec(tm), vec(tm)), (vec(tn), vec(tn)))  # (running, reduced)
        self.factors = bld.alloc(Space.UB, 4 * factors)  # a block of inverse products
        # per step: whether it starts a tile needing new (A, B) scales, and their slots
        self.fresh: list[tuple[bool, bool]] = []
        self.slot: list[tuple[int, int]] = []
        # B's column blocks: when the core has at most SCALE_SLOTS of them, each keeps
        # its own slot and is computed once (not again for every row block of tiles)
        cols = list(dict.fromkeys((st[0], st[2]) for st in steps))
        table = {key: n for n, key in enumerate(cols)} if len(cols) <= SCALE_SLOTS else None
        na = nb = -1
        seen: set[tuple[tuple[int, ...], int]] = set()
        first: Step | None = None  # the first step of the tile before
        for st in steps:
            fa = fb = False
            if st[3] == 0:
                fa = first is None or first[:2] != st[:2]  # another row block of A
                fb = first is None or (first[0], first[2]) != (st[0], st[2])  # of B
                if table is not None:  # its first tile
                    fb = (st[0], st[2]) not in seen
                    seen.add((st[0], st[2]))
                first = st
            na = na + fa
            nb = table[st[0], st[2]] if table is not None else nb + fb
            self.fresh.append((fa, fb))
            self.slot.append((na % SCALE_SLOTS, nb % SCALE_SLOTS))

    def fold(self, op: int, i: int, x: Tile, first: bool, last: bool) -> None:
        """Folds chunk x's maxima into the running ones of step i's operand `op` (0: A,
        per row; 1: B, per column); the last chunk writes the scales into their slot."""
        n = x.rows if op == 0 else x.cols
        shape = (n, 1) if op == 0 else (1, n)
        run, tmp = (Tile(r, *shape, DT.F32) for r in self.maxima[op])
        t = Tile(self.scratch, x.rows, x.cols, DT.F32)
        max_abs(self.bld, run, x, t, tmp, 1 - op, first)
        if last:
            scale, inv = (Tile(r, *shape, DT.F32) for r in self.slots[op][self.slot[i][op]])
            pow2_scales(self.bld, run, scale, inv, tmp)

    def scale(self, op: int, i: int, rows: int, cols: int) -> Tile:
        """Step i's scales of operand `op`, broadcast over its (rows, cols) tile."""
        ref = self.slots[op][self.slot[i][op]][0]
        if op == 0:
            return Tile(ref, rows, 1, DT.F32).bcast_cols(cols)
        return Tile(ref, 1, cols, DT.F32).bcast_rows(rows)

    def unscale(self, part: Tile, b0: int, i: int) -> None:
        """Rows [b0, b0 + rows) of step i's accumulator times their inverse scales."""
        rows, cols = part.shape
        inv_a, inv_b = (self.slots[op][self.slot[i][op]][1] for op in (0, 1))
        ia = Tile(dataclasses.replace(inv_a, off=inv_a.off + 4 * b0), rows, 1, DT.F32)
        unscale(self.bld, part, ia, Tile(inv_b, 1, cols, DT.F32),
                Tile(self.factors, rows, cols, DT.F32))  # fmt: skip
