"""A program for the chip: one instruction list per core plus the device data it declares.

`expand` runs a core's scalar unit (registers, branches) to give the stream of instructions
it dispatches, with addresses resolved; both the functional and the timing model consume it.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from anychip.npu.encoding import decode, encode
from anychip.npu.errors import AsmError, IllegalInstruction, SyncError, where
from anychip.npu.isa import (
    DT,
    NUM_REGS,
    Branch,
    Cond,
    Finish,
    Instr,
    Ref,
    SAlu,
    SAluI,
    SMov,
    SOp,
)

INITS = ("none", "zeros", "random", "range")


@dataclass(frozen=True)
class DataDecl:
    """A named array in device memory: what `npu run` allocates and fills before running.

    `init` is 'none' (an output), 'zeros', 'random' (normal, seeded) or 'range' (0, 1, 2...).
    """

    name: str
    addr: int
    dtype: DT
    shape: tuple[int, ...]
    init: str = "random"

    def __post_init__(self) -> None:
        if self.init not in INITS or self.addr < 0 or any(d < 1 for d in self.shape):
            raise AsmError(f"npu: bad .data {self.name}: init in {INITS}, addr >= 0, dims >= 1")
        if not self.name.isidentifier():
            raise AsmError(f"npu: .data name {self.name!r} must be an identifier")

    @property
    def nbytes(self) -> int:
        n = self.dtype.itemsize
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class Program:
    """Instructions per core (core i runs `cores[i]`) and the device data they use.

    >>> p = Program(((SMov(1, 5), Finish()),))
    >>> Program.from_bytes(p.to_bytes()) == p
    True
    """

    cores: tuple[tuple[Instr, ...], ...]
    data: tuple[DataDecl, ...] = ()

    @property
    def num_instructions(self) -> int:
        return sum(len(c) for c in self.cores)

    def to_bytes(self) -> bytes:
        """Binary form: b'ANPU', version, data declarations, then each core's code."""
        out = bytearray(b"ANPU\x01")
        out += struct.pack("<H", len(self.data))
        for d in self.data:
            name = d.name.encode()
            out += struct.pack("<B", len(name)) + name
            out += struct.pack("<qBBB", d.addr, int(d.dtype), INITS.index(d.init), len(d.shape))
            out += struct.pack(f"<{len(d.shape)}q", *d.shape)
        out += struct.pack("<H", len(self.cores))
        for code in self.cores:
            body = b"".join(encode(i) for i in code)
            out += struct.pack("<II", len(code), len(body)) + body
        return bytes(out)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Program:
        if raw[:5] != b"ANPU\x01":
            raise AsmError("npu: not an anychip npu binary (expected magic b'ANPU' version 1)")
        try:
            return _decode_program(raw)
        except (struct.error, IndexError, ValueError) as e:
            raise AsmError(f"npu: corrupt program binary: {e}") from e


def _decode_program(raw: bytes) -> Program:
    pos = 5
    (ndata,) = struct.unpack_from("<H", raw, pos)
    pos += 2
    data = []
    for _ in range(ndata):
        n = raw[pos]
        name = raw[pos + 1 : pos + 1 + n].decode()
        pos += 1 + n
        addr, dt, init, nd = struct.unpack_from("<qBBB", raw, pos)
        pos += 11
        shape = struct.unpack_from(f"<{nd}q", raw, pos)
        pos += 8 * nd
        data.append(DataDecl(name, addr, DT(dt), tuple(shape), INITS[init]))
    (ncores,) = struct.unpack_from("<H", raw, pos)
    pos += 2
    cores = []
    for _ in range(ncores):
        count, size = struct.unpack_from("<II", raw, pos)
        pos += 8
        end = pos + size
        code = []
        for _ in range(count):
            inst, pos = decode(raw, pos)
            code.append(inst)
        if pos != end:
            raise AsmError("npu: core code length does not match its header")
        cores.append(tuple(code))
    return Program(tuple(cores), tuple(data))


def _scalar(op: SOp, a: int, b: int) -> int:
    if op == SOp.ADD:
        return a + b
    if op == SOp.SUB:
        return a - b
    if op == SOp.MUL:
        return a * b
    if op == SOp.DIV:
        if b == 0:
            raise IllegalInstruction("npu: scalar division by zero")
        return a // b
    return min(a, b) if op == SOp.MIN else max(a, b)


_COND = {
    Cond.EQ: lambda a, b: a == b,
    Cond.NE: lambda a, b: a != b,
    Cond.LT: lambda a, b: a < b,
    Cond.GE: lambda a, b: a >= b,
}
_WRAP = 1 << 64


def _wrap64(v: int) -> int:
    """Registers are 64-bit two's complement."""
    v %= _WRAP
    return v - _WRAP if v >= 1 << 63 else v


def _resolve(inst: Instr, regs: list[int]) -> Instr:
    """The instruction with every `R[reg] + off` address folded into an absolute offset."""
    changes = {}
    for f in dataclasses.fields(inst):  # type: ignore[arg-type]
        v = getattr(inst, f.name)
        if isinstance(v, Ref) and v.reg:
            changes[f.name] = Ref(v.space, regs[v.reg] + v.off, 0)
    return dataclasses.replace(inst, **changes) if changes else inst  # type: ignore[type-var]


def expand(
    code: Sequence[Instr], core: int = 0, ncores: int = 1, max_steps: int = 20_000_000
) -> list[tuple[int, Instr]]:
    """Runs the scalar unit of one core: the (index, instruction) stream it executes, in order.

    Scalar instructions are included (they cost issue cycles); addresses are resolved. At
    the start r1 holds the core's index and r2 the number of cores; r0 always reads 0.

    >>> code = [SMov(3, 2), SAluI(SOp.SUB, 3, 3, 1), Branch(Cond.NE, 3, 0, 1), Finish()]
    >>> [i for i, _ in expand(code)]
    [0, 1, 2, 1, 2, 3]
    """
    regs = [0] * NUM_REGS
    regs[1], regs[2] = core, ncores
    out: list[tuple[int, Instr]] = []
    pc = 0
    while pc < len(code):
        if len(out) >= max_steps:
            raise SyncError(
                f"npu: core {core} ran {max_steps} instructions without finishing "
                "(a runaway loop?)",
                where(core, pc, repr(code[pc])),
            )
        inst = code[pc]
        out.append(
            (
                pc,
                _resolve(inst, regs) if not isinstance(inst, (SAlu, SAluI, SMov, Branch)) else inst,
            )
        )
        pc += 1
        if isinstance(inst, SMov):
            regs[inst.rd] = _wrap64(inst.imm)
        elif isinstance(inst, (SAlu, SAluI)):
            b = regs[inst.rb] if isinstance(inst, SAlu) else inst.imm
            try:
                regs[inst.rd] = _wrap64(_scalar(inst.op, regs[inst.ra], b))
            except IllegalInstruction as e:
                raise IllegalInstruction(f"{e} at {where(core, pc - 1, repr(inst))}") from None
        elif isinstance(inst, Branch):
            if _COND[inst.cond](regs[inst.ra], regs[inst.rb]):
                pc = inst.target
        elif isinstance(inst, Finish):
            break
        regs[0] = 0
    return out
