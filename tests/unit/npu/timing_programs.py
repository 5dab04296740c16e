"""Hand-written programs for the timing tests and bench: a tiled GEMM with and without overlap.

Written directly with isa.py (the kernel library lives elsewhere) so the timing model can be
checked on its own: addresses are explicit, flags are set and waited by hand.
"""

from __future__ import annotations

from anychip.npu.config import NpuConfig
from anychip.npu.isa import DT, Dma, Finish, Instr, Mma, Ref, SetFlag, Space, Unit, WaitFlag
from anychip.npu.program import Program

DI, DO, MX = Unit.DMA_IN, Unit.DMA_OUT, Unit.MATRIX
FULL, FREE, ACC_FULL, ACC_FREE = 0, 1, 2, 3


def box(dt: DT, dst: Ref, src: Ref, rows: int, cols: int, dst_ld: int, src_ld: int) -> Dma:
    """A (rows, cols) copy between row-major views with leading dimensions in elements."""
    shape = (1, rows, cols)
    return Dma(dt, dst, src, shape, (0, dst_ld, 1), (0, src_ld, 1), shape)


def gemm_core(
    cfg: NpuConfig,
    core: int,
    ncores: int,
    mnk: tuple[int, int, int],
    blocks: tuple[int, int, int],
    addrs: tuple[int, int, int],
    overlap: bool = True,
) -> tuple[Instr, ...]:
    """One core's share of C (M, N) f32 = A (M, K) f16 @ B (K, N) f16; sizes divide blocks.

    Output blocks (bm, bn) go to cores round-robin. With `overlap`, A/B tiles and the
    accumulator are double-buffered (loads of step s+1 and the store of a block run under
    the MMAs); without, every step loads, waits, multiplies and waits again.
    """
    (m, n, k), (bm, bn, bk), (a_addr, b_addr, c_addr) = mnk, blocks, addrs
    slots = 2 if overlap else 1
    a_bytes, b_bytes, c_bytes = bm * bk * 2, bk * bn * 2, bm * bn * 4
    for space, need in ((Space.L0A, a_bytes), (Space.L0B, b_bytes), (Space.L0C, c_bytes)):
        assert slots * need <= cfg.buffer(space.name.lower()).size, (space, need)
    code: list[Instr] = []
    tiles = [(i, j) for i in range(m // bm) for j in range(n // bn)][core::ncores]
    step = 0
    for blk, (i, j) in enumerate(tiles):
        acc = Ref(Space.L0C, (blk % slots) * c_bytes)
        for kk in range(k // bk):
            a = Ref(Space.L0A, (step % slots) * a_bytes)
            b = Ref(Space.L0B, (step % slots) * b_bytes)
            if step >= slots:  # the matrix unit has finished with this slot's last tiles
                code.append(WaitFlag(MX, DI, FREE))
            src_a = Ref(Space.DRAM, a_addr + (i * bm * k + kk * bk) * 2)
            src_b = Ref(Space.DRAM, b_addr + (kk * bk * n + j * bn) * 2)
            code.append(box(DT.F16, a, src_a, bm, bk, bk, k))
            code.append(box(DT.F16, b, src_b, bk, bn, bn, n))
            code.append(SetFlag(DI, MX, FULL))
            code.append(WaitFlag(DI, MX, FULL))
            if kk == 0 and blk >= slots:  # the store of this accumulator's last block is done
                code.append(WaitFlag(DO, MX, ACC_FREE))
            code.append(Mma(DT.F16, acc, a, b, bm, bn, bk, int(kk > 0)))
            code.append(SetFlag(MX, DI, FREE))
            step += 1
        code.append(SetFlag(MX, DO, ACC_FULL))
        code.append(WaitFlag(MX, DO, ACC_FULL))
        dst = Ref(Space.DRAM, c_addr + (i * bm * n + j * bn) * 4)
        code.append(box(DT.F32, dst, acc, bm, bn, n, bn))
        code.append(SetFlag(DO, MX, ACC_FREE))
    # take back the counts no later step consumed: a flag set and never waited on is a fault
    code += [WaitFlag(MX, DI, FREE)] * min(step, slots)
    code += [WaitFlag(DO, MX, ACC_FREE)] * min(len(tiles), slots)
    code.append(Finish())
    return tuple(code)


def gemm_program(
    cfg: NpuConfig,
    mnk: tuple[int, int, int],
    blocks: tuple[int, int, int],
    addrs: tuple[int, int, int] | None = None,
    ncores: int | None = None,
    overlap: bool = True,
) -> Program:
    """The GEMM on `ncores` cores (default: all of the design's)."""
    m, n, k = mnk
    ncores = ncores or cfg.cores
    if addrs is None:
        addrs = (0, m * k * 2, m * k * 2 + k * n * 2)
    return Program(
        tuple(gemm_core(cfg, c, ncores, mnk, blocks, addrs, overlap) for c in range(ncores))
    )
