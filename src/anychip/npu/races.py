"""Race detection: which accesses of different units are ordered by synchronisation.

Each unit of each core keeps a vector clock; flags and barriers carry clocks between units.
Two accesses to the same bytes, one a write, race unless one happens before the other.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from anychip.npu.asm import describe
from anychip.npu.errors import RaceError, SyncError
from anychip.npu.isa import Unit
from anychip.npu.memory import Array, runs_overlap

UNITS = len(Unit)


class _Records:
    """Past accesses to one memory, as parallel arrays (a record per access)."""

    def __init__(self) -> None:
        self.n = 0
        self.lo = np.zeros(64, np.int64)
        self.hi = np.zeros(64, np.int64)
        self.unit = np.zeros(64, np.int64)
        self.epoch = np.zeros(64, np.int64)
        self.write = np.zeros(64, np.bool_)
        self.alive = np.zeros(64, np.bool_)
        self.meta: list[Any] = []  # (access, who) per record

    def add(self, lo: int, hi: int, unit: int, epoch: int, write: bool, meta: Any) -> None:
        if self.n == self.lo.size:
            self._compact()
        if self.n == self.lo.size:
            for name in ("lo", "hi", "unit", "epoch", "write", "alive"):
                old = getattr(self, name)
                new = np.zeros(2 * old.size, old.dtype)
                new[: old.size] = old
                setattr(self, name, new)
        i = self.n
        self.lo[i], self.hi[i], self.unit[i], self.epoch[i] = lo, hi, unit, epoch
        self.write[i], self.alive[i] = write, True
        self.meta.append(meta)
        self.n += 1

    def _compact(self) -> None:
        keep = np.flatnonzero(self.alive[: self.n])
        if keep.size == self.n:
            return
        for name in ("lo", "hi", "unit", "epoch", "write", "alive"):
            arr = getattr(self, name)
            arr[: keep.size] = arr[keep]
        self.meta = [self.meta[i] for i in keep]
        self.n = keep.size


class RaceDetector:
    """Vector clocks for `ncores` x 5 units and the access records of every memory.

    Global unit id g = core * 5 + unit. `vc[g, h]` is how many instructions of unit h are
    known (through synchronisation) to have completed before g's current instruction.
    """

    def __init__(self, ncores: int) -> None:
        self.ncores = ncores
        self.vc = np.zeros((ncores * UNITS, ncores * UNITS), np.int64)
        self.flags: dict[tuple[int, int, int, int], deque[Array]] = {}
        self.records: dict[Any, _Records] = {}

    def tick(self, core: int, unit: Unit) -> int:
        """Starts the next instruction of a unit; returns its epoch."""
        g = core * UNITS + unit
        self.vc[g, g] += 1
        return int(self.vc[g, g])

    def access(self, core: int, unit: Unit, acc: Any, write: bool, who: Any) -> None:
        """Checks one access against earlier ones of other units, then records it.

        `acc` has `key`, `lo`, `hi`, `dense`, `runs`; `who` describes the instruction and is
        handed back in the error as (describe(who) of both instructions).
        """
        g = core * UNITS + unit
        rec = self.records.setdefault(acc.key, _Records())
        n = rec.n
        if n:
            m = rec.alive[:n] & (rec.unit[:n] != g) & (rec.lo[:n] < acc.hi) & (rec.hi[:n] > acc.lo)
            if not write:
                m &= rec.write[:n]
            m &= rec.epoch[:n] > self.vc[g][rec.unit[:n]]  # not ordered before this access
            for i in np.flatnonzero(m):
                other, other_who = rec.meta[i]
                addr = runs_overlap(other.runs, acc.runs)
                if addr is not None:
                    raise _race(acc, write, who, other, bool(rec.write[i]), other_who, addr)
            if acc.dense:  # an older access of this unit inside this one tells nothing new
                same = (
                    rec.alive[:n]
                    & (rec.unit[:n] == g)
                    & (rec.lo[:n] >= acc.lo)
                    & (rec.hi[:n] <= acc.hi)
                )
                if not write:
                    same &= ~rec.write[:n]
                rec.alive[:n] &= ~same
        rec.add(acc.lo, acc.hi, g, int(self.vc[g, g]), write, (acc, who))

    def set_flag(self, core: int, src: Unit, dst: Unit, flag: int) -> None:
        g = core * UNITS + src
        self.flags.setdefault((core, src, dst, flag), deque()).append(self.vc[g].copy())

    def wait_flag(self, core: int, src: Unit, dst: Unit, flag: int, who: Any) -> None:
        q = self.flags.get((core, src, dst, flag))
        if not q:
            raise SyncError(
                f"npu: wait on flag {flag} from {src.name.lower()} to {dst.name.lower()} with no "
                "earlier matching setf in program order (the queue would wait forever)",
                describe(who),
            )
        g = core * UNITS + dst
        np.maximum(self.vc[g], q.popleft(), out=self.vc[g])

    def barrier(self, core: int) -> None:
        """All units of `core` wait for each other; old records that cannot race are dropped."""
        rows = slice(core * UNITS, (core + 1) * UNITS)
        self.vc[rows] = self.vc[rows].max(axis=0)
        # a record of unit u can race only with a unit h that has not yet seen it
        seen = self.vc.copy()
        np.fill_diagonal(seen, np.iinfo(np.int64).max)
        for key, rec in self.records.items():
            if key == "dram":
                low = seen.min(axis=0)  # (G,): the least any unit has seen of unit g
            else:  # an on-chip buffer is seen only by its own core's units
                low = seen[key[0] * UNITS : (key[0] + 1) * UNITS].min(axis=0)
            n = rec.n
            rec.alive[:n] &= rec.epoch[:n] > low[rec.unit[:n]]
            rec._compact()


def _race(
    acc: Any, write: bool, who: Any, other: Any, other_write: bool, other_who: Any, addr: int
) -> RaceError:
    mem = acc.key if acc.key == "dram" else acc.key[1].name.lower()
    units = f"{Unit(other_who[2].unit).name.lower()} and {Unit(who[2].unit).name.lower()}"
    return RaceError(
        f"npu: race on {mem} byte {addr}: this {'write' if write else 'read'} is not ordered "
        f"after the {'write' if other_write else 'read'} by {describe(other_who)} "
        f"(no flag or barrier between {units})",
        describe(who),
    )
