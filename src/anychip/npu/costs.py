"""What one instruction costs on a design: the per-instruction rules of the timing model.

Pure functions of (config, instruction); `npu/timing.py` schedules them. docs/npu-timing.md
states the same rules in words so a cycle count can be predicted by hand.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from anychip.npu.config import NpuConfig
from anychip.npu.isa import Dma, Gather, Instr, Mma, Ref, Space, VCast, VReduce

# On-chip copies (buffer to buffer) have no device-memory round trip: they complete when
# their last byte is written.
ONCHIP_LATENCY = 0


@dataclass(frozen=True)
class DmaCost:
    """One DMA's figures. `traffic` is the device-memory bytes it occupies (bursts rounded).

    `cap` is its best rate in bytes/cycle when it runs alone; a device-memory transfer
    (`dram` true) gets less while others share the bandwidth.
    """

    level: str  # e.g. 'dram->l0a', 'ub->dram', 'l1->l0b'
    nbytes: int  # useful bytes moved
    traffic: int  # bytes occupying the transfer phase (device-memory bursts, rounded up)
    cap: float  # bytes/cycle alone
    dram: bool
    latency: int


def mma_cycles(cfg: NpuConfig, i: Mma) -> int:
    """Matrix-unit busy cycles: every started MxNxK hardware tile costs `tile_cycles`.

    >>> from anychip.npu.config import PROFILES
    >>> from anychip.npu.isa import DT
    >>> mma_cycles(PROFILES["edge"], Mma(DT.F16, Ref(Space.L0C, 0), Ref(Space.L0A, 0),
    ...                                  Ref(Space.L0B, 0), 32, 16, 17))
    16
    """
    tiles = (
        -(-i.m // cfg.matrix_m) * -(-i.n // cfg.matrix_n) * -(-i.k // cfg.matrix_k)
    )  # ceil per dimension: a partial tile costs a whole one
    return tiles * cfg.tile_cycles


def _dense(shape: tuple[int, int], strides: tuple[int, int]) -> bool:
    """True when a (rows, cols) operand is one contiguous run of elements."""
    return strides[1] == 1 and (shape[0] == 1 or strides[0] == shape[1])


@lru_cache(maxsize=4096)
def bank_factor(stride_bytes: int, group: int, banks: int, width: int) -> int:
    """Cycles one group of `group` elements `stride_bytes` apart needs from a banked buffer.

    Each bank delivers one `width`-byte word per cycle; the group starts at bank 0. The
    answer is the largest number of distinct words any one bank must deliver (1 = no
    conflict).

    >>> bank_factor(4, 64, 8, 64), bank_factor(512, 16, 8, 64), bank_factor(0, 64, 8, 64)
    (1, 16, 1)
    """
    words = {(j * stride_bytes) // width for j in range(group)}
    per_bank = Counter(w % banks for w in words)
    return max(per_bank.values())


def _operands(i: Instr) -> tuple[list[tuple[Ref, tuple[int, int], int]], tuple[int, int]]:
    """(ref, strides, itemsize) of every operand, and the iteration shape (rows, cols)."""
    shape: tuple[int, int] = i.shape  # type: ignore[attr-defined]
    ops: list[tuple[Ref, tuple[int, int], int]] = []
    if isinstance(i, VCast):
        ops.append((i.a, i.a_strides, i.src_dtype.itemsize))
        ops.append((i.dst, i.dst_strides, i.dst_dtype.itemsize))
        return ops, shape
    size = i.dtype.itemsize  # type: ignore[attr-defined]
    for name in ("a", "b"):
        if hasattr(i, name):
            ops.append((getattr(i, name), getattr(i, name + "_strides"), size))
    if not isinstance(i, VReduce):  # a reduction's output is a tiny fraction of its input
        ops.append((i.dst, i.dst_strides, size))  # type: ignore[attr-defined]
    return ops, shape


def vector_lanes(cfg: NpuConfig, itemsize: int) -> int:
    """Elements per cycle: `vector_lanes` 32-bit elements, twice as many 16-bit ones."""
    return cfg.vector_lanes * 4 // max(2, min(4, itemsize))


def vector_cycles(cfg: NpuConfig, i: Instr) -> int:
    """Vector-unit busy cycles of a vector instruction (elementwise, reduce, cast, dup).

    Dense operands stream as one run: ceil(rows*cols / lanes) groups; otherwise every row
    starts a new group: rows * ceil(cols / lanes). Each group costs the worst bank factor
    of its operands.

    >>> from anychip.npu.config import PROFILES
    >>> from anychip.npu.isa import DT, VDup
    >>> vector_cycles(PROFILES["edge"], VDup(DT.F32, Ref(Space.UB, 0), 1.0, (4, 64), (64, 1)))
    16
    """
    ops, (rows, cols) = _operands(i)
    itemsize = max(size for _, _, size in ops)
    lanes = vector_lanes(cfg, itemsize)
    if all(_dense((rows, cols), strides) for _, strides, _ in ops):
        groups, group = -(-(rows * cols) // lanes), min(lanes, rows * cols)
    else:
        groups, group = rows * -(-cols // lanes), min(lanes, cols)
    factor = 1
    for ref, strides, size in ops:
        spec = cfg.buffer(ref.space.name.lower())
        factor = max(factor, bank_factor(abs(strides[1]) * size, group, spec.banks,
                                         spec.bank_width))  # fmt: skip
    return groups * factor


def vector_elements(i: Instr) -> int:
    """Elements a vector instruction processes (its iteration shape)."""
    rows, cols = i.shape  # type: ignore[attr-defined]
    return int(rows * cols)


def _run_elems(shape: tuple[int, ...], strides: tuple[int, ...]) -> int:
    """Elements in each contiguous run of a strided box (inner dimensions merged)."""
    run = 1
    for n, s in zip(reversed(shape), reversed(strides)):
        if n == 1:
            continue
        if s != run:
            break
        run *= n
    return run


def _bursts(nbytes_per_run: int, runs: int, burst: int) -> int:
    return runs * -(-nbytes_per_run // burst) * burst


def dma_cost(cfg: NpuConfig, i: Dma | Gather) -> DmaCost:
    """Bytes, device-memory traffic, solo rate and latency of a DMA or gather.

    >>> from anychip.npu.config import PROFILES
    >>> from anychip.npu.isa import DT
    >>> d = Dma(DT.F16, Ref(Space.L0A, 0), Ref(Space.DRAM, 0), (1, 16, 16), (0, 16, 1),
    ...         (0, 16, 1), (1, 16, 16))
    >>> c = dma_cost(PROFILES["edge"], d)
    >>> c.level, c.nbytes, c.traffic, c.cap, c.latency
    ('dram->l0a', 512, 512, 16.0, 200)
    """
    size = i.dtype.itemsize
    if isinstance(i, Gather):
        row = i.row_len * size
        buf = cfg.buffer(i.dst.space.name.lower())
        cap = min(float(cfg.dma_width), float(buf.bandwidth), float(cfg.dram_bandwidth))
        traffic = _bursts(row, i.count, cfg.dram_burst)
        level = f"dram->{i.dst.space.name.lower()}"
        return DmaCost(level, i.count * row, traffic, cap, True, cfg.dma_latency)
    nbytes = math.prod(i.shape) * size
    src, dst = i.src.space, i.dst.space
    level = f"{src.name.lower()}->{dst.name.lower()}"
    if Space.DRAM not in (src, dst):  # on-chip copy: limited by the engine and both buffers
        cap = float(min(cfg.dma_width, cfg.buffer(src.name.lower()).bandwidth,
                        cfg.buffer(dst.name.lower()).bandwidth))  # fmt: skip
        return DmaCost(level, nbytes, nbytes, cap, False, ONCHIP_LATENCY)
    on_chip, strides = (dst, i.src_strides) if src == Space.DRAM else (src, i.dst_strides)
    run = _run_elems(i.shape, strides) * size
    traffic = _bursts(run, nbytes // run, cfg.dram_burst)
    buf = cfg.buffer(on_chip.name.lower())
    cap = min(float(cfg.dma_width), float(buf.bandwidth), float(cfg.dram_bandwidth))
    return DmaCost(level, nbytes, traffic, cap, True, cfg.dma_latency)


def fair_rates(caps: list[float], total: float) -> list[float]:
    """Max-min fair shares of `total` bandwidth among transfers each capped at caps[i].

    >>> fair_rates([512.0, 512.0, 512.0], 1024.0)
    [341.3333333333333, 341.3333333333333, 341.3333333333333]
    >>> fair_rates([100.0, 800.0], 1024.0)
    [100.0, 800.0]
    """
    rates = [0.0] * len(caps)
    left, todo = total, sorted(range(len(caps)), key=caps.__getitem__)
    while todo:
        share = left / len(todo)
        j = todo[0]
        if caps[j] <= share:  # the smallest cap is below the fair share: it takes its cap
            rates[j] = caps[j]
            left -= caps[j]
            todo.pop(0)
        else:
            for j in todo:
                rates[j] = share
            break
    return rates
