"""A program for the chip: one instruction list per core plus the device data it declares.

`expand` (from `npu/scalar.py`) runs a core's scalar unit to give the stream of instructions
it dispatches, with addresses resolved; both the functional and the timing model consume it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from anychip.npu.encoding import decode, encode
from anychip.npu.errors import AsmError
from anychip.npu.isa import DT, Instr
from anychip.npu.scalar import expand

__all__ = ["INITS", "DataDecl", "Program", "expand"]

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

    >>> from anychip.npu.isa import Finish, SMov
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
