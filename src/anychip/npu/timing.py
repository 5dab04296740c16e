"""The timing model: how many cycles a program takes on a design, and where they go.

Separate from the functional model: it never touches data. Each core's scalar unit issues
the dynamic instruction stream (`program.expand`) into per-unit queues; the DMA-in, DMA-out,
matrix and vector units run them in order and in parallel, waiting only on flags, barriers
and device-memory bandwidth, which all active DMA transfers of all cores share fairly.
The rules are in docs/npu-timing.md; the costs per instruction in `npu/costs.py`.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, deque
from dataclasses import dataclass, field

from anychip.npu.asm import describe
from anychip.npu.config import NpuConfig, get_config
from anychip.npu.costs import (
    DmaCost,
    dma_cost,
    fair_rates,
    mma_cycles,
    vector_cycles,
    vector_elements,
)
from anychip.npu.errors import IllegalInstruction, SyncError
from anychip.npu.isa import Barrier, Dma, Finish, Gather, Instr, Mma, SetFlag, Unit, WaitFlag
from anychip.npu.program import Program, expand
from anychip.npu.report import Event, TimingReport, UnitStats

__all__ = ["Event", "TimingReport", "UnitStats", "simulate_timing"]

QUEUED = (Unit.DMA_IN, Unit.DMA_OUT, Unit.MATRIX, Unit.VECTOR)
_INF = float("inf")
_STEP, _DISPATCH, _DRAM = 0, 1, 2  # event kinds
_BARRIER = -1  # the dispatcher waits for its core to drain (barrier or finish)
FlagKey = tuple[int, int, int, int]  # (core, src unit, dst unit, flag)


@dataclass(eq=False)
class _UnitState:
    """One unit of one core: its queue of (available-at, index, instruction) and clocks."""

    queue: deque[tuple[float, int, Instr]] = field(default_factory=deque)
    free: float = 0.0  # when it can start its next instruction
    done: float = 0.0  # when everything it started has completed (latency included)
    pending: float = _INF  # time of its earliest scheduled wake-up
    transfer: bool = False  # a device-memory transfer is in flight (`free` not yet known)
    stats: UnitStats = field(default_factory=UnitStats)


@dataclass(eq=False)
class _Dispatcher:
    """A core's scalar unit: walks the dynamic stream, issuing one instruction per cycle."""

    stream: list[tuple[int, Instr]]
    pos: int = 0
    ts: float = 0.0  # issue cycle of the next instruction
    blocked: int | None = None  # a unit whose queue is full, or _BARRIER
    end: float | None = None  # the core's finish time
    stats: UnitStats = field(default_factory=UnitStats)


@dataclass(eq=False)
class _Transfer:
    core: int
    unit: Unit
    index: int
    inst: Instr
    cost: DmaCost
    start: float
    left: float  # bytes of traffic still to move


class _Engine:
    """A discrete-event schedule of all cores; events run in time order off one heap."""

    def __init__(self, program: Program, cfg: NpuConfig, max_steps: int) -> None:
        self.cfg = cfg
        ncores = len(program.cores)
        self.disp = [_Dispatcher(expand(code, c, ncores, max_steps))
                     for c, code in enumerate(program.cores)]  # fmt: skip
        self.units = [{u: _UnitState() for u in QUEUED} for _ in range(ncores)]
        self.flags: dict[FlagKey, list[float]] = {}  # set times, in order
        self.consumed: Counter[FlagKey] = Counter()
        self.waiters: dict[FlagKey, tuple[int, Unit]] = {}
        self.heap: list[tuple[float, int, int, int, int]] = []
        self.seq = itertools.count()
        self.active: list[_Transfer] = []
        self.rates: list[float] = []
        self.dram_t = 0.0
        self.dram_version = 0
        self.events: list[Event] = []
        self.bytes_moved: Counter[str] = Counter()
        self.dram_traffic = 0
        self.macs = 0
        self.vector_elements = 0
        self.mma_cache: dict[Instr, int] = {}
        self.vec_cache: dict[Instr, int] = {}
        self.dma_cache: dict[Instr, DmaCost] = {}

    # ---- the event loop ----------------------------------------------------------------
    def _push(self, t: float, kind: int, core: int = 0, unit: int = 0) -> None:
        heapq.heappush(self.heap, (t, next(self.seq), kind, core, unit))

    def _wake(self, core: int, unit: Unit, t: float) -> None:
        s = self.units[core][unit]
        if s.pending > t:
            s.pending = t
            self._push(t, _STEP, core, unit)

    def run(self) -> None:
        for c in range(len(self.disp)):
            self._push(0.0, _DISPATCH, c)
        heap = self.heap
        while heap:
            t, _, kind, core, unit = heapq.heappop(heap)
            if kind == _STEP:
                s = self.units[core][Unit(unit)]
                if s.pending == t:
                    s.pending = _INF
                self._step(core, Unit(unit), t)
            elif kind == _DISPATCH:
                self._dispatch(core, t)
            elif unit == self.dram_version:
                self._dram_done(t)
        self._check_finished()

    def _check_finished(self) -> None:
        for c, d in enumerate(self.disp):
            if d.end is not None:
                continue
            for u, s in self.units[c].items():
                if s.queue and isinstance(s.queue[0][2], WaitFlag):
                    _, index, inst = s.queue[0]
                    raise SyncError(
                        f"npu timing: the {u.name.lower()} queue waits forever on a flag "
                        "that no unit sets",
                        describe((c, index, inst)),
                    )
            raise SyncError(f"npu timing: core {c} never finished (a deadlock)")

    # ---- the scalar unit ---------------------------------------------------------------
    def _drained(self, core: int) -> bool:
        return all(not s.queue and not s.transfer for s in self.units[core].values())

    def _dispatch(self, core: int, now: float) -> None:
        d = self.disp[core]
        if d.end is not None:
            return
        if d.blocked == _BARRIER:
            if not self._drained(core):
                return
            ts = d.ts  # the barrier itself accounts for the wait
        else:
            ts = max(d.ts, now)
            if d.blocked is not None:  # a queue had no room until now
                d.stats.stalls["queue"] += ts - d.ts
        d.blocked = None
        units = self.units[core]
        depth = self.cfg.queue_depth
        stream, events = d.stream, self.events
        while d.pos < len(stream):
            index, inst = stream[d.pos]
            unit = inst.unit
            if unit != Unit.SCALAR:
                s = units[unit]
                if len(s.queue) >= depth:
                    d.ts, d.blocked = ts, unit
                    return
                s.queue.append((ts + 1, index, inst))
                self._wake(core, unit, ts + 1)
            elif isinstance(inst, (Barrier, Finish)):
                if not self._drained(core):
                    d.ts, d.blocked = ts, _BARRIER
                    return
                after = max(ts + 1, max(s.done for s in units.values()))
                d.stats.stalls["sync"] += after - (ts + 1)
                events.append((core, Unit.SCALAR, index, inst, ts, after, after))
                d.stats.busy += 1
                d.stats.instructions += 1
                d.pos += 1
                if isinstance(inst, Finish):
                    d.end = after
                    return
                ts = after
                continue
            else:
                events.append((core, Unit.SCALAR, index, inst, ts, ts + 1, ts + 1))
            d.stats.busy += 1
            d.stats.instructions += 1
            d.pos += 1
            ts += 1
        # the stream ran off its end without `finish`: the core stops once drained
        if not self._drained(core):
            d.ts, d.blocked = ts, _BARRIER
            return
        d.end = max([ts] + [s.done for s in units.values()])

    # ---- the queued units --------------------------------------------------------------
    def _step(self, core: int, unit: Unit, now: float) -> None:
        s = self.units[core][unit]
        if s.transfer:
            return
        q = s.queue
        while q:
            avail, index, inst = q[0]
            t = max(now, s.free, avail)
            key: FlagKey | None = None
            if type(inst) is WaitFlag:
                key = (core, inst.src, inst.dst, inst.flag)
                k = self.consumed[key]
                sets = self.flags.get(key, ())
                if k >= len(sets):
                    self.waiters[key] = (core, unit)
                    return
                t = max(t, sets[k])
            if t > now:
                self._wake(core, unit, t)
                return
            q.popleft()
            d = self.disp[core]
            if d.blocked == unit:
                self._push(now, _DISPATCH, core)
            begin = s.free
            if now > begin:  # idle gap: first starved of instructions, then held by a flag
                starved = max(0.0, min(avail, now) - begin)
                s.stats.stalls["queue"] += starved
                s.stats.stalls["sync"] += now - begin - starved
            s.free = now
            s.stats.instructions += 1
            if key is not None:  # waitf: consume one count of the flag
                self.consumed[key] += 1
                self.events.append((core, unit, index, inst, begin, now, now))
            elif not self._start(core, unit, s, index, inst, now):
                return  # a device-memory transfer: woken when it ends
        if self.disp[core].blocked == _BARRIER and self._drained(core):
            self._push(now, _DISPATCH, core)

    def _start(self, core: int, unit: Unit, s: _UnitState, index: int, inst: Instr,
               now: float) -> bool:  # fmt: skip
        """Starts `inst` at `now`; False when it is a device-memory transfer (unit stays busy)."""
        cfg = self.cfg
        tp = type(inst)
        if tp is SetFlag:  # counts up once all earlier work of this unit has completed
            key = (core, inst.src, inst.dst, inst.flag)  # type: ignore[attr-defined]
            at = max(now, s.done)
            self.flags.setdefault(key, []).append(at)
            self.events.append((core, unit, index, inst, now, now, at))
            waiter = self.waiters.pop(key, None)
            if waiter is not None:
                self._wake(waiter[0], waiter[1], at)
            return True
        if tp is Dma or tp is Gather:
            cost = self.dma_cache.get(inst)
            if cost is None:
                cost = self.dma_cache[inst] = dma_cost(cfg, inst)  # type: ignore[arg-type]
            self.bytes_moved[cost.level] += cost.nbytes
            if cost.dram:
                self.dram_traffic += cost.traffic
                self._dram_start(_Transfer(core, unit, index, inst, cost, now, cost.traffic), now)
                s.transfer = True
                return False
            cycles = cost.traffic / cost.cap
            latency = cost.latency
        elif tp is Mma:
            cycles = self.mma_cache.get(inst, 0)
            if not cycles:
                cycles = self.mma_cache[inst] = mma_cycles(cfg, inst)  # type: ignore[arg-type]
            latency = cfg.matrix_latency
            self.macs += inst.m * inst.n * inst.k  # type: ignore[attr-defined]
        else:
            cycles = self.vec_cache.get(inst, 0)
            if not cycles:
                cycles = self.vec_cache[inst] = vector_cycles(cfg, inst)
            latency = cfg.vector_latency
            self.vector_elements += vector_elements(inst)
        s.free = now + cycles
        s.done = max(s.done, s.free + latency)
        s.stats.busy += cycles
        self.events.append((core, unit, index, inst, now, s.free, s.free + latency))
        return True

    # ---- device memory: max-min fair sharing between active transfers -----------------
    def _dram_advance(self, now: float) -> None:
        dt = now - self.dram_t
        if dt > 0:
            for tr, rate in zip(self.active, self.rates):
                tr.left -= rate * dt
        self.dram_t = now

    def _dram_plan(self, now: float) -> None:
        self.dram_version += 1
        if not self.active:
            self.rates = []
            return
        self.rates = fair_rates([tr.cost.cap for tr in self.active], self.cfg.dram_bandwidth)
        soonest = min(tr.left / r for tr, r in zip(self.active, self.rates))
        self._push(now + max(0.0, soonest), _DRAM, 0, self.dram_version)

    def _dram_start(self, tr: _Transfer, now: float) -> None:
        self._dram_advance(now)
        self.active.append(tr)
        self._dram_plan(now)

    def _dram_done(self, now: float) -> None:
        self._dram_advance(now)
        still: list[_Transfer] = []
        for tr in self.active:
            if tr.left > 1e-9 * tr.cost.traffic + 1e-6:
                still.append(tr)
                continue
            s = self.units[tr.core][tr.unit]
            solo = tr.cost.traffic / tr.cost.cap
            s.stats.busy += solo
            s.stats.stalls["bandwidth"] += max(0.0, now - tr.start - solo)
            s.free = now
            s.done = max(s.done, now + tr.cost.latency)
            s.transfer = False
            self.events.append((tr.core, tr.unit, tr.index, tr.inst, tr.start, now, s.done))
            self._wake(tr.core, tr.unit, now)
        self.active = still
        self._dram_plan(now)


def simulate_timing(
    program: Program, config: NpuConfig | str, max_steps: int = 20_000_000
) -> TimingReport:
    """Times `program` on design `config` (a profile name works); returns its report.

    >>> from anychip.npu.isa import DT, Mma, Ref, Space
    >>> mma = Mma(DT.F16, Ref(Space.L0C, 0), Ref(Space.L0A, 0), Ref(Space.L0B, 0), 16, 16, 16)
    >>> r = simulate_timing(Program(((mma, Finish()),)), "edge")
    >>> r.cycles  # issued at 0, starts at 1, 4 busy cycles + 8 latency
    13
    """
    cfg = get_config(config)
    if len(program.cores) > cfg.cores:
        raise IllegalInstruction(
            f"npu timing: program has {len(program.cores)} cores but design {cfg.name!r} "
            f"has {cfg.cores}"
        )
    eng = _Engine(program, cfg, max_steps)
    eng.run()
    units: dict[str, UnitStats] = {}
    for c, d in enumerate(eng.disp):
        units[f"core{c}.scalar"] = d.stats
        for u, s in eng.units[c].items():
            units[f"core{c}.{u.name.lower()}"] = s.stats
    return TimingReport(
        config=cfg,
        core_cycles=[d.end or 0.0 for d in eng.disp],
        units=units,
        bytes_moved=dict(eng.bytes_moved),
        dram_traffic=eng.dram_traffic,
        macs=eng.macs,
        vector_elements=eng.vector_elements,
        events=eng.events,
    )
