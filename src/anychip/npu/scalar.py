"""The scalar unit: runs a core's registers and branches to give the instructions it dispatches.

Both models consume this stream. A run is bounded by an instruction budget, and a loop whose
control registers come back unchanged is stopped at once: it can never end.
"""

from __future__ import annotations

import dataclasses
import operator
import typing
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from anychip.npu.errors import IllegalInstruction, SyncError, where
from anychip.npu.isa import (
    NUM_REGS,
    Branch,
    Cond,
    Finish,
    Instr,
    Ref,
    SAlu,
    SAluI,
    SLoad,
    SMov,
    SOp,
    SStore,
)

Item = tuple[int, Instr]  # (index in the core's code, instruction with addresses resolved)
DEFAULT_BUDGET = 10_000_000  # dynamic instructions per core (NpuConfig.max_instructions)
CHUNK = 1 << 14  # items per chunk of the stream
_UNIT, _DYN, _MOV, _ALU, _ALUI, _BRANCH, _FINISH, _LOAD, _STORE = range(9)
ARG_REGS = range(3, NUM_REGS)  # launch arguments go to r3, r4, ... (r1, r2: core, cores)
_WRAP = 1 << 64
_REF_FIELDS: dict[type[Instr], tuple[str, ...]] = {}


def _wrap64(v: int) -> int:
    """Registers are 64-bit two's complement."""
    v %= _WRAP
    return v - _WRAP if v >= 1 << 63 else v


def _ref_fields(cls: type[Instr]) -> tuple[str, ...]:
    """The names of a format's address fields (cached per format)."""
    names = _REF_FIELDS.get(cls)
    if names is None:
        hints = typing.get_type_hints(cls)
        names = tuple(f.name for f in dataclasses.fields(cls) if hints[f.name] is Ref)  # type: ignore[arg-type]
        _REF_FIELDS[cls] = names
    return names


def _resolve(inst: Instr, names: tuple[str, ...], regs: list[int]) -> Instr:
    """`inst` with every `R[reg] + off` address folded into an absolute offset. Built without
    re-running the format's checks: only offsets change, and offsets are not checked."""
    new = object.__new__(type(inst))
    fields = dict(inst.__dict__)
    for name in names:
        v = fields[name]
        ref = object.__new__(Ref)
        ref.__dict__.update(space=v.space, off=regs[v.reg] + v.off, reg=0)
        fields[name] = ref
    new.__dict__.update(fields)
    return new


def _control_regs(code: Sequence[Instr]) -> tuple[int, ...]:
    """Registers that decide branches: those branches read, closed over the scalar ops that
    write them. Their values and the pc are all that decide the control flow."""
    regs = {r for i in code if isinstance(i, Branch) for r in (i.ra, i.rb)}
    grew = True
    while grew:
        grew = False
        for i in code:
            if isinstance(i, (SAlu, SAluI)) and i.rd in regs:
                srcs = {i.ra, i.rb} if isinstance(i, SAlu) else {i.ra}
                if not srcs <= regs:
                    regs |= srcs
                    grew = True
    return tuple(sorted(regs - {0}))


def _runaway(core: int, pc: int, why: str, code: Sequence[Instr]) -> SyncError:
    """A SyncError (a division by zero: IllegalInstruction) naming code[pc] in assembly text."""
    from anychip.npu.asm import format_instr  # asm imports program, which imports us

    cls = SyncError if "division" not in why else IllegalInstruction
    if cls is IllegalInstruction:
        return IllegalInstruction(f"npu: {why} at {where(core, pc, format_instr(code[pc]))}")  # type: ignore[return-value]
    return SyncError(f"npu: core {core} {why}", where(core, pc, format_instr(code[pc])))


_KIND = {SMov: _MOV, SAlu: _ALU, SAluI: _ALUI, Branch: _BRANCH, Finish: _FINISH,
         SLoad: _LOAD, SStore: _STORE}  # fmt: skip


class Memory(typing.Protocol):
    """What the scalar unit's `sld` and `sst` reach: the functional model's memories
    (`sync._Core`), or a replay of the values a functional run loaded (`Replay`)."""

    def load(self, pc: int, inst: SLoad) -> int: ...

    def store(self, pc: int, inst: SStore, value: int) -> None: ...


class Replay:
    """The values one core's `sld`s read in a functional run (`RunStats.loads[core]`),
    given back in order: the timing model has no data, so it replays them.

    >>> r = Replay([7]); r.load(0, None), r.used  # type: ignore[arg-type]
    (7, 1)
    """

    def __init__(self, values: Sequence[int]) -> None:
        self.values, self.used = list(values), 0

    def load(self, pc: int, inst: SLoad) -> int:
        if self.used >= len(self.values):
            raise SyncError(f"npu: sld #{self.used + 1} at instruction #{pc} has no recorded "
                            f"value (the functional run loaded {len(self.values)})")  # fmt: skip
        self.used += 1
        return self.values[self.used - 1]

    def store(self, pc: int, inst: SStore, value: int) -> None:
        """Stores change no register: nothing to replay."""


def check_args(args: Sequence[int]) -> None:
    """IllegalInstruction unless `args` are at most len(ARG_REGS) 64-bit integers."""
    if len(args) > len(ARG_REGS):
        raise IllegalInstruction(
            f"npu: {len(args)} launch arguments, but only {len(ARG_REGS)} argument registers "
            f"(r{ARG_REGS[0]}..r{ARG_REGS[-1]})"
        )
    for k, v in enumerate(args):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not _LO <= v < _HI:
            raise IllegalInstruction(
                f"npu: launch argument {k} (r{ARG_REGS[k]}) must be a 64-bit integer, got {v!r}"
            )


def _kinds(code: Sequence[Instr]) -> tuple[list[int], list[tuple[str, ...]], list[int]]:
    """Per position: its kind, its register-relative address fields, and the end of the run
    of fixed-address unit instructions starting there (dispatched as they are, in one step)."""
    kinds, dyn = [], []
    for inst in code:
        tp = type(inst)
        kind = _KIND.get(tp)
        names: tuple[str, ...] = ()
        if kind is None:
            names = tuple(n for n in _ref_fields(tp) if inst.__dict__[n].reg)
            kind = _DYN if names else _UNIT
        kinds.append(kind)
        dyn.append(names)
    stretch = list(range(len(code) + 1))
    for i in reversed(range(len(code))):
        if kinds[i] == _UNIT:
            stretch[i] = stretch[i + 1]
    return kinds, dyn, stretch


_PREPARED: dict[int, tuple[Sequence[Instr], Any]] = {}  # id(code) -> (code, its tables)


def _prepare(code: Sequence[Instr]) -> Any:
    """The per-position tables of `code`, kept for the last few codes: a run walks each
    core's code twice (the budget check, then the stream)."""
    hit = _PREPARED.get(id(code))
    if hit is not None and hit[0] is code:
        return hit[1]
    kinds, dyn, stretch = _kinds(code)
    tables = (kinds, dyn, stretch, _ops(code), list(enumerate(code)), _control_regs(code))
    if len(_PREPARED) >= 8:
        _PREPARED.clear()
    _PREPARED[id(code)] = (code, tables)
    return tables


def _ops(code: Sequence[Instr]) -> list[tuple[Any, ...]]:
    """Per position, the fields the loop needs, unpacked once: scalar ops as (rd, ra, rb or
    None, imm, fn), branches as (ra, rb, target, compare)."""
    ops: list[tuple[Any, ...]] = []
    for inst in code:
        if isinstance(inst, SMov):
            ops.append((inst.rd, 0, None, inst.imm, None))
        elif isinstance(inst, (SAlu, SAluI)):
            rb = inst.rb if isinstance(inst, SAlu) else None
            ops.append((inst.rd, inst.ra, rb, getattr(inst, "imm", 0), _FN[inst.op]))
        elif isinstance(inst, Branch):
            ops.append((inst.ra, inst.rb, inst.target, _CMP[inst.cond]))
        else:
            ops.append(())
    return ops


def _div(a: int, b: int) -> int:
    if b == 0:
        raise IllegalInstruction("npu: scalar division by zero")
    return a // b


def _shl(a: int, b: int) -> int:
    return a << (b % 64)


def _shr(a: int, b: int) -> int:
    return a >> (b % 64)


_FN = {SOp.ADD: operator.add, SOp.SUB: operator.sub, SOp.MUL: operator.mul, SOp.DIV: _div,
       SOp.MIN: min, SOp.MAX: max, SOp.AND: operator.and_, SOp.OR: operator.or_,
       SOp.XOR: operator.xor, SOp.SHL: _shl, SOp.SHR: _shr}  # fmt: skip
_CMP = {Cond.EQ: operator.eq, Cond.NE: operator.ne, Cond.LT: operator.lt, Cond.GE: operator.ge}
_LO, _HI = -(1 << 63), 1 << 63


def stream(
    code: Sequence[Instr],
    core: int = 0,
    ncores: int = 1,
    max_steps: int = DEFAULT_BUDGET,
    collect: bool = True,
    args: Sequence[int] = (),
    memory: Memory | None = None,
) -> Iterator[list[Item]]:
    """Runs the scalar unit of one core, yielding its dispatched stream in chunks.

    Scalar instructions are included (they cost issue cycles); addresses are resolved. At the
    start r1 holds the core's index, r2 the number of cores and r3, r4, ... the launch
    `args`; r0 always reads 0. More than `max_steps` instructions, or a branch taken twice
    with the same control registers (the loop can never end), is a SyncError naming the
    branch. `collect=False` only runs the checks (yields nothing): the quick first pass that
    stops runaways before any work. `sld` and `sst` go to `memory`: the stream first hands
    out everything before them, so the consumer has run it when the access happens.
    """
    regs = [0] * NUM_REGS
    regs[1], regs[2] = core, ncores
    for r, v in zip(ARG_REGS, args):
        regs[r] = int(v)
    n = len(code)
    kinds, dyn, stretch, ops, items, ctrl = _prepare(code)
    if _LOAD in kinds:  # registers from memory: the same control state may mean new data
        ctrl = ()
    get_ctrl = operator.itemgetter(*ctrl) if ctrl else (lambda r: ())
    forever = _LOAD not in kinds
    out: list[Item] = []
    done = 0  # items before `out`
    seen: Any = None  # Brent's cycle check: a saved control state
    trips, power = 0, 1
    pc = 0
    while pc < n:
        k = kinds[pc]
        if k == _UNIT:
            end = stretch[pc]
            if collect:
                out += items[pc:end]
            else:
                done += end - pc
            pc = end
        elif k == _DYN:
            if collect:
                out.append((pc, _resolve(code[pc], dyn[pc], regs)))
            else:
                done += 1
            pc += 1
        elif k == _BRANCH:
            ra, rb, target, cmp = ops[pc]
            if collect:
                out.append(items[pc])
            else:
                done += 1
            if cmp(regs[ra], regs[rb]):
                if done + len(out) >= max_steps:
                    raise _runaway(core, pc, f"ran {max_steps} instructions without finishing "
                                   "(the instruction budget; a runaway loop?)", code)  # fmt: skip
                state = (target, get_ctrl(regs))
                if state == seen and forever:
                    why = "loops forever: this branch is taken again with the same control"
                    raise _runaway(core, pc, f"{why} registers {_regs_text(ctrl, regs)}", code)
                trips += 1
                if trips == power:
                    seen, trips, power = state, 0, 2 * power
                pc = target
            else:
                pc += 1
        elif k == _FINISH:
            if collect:
                out.append(items[pc])
            break
        elif k in (_LOAD, _STORE):
            inst: Any = _resolve(code[pc], ("src",) if k == _LOAD else ("dst",), regs)
            if memory is None:
                raise IllegalInstruction(
                    f"npu: {format_text(code[pc])} at core {core} instruction #{pc} reads or "
                    "writes memory: timing it needs the values a functional run loaded "
                    "(simulate_timing(..., loads=RunStats.loads))"
                )
            if out:  # everything before the access runs first
                done += len(out)
                yield out
                out = []
            if k == _LOAD:
                regs[inst.rd] = memory.load(pc, inst)
                regs[0] = 0
            else:
                memory.store(pc, inst, regs[inst.rs])
            if collect:
                out.append((pc, inst))
            else:
                done += 1
            pc += 1
        else:
            rd, ra, rb, imm, fn = ops[pc]
            if collect:
                out.append(items[pc])
            else:
                done += 1
            if fn is None:
                v = imm
            else:
                try:
                    v = fn(regs[ra], imm if rb is None else regs[rb])
                except IllegalInstruction as e:
                    raise _runaway(core, pc, str(e).removeprefix("npu: "), code) from None
            if not _LO <= v < _HI:
                v = _wrap64(v)
            regs[rd] = v
            regs[0] = 0
            pc += 1
        if len(out) >= CHUNK:
            done += len(out)
            yield out
            out = []
    if done + len(out) > max_steps:
        raise SyncError(f"npu: core {core} runs {done + len(out)} instructions, more than the "
                        f"budget of {max_steps}")  # fmt: skip
    if out:
        yield out


def _regs_text(ctrl: tuple[int, ...], regs: list[int]) -> str:
    return "(" + ", ".join(f"r{r}={regs[r]}" for r in ctrl) + ")" if ctrl else "(none)"


def check_budget(
    code: Sequence[Instr],
    core: int = 0,
    ncores: int = 1,
    max_steps: int = DEFAULT_BUDGET,
    args: Sequence[int] = (),
) -> None:
    """Runs only the scalar unit (fast, no stream kept) so a runaway is stopped before work.
    A program that loads registers from memory (`sld`) is checked as it runs instead."""
    if _LOAD in _prepare(code)[0]:
        return
    for _ in stream(code, core, ncores, max_steps, collect=False, args=args, memory=_NoMemory()):
        pass


class _NoMemory:
    """Stores of the budget check's pass: they change no register."""

    def load(self, pc: int, inst: SLoad) -> int:
        raise AssertionError("unreachable: programs with sld skip the budget pass")

    def store(self, pc: int, inst: SStore, value: int) -> None:
        pass


def format_text(inst: Instr) -> str:
    from anychip.npu.asm import format_instr  # asm imports program, which imports us

    return format_instr(inst)


def expand(
    code: Sequence[Instr],
    core: int = 0,
    ncores: int = 1,
    max_steps: int = DEFAULT_BUDGET,
    args: Sequence[int] = (),
    memory: Memory | None = None,
) -> list[Item]:
    """The whole stream of one core as a list (see `stream`).

    >>> from anychip.npu.isa import SAluI, SMov, SOp
    >>> code = [SMov(3, 2), SAluI(SOp.SUB, 3, 3, 1), Branch(Cond.NE, 3, 0, 1), Finish()]
    >>> [i for i, _ in expand(code)]
    [0, 1, 2, 1, 2, 3]
    """
    out: list[Item] = []
    for chunk in stream(code, core, ncores, max_steps, args=args, memory=memory):
        out += chunk
    return out
