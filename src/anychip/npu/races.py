"""Race detection: which accesses of different units are ordered by synchronisation.

Each unit of each core keeps a vector clock; flags and barriers carry clocks between units.
Two accesses to the same bytes, one a write, race unless one happens before the other.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from anychip.npu.asm import describe
from anychip.npu.errors import RaceError
from anychip.npu.isa import Unit
from anychip.npu.memory import runs_overlap

UNITS = len(Unit)
Record = tuple[int, int, int, Any, Any]  # (sequence number, lo, hi, access, who)


class _Bin:
    """One unit's reads (or writes) of one memory: the latest record of each operand, oldest
    first. A repeated operand's new record replaces its old one (whatever would race with
    the old one races with the new, later one too) and moves to the end, so epochs ascend
    and the records another unit has not seen yet are a suffix, read from the end.
    """

    __slots__ = ("hi", "last", "lo", "recs")

    def __init__(self) -> None:
        self.recs: dict[int, tuple[int, Record]] = {}  # id(access) -> (epoch, record)
        self.lo, self.hi = 1 << 62, -(1 << 62)  # bytes [lo, hi) cover every record
        self.last = 0  # the newest epoch

    def add(self, epoch: int, rec: Record) -> None:
        recs = self.recs
        key = id(rec[3])  # the record keeps its access alive: the id stays unique
        if key in recs:
            del recs[key]
        recs[key] = (epoch, rec)
        self.last = epoch
        if rec[1] < self.lo:
            self.lo = rec[1]
        if rec[2] > self.hi:
            self.hi = rec[2]

    def drop_seen(self, low: int) -> None:
        """Forgets the records every other unit has seen (epoch <= low)."""
        recs = self.recs
        dropped = False
        while recs:
            first = next(iter(recs))
            if recs[first][0] > low:
                break
            del recs[first]
            dropped = True
        if dropped:
            self.lo = min((r[1] for _, r in recs.values()), default=1 << 62)
            self.hi = max((r[2] for _, r in recs.values()), default=-(1 << 62))


Table = dict[Any, dict[int, _Bin]]  # memory key -> global unit id -> its records


class RaceDetector:
    """Vector clocks for `ncores` x 5 units and the access records of every memory.

    Global unit id g = core * 5 + unit. `vc[g][h]` is how many instructions of unit h are
    known (through synchronisation) to have completed before g's current instruction.
    Clocks are Python lists: they are read a few entries at a time, per access.
    """

    def __init__(self, ncores: int) -> None:
        self.ncores = ncores
        n = ncores * UNITS
        self.vc = [[0] * n for _ in range(n)]
        self.flags: dict[tuple[int, int, int, int], deque[tuple[list[int], Any]]] = {}
        self.reads: Table = {}
        self.writes: Table = {}
        self.seq = 0

    def tick(self, core: int, unit: Unit) -> int:
        """Starts the next instruction of a unit; returns its epoch."""
        g = core * UNITS + unit
        self.vc[g][g] += 1
        return self.vc[g][g]

    def access(self, core: int, unit: Unit, acc: Any, write: bool, who: Any) -> None:
        """Checks one access against earlier ones of other units, then records it.

        `acc` has `key`, `lo`, `hi`, `runs`; `who` describes the instruction and is handed
        back in the error as (describe(who) of both instructions). Of several racing
        accesses the error names the latest (forgetting covered records never changes it).
        """
        g = core * UNITS + unit
        row = self.vc[g]
        key = acc.key
        hit: tuple[Record, int, bool] | None = None
        writes = self.writes.get(key)
        if writes is not None and (len(writes) > 1 or g not in writes):
            hit = _scan(writes, g, row, acc, None, True)
        reads = self.reads.get(key) if write else None  # reads race only with writes
        if reads is not None and (len(reads) > 1 or g not in reads):
            hit = _scan(reads, g, row, acc, hit, False)
        if hit is not None:
            rec, addr, other_write = hit
            raise _race(acc, write, who, rec[3], other_write, rec[4], addr)
        table = self.writes if write else self.reads
        bins = table.get(key)
        if bins is None:
            bins = table[key] = {}
        mine = bins.get(g)
        if mine is None:
            mine = bins[g] = _Bin()
        mine.add(row[g], (self.seq, acc.lo, acc.hi, acc, who))
        self.seq += 1

    def instruction(self, core: int, unit: Unit, reads: list[Any], writes: list[Any],
                    who: Any) -> None:  # fmt: skip
        """Checks and records one instruction's accesses, reads first."""
        for acc in reads:
            self.access(core, unit, acc, False, who)
        for acc in writes:
            self.access(core, unit, acc, True, who)

    def set_flag(self, key: tuple[int, int, int, int], who: Any) -> None:
        """Counts flag `key` = (core, src, dst, flag) up, carrying src's clock (and the setf,
        to name it if it is never waited on)."""
        g = key[0] * UNITS + key[1]
        q = self.flags.get(key)
        if q is None:
            q = self.flags[key] = deque()
        q.append((self.vc[g][:], who))

    def wait_flag(self, key: tuple[int, int, int, int]) -> bool:
        """Consumes the oldest count of flag `key` into dst's clock; False when there is none
        yet (the waiting unit stalls until a setf on another unit counts it up)."""
        q = self.flags.get(key)
        if not q:
            return False
        g = key[0] * UNITS + key[2]
        self.vc[g] = list(map(max, self.vc[g], q.popleft()[0]))
        return True

    def unconsumed(self, core: int) -> list[Any]:
        """The setf (its `who`) of every count still standing on `core`'s flags."""
        return [who for key, q in self.flags.items() if key[0] == core for _, who in q]

    def barrier(self, core: int | None) -> None:
        """All units of `core` (None: of every core, a `gbarrier`) wait for each other; old
        records that cannot race are dropped."""
        if core is None:
            rows = range(len(self.vc))
        else:
            rows = range(core * UNITS, (core + 1) * UNITS)
        joined = [max(col) for col in zip(*(self.vc[r] for r in rows), strict=True)]
        for r in rows:
            self.vc[r] = list(joined)
        every = range(len(self.vc))
        for table in (self.reads, self.writes):
            for key, bins in table.items():
                # device memory is seen by every unit, an on-chip buffer by its core's units
                seers = every if key == "dram" else range(key[0] * UNITS, (key[0] + 1) * UNITS)
                for h, b in bins.items():
                    b.drop_seen(min((self.vc[r][h] for r in seers if r != h), default=0))


def _scan(
    bins: dict[int, _Bin],
    g: int,
    row: list[int],
    acc: Any,
    hit: tuple[Record, int, bool] | None,
    writes: bool,
) -> tuple[Record, int, bool] | None:
    """The latest record of another unit in `bins` that `acc` overlaps and unit g has not
    seen (through its clock `row`), if later than `hit`."""
    lo, hi = acc.lo, acc.hi
    for h, b in bins.items():
        # skip this unit, bins that cannot overlap, and bins g has seen entirely
        seen = row[h]
        if h == g or b.lo >= hi or b.hi <= lo or b.last <= seen:
            continue
        for epoch, rec in reversed(b.recs.values()):  # newest first
            if epoch <= seen or (hit is not None and rec[0] < hit[0][0]):
                break
            if rec[1] < hi and rec[2] > lo:
                addr = runs_overlap(rec[3].runs, acc.runs)
                if addr is not None:
                    hit = (rec, addr, writes)
                    break
    return hit


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
