"""Checks a program against a design before it is timed: the rules both models enforce.

The timing model never touches data, so it runs this walk first: every operand within its
buffer (the design's capacity) or device memory, dtypes and ops the units support, reads
of on-chip bytes only after something wrote them, and the functional model's race and
flag rules (`races.RaceDetector`). Errors are the functional simulator's typed errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from anychip.npu.config import NpuConfig
from anychip.npu.isa import (
    DT,
    Dma,
    Gather,
    Instr,
    Mma,
    Ref,
    ScatterAdd,
    SLoad,
    Space,
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
from anychip.npu.memory import Access, Memory
from anychip.npu.program import Program, expand
from anychip.npu.races import RaceDetector
from anychip.npu.scalar import Replay, check_args
from anychip.npu.simulator import _partial_overlap, check_cores, need_dtype, op_check

Stream = list[tuple[int, Instr]]


def validate(
    program: Program,
    config: NpuConfig,
    streams: Sequence[Stream] | None = None,
    max_steps: int | None = None,
    args: Sequence[int] = (),
    loads: Sequence[Sequence[int]] | None = None,
) -> list[Stream]:
    """Raises the functional model's typed error for the first rule `program` breaks on
    `config`; returns each core's dynamic stream (`program.expand`) for reuse.

    Device memory counts as written where the program declares initialised data
    (`.data` with init other than 'none'), or everywhere when it declares none. `args` are
    the launch arguments (r3, r4, ...); `loads` what each core's `sld`s read in a functional
    run (`RunStats.loads`), replayed since this walk has no data.

    >>> from anychip.npu.config import PROFILES
    >>> a = Ref(Space.L0A, 0)
    >>> bad = Mma(DT.F16, Ref(Space.L0C, 0), a, Ref(Space.L0B, 0), 4096, 4096, 4096)
    >>> validate(Program(((bad, Finish()),)), PROFILES["edge"])
    Traceback (most recent call last):
    ...
    anychip.npu.errors.OutOfBounds: npu: out-of-bounds matrix read of a of l0a at byte ...
    """
    check_cores(program, config)
    ncores = len(program.cores)
    budget = config.max_instructions if max_steps is None else max_steps
    check_args(args)
    if streams is None:
        streams = [
            expand(code, c, ncores, budget, args, Replay(loads[c]) if loads else None)
            for c, code in enumerate(program.cores)
        ]
    _Walker(program, config).run(streams)
    return list(streams)


class _Walker:
    """One pass over every core's stream in program order, as the functional model runs it."""

    def __init__(self, program: Program, config: NpuConfig) -> None:
        self.cfg = config
        self.dram = Memory("dram", config.dram_size, grow=True)
        self.dram_known = not program.data  # no declarations: device data is the host's
        for d in program.data:
            if d.init != "none":
                self.dram.ensure(d.addr + d.nbytes)
                self.dram.written[d.addr : d.addr + d.nbytes] = True
        names = [s for s in Space if s != Space.DRAM]
        self.buffers = [
            {s: Memory(s.name.lower(), config.buffer(s.name.lower()).size) for s in names}
            for _ in range(config.cores)
        ]
        self.races = RaceDetector(config.cores)
        self.accesses: dict[Any, Access] = {}

        # what sync._Core reads of a simulator: the same queue, flag and deadlock rules as
        # the functional model, with this walker's checks as the instructions' handlers
        self.config, self._races = config, self.races
        vector = dict.fromkeys((VBin, VScalar, VUn, VReduce, VCast, VDup, VCmp, VCmpS, VSel),
                               self._vector)  # fmt: skip
        self._handlers: dict[type, Any] = {
            Dma: self._dma,
            Gather: self._gather,
            ScatterAdd: self._scatter_add,
            Mma: self._mma,
            **vector,
        }

    def _flush(self) -> None:
        """The functional model computes batched mma results here; nothing to do."""

    def run(self, streams: Sequence[Stream]) -> None:
        from anychip.npu.sync import _Core  # the functional model's queues and flags

        for core, stream in enumerate(streams):
            _Core(self, core, [0] * len(Unit)).run([list(stream)])  # type: ignore[arg-type]

    def _acc(self, core: int, ref: Ref, shape: tuple[int, ...], strides: tuple[int, ...],
             dt: DT) -> Access:  # fmt: skip
        key = (core, ref.space, ref.off, shape, strides, dt)
        acc = self.accesses.get(key)
        if acc is None:
            if len(self.accesses) > 1 << 16:
                self.accesses.clear()
            if ref.space == Space.DRAM:
                acc = Access(self.dram, ref.off, shape, strides, dt, "dram")
            else:
                acc = Access(self.buffers[core][ref.space], ref.off, shape, strides, dt,
                             (core, ref.space))  # fmt: skip
            self.accesses[key] = acc
        return acc

    def _read(self, acc: Access, who: Any, what: str) -> None:
        acc.check_bounds(who, what)
        if acc.all_written or (acc.key == "dram" and self.dram_known):
            return
        if not acc.written_view().all():
            acc.read(who, what)  # raises the functional model's UninitializedRead
        acc.all_written = True

    def _write(self, acc: Access, who: Any, what: str) -> None:
        acc.check_bounds(who, what)
        if not acc.all_written:
            acc.written_view()[...] = True
            acc.all_written = True

    def _need(self, dt: DT, unit: str, who: Any) -> None:
        need_dtype(self.cfg, dt, unit, who)

    def _touch(self, core: int, unit: Unit, who: Any, reads: list[Access],
               writes: list[Access]) -> None:  # fmt: skip
        for acc in reads:
            self.races.access(core, unit, acc, False, who)
        for acc in writes:
            self.races.access(core, unit, acc, True, who)

    def _dma(self, core: int, who: Any, i: Dma) -> None:
        self.races.tick(core, i.unit)
        src = self._acc(core, i.src, i.shape, i.src_strides, i.dtype)
        dst = self._acc(core, i.dst, i.pad, i.dst_strides, i.dtype)
        self._read(src, who, "dma read")
        _partial_overlap(src, dst, who)
        self._write(dst, who, "dma write")
        self._touch(core, i.unit, who, [src], [dst])

    def _gather(self, core: int, who: Any, i: Gather) -> None:
        # Which table rows are read depends on the index data: the functional model checks
        # them; here the index operand, the first row and the destination are checked.
        self.races.tick(core, Unit.DMA_IN)
        index = self._acc(core, i.index, (i.count,), (1,), DT.I32)
        self._read(index, who, "gather index read")
        row = self._acc(core, i.table, (1, i.row_len), (i.table_stride, 1), i.dtype)
        row.check_bounds(who, "gather read")
        dst = self._acc(core, i.dst, (i.count, i.row_len), (i.dst_stride, 1), i.dtype)
        self._write(dst, who, "gather write")
        self._touch(core, Unit.DMA_IN, who, [index], [dst])

    def scalar_item(self, core: int, who: Any) -> None:
        """An sld reads and an sst writes one element (the values are the functional run's)."""
        i = who[2]
        if isinstance(i, SLoad):
            self._read(self._acc(core, i.src, (1,), (1,), i.dtype), who, "scalar load")
        else:
            self._write(self._acc(core, i.dst, (1,), (1,), i.dtype), who, "scalar store")

    def _scatter_add(self, core: int, who: Any, i: ScatterAdd) -> None:
        # As for gather, the rows depend on the index data: the functional model checks them.
        self.races.tick(core, Unit.DMA_OUT)
        index = self._acc(core, i.index, (i.count,), (1,), DT.I32)
        self._read(index, who, "scatter_add index read")
        src = self._acc(core, i.src, (i.count, i.row_len), (i.src_stride, 1), i.dtype)
        self._read(src, who, "scatter_add read")
        row = self._acc(core, i.table, (1, i.row_len), (i.table_stride, 1), i.dtype)
        row.check_bounds(who, "scatter_add read")
        self._touch(core, Unit.DMA_OUT, who, [index, src], [])

    def _mma(self, core: int, who: Any, i: Mma) -> None:
        self._need(i.dtype, "matrix", who)
        self.races.tick(core, Unit.MATRIX)
        acc_dt = DT.I32 if i.dtype == DT.I8 else DT.F32
        a = self._acc(core, i.a, (i.m, i.k), (i.k, 1), i.dtype)
        b_shape = (i.n, i.k) if i.trans_b else (i.k, i.n)
        b = self._acc(core, i.b, b_shape, (b_shape[1], 1), i.dtype)
        acc = self._acc(core, i.acc, (i.m, i.n), (i.n, 1), acc_dt)
        self._read(a, who, "matrix read of a")
        self._read(b, who, "matrix read of b")
        if i.accumulate:
            self._read(acc, who, "accumulator read")
        self._write(acc, who, "accumulator write")
        self._touch(core, Unit.MATRIX, who, [a, b, acc] if i.accumulate else [a, b], [acc])

    def _vector(self, core: int, who: Any, i: Any) -> None:
        if isinstance(i, VCast):
            for dt in (i.src_dtype, i.dst_dtype):
                if dt != DT.I8:
                    self._need(dt, "vector", who)
            src_dt, dst_dt = i.src_dtype, i.dst_dtype
        else:
            self._need(i.dtype, "vector", who)
            src_dt = dst_dt = i.dtype
            if isinstance(i, (VCmp, VCmpS)):
                dst_dt = DT.BOOL
        op_check(i, who)
        self.races.tick(core, Unit.VECTOR)
        shape = i.shape
        srcs = [(getattr(i, n), getattr(i, n + "_strides")) for n in ("a", "b") if hasattr(i, n)]
        reads = [self._acc(core, r, shape, s, src_dt) for r, s in srcs]
        if isinstance(i, VSel):
            reads.append(self._acc(core, i.mask, shape, i.mask_strides, DT.BOOL))
        dshape = shape
        if isinstance(i, VReduce):
            dshape = (shape[0], 1) if i.axis == 1 else (1, shape[1])
        out = self._acc(core, i.dst, dshape, i.dst_strides, dst_dt)
        for acc in reads:
            self._read(acc, who, "vector read")
            _partial_overlap(acc, out, who)  # the functional model's OverlapError
        self._touch(core, Unit.VECTOR, who, reads, [out])
        self._write(out, who, "write")
