"""Buffers beyond the scalar registers: which buffers keep a register, and the launch-time
relocation of the others' device-memory operands.

Buffer i of a kernel is addressed through a register (`BUF_REG + k`) set by the launch
prologue. A kernel with more buffers than `MAX_BUF_REGS` keeps its most used buffers in
registers; the compiler addresses each other buffer `b` as `dram:r0 + tag(b) + off`, a
placeholder no device memory holds, and `relocate` rewrites those operands to
`dram:r0 + address(b) + off` when the kernel is launched. The device runs no extra
instruction (a scalar load of the address before each use, `sld`, would drain every
queue of the core: see docs/npu-backend.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from anychip.backends.npu.lower_exprs import _all_stmts, _stmt_exprs
from anychip.ir.kernel import KernelIR, Load, SortRow, Store, walk_exprs
from anychip.npu.isa import NUM_REGS, Instr, Ref, Space

BUF_REG = 3  # buffer i's device address is in register BUF_REG + i (r1, r2: core id, count)
# registers for buffers: r3.. up to the three after them (arguments, tables, gather scratch)
MAX_BUF_REGS = NUM_REGS - BUF_REG - 3
TAG_SHIFT = 40  # a spilled buffer b's operands sit at (b + 1) << TAG_SHIFT (+ their offset)
_HALF = 1 << (TAG_SHIFT - 1)


def arg_reg(nbufs: int) -> int:
    """The register of the argument block, after the buffers' registers."""
    return BUF_REG + min(nbufs, MAX_BUF_REGS)


def buffer_regs(ir: KernelIR) -> tuple[int, ...]:
    """Each buffer's register, 0 for a buffer addressed by relocation: every buffer has one
    (`BUF_REG + i`) when they fit, else the `MAX_BUF_REGS` most used ones (loads and
    stores in the kernel's text; ties to the lower number) in buffer order."""
    n = len(ir.bufs)
    if n <= MAX_BUF_REGS:
        return tuple(BUF_REG + i for i in range(n))
    uses = [0] * n
    for s in _all_stmts(ir.body):
        if isinstance(s, Store):
            uses[s.buf] += 1
        elif isinstance(s, SortRow):
            uses[s.src] += 1
            uses[s.dst] += 1
        for e in _stmt_exprs([s]):
            for x in walk_exprs(e):
                if isinstance(x, Load):
                    uses[x.buf] += 1
    kept = sorted(sorted(range(n), key=lambda i: (-uses[i], i))[:MAX_BUF_REGS])
    regs = [0] * n
    for k, i in enumerate(kept):
        regs[i] = BUF_REG + k
    return tuple(regs)


def dram_ref(regs: Sequence[int], buf: int, off: int) -> Ref:
    """Byte `off` of buffer `buf`: through its register, or a placeholder to relocate."""
    reg = regs[buf]
    if reg:
        return Ref(Space.DRAM, off, reg)
    assert -_HALF < off < _HALF
    return Ref(Space.DRAM, ((buf + 1) << TAG_SHIFT) + off, 0)


def _tagged(v: object) -> bool:
    return isinstance(v, Ref) and v.space == Space.DRAM and v.reg == 0 and v.off >= _HALF


def relocations(cores: Sequence[Sequence[Instr]]) -> tuple[tuple[int, int], ...]:
    """(core, instruction index) of every instruction with a placeholder operand."""
    return tuple(
        (c, i)
        for c, code in enumerate(cores)
        for i, ins in enumerate(code)
        if any(_tagged(v) for v in vars(ins).values())
    )


def relocate(
    cores: Sequence[tuple[Instr, ...]], relocs: Sequence[tuple[int, int]], addrs: Sequence[int]
) -> tuple[tuple[Instr, ...], ...]:
    """`cores` with each placeholder operand of buffer b at `addrs[b]` (+ its offset)."""
    out = [list(code) for code in cores]
    for c, i in relocs:
        old = out[c][i]
        ins = object.__new__(type(old))  # a copy: its fields were checked when it was built
        ins.__dict__.update(old.__dict__)
        for name, v in vars(ins).items():
            if _tagged(v):
                buf = ((v.off + _HALF) >> TAG_SHIFT) - 1
                at = addrs[buf] + v.off - ((buf + 1) << TAG_SHIFT)
                object.__setattr__(ins, name, Ref(Space.DRAM, at, 0))
        out[c][i] = ins
    return tuple(tuple(code) for code in out)
