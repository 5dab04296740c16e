"""What one instruction costs on a design: the per-instruction rules of the timing model.

Pure functions of (config, instruction); `npu/timing.py` schedules them. docs/npu-timing.md
states the same rules in words so a cycle count can be predicted by hand.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from anychip.npu.config import NpuConfig
from anychip.npu.isa import (
    DT,
    Dma,
    Gather,
    Instr,
    Mma,
    Ref,
    ScatterAdd,
    Space,
    UnOp,
    VCast,
    VCmp,
    VCmpS,
    VDup,
    VReduce,
    VSel,
    VUn,
)

# On-chip copies (buffer to buffer) have no device-memory round trip: they complete when
# their last byte is written.
ONCHIP_LATENCY = 0


@dataclass(frozen=True)
class DmaCost:
    """One DMA's figures. `traffic` is the device-memory bytes it moves (bursts rounded).

    `cap` is its best rate in bytes/cycle when it runs alone with an idle device memory; a
    device-memory transfer (`dram` true) gets less while others share the bandwidth, and
    its engine's outstanding requests bound it by latency (docs/npu-timing.md).
    `occupancy` is `traffic` plus `dram_activate` bytes of bandwidth time per page (row)
    opened; `request` the bytes of one request (a run, at most `dma_request`); `ports`
    the on-chip buffers it reads or writes and how many bytes.
    """

    level: str  # e.g. 'dram->l0a', 'ub->dram', 'l1->l0b'
    nbytes: int  # useful bytes moved
    traffic: int  # device-memory bytes on the bus (bursts rounded up); nbytes on chip
    cap: float  # bytes/cycle alone
    dram: bool
    latency: int
    occupancy: float = 0.0  # bandwidth-time bytes: traffic + page activations
    request: int = 0
    activations: int = 0
    ports: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class UnitCost:
    """A matrix or vector instruction's figures with every buffer port to itself.

    `cycles` is its occupancy, `latency` the extra cycles until its results are visible,
    `ports` the bytes it reads plus writes in each buffer it touches (what shares the
    buffer's `banks * bank_width` bytes per cycle with other units).
    """

    cycles: float
    latency: float
    ports: tuple[tuple[str, int], ...]


def mma_cycles(cfg: NpuConfig, i: Mma) -> float:
    """Matrix-unit busy cycles of an `mma` with its operand ports to itself (`mma_cost`).

    For the 'tile' dataflow every started MxNxK hardware tile costs `tile_cycles`:

    >>> from anychip.npu.config import PROFILES
    >>> from anychip.npu.isa import DT
    >>> mma_cycles(PROFILES["cube"], Mma(DT.F16, Ref(Space.L0C, 0), Ref(Space.L0A, 0),
    ...                                  Ref(Space.L0B, 0), 32, 16, 17, accumulate=0))
    4.0
    """
    return mma_cost(cfg, i).cycles


def _port(cfg: NpuConfig, name: str, nbytes: float) -> float:
    """Cycles `nbytes` of reads and writes need from buffer `name`'s ports."""
    return nbytes / cfg.buffer(name).bandwidth


def mma_cost(cfg: NpuConfig, i: Mma) -> UnitCost:
    """Occupancy, latency and operand traffic of an `mma` under the design's dataflow.

    'ws' (weight-stationary, a K x N array): per fold of (matrix_k, matrix_n) weights, a
    preload of R = matrix_k cycles, then the m rows stream through in ceil(m / D) cycles
    (D = MACs per element per cycle) plus R + C - 2 cycles of fill and drain. 'os'
    (output-stationary, an M x N array): per fold of (matrix_m, matrix_n) outputs, k
    streams in ceil(k / D) cycles plus R + C - 2 of fill/drain. Without double buffering
    a fold costs the sum (SCALE-Sim's 2R + C + T - 2 and R + C + T - 2); with it, folds
    overlap: a fold costs the larger of its stream and its preload (or drain), and one
    fill/drain shows only as latency. Each phase also takes at least its operand bytes
    over the port of the buffer it reads (docs/npu-timing.md).
    """
    size = i.dtype.itemsize
    m, n, k = i.m, i.n, i.k
    if cfg.matrix_dataflow == "tile":
        tm, tn, tk = -(-m // cfg.matrix_m), -(-n // cfg.matrix_n), -(-k // cfg.matrix_k)
        a, b = m * k * size * tn, k * n * size * tm  # a tile row is re-read per tile column
        c = m * n * 4 * (1 + i.accumulate)
        work = tm * tn * tk * cfg.tile_cycles * f32_factor(cfg, i)
        cycles = max(float(work), _port(cfg, "l0a", a),
                     _port(cfg, "l0b", b), _port(cfg, "l0c", c))  # fmt: skip
        return UnitCost(cycles, cfg.matrix_latency, (("l0a", a), ("l0b", b), ("l0c", c)))
    if cfg.matrix_dataflow == "ws":
        return _ws(cfg, i, size)
    return _os(cfg, i, size)


def f32_factor(cfg: NpuConfig, i: Mma) -> int:
    """How many times longer an `mma` streams its operands: `matrix_f32_cycles` for f32."""
    return cfg.matrix_f32_cycles if i.dtype == DT.F32 else 1


def _ws(cfg: NpuConfig, i: Mma, size: int) -> UnitCost:
    r, c = cfg.matrix_k, cfg.matrix_n
    d = cfg.matrix_macs_per_cycle // (r * c)
    m, n, k = i.m, i.n, i.k
    stream_t = -(-m // d) * f32_factor(cfg, i)
    fill = r + c - 2
    total = a_all = b_all = c_all = 0.0
    first_preload = 0.0
    for k0 in range(0, k, r):
        kr = min(r, k - k0)
        accum = k0 > 0 or i.accumulate
        for n0 in range(0, n, c):
            nc = min(c, n - n0)
            a_f, b_f, c_f = m * kr * size, kr * nc * size, m * nc * 4 * (2 if accum else 1)
            preload = max(float(r), _port(cfg, "l0b", b_f))
            stream = max(float(stream_t), _port(cfg, "l0a", a_f), _port(cfg, "l0c", c_f))
            if not first_preload:
                first_preload = preload
            if cfg.matrix_double_buffer:
                total += max(preload, stream)
            else:
                total += preload + stream + fill
            a_all, b_all, c_all = a_all + a_f, b_all + b_f, c_all + c_f
    latency = cfg.matrix_latency + (first_preload + fill if cfg.matrix_double_buffer else 0)
    ports = (("l0a", int(a_all)), ("l0b", int(b_all)), ("l0c", int(c_all)))
    return UnitCost(total, latency, ports)


def _os(cfg: NpuConfig, i: Mma, size: int) -> UnitCost:
    r, c = cfg.matrix_m, cfg.matrix_n
    d = cfg.matrix_macs_per_cycle // (r * c)
    m, n, k = i.m, i.n, i.k
    stream_t = float(-(-k // d) * f32_factor(cfg, i))
    fill = r + c - 2
    total = a_all = b_all = c_all = 0.0
    for m0 in range(0, m, r):
        mr = min(r, m - m0)
        for n0 in range(0, n, c):
            nc = min(c, n - n0)
            a_f, b_f, c_f = mr * k * size, k * nc * size, mr * nc * 4 * (1 + i.accumulate)
            stream = max(stream_t, _port(cfg, "l0a", a_f), _port(cfg, "l0b", b_f))
            drain = _port(cfg, "l0c", c_f)  # outputs leave (and old sums enter) the array
            if cfg.matrix_double_buffer:
                total += max(stream, float(r), drain)
            else:
                total += stream + max(float(fill), drain)
            a_all, b_all, c_all = a_all + a_f, b_all + b_f, c_all + c_f
    latency = cfg.matrix_latency + (fill if cfg.matrix_double_buffer else 0)
    ports = (("l0a", int(a_all)), ("l0b", int(b_all)), ("l0c", int(c_all)))
    return UnitCost(total, latency, ports)


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
    if isinstance(i, VSel):
        ops.append((i.mask, i.mask_strides, 1))
    for name in ("a", "b"):
        if hasattr(i, name):
            ops.append((getattr(i, name), getattr(i, name + "_strides"), size))
    if not isinstance(i, VReduce):  # a reduction's output is a tiny fraction of its input
        dsize = 1 if isinstance(i, (VCmp, VCmpS)) else size  # a mask is a byte per element
        ops.append((i.dst, i.dst_strides, dsize))  # type: ignore[attr-defined]
    return ops, shape


def f64_math(i: Instr) -> bool:
    """True when a vector instruction computes in f64 (at 1/vector_f64_cycles rate); moving
    f64 bits (vcopy, vneg, vabs, vsel, vdup) runs at full rate."""
    if isinstance(i, VCast):
        return DT.F64 in (i.src_dtype, i.dst_dtype)
    if isinstance(i, (VSel, VDup)) or getattr(i, "dtype", None) != DT.F64:
        return False
    return not (isinstance(i, VUn) and i.op in (UnOp.COPY, UnOp.NEG, UnOp.ABS))


def vector_lanes(cfg: NpuConfig, itemsize: int) -> int:
    """Elements per cycle: `vector_lanes` 32-bit elements, twice as many 16-bit (and 8-bit)
    ones, half as many 64-bit ones."""
    return cfg.vector_lanes * 4 // max(2, itemsize)


def vector_cycles(cfg: NpuConfig, i: Instr) -> int:
    """Vector-unit busy cycles of a vector instruction (elementwise, reduce, cast, dup).

    Dense operands stream as one run: ceil(rows*cols / lanes) groups; otherwise every row
    starts a new group: rows * ceil(cols / lanes). Each group costs the worst bank factor
    of its operands, times `vector_f64_cycles` when it computes in f64 (`f64_math`).

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
    if f64_math(i):
        factor *= cfg.vector_f64_cycles
    return groups * factor


def vector_cost(cfg: NpuConfig, i: Instr) -> UnitCost:
    """A vector instruction's occupancy: its lane cycles (`vector_cycles`), or longer when
    the bytes it reads and writes in one buffer exceed that buffer's port bandwidth.

    >>> from anychip.npu.config import PROFILES
    >>> from anychip.npu.isa import DT, BinOp, VBin
    >>> ub = Ref(Space.UB, 0)
    >>> add = VBin(BinOp.ADD, DT.F32, ub, ub, ub, (1, 1024), (1024, 1), (1024, 1), (1024, 1))
    >>> slow = PROFILES["datacenter"].replace(**{"ub.banks": 4})  # 512 B/cycle
    >>> vector_cycles(slow, add), vector_cost(slow, add).cycles  # 12 KiB / 512 B per cycle
    (8, 24.0)
    """
    ops, (rows, cols) = _operands(i)
    per: dict[str, int] = {}
    for ref, strides, size in ops:
        r = 1 if strides[0] == 0 else rows  # a broadcast operand is read once and reused
        c = 1 if strides[1] == 0 else cols
        name = ref.space.name.lower()
        per[name] = per.get(name, 0) + r * c * size
    if isinstance(i, VReduce):
        name = i.dst.space.name.lower()
        per[name] = per.get(name, 0) + (rows if i.axis == 1 else cols) * i.dtype.itemsize
    cycles = float(vector_cycles(cfg, i))
    for name, nbytes in per.items():
        cycles = max(cycles, _port(cfg, name, nbytes))
    return UnitCost(cycles, cfg.vector_latency, tuple(sorted(per.items())))


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


def _pages(base: int, shape: tuple[int, ...], strides: tuple[int, ...], size: int,
           run: int, page: int) -> int:  # fmt: skip
    """Device-memory pages (rows) the runs of a strided box open: one per page each run
    touches (a run crossing a page boundary opens two)."""
    outer: list[tuple[int, int]] = []  # the dimensions `_run_elems` did not merge
    merged, merging = 1, True
    for n, st in zip(reversed(shape), reversed(strides), strict=True):
        if merging and (n == 1 or st == merged):
            merged *= n
            continue
        merging = False
        outer.append((n, st))
    starts = np.full(1, base, np.int64)
    for n, st in outer:
        if n > 1:
            starts = (starts[:, None] + np.arange(n, dtype=np.int64) * st * size).ravel()
    length = run * size
    return int(((starts + length - 1) // page - starts // page + 1).sum())


def _scatter_cost(cfg: NpuConfig, i: ScatterAdd) -> DmaCost:
    """Each row is read from and written back to device memory (a read-modify-write in
    the memory-side adder): twice the bursts and the pages of a gather, two latencies."""
    row = i.row_len * i.dtype.itemsize
    name = i.src.space.name.lower()
    cap = min(float(cfg.dma_width), float(cfg.buffer(name).bandwidth), cfg.dram_bandwidth)
    traffic = 2 * _bursts(row, i.count, cfg.dram_burst)
    acts = 2 * i.count * -(-row // cfg.dram_page)
    ports = ((name, i.count * row), (i.index.space.name.lower(), 4 * i.count))
    return DmaCost(f"{name}->dram", i.count * row, traffic, cap, True, 2 * cfg.dma_latency,
                   traffic + acts * cfg.dram_activate, min(row, cfg.dma_request), acts,
                   ports)  # fmt: skip


def dma_cost(cfg: NpuConfig, i: Dma | Gather | ScatterAdd) -> DmaCost:
    """Bytes, device-memory traffic, solo rate and latency of a DMA or gather.

    >>> from anychip.npu.config import PROFILES
    >>> from anychip.npu.isa import DT
    >>> d = Dma(DT.F16, Ref(Space.L0A, 0), Ref(Space.DRAM, 0), (1, 16, 16), (0, 16, 1),
    ...         (0, 16, 1), (1, 16, 16))
    >>> c = dma_cost(PROFILES["edge"], d)
    >>> c.level, c.nbytes, c.traffic, c.cap, c.latency, c.activations, c.occupancy
    ('dram->l0a', 512, 512, 16.0, 200, 1, 768)
    """
    size = i.dtype.itemsize
    if isinstance(i, ScatterAdd):
        return _scatter_cost(cfg, i)
    if isinstance(i, Gather):
        row = i.row_len * size
        name = i.dst.space.name.lower()
        cap = min(float(cfg.dma_width), float(cfg.buffer(name).bandwidth), cfg.dram_bandwidth)
        traffic = _bursts(row, i.count, cfg.dram_burst)
        acts = i.count * -(-row // cfg.dram_page)  # rows at random: each opens its pages
        ports = ((name, i.count * row), (i.index.space.name.lower(), 4 * i.count))
        return DmaCost(f"dram->{name}", i.count * row, traffic, cap, True, cfg.dma_latency,
                       traffic + acts * cfg.dram_activate, min(row, cfg.dma_request), acts,
                       ports)  # fmt: skip
    nbytes = math.prod(i.shape) * size
    written = math.prod(i.pad) * size  # padding is written to the buffer too
    src, dst = i.src.space, i.dst.space
    level = f"{src.name.lower()}->{dst.name.lower()}"
    if Space.DRAM not in (src, dst):  # on-chip copy: limited by the engine and both buffers
        sname, dname = src.name.lower(), dst.name.lower()
        cap = float(min(cfg.dma_width, cfg.buffer(sname).bandwidth,
                        cfg.buffer(dname).bandwidth))  # fmt: skip
        copy_ports: tuple[tuple[str, int], ...] = ((sname, nbytes), (dname, written))
        if sname == dname:
            copy_ports = ((sname, nbytes + written),)
        return DmaCost(level, nbytes, nbytes, cap, False, ONCHIP_LATENCY, nbytes, 0, 0, copy_ports)
    on_chip, strides, ref = (
        (dst, i.src_strides, i.src) if src == Space.DRAM else (src, i.dst_strides, i.dst)
    )
    run = _run_elems(i.shape, strides)
    traffic = _bursts(run * size, nbytes // (run * size), cfg.dram_burst)
    acts = _pages(ref.off, i.shape, strides, size, run, cfg.dram_page)
    name = on_chip.name.lower()
    cap = min(float(cfg.dma_width), float(cfg.buffer(name).bandwidth), cfg.dram_bandwidth)
    return DmaCost(level, nbytes, traffic, cap, True, cfg.dma_latency,
                   traffic + acts * cfg.dram_activate, min(run * size, cfg.dma_request), acts,
                   ((name, written if dst == on_chip else nbytes),))  # fmt: skip


Region = tuple[tuple[int, int, int], ...]  # (space, lo, hi) byte ranges


def _span(ref: Ref, shape: tuple[int, ...], strides: tuple[int, ...], size: int) -> tuple[
        int, int, int]:  # fmt: skip
    low = sum((n - 1) * st for n, st in zip(shape, strides, strict=True) if st < 0)
    high = sum((n - 1) * st for n, st in zip(shape, strides, strict=True) if st > 0)
    return int(ref.space), ref.off + low * size, ref.off + (high + 1) * size


def dma_regions(i: Dma | Gather | ScatterAdd) -> tuple[Region, Region]:
    """The byte ranges a DMA or gather reads and writes (a gather's table rows excluded:
    which ones depends on data, and device memory is written only by dma_out).

    >>> from anychip.npu.isa import DT
    >>> d = Dma(DT.F16, Ref(Space.L0A, 64), Ref(Space.L1, 0), (1, 2, 8), (0, 8, 1),
    ...         (0, 16, 1), (1, 2, 8))
    >>> dma_regions(d)
    (((1, 0, 48),), ((2, 64, 96),))
    """
    size = i.dtype.itemsize
    if isinstance(i, ScatterAdd):  # its writes are device-memory rows chosen by data
        src = _span(i.src, (i.count, i.row_len), (i.src_stride, 1), size)
        return (_span(i.index, (i.count,), (1,), 4), src), ()
    if isinstance(i, Gather):
        index = _span(i.index, (i.count,), (1,), 4)
        return (index,), (_span(i.dst, (i.count, i.row_len), (i.dst_stride, 1), size),)
    return ((_span(i.src, i.shape, i.src_strides, size),),
            (_span(i.dst, i.pad, i.dst_strides, size),))  # fmt: skip


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
