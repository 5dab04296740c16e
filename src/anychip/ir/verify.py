"""The one kernel-IR verifier: scopes, dtypes, loop markers and static bounds.

Tests run it after every pass, so a pass that breaks the IR fails where it breaks it and
not later as wrong numbers or a crash in generated code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from anychip import dtypes
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
    Ranges,
    SortRow,
    Stmt,
    Store,
    Update,
    Var,
    arg_name,
    bounds,
    fmt,
    walk_exprs,
)
from anychip.ir.ops import BINARY, REDUCE, UNARY, Ops


class KernelIRError(Exception):
    """Malformed kernel IR: a compiler bug, never a user error."""


@dataclass
class _Scope:
    names: dict[str, tuple[str, object]] = field(default_factory=dict)  # name -> (what, info)
    ranges: Ranges = field(default_factory=dict)
    loops: list[Loop] = field(default_factory=list)
    acc_depth: dict[str, int] = field(default_factory=dict)  # acc -> loop depth it lives at
    # expressions already checked in this scope: a shared sub-expression (a DAG, as deep
    # composites like atan's backward build) is checked once, not once per path to it
    checked: set[int] = field(default_factory=set)


def verify(k: KernelIR) -> KernelIR:
    """Check `k` and return it; raise KernelIRError naming the first problem.

    >>> from anychip.ir.kernel import *
    >>> from anychip import dtypes
    >>> bad = KernelIR("k", KernelKind.ELEMENTWISE,
    ...     (BufDecl("out", dtypes.float32, 4, BufRole.OUT),),
    ...     (Loop("i", 5, (Store(0, Var("i", INDEX), const(1.0, dtypes.float32)),)),))
    >>> verify(bad)
    Traceback (most recent call last):
    anychip.ir.verify.KernelIRError: k: store index i spans [0, 4] outside b0 of size 4
    """
    if not k.bufs or k.bufs[0].role is not BufRole.OUT:
        raise KernelIRError(f"{k.name}: bufs[0] must be the output buffer")
    for i, b in enumerate(k.bufs):
        if b.size < 0:
            raise KernelIRError(f"{k.name}: b{i} has negative size {b.size}")
        if i and b.role is not BufRole.LOCAL and k.bufs[i - 1].role is BufRole.LOCAL:
            raise KernelIRError(f"{k.name}: local buffers must follow the kernel's arguments")
    scope = _Scope()
    for i, dt in enumerate(k.scalars):
        _bind(k, scope, arg_name(i), "argument", dt)
    _block(k, k.body, scope)
    if k.contraction is not None:
        for op in (k.contraction.a, k.contraction.b, k.contraction.out):
            _buf(k, op.buf, "contraction operand")
    return k


def _fail(k: KernelIR, msg: str) -> KernelIRError:
    return KernelIRError(f"{k.name}: {msg}")


def _buf(k: KernelIR, i: int, what: str) -> None:
    if not 0 <= i < len(k.bufs):
        raise _fail(k, f"{what} names buffer b{i}; the kernel has {len(k.bufs)}")


def _block(k: KernelIR, body: tuple[Stmt, ...], scope: _Scope) -> None:
    outer, checked = dict(scope.names), set(scope.checked)
    for s in body:
        _stmt(k, s, scope)
    scope.names = outer  # names bound in a block end with it
    scope.checked = checked  # and so does what was checked with them


def _bind(k: KernelIR, scope: _Scope, name: str, what: str, info: object) -> None:
    if name in scope.names:
        raise _fail(k, f"{what} {name} is already bound in this scope")
    scope.names[name] = (what, info)


def _stmt(k: KernelIR, s: Stmt, scope: _Scope) -> None:
    if isinstance(s, Loop):
        _loop(k, s, scope)
    elif isinstance(s, Let):
        _expr(k, s.value, scope)
        _bind(k, scope, s.var, "let", s.value.dtype)
    elif isinstance(s, Acc):
        if s.op not in REDUCE:
            raise _fail(k, f"accumulator {s.var} has non-reduce op {s.op.name}")
        _bind(k, scope, s.var, "acc", s.dtype)
        scope.acc_depth[s.var] = len(scope.loops)
    elif isinstance(s, Update):
        _update(k, s, scope)
    elif isinstance(s, Store):
        _store(k, s, scope)
    elif isinstance(s, SortRow):
        _sort(k, s, scope)
    elif isinstance(s, Local):
        _buf(k, s.buf, "local")
        if k.bufs[s.buf].role is not BufRole.LOCAL:
            raise _fail(k, f"local declares b{s.buf}, a {k.bufs[s.buf].role.value} buffer")
        _bind(k, scope, f"b{s.buf}", "local", None)
        scope.acc_depth[f"b{s.buf}"] = len(scope.loops)
    else:
        raise _fail(k, f"unknown statement {s!r}")


def _loop(k: KernelIR, s: Loop, scope: _Scope) -> None:
    if s.extent < 0:
        raise _fail(k, f"loop {s.var} has negative extent {s.extent}")
    if any(lp.kind is LoopKind.VECTOR for lp in scope.loops):
        raise _fail(k, f"loop {s.var} is nested in a vector loop")
    if s.kind is LoopKind.PARALLEL and any(
        lp.kind in (LoopKind.REDUCE, LoopKind.VECTOR) for lp in scope.loops
    ):
        raise _fail(k, f"parallel loop {s.var} is nested in a reduce or vector loop")
    _bind(k, scope, s.var, "loop", INDEX)
    scope.ranges[s.var] = (0, max(s.extent - 1, 0))
    scope.loops.append(s)
    _block(k, s.body, scope)
    scope.loops.pop()
    del scope.ranges[s.var]
    scope.names.pop(s.var, None)


def _update(k: KernelIR, s: Update, scope: _Scope) -> None:
    what, dt = scope.names.get(s.var, ("", None))
    if what != "acc":
        raise _fail(k, f"update of {s.var}, which is not an accumulator in scope")
    depth = scope.acc_depth[s.var]
    if len(scope.loops) <= depth:
        raise _fail(k, f"update of {s.var} outside any loop after its declaration")
    if any(lp.kind is LoopKind.PARALLEL for lp in scope.loops[depth:]):
        raise _fail(k, f"update of {s.var} inside a parallel loop races")
    _expr(k, s.value, scope)
    if s.value.dtype is not dt:
        raise _fail(k, f"update of {s.var} ({dt}) with a {s.value.dtype.name} value")


def _store(k: KernelIR, s: Store, scope: _Scope) -> None:
    _buf(k, s.buf, "store")
    b = k.bufs[s.buf]
    if b.role is BufRole.IN:
        raise _fail(k, f"store into input buffer b{s.buf}")
    if b.role is BufRole.LOCAL:
        _local(k, s.buf, scope)
        depth = scope.acc_depth[f"b{s.buf}"]
        if any(lp.kind is LoopKind.PARALLEL for lp in scope.loops[depth:]):
            raise _fail(k, f"store into local b{s.buf} inside a parallel loop races")
    if s.valid is not None:
        _expr(k, s.valid, scope)
        if s.valid.dtype is not dtypes.bool_:
            raise _fail(k, f"store guard {fmt(s.valid)} is not bool")
    _index(k, s.index, scope, s.buf, s.valid, "store")
    _expr(k, s.value, scope)
    if s.value.dtype is not b.dtype:
        raise _fail(k, f"store of {s.value.dtype.name} into b{s.buf} of {b.dtype.name}")
    if s.combine is not None and s.combine not in (Ops.ADD, Ops.MAX, Ops.MIN, Ops.MUL):
        raise _fail(k, f"store combine {s.combine.name} is not associative")


def _local(k: KernelIR, buf: int, scope: _Scope) -> None:
    if scope.names.get(f"b{buf}", ("",))[0] != "local":
        raise _fail(k, f"local b{buf} is used outside the block that declares it")


def _sort(k: KernelIR, s: SortRow, scope: _Scope) -> None:
    _buf(k, s.dst, "sort")
    _buf(k, s.src, "sort")
    if k.bufs[s.dst].dtype is not dtypes.int64 or k.bufs[s.dst].role is BufRole.IN:
        raise _fail(k, "sort must write int64 indices into an output or local buffer")
    if s.k is not None and not 0 <= s.k <= s.n:
        raise _fail(k, f"sort keeps k={s.k} of {s.n} positions")
    dst = (s.dst_base, s.dst_stride, s.dst, s.n if s.k is None else s.k)
    for base, stride, buf, n in (dst, (s.src_base, s.src_stride, s.src, s.n)):
        _expr(k, base, scope)
        r = bounds(base, scope.ranges)
        if r is not None and n and (r[0] < 0 or r[1] + (n - 1) * stride >= k.bufs[buf].size):
            raise _fail(k, f"sort row of b{buf} runs outside the buffer")


def _index(
    k: KernelIR, index: Expr, scope: _Scope, buf: int, valid: Expr | None, what: str
) -> None:
    _expr(k, index, scope)
    if index.dtype is not INDEX:
        raise _fail(k, f"{what} index {fmt(index)} is {index.dtype.name}, not int64")
    if valid is not None or any(lp.extent == 0 for lp in scope.loops):
        return  # guarded, or never runs
    if any(isinstance(e, Load) for e in walk_exprs(index)):
        return  # data-dependent: the range is not static
    r = bounds(index, scope.ranges)
    size = k.bufs[buf].size
    if r is not None and size and (r[0] < 0 or r[1] >= size):
        raise _fail(
            k, f"{what} index {fmt(index)} spans [{r[0]}, {r[1]}] outside b{buf} of size {size}"
        )


def _expr(k: KernelIR, e: Expr, scope: _Scope) -> None:
    """Check `e` in `scope`; a sub-expression already checked in this scope (a value used
    many times: a DAG) is not checked again, once per path to it."""
    seen = scope.checked
    if isinstance(e, Const) or id(e) in seen:
        return
    seen.add(id(e))
    if isinstance(e, Var):
        what, dt = scope.names.get(e.name, ("", None))
        if not what:
            raise _fail(k, f"{e.name} is used outside the scope that binds it")
        if dt is not e.dtype:
            raise _fail(k, f"{e.name} is used as {e.dtype.name} but bound as {dt}")
        return
    if isinstance(e, Load):
        _buf(k, e.buf, "load")
        if k.bufs[e.buf].role is BufRole.LOCAL:
            _local(k, e.buf, scope)
        if e.dtype is not k.bufs[e.buf].dtype:
            raise _fail(k, f"load of {e.dtype.name} from b{e.buf} of {k.bufs[e.buf].dtype.name}")
        if e.valid is not None:
            _expr(k, e.valid, scope)
            if e.valid.dtype is not dtypes.bool_:
                raise _fail(k, f"load guard {fmt(e.valid)} is not bool")
        _index(k, e.index, scope, e.buf, e.valid, "load")
        return
    for s in e.srcs:
        _expr(k, s, scope)
    _alu_types(k, e)


def _alu_types(k: KernelIR, e: Alu) -> None:
    arity = 1 if e.op in UNARY else 2 if e.op in BINARY else 3 if e.op is Ops.WHERE else 0
    if arity != len(e.srcs):
        raise _fail(k, f"{e.op.name} takes {arity} sources, got {len(e.srcs)} in {fmt(e)}")
    src_dts = [s.dtype for s in e.srcs]
    if e.op is Ops.CAST:
        return
    if e.op is Ops.WHERE:
        ok = src_dts[0] is dtypes.bool_ and src_dts[1] is src_dts[2] is e.dtype
    elif e.op in (Ops.CMPLT, Ops.CMPEQ):
        ok = src_dts[0] is src_dts[1] and e.dtype is dtypes.bool_
    else:
        ok = all(d is e.dtype for d in src_dts)
    if not ok:
        names = ", ".join(d.name for d in src_dts)
        raise _fail(k, f"{e.op.name} of ({names}) -> {e.dtype.name} is ill-typed in {fmt(e)}")
