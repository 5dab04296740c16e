"""The chip's readable text form: an assembler and a disassembler that round-trip.

One instruction per line: `mnemonic field=value ...` with every field of its format, e.g.
`vadd dtype=f32 dst=ub:r3+0 a=ub:0 b=ub:4096 shape=4,256 dst_strides=256,1 ...`.
"""

from __future__ import annotations

import re
from enum import IntEnum
from typing import Any

from anychip.npu.errors import AsmError, IllegalInstruction, where
from anychip.npu.isa import (
    BY_MNEMONIC,
    DT,
    Branch,
    Instr,
    Ref,
    Space,
    mnemonic,
    op_field,
    operand_fields,
)
from anychip.npu.program import DataDecl, Program


def _fmt(v: Any) -> str:
    if isinstance(v, IntEnum):
        return v.name.lower()
    if isinstance(v, Ref):
        reg = f"r{v.reg}" if v.reg else ""
        if not reg:
            return f"{v.space.name.lower()}:{v.off}"
        return f"{v.space.name.lower()}:{reg}{'+' if v.off >= 0 else '-'}{abs(v.off)}"
    if isinstance(v, tuple):
        return ",".join(str(x) for x in v)
    if isinstance(v, float):
        return repr(v)
    return str(v)


def format_instr(inst: Instr, labels: dict[int, str] | None = None) -> str:
    """One instruction as text; branch targets print as labels when `labels` names them.

    >>> from anychip.npu.isa import SetFlag, Unit
    >>> format_instr(SetFlag(Unit.DMA_IN, Unit.MATRIX, 2))
    'setf src=dma_in dst=matrix flag=2'
    """
    parts = [mnemonic(inst)]
    for name, _ in operand_fields(type(inst)):
        v = getattr(inst, name)
        if isinstance(inst, Branch) and name == "target" and labels and v in labels:
            parts.append(f"target={labels[v]}")
        else:
            parts.append(f"{name}={_fmt(v)}")
    return " ".join(parts)


def describe(who: tuple[int, int, Instr]) -> str:
    """`core 0 instruction #12 `vadd ...``: how faults name an instruction (core, index, it)."""
    core, index, inst = who
    return where(core, index, format_instr(inst))


_REF = re.compile(r"^([a-z0-9]+):(?:r(\d+)([+-]))?(-?(?:0x[0-9a-fA-F]+|\d+))$")


def _int(text: str) -> int:
    return int(text, 0)


def _parse(tp: Any, text: str, labels: dict[str, int]) -> Any:
    if isinstance(tp, type) and issubclass(tp, IntEnum):
        try:
            return tp[text.upper()]
        except KeyError:
            raise ValueError(f"expected one of {[m.name.lower() for m in tp]}") from None
    if tp is int:
        return labels[text] if text in labels else _int(text)
    if tp is float:
        return float(text)
    if tp is Ref:
        m = _REF.match(text)
        if not m:
            raise ValueError("expected an address like ub:1024 or dram:r3+64")
        space = Space[m.group(1).upper()]
        off = _int(m.group(4))
        if m.group(2) is None:
            return Ref(space, off)
        return Ref(space, -off if m.group(3) == "-" else off, int(m.group(2)))
    parts = tuple(_int(x) for x in text.split(","))
    want = len(getattr(tp, "__args__", ()))
    if len(parts) != want:
        raise ValueError(f"expected {want} comma-separated integers")
    return parts


def parse_instr(line: str, labels: dict[str, int] | None = None) -> Instr:
    """Parses one instruction (the inverse of `format_instr`).

    >>> parse_instr("smov rd=1 imm=3")
    SMov(rd=1, imm=3)
    """
    tokens = line.split()
    if not tokens:
        raise AsmError("npu asm: empty instruction")
    name = tokens[0].lower()
    if name not in BY_MNEMONIC:
        raise AsmError(f"npu asm: unknown mnemonic {tokens[0]!r}")
    _, cls, op = BY_MNEMONIC[name]
    types = dict(operand_fields(cls))
    kw: dict[str, Any] = {}
    for tok in tokens[1:]:
        key, eq, text = tok.partition("=")
        if not eq or key not in types:
            raise AsmError(f"npu asm: {name} has no field {key!r}; fields: {list(types)}")
        if key in kw:
            raise AsmError(f"npu asm: {name} field {key!r} given twice")
        try:
            kw[key] = _parse(types[key], text, labels or {})
        except (ValueError, KeyError) as e:
            raise AsmError(f"npu asm: {name} field {key}={text!r}: {e}") from None
    f = op_field(cls)
    if f:
        kw[f] = op
    try:
        return cls(**kw)
    except TypeError as e:
        raise AsmError(f"npu asm: {name}: {e}") from None


def disassemble(program: Program) -> str:
    """Text for a whole program: `.data` lines, then `.core N` sections with branch labels."""
    lines = ["# anychip npu program"]
    for d in program.data:
        dims = ",".join(map(str, d.shape))
        lines.append(f".data {d.name} {d.addr} {d.dtype.name.lower()} {dims} {d.init}")
    for c, code in enumerate(program.cores):
        lines.append(f".core {c}")
        # branches past the end print as numbers: a label can only mark a position
        targets = sorted(
            {i.target for i in code if isinstance(i, Branch) and i.target <= len(code)}
        )
        labels = {t: f"L{t}" for t in targets}
        for i, inst in enumerate(code):
            if i in labels:
                lines.append(f"{labels[i]}:")
            lines.append("    " + format_instr(inst, labels))
        if len(code) in labels:  # a branch may target the end of the code
            lines.append(f"{labels[len(code)]}:")
    return "\n".join(lines) + "\n"


def _strip(line: str) -> str:
    return line.split("#", 1)[0].split(";", 1)[0].strip()


def assemble(text: str) -> Program:
    """Assembles program text; `# ...` and `; ...` are comments, `name:` defines a label.

    >>> p = assemble(".core 0\\nloop:\\n  saddi rd=3 ra=3 imm=1\\n  blt ra=3 rb=4 target=loop\\n")
    >>> assemble(disassemble(p)) == p
    True
    """
    data: list[DataDecl] = []
    cores: dict[int, list[tuple[int, str]]] = {}
    labels: dict[int, dict[str, int]] = {}
    current = 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = _strip(raw)
        if not line:
            continue
        try:
            if line.startswith(".core"):
                current = int(line.split()[1])
                cores.setdefault(current, [])
            elif line.startswith(".data"):
                data.append(_parse_data(line))
            elif re.fullmatch(r"[A-Za-z_]\w*:", line.split()[0]):
                label, rest = line.split(":", 1)
                labels.setdefault(current, {})[label] = len(cores.setdefault(current, []))
                if rest.strip():
                    cores[current].append((lineno, rest.strip()))
            else:
                cores.setdefault(current, []).append((lineno, line))
        except (ValueError, IndexError, AsmError) as e:
            raise AsmError(f"npu asm line {lineno}: {raw.strip()!r}: {e}") from None
    if sorted(cores) != list(range(len(cores))):
        raise AsmError(f"npu asm: cores must be numbered 0..n-1, got {sorted(cores)}")
    code = []
    for c in range(len(cores)):
        insts = []
        for lineno, line in cores[c]:
            try:
                insts.append(parse_instr(line, labels.get(c, {})))
            except (AsmError, IllegalInstruction) as e:
                raise AsmError(f"npu asm line {lineno}: {e}") from None
        code.append(tuple(insts))
    return Program(tuple(code), tuple(data))


def _parse_data(line: str) -> DataDecl:
    """`.data NAME ADDR DTYPE D0,D1,... [INIT]`."""
    parts = line.split()
    if len(parts) not in (5, 6):
        raise AsmError(".data takes NAME ADDR DTYPE DIMS [none|zeros|random|range]")
    shape = tuple(_int(x) for x in parts[4].split(","))
    init = parts[5] if len(parts) == 6 else "random"
    return DataDecl(parts[1], _int(parts[2]), DT[parts[3].upper()], shape, init)
