"""How one core's units take their instructions: queues, flags, barriers, and deadlocks.

The scalar unit dispatches in program order into per-unit queues of `queue_depth`. The
functional model runs each instruction as soon as it is dispatched, except on a unit stalled
at a `waitf` whose flag is not set yet: that unit queues what follows until a `setf` on
another unit counts the flag up. A deadlock (the scalar unit blocked for good) is reported
where it becomes certain, naming the waiting `waitf`; so is a flag set and never waited on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from anychip.npu.asm import describe
from anychip.npu.errors import SyncError
from anychip.npu.isa import Barrier, Finish, Instr, SetFlag, SLoad, SStore, Unit, WaitFlag

if TYPE_CHECKING:
    from anychip.npu.simulator import Simulator

Item = tuple[int, Instr]
_WHY = {Finish: "the program ends", Barrier: "this barrier waits", SLoad: "this sld waits",
        SStore: "this sst waits"}  # fmt: skip


class _Core:
    """Runs one core's stream on a simulator (its handlers do the instructions' work)."""

    def __init__(self, sim: Simulator, core: int, counts: list[int]) -> None:
        self.sim, self.core, self.counts = sim, core, counts
        self.depth = sim.config.queue_depth
        self.held: list[deque[Item] | None] = [None] * len(Unit)  # queues of stalled units
        self.waiting: dict[tuple[int, int, int, int], Unit] = {}  # flag -> the unit stalled

    def run(self, chunks: Iterable[list[Item]]) -> None:
        handlers = self.sim._handlers
        held, core, counts = self.held, self.core, self.counts
        for chunk in chunks:
            for item in chunk:
                inst = item[1]
                tp = type(inst)
                handler = handlers.get(tp)
                if handler is not None:  # a data instruction (dma, gather, mma, v...)
                    unit = inst.unit
                    q = held[unit]
                    if q is None:
                        counts[unit] += 1
                        handler(core, (core, item[0], inst), inst)
                    else:
                        self._enqueue(q, item)
                elif tp is SetFlag or tp is WaitFlag:
                    q = held[inst.unit]
                    if q is None:
                        self._sync(item)
                    else:
                        self._enqueue(q, item)
                elif tp is Barrier or tp is Finish or tp is SLoad or tp is SStore:
                    why = _WHY[tp]
                    self._drained(item, f"{why} for every queue to drain")
                    self.sim._races.barrier(core)
                    if tp is SLoad or tp is SStore:
                        self.sim.scalar_item(core, (core, item[0], inst))
        self._drained(None, "the program ends for every queue to drain")
        self.sim._flush()
        unused = self.sim._races.unconsumed(core)
        if unused:
            who = unused[0]
            i = who[2]
            raise SyncError(
                f"npu: flag {i.flag} from {i.src.name.lower()} to {i.dst.name.lower()} is set "
                f"and never waited on ({len(unused)} count(s) left at the end of core "
                f"{core}'s program; the next program would start with them)",
                describe(who),
            )

    # ---- the scalar unit's memory accesses: the stream calls these (scalar.Memory) ------
    def _scalar_access(self, pc: int, inst: Instr) -> tuple[int, int, Instr]:
        """Drains every queue (sld and sst are ordered like a barrier), ticks the scalar unit."""
        who = (self.core, pc, inst)
        self._drained((pc, inst), f"{_WHY[type(inst)]} for every queue to drain")
        self.sim._races.barrier(self.core)
        self.sim._races.tick(self.core, Unit.SCALAR)
        return who

    def load(self, pc: int, inst: SLoad) -> int:
        value = self.sim.scalar_load(self.core, self._scalar_access(pc, inst), inst)
        self.sim._races.barrier(self.core)
        return value

    def store(self, pc: int, inst: SStore, value: int) -> None:
        self.sim.scalar_store(self.core, self._scalar_access(pc, inst), inst, value)
        self.sim._races.barrier(self.core)

    def _sync(self, item: Item) -> bool:
        """Runs a setf or waitf; False when the waitf stalls its unit (now holding a queue)."""
        inst: Any = item[1]
        races, core = self.sim._races, self.core
        key = (core, inst.src, inst.dst, inst.flag)
        if type(inst) is SetFlag:
            races.tick(core, inst.src)
            races.set_flag(key, (core, item[0], inst))
            self.counts[inst.src] += 1
            if key in self.waiting:
                self._resume(self.waiting.pop(key))
            return True
        if races.wait_flag(key):
            races.tick(core, inst.dst)
            self.counts[inst.dst] += 1
            return True
        self.waiting[key] = inst.dst
        if self.held[inst.dst] is None:
            self.held[inst.dst] = deque([item])
        return False

    def _resume(self, unit: Unit) -> None:
        """Runs a stalled unit's queue until it stalls again or empties."""
        q = self.held[unit]
        assert q is not None
        handlers, core = self.sim._handlers, self.core
        while q:
            item = q[0]
            inst = item[1]
            tp = type(inst)
            if tp is SetFlag or tp is WaitFlag:
                if not self._sync(item):
                    return
            else:
                self.counts[unit] += 1
                handlers[tp](core, (core, item[0], inst), inst)
            q.popleft()
        self.held[unit] = None

    def _enqueue(self, q: deque[Item], item: Item) -> None:
        if len(q) >= self.depth:
            unit = item[1].unit.name.lower()
            raise self._deadlock(
                f"the {unit} queue is full ({self.depth} instructions) so the scalar unit "
                f"can never dispatch {describe((self.core, *item))}"
            )
        q.append(item)

    def _drained(self, item: Item | None, why: str) -> None:
        if any(q for q in self.held):
            where = f" ({describe((self.core, *item))})" if item else ""
            raise self._deadlock(f"{why}{where}")

    def _deadlock(self, why: str) -> SyncError:
        """Names the first stalled unit's waitf: no setf dispatched so far can release it."""
        q = next(q for q in self.held if q)
        index, inst = q[0]
        w: Any = inst
        return SyncError(
            f"npu: deadlock on core {self.core}: the {w.dst.name.lower()} unit waits on flag "
            f"{w.flag} from {w.src.name.lower()}, no setf dispatched so far can release it, "
            f"and {why}",
            describe((self.core, index, inst)),
        )
