"""Moving boxes of a GEMM's strided device-memory views (`GemmView`) to and from on-chip
tiles with one DMA each, for `codegen/npu_gemm.py`.
"""

from __future__ import annotations

from anychip.codegen.npu_gemm_plan import GemmView
from anychip.npu.builder import Builder, Tile
from anychip.npu.isa import Dma, Ref, Space


def _base(v: GemmView, bidx: tuple[int, ...]) -> int:
    return v.offset + sum(i * st for i, st in zip(bidx, v.batch_strides, strict=True))


def load_view(bld: Builder, dst: Tile, v: GemmView, bidx: tuple[int, ...], r0: int,
              c0: int, rows: int, cols: int) -> None:  # fmt: skip
    """Device view rows [r0, r0+rows) x cols [c0, c0+cols) -> top-left of dense `dst`,
    zero padding the rest. The box's inner dimension runs along whichever of the view's
    strides is contiguous in device memory (a transposed view is transposed on the way)."""
    size = v.dtype.itemsize
    src = Ref(Space.DRAM, (_base(v, bidx) + r0 * v.rows + c0 * v.cols) * size, v.reg)
    pr, pc = dst.shape
    if v.cols != 1 and v.rows == 1 and rows > 1:  # column-major: walk down columns
        box, ss, ds, pad = (1, cols, rows), (0, v.cols, 1), (0, 1, pc), (1, pc, pr)
    else:
        box, ss, ds, pad = (1, rows, cols), (0, v.rows, v.cols), (0, pc, 1), (1, pr, pc)
    bld.emit(Dma(dst.dtype, dst.ref, src, box, ds, ss, pad, 0.0))


def store_view(bld: Builder, v: GemmView, bidx: tuple[int, ...], r0: int, c0: int,
               src: Tile, rows: int, cols: int) -> None:  # fmt: skip
    """The top-left (rows, cols) of `src` -> the device view at (r0, c0)."""
    size = v.dtype.itemsize
    dst = Ref(Space.DRAM, (_base(v, bidx) + r0 * v.rows + c0 * v.cols) * size, v.reg)
    sr, sc = src.strides
    if v.cols != 1 and v.rows == 1 and rows > 1:
        box, ds, ss = (1, cols, rows), (0, v.cols, 1), (0, sc, sr)
    else:
        box, ds, ss = (1, rows, cols), (0, v.rows, v.cols), (0, sr, sc)
    bld.emit(Dma(src.dtype, dst, src.ref, box, ds, ss, box, 0.0))
