"""The functional simulator: what every instruction of the chip does. It is the ISA's spec.

It runs each core's stream in program order (one valid interleaving of the units), tile by
tile with numpy, and faults on out-of-bounds accesses, reads of never-written memory, and
races between units that no flag or barrier orders.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from anychip.npu import numerics as nx
from anychip.npu.asm import describe
from anychip.npu.config import NpuConfig
from anychip.npu.errors import (
    IllegalInstruction,
    OutOfBounds,
    OverlapError,
    UninitializedRead,
    UnsupportedDType,
)
from anychip.npu.isa import (
    DT,
    BinOp,
    Dma,
    Gather,
    Instr,
    Mma,
    Ref,
    ScatterAdd,
    SLoad,
    Space,
    SStore,
    Unit,
    VBin,
    VCast,
    VCmp,
    VCmpS,
    VDup,
    VReduce,
    VScalar,
    VSel,
    VUn,
)
from anychip.npu.memory import Access, Array, Memory, Rows, Who, runs_overlap
from anychip.npu.program import Program
from anychip.npu.races import RaceDetector
from anychip.npu.scalar import check_args, check_budget, stream
from anychip.npu.sync import _Core

__all__ = ["RunStats", "Simulator", "describe"]
_MAX_CACHED = 1 << 16  # distinct operands remembered before the cache starts over


@dataclass
class RunStats:
    """What a functional run did: instructions per unit and multiply-accumulates."""

    instructions: Counter[str] = field(default_factory=Counter)
    macs: int = 0
    loads: list[list[int]] = field(default_factory=list)  # per core: what each sld read


class Simulator:
    """The chip's memories and a program runner. Host calls put data in device memory.

    >>> from anychip.npu.config import PROFILES
    >>> sim = Simulator(PROFILES["edge"])
    >>> x = sim.put(np.arange(4.0), DT.F32)
    >>> sim.get(x, (4,), DT.F32).tolist()
    [0.0, 1.0, 2.0, 3.0]
    """

    def __init__(self, config: NpuConfig, check_races: bool = True) -> None:
        self.config = config
        self.check_races = check_races
        self.dram = Memory("dram", config.dram_size, grow=True)
        self.buffers = [
            {
                s: Memory(s.name.lower(), config.buffer(s.name.lower()).size)
                for s in Space
                if s != Space.DRAM
            }
            for _ in range(config.cores)
        ]
        self.top = 0  # device memory allocator: a bump pointer
        self.stats = RunStats()
        self._races = RaceDetector(config.cores)
        self._accesses: dict[Any, Access] = {}
        self._supported: set[tuple[DT, str]] = set()  # (dtype, unit) pairs found supported
        # float mmas checked but not yet computed
        self._pending: list[tuple[Access, bool, Any, int]] = []  # (acc, accumulate, batch, #)
        # batches of their operands by (dtype, a shape, b shape): [a (cap, m, k), b, count]
        self._groups: dict[Any, list[Any]] = {}
        self._pending_accs: dict[int, Access] = {}  # their accumulators, by identity
        self._handlers: dict[type[Instr], Callable[[int, Who, Any], None]] = {
            Dma: self._dma,
            Gather: self._gather,
            Mma: self._mma,
            VBin: self._vbin,
            VScalar: self._vscalar,
            VUn: self._vun,
            VReduce: self._vreduce,
            VCast: self._vcast,
            VDup: self._vdup,
            VCmp: self._vcmp,
            VCmpS: self._vcmps,
            VSel: self._vsel,
            ScatterAdd: self._scatter_add,
        }

    # ---- host side ---------------------------------------------------------------------
    def alloc(self, nbytes: int, align: int = 64) -> int:
        """Reserves `nbytes` of device memory; returns its byte address."""
        addr = -(-self.top // align) * align
        if addr + nbytes > self.config.dram_size:
            raise OutOfBounds(
                f"npu: cannot allocate {nbytes} bytes: device memory holds {self.config.dram_size}"
            )
        self.top = addr + nbytes
        self.dram.ensure(self.top)
        return addr

    def write(self, addr: int, values: Array) -> None:
        """Copies storage-form `values` to device memory at `addr` (marking it written)."""
        raw = np.ascontiguousarray(values).view(np.uint8).ravel()
        self.dram.ensure(addr + raw.size)
        self.dram.data[addr : addr + raw.size] = raw
        self.dram.written[addr : addr + raw.size] = True

    def read(self, addr: int, shape: tuple[int, ...], dt: DT) -> Array:
        """A copy of `shape` elements of `dt` storage at `addr` (bf16 as uint16)."""
        n = dt.itemsize * int(np.prod(shape))
        return self.dram.data[addr : addr + n].view(dt.storage).reshape(shape).copy()

    def put(self, values: Any, dt: DT) -> int:
        """Allocates, rounds `values` into `dt` and copies them in; returns the address."""
        data = nx.to_storage(values, dt)
        addr = self.alloc(data.nbytes)
        self.write(addr, data)
        return addr

    def get(self, addr: int, shape: tuple[int, ...], dt: DT) -> Array:
        """Like `read`, but bf16 comes back as float32 values."""
        return nx.to_values(self.read(addr, shape, dt), dt)

    # ---- running -----------------------------------------------------------------------
    def run(
        self, program: Program, max_steps: int | None = None, args: Sequence[int] = ()
    ) -> RunStats:
        """Executes every core's code in turn; returns this run's statistics.

        `args` are the launch arguments: integers (addresses, sizes, scalars) placed in
        r3, r4, ... of every core before it starts (`scalar.ARG_REGS`). `max_steps` is the
        instruction budget per core (default: the design's `max_instructions`); the scalar
        unit runs first, alone, so a runaway is stopped before any work (unless the program
        loads registers from memory, `sld`). Units stalled on a `waitf` queue their later
        instructions (up to `queue_depth`) while the others run on, as on the chip.
        """
        ncores = len(program.cores)
        check_cores(program, self.config)
        check_args(args)
        budget = self.config.max_instructions if max_steps is None else max_steps
        for core, code in enumerate(program.cores):
            check_budget(code, core, ncores, budget, args)
        self.stats = RunStats(loads=[[] for _ in program.cores])
        self._races = RaceDetector(self.config.cores)
        self._pending, self._pending_accs, self._groups = [], {}, {}  # a faulted run's leftovers
        counts = [0] * len(Unit)  # instructions per unit, folded into stats at the end
        # The stream and the race records are many small tuples that live for the whole run
        # and make no cycles; the cyclic collector would only walk them again and again.
        collecting = gc.isenabled()
        gc.disable()
        try:
            for core, code in enumerate(program.cores):
                runner = _Core(self, core, counts)
                runner.run(stream(code, core, ncores, budget, args=args, memory=runner))
        finally:
            if collecting:
                gc.enable()
            for unit, n in zip(Unit, counts, strict=True):
                if n:
                    self.stats.instructions[unit.name.lower()] += n
        return self.stats

    def _acc(
        self, core: int, ref: Ref, shape: tuple[int, ...], strides: tuple[int, ...], dt: DT
    ) -> Access:
        """The Access of an operand of any instruction but `mma`: l0c is brought up to date
        first (pending matrix results land before anything else sees the buffer)."""
        if self._pending and ref.space == Space.L0C:
            self._flush()
        return self._operand(core, ref, shape, strides, dt)

    def _operand(
        self, core: int, ref: Ref, shape: tuple[int, ...], strides: tuple[int, ...], dt: DT
    ) -> Access:
        """The Access of one operand; equal operands share one (it caches checks and views)."""
        key = (core, ref.space, ref.off, shape, strides, dt)
        acc = self._accesses.get(key)
        if acc is None:
            if len(self._accesses) >= _MAX_CACHED:
                self._accesses.clear()
            if ref.space == Space.DRAM:
                acc = Access(self.dram, ref.off, shape, strides, dt, "dram")
            else:
                mem = self.buffers[core][ref.space]
                acc = Access(mem, ref.off, shape, strides, dt, (core, ref.space))
            self._accesses[key] = acc
        return acc

    def _touch(self, core: int, unit: Unit, who: Who, reads: list[Any], writes: list[Any]) -> None:
        """Race-checks and records one instruction's accesses."""
        if self.check_races:
            self._races.instruction(core, unit, reads, writes, who)

    def _need(self, dt: DT, unit: str, who: Who) -> None:
        if (dt, unit) not in self._supported:
            need_dtype(self.config, dt, unit, who)
            self._supported.add((dt, unit))

    # ---- data movement -----------------------------------------------------------------
    def _dma(self, core: int, who: Who, i: Dma) -> None:
        unit = i.unit
        self._races.tick(core, unit)
        src = self._acc(core, i.src, i.shape, i.src_strides, i.dtype)
        dst = self._acc(core, i.dst, i.pad, i.dst_strides, i.dtype)
        vals = _readable(src, who, "dma read")  # a view: dst never partly overlaps it
        _partial_overlap(src, dst, who)
        if i.pad != i.shape:  # (p0, p1, p2) box: pad_value around the copied (n0, n1, n2)
            full = np.full(i.pad, nx.immediate(i.pad_value, i.dtype), i.dtype.storage)
            full[: i.shape[0], : i.shape[1], : i.shape[2]] = vals
            vals = full
        dst.write(vals, who, "dma write")
        self._touch(core, unit, who, [src], [dst])

    def _gather(self, core: int, who: Who, i: Gather) -> None:
        self._races.tick(core, Unit.DMA_IN)
        index = self._acc(core, i.index, (i.count,), (1,), DT.I32)
        idx = index.read(who, "gather index read").astype(np.int64)
        bad = np.flatnonzero((idx < 0) | (idx >= i.table_rows))
        if bad.size:
            k = int(bad[0])
            raise OutOfBounds(
                f"npu: gather index {int(idx[k])} at position {k} is outside the table of "
                f"{i.table_rows} rows "
                f"(address {i.table.off + int(idx[k]) * i.table_stride * i.dtype.itemsize})",
                describe(who),
            )
        lo = int(idx.min())
        size = i.dtype.itemsize
        base = Ref(Space.DRAM, i.table.off + lo * i.table_stride * size)
        nrows = int(idx.max()) - lo + 1
        rows = self._acc(core, base, (nrows, i.row_len), (i.table_stride, 1), i.dtype)
        rows.check_bounds(who, "gather read")
        written = rows.written_view()[idx - lo].reshape(i.count, -1).all(axis=1)
        if not written.all():
            k = int(np.flatnonzero(~written)[0])
            raise UninitializedRead(
                f"npu: gather read of never-written dram memory: row {int(idx[k])} (position {k}) "
                f"at byte {i.table.off + int(idx[k]) * i.table_stride * size}",
                describe(who),
            )
        vals = rows.view()[idx - lo]  # (count, row_len)
        dst = self._acc(core, i.dst, (i.count, i.row_len), (i.dst_stride, 1), i.dtype)
        dst.write(vals, who, "gather write")
        starts = i.table.off + idx * (i.table_stride * size)
        self._touch(core, Unit.DMA_IN, who, [index, Rows("dram", starts, i.row_len * size)], [dst])

    def _scatter_add(self, core: int, who: Who, i: ScatterAdd) -> None:
        """table row index[p] += src row p for p in order: repeated rows accumulate all."""
        self._races.tick(core, Unit.DMA_OUT)
        index = self._acc(core, i.index, (i.count,), (1,), DT.I32)
        idx = index.read(who, "scatter_add index read").astype(np.int64)
        bad = np.flatnonzero((idx < 0) | (idx >= i.table_rows))
        size = i.dtype.itemsize
        if bad.size:
            k = int(bad[0])
            raise OutOfBounds(
                f"npu: scatter_add index {int(idx[k])} at position {k} is outside the table "
                f"of {i.table_rows} rows "
                f"(address {i.table.off + int(idx[k]) * i.table_stride * size})",
                describe(who),
            )
        src = self._acc(core, i.src, (i.count, i.row_len), (i.src_stride, 1), i.dtype)
        vals = src.read(who, "scatter_add read")
        lo = int(idx.min())
        base = Ref(Space.DRAM, i.table.off + lo * i.table_stride * size)
        nrows = int(idx.max()) - lo + 1
        rows = self._acc(core, base, (nrows, i.row_len), (i.table_stride, 1), i.dtype)
        rows.check_bounds(who, "scatter_add read")
        written = rows.written_view()[idx - lo].reshape(i.count, -1).all(axis=1)
        if not written.all():
            k = int(np.flatnonzero(~written)[0])
            raise UninitializedRead(
                f"npu: scatter_add of a never-written dram row {int(idx[k])} (position {k}) at "
                f"byte {i.table.off + int(idx[k]) * i.table_stride * size}",
                describe(who),
            )
        starts = i.table.off + idx * (i.table_stride * size)
        table = Rows("dram", starts, i.row_len * size)
        self._touch(core, Unit.DMA_OUT, who, [index, src, table], [table])
        view = rows.view()
        # the k-th occurrence of every row in round k: within a round the rows are distinct
        order = np.argsort(idx, kind="stable")
        first = np.searchsorted(idx[order], idx[order])  # start of each row's run
        rank = np.empty_like(idx)
        rank[order] = np.arange(idx.size) - first
        for k in range(int(rank.max()) + 1):
            sel = np.flatnonzero(rank == k)
            r = idx[sel] - lo
            view[r] = nx.binop(BinOp.ADD, i.dtype, view[r], vals[sel])

    # ---- matrix unit -------------------------------------------------------------------
    def _mma(self, core: int, who: Who, i: Mma) -> None:
        """Checks and race-records at once; float results are computed later in batches
        (`_flush`), before anything else touches l0c: independent mmas share numpy calls."""
        self._need(i.dtype, "matrix", who)
        self._races.tick(core, Unit.MATRIX)
        acc_dt = DT.I32 if i.dtype == DT.I8 else DT.F32
        a = self._operand(core, i.a, (i.m, i.k), (i.k, 1), i.dtype)
        b_shape = (i.n, i.k) if i.trans_b else (i.k, i.n)
        b = self._operand(core, i.b, b_shape, (b_shape[1], 1), i.dtype)
        acc = self._operand(core, i.acc, (i.m, i.n), (i.n, 1), acc_dt)
        av, bv = _readable(a, who, "matrix read of a"), _readable(b, who, "matrix read of b")
        if i.accumulate:
            _readable(acc, who, "accumulator read")
        acc.check_bounds(who, "accumulator write")
        self.stats.macs += i.m * i.n * i.k
        # the accumulator's read is left to its write, whose check and record cover it
        self._touch(core, Unit.MATRIX, who, [a, b], [acc])
        bv = bv.T if i.trans_b else bv
        if i.dtype == DT.I8:
            self._flush()
            old = acc.view() if i.accumulate else None
            acc.write(nx.matmul(i.dtype, av, bv, old), who, "accumulator write")
            return
        if id(acc) not in self._pending_accs:
            if any(p.lo < acc.hi and acc.lo < p.hi for p in self._pending_accs.values()):
                self._flush()  # another layout over the same accumulator bytes: keep the order
            self._pending_accs[id(acc)] = acc
        if not acc.all_written:  # written as of now, for later reads' checks
            acc.written_view()[...] = True
            acc.all_written = True
        key = (i.dtype, av.shape, bv.shape)
        group = self._groups.get(key)
        if group is None or group[2] == len(group[0]):  # a new batch, or a fuller one
            cap = 16 if group is None else 2 * group[2]
            new: list[Any] = [np.empty((cap, *av.shape), av.dtype),
                              np.empty((cap, *bv.shape), bv.dtype), 0]  # fmt: skip
            if group is not None:
                new[0][: group[2]], new[1][: group[2]], new[2] = group[0], group[1], group[2]
            group = self._groups[key] = new
        n: int = group[2]
        group[0][n], group[1][n] = av, bv  # copies: the operands may change before the flush
        group[2] = n + 1
        self._pending.append((acc, bool(i.accumulate), key, n))

    def _flush(self) -> None:
        """Computes the pending float mmas: step sums batched by shape, then each
        accumulator's chain of additions in program order."""
        pend, self._pending = self._pending, []
        if not pend:
            return
        self._pending_accs = {}
        step = self.config.matrix_k
        results = {key: nx.step_sums(key[0], ga[:n], gb[:n], step)  # (n, steps, m, n)
                   for key, (ga, gb, n) in self._groups.items() if n}  # fmt: skip
        for group in self._groups.values():
            group[2] = 0
        # per accumulator: its start (None: 0) and its run of (batch, first, last) in order
        chains: dict[int, tuple[Access, Array | None, list[list[Any]]]] = {}
        for acc, accumulate, key, t in pend:
            chain = chains.get(id(acc))
            if not accumulate:  # starts again from 0: earlier results are overwritten
                chains[id(acc)] = (acc, None, [[key, t, t]])
            elif chain is None:
                chains[id(acc)] = (acc, acc.view(), [[key, t, t]])
            elif chain[2][-1][0] == key and chain[2][-1][2] == t - 1:
                chain[2][-1][2] = t  # the next of the same batch: one slice
            else:
                chain[2].append([key, t, t])
        for acc, init, runs in chains.values():
            parts = [results[key][lo : hi + 1].reshape(-1, *acc.shape) for key, lo, hi in runs]
            seq = np.concatenate(parts) if len(parts) > 1 else parts[0]  # (steps, m, n) in order
            acc.view()[...] = nx.accumulate(init, seq)

    # ---- vector unit -------------------------------------------------------------------
    def _vec(
        self,
        core: int,
        who: Who,
        dt: DT,
        srcs: list[tuple[Ref, tuple[int, int]]],
        dst: tuple[Ref, tuple[int, int]],
        shape: tuple[int, int],
        dst_shape: tuple[int, int] | None = None,
        dst_dt: DT | None = None,
    ) -> tuple[list[Array], Access]:
        """Reads the source operands and prepares the destination access of a vector op."""
        self._races.tick(core, Unit.VECTOR)
        accs = [self._acc(core, r, shape, s, dt) for r, s in srcs]
        vals = [a.read(who, "vector read") for a in accs]
        out = self._acc(core, dst[0], dst_shape or shape, dst[1], dt if dst_dt is None else dst_dt)
        for a in accs:
            _partial_overlap(a, out, who)
        self._touch(core, Unit.VECTOR, who, accs, [out])
        return vals, out

    def _check_op(self, i: Any, who: Who) -> None:
        self._need(i.dtype, "vector", who)
        op_check(i, who)

    def _vbin(self, core: int, who: Who, i: VBin) -> None:
        self._check_op(i, who)
        (a, b), out = self._vec(core, who, i.dtype, [(i.a, i.a_strides), (i.b, i.b_strides)],
                                (i.dst, i.dst_strides), i.shape)  # fmt: skip
        out.write(nx.binop(i.op, i.dtype, a, b), who)

    def _vscalar(self, core: int, who: Who, i: VScalar) -> None:
        self._check_op(i, who)
        (a,), out = self._vec(
            core, who, i.dtype, [(i.a, i.a_strides)], (i.dst, i.dst_strides), i.shape
        )
        out.write(nx.binop(i.op, i.dtype, a, nx.immediate(i.imm, i.dtype)), who)

    def _vun(self, core: int, who: Who, i: VUn) -> None:
        self._check_op(i, who)
        (a,), out = self._vec(
            core, who, i.dtype, [(i.a, i.a_strides)], (i.dst, i.dst_strides), i.shape
        )
        out.write(nx.unop(i.op, i.dtype, a), who)

    def _vreduce(self, core: int, who: Who, i: VReduce) -> None:
        self._check_op(i, who)
        rows, cols = i.shape
        dshape = (rows, 1) if i.axis == 1 else (1, cols)
        (a,), out = self._vec(
            core, who, i.dtype, [(i.a, i.a_strides)], (i.dst, i.dst_strides), i.shape, dshape
        )
        out.write(nx.reduce(i.op, i.dtype, a, i.axis), who)

    def _vcast(self, core: int, who: Who, i: VCast) -> None:
        for dt in (i.src_dtype, i.dst_dtype):
            if dt != DT.I8:
                self._need(dt, "vector", who)
        (a,), out = self._vec(core, who, i.src_dtype, [(i.a, i.a_strides)], (i.dst, i.dst_strides),
                              i.shape, None, i.dst_dtype)  # fmt: skip
        out.write(nx.cast(i.src_dtype, i.dst_dtype, a, i.op), who)

    def _vdup(self, core: int, who: Who, i: VDup) -> None:
        self._need(i.dtype, "vector", who)
        _, out = self._vec(core, who, i.dtype, [], (i.dst, i.dst_strides), i.shape)
        out.write(nx.immediate(i.imm, i.dtype), who)

    def _vcmp(self, core: int, who: Who, i: VCmp) -> None:
        self._need(i.dtype, "vector", who)
        (a, b), out = self._vec(core, who, i.dtype, [(i.a, i.a_strides), (i.b, i.b_strides)],
                                (i.dst, i.dst_strides), i.shape, None, DT.BOOL)  # fmt: skip
        out.write(nx.compare(i.op, i.dtype, a, b), who)

    def _vcmps(self, core: int, who: Who, i: VCmpS) -> None:
        self._need(i.dtype, "vector", who)
        (a,), out = self._vec(core, who, i.dtype, [(i.a, i.a_strides)], (i.dst, i.dst_strides),
                              i.shape, None, DT.BOOL)  # fmt: skip
        out.write(nx.compare(i.op, i.dtype, a, nx.immediate(i.imm, i.dtype)), who)

    def _vsel(self, core: int, who: Who, i: VSel) -> None:
        self._need(i.dtype, "vector", who)
        self._races.tick(core, Unit.VECTOR)
        mask = self._acc(core, i.mask, i.shape, i.mask_strides, DT.BOOL)
        accs = [self._acc(core, r, i.shape, st, i.dtype)
                for r, st in ((i.a, i.a_strides), (i.b, i.b_strides))]  # fmt: skip
        m = mask.read(who, "vector read of the mask")
        a, b = (acc.read(who, "vector read") for acc in accs)
        out = self._acc(core, i.dst, i.shape, i.dst_strides, i.dtype)
        for acc in (mask, *accs):
            _partial_overlap(acc, out, who)
        self._touch(core, Unit.VECTOR, who, [mask, *accs], [out])
        out.write(nx.select(m, a, b), who)

    # ---- the scalar unit's memory accesses (sync._Core calls these after draining) -----
    def scalar_load(self, core: int, who: Who, i: SLoad) -> int:
        """The value `sld` puts in its register (see `nx.to_register`)."""
        acc = self._acc(core, i.src, (1,), (1,), i.dtype)
        val = acc.read(who, "scalar load")
        self._touch(core, Unit.SCALAR, who, [acc], [])
        v = nx.to_register(val[0], i.dtype)
        self.stats.loads[core].append(v)
        return v

    def scalar_item(self, core: int, who: Who) -> None:
        """An sld/sst reaching the units' side of the stream: its access already ran (the
        stream called `scalar_load`/`scalar_store` when the scalar unit reached it)."""

    def scalar_store(self, core: int, who: Who, i: SStore, value: int) -> None:
        acc = self._acc(core, i.dst, (1,), (1,), i.dtype)
        acc.write(nx.from_register(value, i.dtype), who, "scalar store")
        self._touch(core, Unit.SCALAR, who, [], [acc])


def check_cores(program: Program, config: NpuConfig, model: str = "npu") -> None:
    """IllegalInstruction when the program has more cores than the design."""
    if len(program.cores) > config.cores:
        raise IllegalInstruction(
            f"{model}: program has {len(program.cores)} cores but design {config.name!r} "
            f"has {config.cores}"
        )


def need_dtype(config: NpuConfig, dt: DT, unit: str, who: Who) -> None:
    """UnsupportedDType unless the design's `unit` ("matrix" or "vector") computes `dt`."""
    allowed = config.matrix_dtypes if unit == "matrix" else config.vector_dtypes
    if dt.name.lower() not in allowed:
        raise UnsupportedDType(
            f"npu: the {unit} unit of design {config.name!r} does not support "
            f"{dt.name.lower()} (it supports {', '.join(allowed)}) at {describe(who)}"
        )


def op_check(i: Any, who: Who) -> None:
    """IllegalInstruction for an op its element type does not define (`nx.vector_ok`)."""
    if isinstance(i, (VBin, VScalar, VUn, VReduce)) and not nx.vector_ok(i.op, i.dtype):
        raise IllegalInstruction(
            f"npu: {i.op.name.lower()} is not defined on {i.dtype.name.lower()} at {describe(who)}"
        )


int_check = op_check  # the name version 1 used


def _partial_overlap(src: Access, dst: Access, who: Who) -> None:
    """Faults when `dst` shares bytes with `src` without being the same elements: the
    order in which the unit reads and writes them is not part of the ISA. In place (the
    same layout) is fine: each element is read before it is written."""
    if src.key != dst.key or src.hi <= dst.lo or dst.hi <= src.lo:
        return
    same = (src.base, src.shape, src.strides, src.dt.itemsize) == (
        dst.base, dst.shape, dst.strides, dst.dt.itemsize)  # fmt: skip
    if same and not isinstance(who[2], VReduce):
        return
    addr = runs_overlap(src.runs, dst.runs)
    if addr is not None:
        raise OverlapError(
            f"npu: the destination overlaps a source at {dst.mem.name} byte {addr} without "
            f"being the same elements (source {src.shape} strides {src.strides} at "
            f"{src.base}, destination {dst.shape} strides {dst.strides} at {dst.base})",
            describe(who),
        )


def _readable(acc: Access, who: Who, what: str) -> Array:
    """A view of `acc`'s elements after the checks of a read (bounds, written bytes): for
    operands that are consumed at once, without `Access.read`'s copy."""
    if not (acc.in_bounds and acc.all_written):
        acc.read(who, what)
    return acc.view()
