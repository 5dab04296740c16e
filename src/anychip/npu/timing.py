"""The timing model: how many cycles a program takes on a design, and where they go.

Separate from the functional model: it never touches data, but times only programs that
model accepts (`npu/validate.py` runs first). Each core's scalar unit issues the dynamic
instruction stream into per-unit queues; the DMA-in, DMA-out, matrix and vector units run
them in order and in parallel, waiting on flags, barriers, data their own engine has not
landed yet, buffer ports (`npu/ports.py`) and device memory (`npu/dram.py`), whose
bandwidth all active DMA transfers of all cores share fairly. The rules are in
docs/npu-timing.md; the costs per instruction in `npu/costs.py`.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from anychip.npu.asm import describe
from anychip.npu.config import NpuConfig, get_config
from anychip.npu.costs import (
    DmaCost,
    Region,
    UnitCost,
    dma_cost,
    dma_regions,
    fair_rates,
    mma_cost,
    vector_cost,
    vector_elements,
)
from anychip.npu.dram import loaded_latency, request_rate
from anychip.npu.errors import SyncError
from anychip.npu.isa import (
    Barrier,
    Dma,
    Finish,
    Gather,
    Instr,
    Mma,
    ScatterAdd,
    SetFlag,
    SLoad,
    Space,
    SStore,
    Unit,
    WaitFlag,
)
from anychip.npu.ports import Ports, Reservation
from anychip.npu.program import Program
from anychip.npu.report import Event, TimingReport, UnitStats
from anychip.npu.simulator import check_cores
from anychip.npu.validate import validate

__all__ = ["Event", "TimingReport", "UnitStats", "simulate_timing"]

QUEUED = (Unit.DMA_IN, Unit.DMA_OUT, Unit.MATRIX, Unit.VECTOR)
_INF = float("inf")
_STEP, _DISPATCH, _DRAM = 0, 1, 2  # event kinds
_BARRIER = -1  # the dispatcher waits for its core to drain (barrier, finish, sld, sst)
_DMAS = (Dma, Gather, ScatterAdd)
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
    left: float  # bytes of bandwidth time still to use (traffic plus page activations)
    cap: float  # its rate limit: engine, buffer port, requests in flight over latency
    latency: float  # its loaded latency
    holds: list[Reservation]


class _Engine:
    """A discrete-event schedule of all cores; events run in time order off one heap."""

    def __init__(self, streams: list[list[tuple[int, Instr]]], cfg: NpuConfig) -> None:
        self.cfg = cfg
        ncores = len(streams)
        self.disp = [_Dispatcher(stream) for stream in streams]
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
        self.served = 0.0  # bandwidth-time bytes served so far, and (time, served) points
        self.history: deque[tuple[float, float]] = deque([(0.0, 0.0)])
        self.events: list[Event] = []
        self.bytes_moved: Counter[str] = Counter()
        self.dram_traffic = 0
        self.macs = 0
        self.vector_elements = 0
        self.unit_cache: dict[Instr, UnitCost] = {}
        self.dma_cache: dict[Instr, tuple[DmaCost, Region, Region]] = {}
        self.ports = Ports(cfg)
        self.port_bytes: Counter[str] = Counter()  # on-chip bytes read + written per buffer
        self.macs_by_dtype: Counter[str] = Counter()
        # per (core, engine): (space, lo, hi, lands) of recent DMA writes, so that a DMA
        # reading them on the same engine waits until they have landed
        self.landing: dict[tuple[int, Unit], list[tuple[int, int, int, float]]] = {}

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
            elif isinstance(inst, (Barrier, Finish, SLoad, SStore)):
                if not self._drained(core):
                    d.ts, d.blocked = ts, _BARRIER
                    return
                after = max(ts + 1, max(s.done for s in units.values()))
                d.stats.stalls["sync"] += after - (ts + 1)
                access = scalar_access_cycles(self.cfg, inst)
                after += access  # sld / sst: the round trip to the memory
                events.append((core, Unit.SCALAR, index, inst, ts, after, after))
                d.stats.busy += 1 + access
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
            elif type(inst) in _DMAS:
                t = max(t, self._landed(core, unit, inst, t))
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

    def _dma_info(self, inst: Instr) -> tuple[DmaCost, Region, Region]:
        info = self.dma_cache.get(inst)
        if info is None:
            cost = dma_cost(self.cfg, inst)  # type: ignore[arg-type]
            info = self.dma_cache[inst] = (cost, *dma_regions(inst))  # type: ignore[arg-type]
        return info

    def _landed(self, core: int, unit: Unit, inst: Instr, now: float) -> float:
        """When the earlier writes of this engine that `inst` reads have landed."""
        writes = self.landing.get((core, unit))
        if not writes:
            return 0.0
        writes[:] = [w for w in writes if w[3] > now]
        _, reads, _ = self._dma_info(inst)
        ready = 0.0
        for space, lo, hi in reads:
            for wspace, wlo, whi, lands in writes:
                if wspace == space and wlo < hi and lo < whi:
                    ready = max(ready, lands)
        return ready

    def _start(self, core: int, unit: Unit, s: _UnitState, index: int, inst: Instr,
               now: float) -> bool:  # fmt: skip
        """Starts `inst` at `now`; False when it is a device-memory transfer (unit stays busy)."""
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
        if tp in _DMAS:
            cost, _, writes = self._dma_info(inst)
            self.bytes_moved[cost.level] += cost.nbytes
            for name, nbytes in cost.ports:
                self.port_bytes[name] += nbytes
            if cost.dram:
                self._dram_begin(core, unit, s, index, inst, cost, now)
                return False
            cycles = self.ports.share(core, cost.ports, now, cost.traffic / cost.cap)
            latency: float = cost.latency
            self._wrote(core, unit, writes, now + cycles + latency)
        else:
            uc = self.unit_cache.get(inst)
            if uc is None:
                if tp is Mma:
                    uc = mma_cost(self.cfg, inst)  # type: ignore[arg-type]
                else:
                    uc = vector_cost(self.cfg, inst)
                self.unit_cache[inst] = uc
            cycles, latency = self.ports.share(core, uc.ports, now, uc.cycles), uc.latency
            for name, nbytes in uc.ports:
                self.port_bytes[name] += nbytes
            if tp is Mma:
                macs = inst.m * inst.n * inst.k  # type: ignore[attr-defined]
                self.macs += macs
                self.macs_by_dtype[inst.dtype.name.lower()] += macs  # type: ignore[attr-defined]
            else:
                self.vector_elements += vector_elements(inst)
        s.free = now + cycles
        s.done = max(s.done, s.free + latency)
        s.stats.busy += cycles
        self.events.append((core, unit, index, inst, now, s.free, s.free + latency))
        return True

    def _wrote(self, core: int, unit: Unit, writes: Region, lands: float) -> None:
        self.landing.setdefault((core, unit), []).extend((*w, lands) for w in writes)

    def _dram_begin(self, core: int, unit: Unit, s: _UnitState, index: int, inst: Instr,
                    cost: DmaCost, now: float) -> None:  # fmt: skip
        """Starts a device-memory transfer: its latency from the load it meets, its rate
        limited by the engine, the buffer's port and its requests in flight."""
        self._dram_advance(now)
        self.dram_traffic += cost.traffic
        # a scatter_add's write-back adds its second round trip (cost.latency beyond one)
        latency = loaded_latency(self.cfg, self._load(now)) + cost.latency - self.cfg.dma_latency
        cap = min(cost.cap, request_rate(self.cfg, cost.request, latency))
        cap, holds = self.ports.open(core, cost.ports, now, cap)
        tr = _Transfer(core, unit, index, inst, cost, now, cost.occupancy, cap, latency, holds)
        self.active.append(tr)
        self._dram_plan(now)
        s.transfer = True

    # ---- device memory: max-min fair sharing between active transfers -----------------
    def _dram_advance(self, now: float) -> None:
        dt = now - self.dram_t
        if dt > 0:
            for tr, rate in zip(self.active, self.rates):
                tr.left -= rate * dt
            self.served += sum(self.rates) * dt
            self.history.append((now, self.served))
        self.dram_t = now

    def _load(self, now: float) -> float:
        """Device memory's utilisation over the last `dma_latency` cycles: the queues a
        request meets were built by recent traffic."""
        window = max(1.0, float(self.cfg.dma_latency))
        since = now - window
        h = self.history
        while len(h) > 1 and h[1][0] <= since:
            h.popleft()
        t0, s0 = h[0]
        if t0 < since and len(h) > 1:  # interpolate inside the first segment
            t1, s1 = h[1]
            s0 += (s1 - s0) * (since - t0) / (t1 - t0)
        return (self.served - s0) / (window * self.cfg.dram_bandwidth)

    def _dram_plan(self, now: float) -> None:
        self.dram_version += 1
        if not self.active:
            self.rates = []
            return
        self.rates = fair_rates([tr.cap for tr in self.active], self.cfg.dram_bandwidth)
        soonest = min(tr.left / r for tr, r in zip(self.active, self.rates))
        self._push(now + max(0.0, soonest), _DRAM, 0, self.dram_version)

    def _dram_done(self, now: float) -> None:
        self._dram_advance(now)
        still: list[_Transfer] = []
        for tr in self.active:
            if tr.left > 1e-9 * tr.cost.occupancy + 1e-6:
                still.append(tr)
                continue
            s = self.units[tr.core][tr.unit]
            solo = tr.cost.occupancy / tr.cap
            s.stats.busy += solo
            s.stats.stalls["bandwidth"] += max(0.0, now - tr.start - solo)
            s.free = now
            s.done = max(s.done, now + tr.latency)
            s.transfer = False
            self.ports.close(tr.holds, now)
            self._wrote(tr.core, tr.unit, self._dma_info(tr.inst)[2], now + tr.latency)
            self.events.append((tr.core, tr.unit, tr.index, tr.inst, tr.start, now,
                                now + tr.latency))  # fmt: skip
            self._wake(tr.core, tr.unit, now)
        self.active = still
        self._dram_plan(now)


def scalar_access_cycles(cfg: NpuConfig, inst: Instr) -> int:
    """Cycles an `sld`/`sst` waits for its memory once the queues have drained: a device-
    memory round trip (`dma_latency`) or one on-chip buffer cycle; 0 for other scalar ones."""
    ref = getattr(inst, "src", None) if type(inst) is SLoad else getattr(inst, "dst", None)
    if not isinstance(inst, (SLoad, SStore)) or ref is None:
        return 0
    return cfg.dma_latency if ref.space == Space.DRAM else 1


def simulate_timing(
    program: Program,
    config: NpuConfig | str,
    max_steps: int | None = None,
    args: Sequence[int] = (),
    loads: Sequence[Sequence[int]] | None = None,
) -> TimingReport:
    """Times `program` on design `config` (a profile name works); returns its report.

    `args` are the launch arguments (r3, r4, ... as `Simulator.run` sets them); a program
    that loads registers from memory (`sld`) needs `loads`, the values the functional run
    read (`RunStats.loads`): the timing model has no data.

    >>> from anychip.npu.isa import DT, Ref, Space, VDup
    >>> dup = VDup(DT.F32, Ref(Space.UB, 0), 1.0, (1, 64), (64, 1))
    >>> r = simulate_timing(Program(((dup, Finish()),)), "edge")
    >>> r.cycles  # issued at 0, starts at 1, 64 / 16 lanes = 4 busy cycles + 6 latency
    11
    """
    cfg = get_config(config)
    check_cores(program, cfg, "npu timing")
    # the same instruction budget as the functional model (the design's max_instructions)
    streams = validate(program, cfg, max_steps=max_steps, args=args, loads=loads)
    eng = _Engine(streams, cfg)
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
        port_bytes=dict(eng.port_bytes),
        macs_by_dtype=dict(eng.macs_by_dtype),
        events=eng.events,
    )
