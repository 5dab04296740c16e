"""The binary code of the ISA: one opcode byte naming format and op, then its fields.

Fields are little-endian: enums u8, integers i64, floats f64, an address (u8 space, u8
register, i64 offset), tuples as consecutive i64s.
"""

from __future__ import annotations

import struct
import typing
from collections.abc import Callable, Iterator
from enum import IntEnum
from typing import Any

from anychip.npu.errors import AsmError, IllegalInstruction
from anychip.npu.isa import OPCODES, Instr, Ref, Space, mnemonic, op_field, opcode, operand_fields


def _codec(tp: Any) -> tuple[str, Callable[[Any], tuple[Any, ...]], Callable[[Iterator[Any]], Any]]:
    if isinstance(tp, type) and issubclass(tp, IntEnum):
        return "B", lambda v: (int(v),), lambda it: tp(next(it))
    if tp is int:
        return "q", lambda v: (v,), lambda it: next(it)
    if tp is float:
        return "d", lambda v: (v,), lambda it: next(it)
    if tp is Ref:
        return (
            "BBq",
            lambda r: (int(r.space), r.reg, r.off),
            lambda it: _ref(next(it), next(it), next(it)),
        )
    n = len(typing.get_args(tp))
    return "q" * n, tuple, lambda it: tuple(next(it) for _ in range(n))


def _ref(space: int, reg: int, off: int) -> Ref:
    return Ref(Space(space), off, reg)


_LAYOUT: dict[type[Instr], tuple[struct.Struct, list[Any]]] = {}


def _layout(cls: type[Instr]) -> tuple[struct.Struct, list[Any]]:
    if cls not in _LAYOUT:
        codecs = [_codec(tp) for _, tp in operand_fields(cls)]
        _LAYOUT[cls] = struct.Struct("<" + "".join(c[0] for c in codecs)), codecs
    return _LAYOUT[cls]


def encode(inst: Instr) -> bytes:
    """The instruction's binary code.

    >>> from anychip.npu.isa import SMov
    >>> decode(encode(SMov(rd=3, imm=-7)))[0]
    SMov(rd=3, imm=-7)
    """
    st, codecs = _layout(type(inst))
    vals: list[Any] = []
    for (name, _), (_, to_vals, _) in zip(operand_fields(type(inst)), codecs, strict=True):
        vals += to_vals(getattr(inst, name))
    try:
        return bytes([opcode(inst)]) + st.pack(*vals)
    except struct.error as e:
        raise IllegalInstruction(f"npu: cannot encode {mnemonic(inst)}: {e}") from e


def decode(code: bytes, pos: int = 0) -> tuple[Instr, int]:
    """The instruction at byte `pos` of `code`, and the position after it."""
    if pos >= len(code) or code[pos] >= len(OPCODES):
        raise AsmError(f"npu: no valid opcode at byte {pos}")
    _, cls, op = OPCODES[code[pos]]
    st, codecs = _layout(cls)
    if pos + 1 + st.size > len(code):
        raise AsmError(f"npu: truncated {OPCODES[code[pos]][0]} at byte {pos}")
    it = iter(st.unpack_from(code, pos + 1))
    kw = {name: c[2](it) for (name, _), c in zip(operand_fields(cls), codecs, strict=True)}
    f = op_field(cls)
    if f:
        kw[f] = op
    return cls(**kw), pos + 1 + st.size
