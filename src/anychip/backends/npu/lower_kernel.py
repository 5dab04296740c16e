"""The kernel-level lowering (`Lowering`): a kernel IR cut into groups of rows for the
cores, each lowered by a `CoreLowering` (lower.py), its tables and argument block; and
the contraction kernels the GEMM generator takes whole."""

from __future__ import annotations

from typing import Any

import numpy as np

from anychip import dtypes
from anychip.backends.npu import lower as core
from anychip.backends.npu.lower_exprs import (
    _PAR,
    NpuUnsupported,
    _affine,
    _all_stmts,
    _dt,
    _static,
    _stmt_exprs,
    _vk,
    sole_uses,
)
from anychip.backends.npu.lower_reuse import Reuse, group_loops, row_slots
from anychip.backends.npu.lower_steps import (
    _F_ARGS,
    KEEP_REGIONS,
    SLOTS,
    Frame,
    _blocks,
    _emit,
    _has_loop,
    _long_frames,
)
from anychip.backends.npu.spill import (
    BUF_REG,
    arg_reg,
    buffer_regs,
    dram_ref,
)
from anychip.errors import CompileError
from anychip.ir.kernel import (
    Acc,
    Alu,
    Expr,
    KernelIR,
    Let,
    Load,
    Loop,
    SortRow,
    Stmt,
    Store,
    Var,
    arg_name,
    walk_exprs,
)
from anychip.ir.ops import Ops
from anychip.npu.builder import Tile
from anychip.npu.config import NpuConfig
from anychip.npu.isa import (
    DT,
    Dma,
    Instr,
    Ref,
    SetFlag,
    Space,
    Unit,
    WaitFlag,
)


class Lowering:
    """Plans a kernel's groups of steps and lowers them for each core."""

    def __init__(self, ir: KernelIR, cfg: NpuConfig, elems: int, slots: int = SLOTS) -> None:
        self.ir, self.cfg, self.elems = ir, cfg, elems
        self.width = max(1, min(elems, 8 * cfg.vector_lanes))
        self.lets: dict[str, Expr] = {}
        self.loop_vars: set[str] = set()
        self.argidx = {arg_name(i): i for i in range(len(ir.scalars))}
        self.tables: list[np.ndarray] = []
        self.table_top = 0
        self.scratch_top = 0
        self.defs: dict[str, Expr] = {}  # every Let: substituted into prepared indices
        self._static: dict[Expr, bool] = {}
        for s in _all_stmts(ir.body):
            if isinstance(s, Loop):
                self.loop_vars.add(s.var)
            elif isinstance(s, Let):
                self.defs[s.var] = s.value
                if s.value.dtype is dtypes.int64:
                    self.lets[s.var] = s.value
        self.regs = buffer_regs(ir)
        self.sole = sole_uses(ir.body)  # values a vector op may overwrite with its result
        self.stored = {s.value for s in _all_stmts(ir.body) if isinstance(s, Store)}
        self.reread, self.reread_row = self.rereads()
        stored = {s.buf for s in _all_stmts(ir.body) if isinstance(s, Store)}
        self.reuse = Reuse(group_loops(ir), self.defs, lambda x: x.buf not in stored
                           and not self.dependent(x))  # fmt: skip
        self.reread_row += self.reuse.row_bytes
        self.keep_bytes = cfg.ub.size // 16 if self.reread or self.reuse.keep else 0
        self.slots = row_slots(cfg, elems, self.keep_bytes, len(group_loops(ir)), slots)

    def rereads(self) -> tuple[frozenset[int], int]:
        """Buffers a row kernel loads at the same places in two or more of its inner loops
        (softmax reads its row for the max, the sum and the output; layer norm for the
        mean, the variance and the output), and the bytes one row of those loads takes.
        A group of rows keeps them in `ub` (`core.CoreLowering.keep`): device memory is read
        once. Buffers the kernel stores into are read again, as written."""
        stored = {s.buf for s in _all_stmts(self.ir.body) if isinstance(s, Store)}
        seen: dict[tuple[Any, ...], int] = {}
        for s in group_loops(self.ir):
            keys: set[tuple[Any, ...]] = set()
            for x in (x for e in _stmt_exprs(s.body) for x in walk_exprs(e)):
                if not isinstance(x, Load) or x.valid is not None or x.buf in stored:
                    continue
                a = _affine(x.index, self.lets)
                if a is not None:
                    form = tuple(sorted(("" if v == s.var else v, k) for v, k in a[1].items()))
                    keys.add((x.buf, a[0], form, s.extent))
            for k in keys:
                seen[k] = seen.get(k, 0) + 1
        again = [k for k, n in seen.items() if n >= 2]
        row = sum(k[3] * _dt(self.ir.bufs[k[0]].dtype).itemsize for k in again)
        return frozenset(k[0] for k in again), row

    @property
    def const_reg(self) -> int:
        return arg_reg(len(self.ir.bufs)) + 1

    @property
    def scratch_reg(self) -> int:
        return arg_reg(len(self.ir.bufs)) + 2

    def dram(self, buf: int, off: int) -> Ref:
        """Byte `off` of buffer `buf` (through its register, or relocated at launch)."""
        return dram_ref(self.regs, buf, off)

    def dependent(self, e: Load) -> bool:
        """A load whose element number depends on loaded data (a gather)."""
        if e.valid is None and _affine(e.index, self.lets) is not None:
            return False
        return not (self.is_static(e.index) and (e.valid is None or self.is_static(e.valid)))

    def subst(self, e: Expr) -> Expr:
        """`e` with every Let variable replaced by its definition."""
        if isinstance(e, Var):
            d = self.defs.get(e.name)
            return e if d is None else self.subst(d)
        if isinstance(e, Alu):
            return Alu(e.op, tuple(self.subst(x) for x in e.srcs), e.dtype)
        if isinstance(e, Load):
            valid = None if e.valid is None else self.subst(e.valid)
            return Load(e.buf, self.subst(e.index), e.dtype, valid)
        return e

    def is_static(self, e: Expr) -> bool:
        got = self._static.get(e)
        if got is None:
            got = _static(e, self.loop_vars, self.lets)
            self._static[e] = got
        return got

    def add_table(self, vals: np.ndarray) -> int:
        """Appends int32 values to the compiler's table; their element offset."""
        off = self.table_top
        flat = np.ascontiguousarray(vals, np.int32).reshape(-1)
        pad = (-flat.size) % 16  # keep each table 64-byte aligned
        self.tables.append(flat)
        if pad:
            self.tables.append(np.zeros(pad, np.int32))
        self.table_top += flat.size + pad
        return off

    def groups(self) -> tuple[list[tuple[tuple[Stmt, ...], Frame, bool]], int]:
        """Independent units of work: (statements, frame, inner) and the count."""
        body = self.ir.body
        nest: list[Loop] = []
        while len(body) == 1 and isinstance(body[0], Loop) and body[0].kind in _PAR:
            nest.append(body[0])
            body = body[0].body
        if len(body) == 1 and isinstance(body[0], SortRow):
            return self.sort_groups(nest, body)
        out: list[tuple[tuple[Stmt, ...], Frame, bool]] = []
        straight = bool(nest) and not _has_loop(body)
        keep = nest[:-2] if straight else nest[:-1]
        fixed = [dict(zip([lp.var for lp in keep], vals, strict=True))
                 for vals in np.ndindex(*[lp.extent for lp in keep])]  # fmt: skip
        for base in fixed:
            base = {k: int(v) for k, v in base.items()}
            if straight:
                last = nest[-1]
                if len(nest) >= 2 and last.extent * 2 <= self.elems:
                    row = nest[-2]
                    share = -(-row.extent // self.cfg.cores)  # rows enough for every core
                    rows = max(1, min(self.elems // last.extent, share))
                    for lo, n in _blocks(row.extent, rows):
                        g = Frame(n, last.extent, {**base, row.var: lo, last.var: 0},
                                  {row.var: 1}, {last.var: 1})  # fmt: skip
                        out.append((body, g, True))
                else:
                    if len(nest) >= 2:
                        row = nest[-2]
                        for i in range(row.extent):
                            b2 = {**base, row.var: i}
                            for g in _long_frames(
                                b2, last.var, last.extent, self.elems, self.width
                            ):
                                out.append((body, g, True))
                    else:
                        for g in _long_frames(base, last.var, last.extent, self.elems, self.width):
                            out.append((body, g, True))
            elif nest:
                row = nest[-1]
                share = -(-row.extent // self.cfg.cores)  # rows enough for every core
                rows = max(1, min(share, self.elems // 256, 1024))
                if self.reread_row and self.reread_row <= self.keep_bytes:
                    rows = min(rows, self.keep_bytes // self.reread_row)  # rows kept whole
                for lo, n in _blocks(row.extent, rows):
                    out.append((body, Frame(n, 1, {**base, row.var: lo}, {row.var: 1}), False))
            else:
                out.append((body, Frame(1, 1, dict(base)), False))
        return out, len(out)

    def sort_groups(
        self, nest: list[Loop], body: tuple[Stmt, ...]
    ) -> tuple[list[tuple[tuple[Stmt, ...], Frame, bool]], int]:
        """A sort kernel's rows in blocks of whole rows (`elems` keys a step at most) over
        its innermost parallel loop; outer loops one value at a time."""
        (row,) = body
        assert isinstance(row, SortRow)
        out: list[tuple[tuple[Stmt, ...], Frame, bool]] = []
        fixed = nest[:-1]
        for vals in np.ndindex(*[lp.extent for lp in fixed]):
            base = {lp.var: int(v) for lp, v in zip(fixed, vals, strict=True)}
            if not nest:
                out.append((body, Frame(1, 1, base), False))
                continue
            last = nest[-1]
            share = -(-last.extent // self.cfg.cores)  # rows enough for every core
            rows = max(1, min(self.elems // row.n, share))
            for lo, n in _blocks(last.extent, rows):
                out.append((body, Frame(n, 1, {**base, last.var: lo}, {last.var: 1}), False))
        return out, len(out)

    def lower(self) -> tuple[tuple[Instr, ...], ...]:
        groups, n = self.groups()
        ncores = max(1, min(self.cfg.cores, n))
        cores: list[tuple[Instr, ...]] = []
        for c in range(ncores):
            mine = groups[c * n // ncores : (c + 1) * n // ncores]
            cl = core.CoreLowering(self)
            self.load_args(cl)
            if self.keep_bytes:
                regions = [cl.persist(1, self.keep_bytes, DT.U8) for _ in range(KEEP_REGIONS)]
                cl.keep_base = [t.ref.off for t in regions]
            cl.group_mark = cl.persist_top
            for body, g, inner in mine:
                cl.new_group()
                if inner:
                    cl.prepare(body, g)
                    cl.open()
                    for s in body:
                        if isinstance(s, Let):
                            cl.let(s, g, keep=False)
                        elif isinstance(s, Store):
                            cl.store(s, g)
                        else:
                            raise NpuUnsupported(f"npu: {type(s).__name__} in an elementwise body")
                    cl.close()
                else:
                    cl.run(body, g)
                    cl.close()
            cores.append(tuple(_emit(cl)))
        return tuple(cores)

    def load_args(self, cl: core.CoreLowering) -> None:
        n = len(self.ir.scalars)
        if not n:
            return
        t = cl.persist(1, 2 * n, DT.I32)
        cl.prologue.append(
            Dma(DT.I32, t.ref, Ref(Space.DRAM, 0, arg_reg(len(self.ir.bufs))), (1, 1, 2 * n),
                (0, 0, 1), (0, 0, 1), (1, 1, 2 * n))
        )  # fmt: skip
        cl.prologue.append(SetFlag(Unit.DMA_IN, Unit.VECTOR, _F_ARGS))
        cl.prologue.append(WaitFlag(Unit.DMA_IN, Unit.VECTOR, _F_ARGS))
        for i, d in enumerate(self.ir.scalars):
            cl.args[i] = Tile(Ref(Space.UB, t.ref.off + 8 * i), 1, 1, _vk(_dt(d)))

    def table_bytes(self) -> np.ndarray:
        if not self.tables:
            return np.zeros(16, np.int32)
        return np.concatenate(self.tables)


def _pure_contraction(ir: KernelIR) -> bool:
    """True when the kernel stores its contraction's sum unchanged or rounded to the
    output's float dtype (no other epilogue, no runtime scalars): then the GEMM generator
    computes the whole kernel, rounding on chip before the store."""
    if ir.contraction is None or ir.scalars:
        return False
    if ir.contraction.k_dims or ir.contraction.n_dims:
        return False  # offset-table operands (implicit-GEMM convolution): the vector unit
    stmts = list(_all_stmts(ir.body))
    accs = [s for s in stmts if isinstance(s, Acc)]
    stores = [s for s in stmts if isinstance(s, Store)]
    if len(accs) != 1 or accs[0].op is not Ops.SUM or len(stores) != 1:
        return False
    st = stores[0]
    value = st.value
    if isinstance(value, Alu) and value.op is Ops.CAST and value.dtype.is_floating_point:
        value = value.srcs[0]
    return st.combine is None and st.valid is None and value == Var(accs[0].var, accs[0].dtype)


def _gemm(ir: KernelIR, cfg: NpuConfig) -> core.Compiled | None:
    """A contraction on the matrix unit through `codegen/npu_gemm.py` (float32 at
    `anychip.get_float32_matmul_precision()`), or None where it has no matrix path."""
    from anychip.codegen.npu_gemm import from_contraction, npu_gemm

    assert ir.contraction is not None
    try:
        spec = from_contraction(ir.contraction, [BUF_REG + i for i in range(len(ir.bufs))])
        g = npu_gemm(cfg, spec)
    except (CompileError, ValueError, TypeError, NotImplementedError):
        return None  # no matrix path for these dtypes or shapes: the vector unit runs it
    return core.Compiled(ir.name, g.program.cores, np.zeros(16, np.int32), len(ir.bufs), (),
                    g.flops, 0)  # fmt: skip
