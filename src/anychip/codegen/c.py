"""The C-style renderer: kernel IR -> C source, one temporary per shared value.

C, OpenCL C and CUDA C differ by the `OPS` table (op -> C expression template) and a few
hooks (signature, loop headers); a target subclasses `CRenderer` and overrides entries.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from anychip import dtypes
from anychip.codegen import c_prefetch, c_prelude, c_sort
from anychip.dtypes import DType
from anychip.ir.kernel import (
    INDEX,
    Acc,
    Alu,
    BufRole,
    Const,
    Expr,
    KernelIR,
    Let,
    Load,
    Local,
    Loop,
    LoopKind,
    SortRow,
    Stmt,
    Store,
    Update,
    Var,
    arg_name,
    walk_stmts,
)
from anychip.ir.ops import Ops

HALVES = (dtypes.float16, dtypes.bfloat16)
_NAME = re.compile(r"[A-Za-z_]\w*")  # identifiers in rendered C text
PARALLEL_WORK = 1 << 15  # iterations below which threads cost more than they save


@dataclass
class _Block:
    """Names visible while rendering one block: expression id -> temporary."""

    temps: dict[object, str] = field(default_factory=dict)
    # rendered text -> (temporary, accumulators the text reads): common subexpressions
    texts: dict[tuple[DType, str], tuple[str, frozenset[str]]] = field(default_factory=dict)
    keep: list[Expr] = field(default_factory=list)  # keeps ids stable while rendering


class CRenderer:
    """Render kernel IR as one C function `void name(T *restrict b0, const T *b1, ...)`.

    >>> from anychip.ir.kernel import *
    >>> from anychip import dtypes
    >>> k = KernelIR("k", KernelKind.ELEMENTWISE,
    ...     (BufDecl("out", dtypes.float32, 4, BufRole.OUT),),
    ...     (Loop("i", 4, (Store(0, Var("i", INDEX), const(1.0, dtypes.float32)),)),))
    >>> "b0[i] = 1.0f;" in CRenderer().render(k)
    True
    """

    # {0} {1} {2}: the sources; {t}: the result's C type; {f}: "f" for float math, "" double
    OPS: ClassVar[dict[Ops, str]] = {
        Ops.NEG: "(- {0})",  # the space: a negative literal operand must not make `--`
        Ops.SQRT: "sqrt{f}({0})",
        Ops.EXP: "exp{f}({0})",
        Ops.LOG: "log{f}({0})",
        Ops.SIN: "sin{f}({0})",
        Ops.ERF: "erf{f}({0})",
        Ops.FLOOR: "floor{f}({0})",
        Ops.NOT: "(~{0})",
        Ops.ADD: "({0} + {1})",
        Ops.MUL: "({0} * {1})",
        Ops.DIV: "({0} / {1})",
        Ops.MOD: "fmod{f}({0}, {1})",
        Ops.POW: "pow{f}({0}, {1})",
        Ops.MAX: "MAXOP({0}, {1})",
        Ops.MIN: "MINOP({0}, {1})",
        Ops.CMPLT: "({0} < {1})",
        Ops.CMPEQ: "({0} == {1})",
        Ops.AND: "({0} & {1})",
        Ops.OR: "({0} | {1})",
        Ops.XOR: "({0} ^ {1})",
        Ops.WHERE: "({0} ? {1} : {2})",
    }
    # integer dtypes: C's / and % trap on 0 and INT_MIN / -1; ref gives 0 and wraps
    INT_OPS: ClassVar[dict[Ops, str]] = {
        Ops.DIV: "SDIV({0}, {1})",
        Ops.MOD: "SMOD({0}, {1})",
        Ops.POW: "ipow_{t}({0}, {1})",
        Ops.FLOOR: "({0})",
    }
    # float32 (and halves, computed in float32): our branch-free exp/log/erf/sin/pow (c_prelude)
    # vectorise under simd where libm calls would not
    FLOAT_OPS: ClassVar[dict[Ops, str]] = {
        Ops.EXP: "ac_expf({0})",
        Ops.LOG: "ac_logf({0})",
        Ops.ERF: "ac_erff({0})",
        Ops.SIN: "ac_sinf({0})",
        Ops.POW: "ac_powf({0}, {1})",
    }
    UINT_OPS: ClassVar[dict[Ops, str]] = {Ops.DIV: "UDIV({0}, {1})", Ops.MOD: "UMOD({0}, {1})"}
    BOOL_OPS: ClassVar[dict[Ops, str]] = {
        Ops.NOT: "(!{0})",
        Ops.ADD: "({0} | {1})",
        Ops.MUL: "({0} & {1})",
        Ops.MAX: "({0} | {1})",
        Ops.MIN: "({0} & {1})",
    }
    VALUE_TYPES: ClassVar[dict[str, str]] = {
        "bool": "_Bool",
        "uint8": "uint8_t",
        "int8": "int8_t",
        "int16": "int16_t",
        "int32": "int32_t",
        "int64": "int64_t",
        "uint32": "uint32_t",
        "uint64": "uint64_t",
        "float16": "float",
        "bfloat16": "float",
        "float32": "float",
        "float64": "double",
    }
    STORAGE_TYPES: ClassVar[dict[str, str]] = {"float16": "half_t", "bfloat16": "uint16_t"}
    # ops whose results are exact in the source format, so halves need no re-rounding
    _EXACT = frozenset({Ops.NEG, Ops.MAX, Ops.MIN, Ops.WHERE, Ops.FLOOR})

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.blocks: list[_Block] = []
        self.count = 0
        self.acc_ops: dict[str, Acc] = {}
        self.parallel_depth = 0
        self.omp = 0  # omp parallel regions open around the code being rendered

    # --- types and literals -------------------------------------------------------
    def vtype(self, d: DType) -> str:
        return self.VALUE_TYPES[d.name]

    def stype(self, d: DType) -> str:
        return self.STORAGE_TYPES.get(d.name, self.vtype(d))

    def literal(self, value: object, d: DType) -> str:
        if d is dtypes.bool_:
            return "1" if value else "0"
        if d.is_int:
            v = int(value)  # type: ignore[call-overload]
            if d is dtypes.int64:
                return "INT64_MIN" if v == -(2**63) else f"INT64_C({v})"
            return f"(({self.vtype(d)}){v})" if v < 0 or d is not dtypes.int32 else str(v)
        x = float(value)  # type: ignore[arg-type]
        if d is dtypes.float16:
            x = float(np.float16(x))  # ref rounds half constants at once; bf16 at the op
        elif d is not dtypes.float64:
            x = float(np.float32(x))
        suffix = "" if d is dtypes.float64 else "f"
        if math.isnan(x):
            return "NAN" if suffix else "((double)NAN)"
        if math.isinf(x):
            return ("-" if x < 0 else "") + ("INFINITY" if suffix else "((double)INFINITY)")
        return f"{x!r}{suffix}"

    # --- expressions ----------------------------------------------------------------
    def expr(self, e: Expr) -> str:
        """C text of `e`: a literal, a name, or a temporary declared before this line."""
        if isinstance(e, Const):
            return self.literal(e.value, e.dtype)
        if isinstance(e, Var):
            acc = self.acc_ops.get(e.name)
            if acc is not None and acc.dtype in HALVES:
                return f"{self._round(acc.dtype)}({e.name})"  # halves accumulate in float
            return e.name
        # index math is small and often rebuilt: share it by value; other values by identity
        key: object = e if e.dtype is INDEX and isinstance(e, Alu) else id(e)
        for b in reversed(self.blocks):
            hit = b.temps.get(key)
            if hit is not None:
                return hit
        text = self.load(e) if isinstance(e, Load) else self.alu(e)
        # the same text over the same temporaries is the same value (lowering often rebuilds
        # a subexpression: softmax's exp for the sum and for the store), unless it reads
        # memory this kernel writes; text reading an accumulator is shared within its block
        # only, until the accumulator changes (`forget`)
        tkey = (e.dtype, text)
        shared = not (isinstance(e, Load) and e.buf in self.written)
        accs = frozenset(v for v in _NAME.findall(text) if v in self.acc_ops)
        if shared:
            for b in reversed(self.blocks[-1:] if accs else self.blocks):
                seen = b.texts.get(tkey)
                if seen is not None:
                    self.blocks[-1].temps[key] = seen[0]
                    self.blocks[-1].keep.append(e)
                    return seen[0]
        name = f"t{self.count}"
        self.count += 1
        self.emit(f"const {self.vtype(e.dtype)} {name} = {text};")
        self.blocks[-1].temps[key] = name
        if shared:
            self.blocks[-1].texts[tkey] = (name, accs)
        self.blocks[-1].keep.append(e)
        return name

    def forget(self, var: str) -> None:
        """`var` (an accumulator) changes: shared text that read it is stale from here."""
        for b in self.blocks:
            b.texts = {k: v for k, v in b.texts.items() if var not in v[1]}

    def load(self, e: Load) -> str:
        ref = f"b{e.buf}[{self.expr(e.index)}]"
        if e.dtype is dtypes.float16:
            ref = f"h2f({ref})"
        elif e.dtype is dtypes.bfloat16:
            ref = f"bf2f({ref})"
        if e.valid is None:
            return ref
        return f"({self.expr(e.valid)} ? {ref} : {self.literal(0, e.dtype)})"

    def _round(self, d: DType) -> str:
        return "RH" if d is dtypes.float16 else "RB"

    def template(self, op: Ops, d: DType) -> str:
        if d is dtypes.bool_ and op in self.BOOL_OPS:
            return self.BOOL_OPS[op]
        if d.kind == "u" and op in self.UINT_OPS:
            return self.UINT_OPS[op]
        if d.is_int and op in self.INT_OPS:
            return self.INT_OPS[op]
        if d.is_floating_point and d is not dtypes.float64 and op in self.FLOAT_OPS:
            return self.FLOAT_OPS[op]
        return self.OPS[op]

    def alu(self, e: Alu) -> str:
        srcs = [self.expr(s) for s in e.srcs]
        d = e.dtype
        if e.op is Ops.CAST:
            return self.cast(srcs[0], e.srcs[0].dtype, d)
        divisor = e.srcs[1] if len(e.srcs) > 1 else None
        plain = isinstance(divisor, Const) and divisor.value not in (0, -1)
        if e.op in (Ops.DIV, Ops.MOD) and d.is_int and plain:  # index math: plain C division
            return f"({srcs[0]} {'/' if e.op is Ops.DIV else '%'} {srcs[1]})"
        math_t = e.srcs[0].dtype if e.op is not Ops.WHERE else d
        f = "" if math_t is dtypes.float64 else "f"
        text = self.template(e.op, d).format(*srcs, t=self.vtype(d), f=f)
        if d in HALVES and e.op not in self._EXACT:
            return f"{self._round(d)}({text})"
        if d.is_int and d.itemsize < 4 and e.op not in (Ops.WHERE,):
            return f"(({self.vtype(d)}){text})"  # C promotes to int: wrap back
        return text

    def cast(self, x: str, src: DType, d: DType) -> str:
        if d is dtypes.bool_:
            return f"({x} != 0)"
        if d in HALVES:
            return f"{self._round(d)}({x})"
        return f"(({self.vtype(d)}){x})"

    # --- statements -----------------------------------------------------------------
    def emit(self, line: str) -> None:
        self.lines.append("  " * (len(self.blocks)) + line)

    def block(self, body: tuple[Stmt, ...], opener: list[str] | None = None) -> None:
        for line in opener or []:
            self.emit(line)
        self.blocks.append(_Block())
        for s in body:
            self.stmt(s)
        self.blocks.pop()
        if opener:
            self.emit("}")

    def stmt(self, s: Stmt) -> None:
        if isinstance(s, Loop):
            self.loop(s)
        elif isinstance(s, Let):
            self.emit(f"const {self.vtype(s.value.dtype)} {s.var} = {self.expr(s.value)};")
        elif isinstance(s, Acc):
            self.acc_ops[s.var] = s
            self.forget(s.var)
            self.emit(f"{self.vtype(s.dtype)} {s.var} = {self.identity(s.op, s.dtype)};")
        elif isinstance(s, Update):
            self.emit(self.update(s.var, self.expr(s.value)))
            self.forget(s.var)
        elif isinstance(s, Store):
            self.store(s)
        elif isinstance(s, SortRow):
            self.sort(s)
        elif isinstance(s, Local):
            # declared in the block: private to each thread running it
            b = self.bufs[s.buf]
            # aligned explicitly: gcc 12 with -march=native (AVX-512) was seen storing to an
            # unaligned stack array with vmovdqa (a float64 loop contraction crashed)
            self.emit(
                f"{self.stype(b.dtype)} b{s.buf}[{max(b.size, 1)}] __attribute__((aligned(64)));"
            )

    def identity(self, op: Ops, d: DType) -> str:
        if op is Ops.SUM:
            return self.literal(0, d)
        if op is Ops.PROD:
            return self.literal(1, d)
        if d.is_floating_point:
            return self.literal(-math.inf if op is Ops.RMAX else math.inf, d)
        info = np.iinfo(d.np) if d.is_int else None
        if info is None:  # bool
            return "0" if op is Ops.RMAX else "1"
        return self.literal(info.min if op is Ops.RMAX else info.max, d)

    def update(self, var: str, value: str) -> str:
        acc = self.acc_ops[var]
        op = {Ops.SUM: Ops.ADD, Ops.PROD: Ops.MUL, Ops.RMAX: Ops.MAX, Ops.RMIN: Ops.MIN}[acc.op]
        d = acc.dtype
        if d.is_floating_point and op in (Ops.ADD, Ops.MUL):
            return f"{var} {'+' if op is Ops.ADD else '*'}= {value};"
        text = self.template(op, d).format(var, value, t=self.vtype(d), f="")
        if d.is_int and d.itemsize < 4:
            text = f"({self.vtype(d)}){text}"
        return f"{var} = {text};"

    def store(self, s: Store) -> None:
        d = self.bufs[s.buf].dtype
        index = self.expr(s.index)
        value = self.expr(s.value)
        if s.combine is not None:
            old = self.load(Load(s.buf, s.index, d))
            text = self.template(s.combine, d).format(old, value, t=self.vtype(d), f="")
            value = f"{self._round(d)}({text})" if d in HALVES else f"({self.vtype(d)}){text}"
        if d is dtypes.float16:
            value = f"f2h({value})"
        elif d is dtypes.bfloat16:
            value = f"f2bf({value})"
        line = f"b{s.buf}[{index}] = {value};"
        self.emit(line if s.valid is None else f"if ({self.expr(s.valid)}) {line}")

    def sort(self, s: SortRow) -> None:
        d = self.bufs[s.src].dtype
        dst, src = self.expr(s.dst_base), self.expr(s.src_base)
        self.emit(
            f"argsort_{d.name}(b{s.dst} + {dst}, {s.dst_stride}, b{s.src} + {src}, "
            f"{s.src_stride}, {s.n}, {int(s.descending)}, {s.n if s.k is None else s.k});"
        )

    # --- loops ----------------------------------------------------------------------
    def loop_range(self, s: Loop) -> tuple[str, str]:
        """C text of a loop's first and end values (a chunked kernel's loop runs a range)."""
        return "0", str(s.extent)

    def loop(self, s: Loop) -> None:
        lo, hi = self.loop_range(s)
        head = f"for (int64_t {s.var} = {lo}; {s.var} < {hi}; {s.var}++) {{"
        if s.kind is LoopKind.REDUCE and self.omp == 0 and work(s) >= PARALLEL_WORK:
            self.parallel_reduce(s, head)
            return
        pragma = self.pragma(s)
        par = pragma.startswith("#pragma omp parallel")
        self.omp += par
        ahead = c_prefetch.rows(s, self.bufs)
        if not ahead:
            self.block(s.body, ([pragma] if pragma else []) + [head])
        else:  # rows gathered from a large table: asked for some iterations early
            for line in [pragma, head] if pragma else [head]:
                self.emit(line)
            self.blocks.append(_Block())
            for buf, index, write in ahead:
                self.emit(f"__builtin_prefetch(&b{buf}[{self.expr(index)}], {int(write)});")
            for x in s.body:
                self.stmt(x)
            self.blocks.pop()
            self.emit("}")
        self.omp -= par

    def pragma(self, s: Loop) -> str:
        innermost = not any(isinstance(x, Loop) for x in s.body)
        if any(isinstance(x, SortRow) for x in s.body):  # one sort call per row: threads only
            return "#pragma omp parallel for" if self.omp == 0 and work(s) >= PARALLEL_WORK else ""
        if s.kind in (LoopKind.PARALLEL, LoopKind.VECTOR):
            if self.omp == 0 and work(s) >= PARALLEL_WORK:
                return "#pragma omp parallel for" + (" simd" if innermost else "")
            return "#pragma omp simd" if innermost else ""
        if s.kind is LoopKind.REDUCE and innermost:
            accs = sorted({u.var for u in s.body if isinstance(u, Update)})
            clauses = [self.simd_reduction(self.acc_ops[a]) for a in accs]
            if accs and not any(isinstance(x, Store) and x.combine for x in s.body):
                pairs = " ".join(f"reduction({c}:{a})" for c, a in zip(clauses, accs))
                return f"#pragma omp simd {pairs}"
        return ""

    def simd_reduction(self, acc: Acc) -> str:
        """The OpenMP reduction identifier combining the lanes of `acc`. Float max/min use
        the prelude's NaN-propagating ones (`nanmax_f`...); integers wrap, so any order
        gives the same sum."""
        d, op = acc.dtype, acc.op
        if d is dtypes.bool_:
            return "|" if op in (Ops.SUM, Ops.RMAX) else "&"
        if op in (Ops.SUM, Ops.PROD):
            return "+" if op is Ops.SUM else "*"
        if d.is_floating_point:
            suffix = "d" if d is dtypes.float64 else "f"
            return f"nan{'max' if op is Ops.RMAX else 'min'}_{suffix}"
        return "max" if op is Ops.RMAX else "min"

    def parallel_reduce(self, s: Loop, head: str) -> None:
        """A reduction no parallel loop encloses: each thread reduces one static slice
        into its own partial, combined in thread order after (same result every run)."""
        accs = sorted({u.var for u in walk_stmts(s.body) if isinstance(u, Update)})
        accs = [a for a in accs if a in self.acc_ops]
        self.emit("{")
        self.blocks.append(_Block())
        self.partials(s, accs)
        self.emit(
            "#pragma omp parallel num_threads(omp_get_max_threads() < 64 ? "
            "omp_get_max_threads() : 64)"
        )
        self.emit("{")
        self.blocks.append(_Block())
        self.emit("int t_ = 0, n_ = 1;")
        self.emit("#ifdef _OPENMP")
        self.emit("t_ = omp_get_thread_num(); n_ = omp_get_num_threads();")
        self.emit("#endif")
        self.emit("if (t_ == 0 && n_ > nt_) nt_ = n_;")
        for a in accs:
            acc = self.acc_ops[a]
            self.emit(f"{self.vtype(acc.dtype)} {a} = {self.thread_start(s, a)};")
            self.forget(a)  # each thread's own partial shadows it here
        first, end = self.loop_range(s)
        lo = f"{end} * t_ / n_" if first == "0" else f"{first} + ({end} - {first}) * t_ / n_"
        hi = (
            f"{end} * (t_ + 1) / n_"
            if first == "0"
            else f"{first} + ({end} - {first}) * (t_ + 1) / n_"
        )
        self.omp += 1
        pragma = self.pragma(s)
        self.block(
            s.body,
            ([pragma] if pragma else [])
            + [f"for (int64_t {s.var} = {lo}; {s.var} < {hi}; {s.var}++) {{"],
        )
        self.omp -= 1
        for a in accs:
            self.emit(f"{a}_part[t_] = {a};")
        self.blocks.pop()
        self.emit("}")
        self.before_combine(s)
        self.emit("for (int t_ = 0; t_ < nt_; t_++) {")
        for a in accs:
            self.emit("  " + self.update(a, f"{a}_part[t_]"))
        self.emit("}")
        self.blocks.pop()
        self.emit("}")
        for a in accs:
            self.forget(a)

    def partials(self, s: Loop, accs: list[str]) -> None:
        """Declare the thread count `nt_` and each accumulator's per-thread partials."""
        self.emit("int nt_ = 1;")
        for a in accs:
            acc = self.acc_ops[a]
            ident = self.identity(acc.op, acc.dtype)
            self.emit(f"{self.vtype(acc.dtype)} {a}_part[64];")
            self.emit(f"for (int t_ = 0; t_ < 64; t_++) {a}_part[t_] = {ident};")

    def thread_start(self, s: Loop, acc: str) -> str:
        """C text of the value a thread's partial of `acc` starts from."""
        a = self.acc_ops[acc]
        return self.identity(a.op, a.dtype)

    def before_combine(self, s: Loop) -> None:
        """Hook: code between the threads' slices and combining their partials."""

    # --- the whole kernel -----------------------------------------------------------
    def signature(self, k: KernelIR, name: str) -> str:
        params = []
        for i, b in enumerate(k.bufs):
            if b.role is BufRole.LOCAL:
                continue  # declared where its `Local` statement is
            const = "const " if b.role is BufRole.IN else ""
            shared = k.alias is not None and i in (0, k.alias)  # one memory, two names
            restrict = "" if shared else "restrict "
            params.append(f"{const}{self.stype(b.dtype)} *{restrict}b{i}")
        params += [f"{self.vtype(d)} {arg_name(i)}" for i, d in enumerate(k.scalars)]
        return f"void {name}({', '.join(params)})"

    def prelude(self, k: KernelIR) -> str:
        parts = [c_prelude.HEADER]
        parts += [c_prelude.ipow(t) for t in c_prelude.INT_TYPES]
        sorted_types = {k.bufs[s.src].dtype for s in walk_stmts(k.body) if isinstance(s, SortRow)}
        if sorted_types:
            parts.append(c_sort.SCRATCH)
            parts += [c_sort.keysort(b) for b in sorted({c_sort.key_bits(d) for d in sorted_types})]
        for d in sorted(sorted_types, key=lambda d: d.name):
            load = {"float16": "h2f", "bfloat16": "bf2f"}.get(d.name, "")
            parts.append(c_sort.argsort(d, self.stype(d), self.vtype(d), load))
        return "".join(parts)

    def render(self, k: KernelIR, name: str | None = None) -> str:
        """The C source of kernel `k` as function `name` (default: `k.name`)."""
        fname = c_name(name or k.name)
        self.bufs = k.bufs
        self.written = {s.buf for s in walk_stmts(k.body) if isinstance(s, Store)}
        self.written |= {s.buf for s in walk_stmts(k.body) if isinstance(s, Local)}
        self.lines, self.blocks, self.count, self.acc_ops = [], [], 0, {}
        self.top(k)
        body = "\n".join("  " + line for line in self.lines)
        return f"{self.prelude(k)}\n{self.signature(k, fname)} {{\n{body}\n}}\n"

    def top(self, k: KernelIR) -> None:
        """Render the kernel's body (a chunked kernel splits it around its chunk loop)."""
        self.block(k.body)


def c_name(name: str) -> str:
    """`name` made a C identifier."""
    out = re.sub(r"\W", "_", name)
    return out if re.match(r"[A-Za-z_]", out) else f"k_{out}"


def work(s: Loop) -> int:
    """Iterations of the innermost statements a loop runs (a cost estimate)."""
    inner = [work(x) for x in s.body if isinstance(x, Loop)]
    inner += [x.n * max(1, x.n.bit_length()) for x in s.body if isinstance(x, SortRow)]
    return s.extent * max(1, sum(inner))
