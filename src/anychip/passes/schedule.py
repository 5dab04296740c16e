"""Scheduling: cut the lazy graph into kernels, deciding which values are stored and which
are recomputed inside their consumers (fusion). Device-independent: every backend runs it.

A node is *materialised* (gets a kernel and a buffer) when it is a root, a contraction or
its operands, a scatter/scan/sort, a reduction that cannot run inside its consumer's loops,
or an expensive value several kernels share; everything else is inlined, so elementwise
chains, movement ops (index math, never copies) and gathers fuse into the kernels reading
them. Realised nodes (runtime.realize.buffer_of) are kernel inputs, never recomputed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from anychip import dtypes
from anychip.errors import OutOfMemoryError
from anychip.ir.kernel import KernelKind
from anychip.ir.ops import ELEMENTWISE, MOVEMENT, REDUCE, Node, Ops, runtime_scalar
from anychip.runtime.device import MAX_NUMEL, Kernel

BufferOf = Callable[[Node], Any]  # the buffer holding a node's value, or None
_OWN_KERNEL = {Ops.SCATTER_ADD: KernelKind.SCATTER, Ops.CUMSUM: KernelKind.SCAN}
_OWN_KERNEL[Ops.ARGSORT] = KernelKind.SORT
_INLINE = ELEMENTWISE | MOVEMENT | {Ops.CONST}  # graphs of only these are one kernel
_EXPENSIVE_OPS = 32  # a shared value with more inlined ops than this is stored, not recomputed
# Bounds on one kernel's expression, beyond which inlined values are stored instead: a lazy
# chain of any length (x = x + 1 a million times) realises in kernels of at most MAX_DEPTH
# levels, and values used several times (where(x > 0, x, -x) repeated) cannot make the tree
# that lowering, the kernel-IR passes and the C renderer walk grow exponentially.
MAX_DEPTH = 64
MAX_TREE = 4096


@dataclass(frozen=True)
class ScheduleItem:
    """Compute `out` from `inputs` (PARAM i of `kernel.ast` is inputs[i]'s buffer) and
    runtime scalars (ARG i is the value of the CONST node `scalars[i]`).
    `kernel` is None when `out` is a reshape of inputs[0] and shares its buffer."""

    out: Node
    inputs: tuple[Node, ...]
    kernel: Kernel | None
    scalars: tuple[Node, ...] = ()


@dataclass(frozen=True)
class _State:
    """How a node is reached inside a kernel: the loop domain, the loop order (the
    domain's non-1 axes, outermost first) and whether the path there is pure (only
    elementwise ops and EXPAND), so that a reduction met there can run in those loops."""

    kernel: int
    domain: tuple[int, ...]
    order: tuple[int, ...]
    pure: bool


def schedule(roots: list[Node], buffer_of: BufferOf) -> list[ScheduleItem]:
    """The kernels computing `roots`, producers before consumers.

    >>> import anychip as ac
    >>> from anychip.runtime.realize import buffer_of
    >>> a, b = ac.ones(4), ac.ones(4)
    >>> items = schedule([((a * b + 1).relu()).sum().node], buffer_of)
    >>> [i.kernel.kind.value for i in items if i.kernel]
    ['reduce']
    """
    order = _graph(roots, buffer_of)
    mat: dict[int, Node]
    contractions: set[int] = set()
    if len(roots) == 1 and all(n.op in _INLINE for n in order):
        mat = {id(roots[0]): roots[0]}  # one kernel: nothing to decide
    else:
        mat, contractions = _decide(order, roots, buffer_of)
    _cap_size(order, mat, contractions, buffer_of)
    return [_item(n, mat, contractions, buffer_of) for n in order if id(n) in mat]


def _graph(roots: list[Node], buffer_of: BufferOf) -> list[Node]:
    """The unrealised part of the graph, sources first (iterative post-order)."""
    out: list[Node] = []
    seen: set[int] = set()
    stack: list[tuple[Node, bool]] = [(r, False) for r in reversed(roots)]
    while stack:
        n, done = stack.pop()
        if done:
            out.append(n)
            continue
        if id(n) in seen or buffer_of(n) is not None:
            continue
        seen.add(id(n))
        if n.numel > MAX_NUMEL:  # a broadcast past int64 indexing: no kernel can loop over it
            raise OutOfMemoryError(
                f"{n.op.name.lower()}: shape {n.shape} ({n.dtype.name}, device {n.device!r}) "
                f"has {n.numel} elements, more than the limit of 2^63 - 1 ({MAX_NUMEL})"
            )
        stack.append((n, True))
        stack.extend((s, False) for s in reversed(n.srcs) if id(s) not in seen)
    return out


# --- contractions ------------------------------------------------------------------------
def view_base(n: Node) -> tuple[Node, bool]:
    """Follow movement ops and casts down to the value they view; also whether an EXPAND
    (a broadcast) was passed on the way."""
    expanded = False
    while n.op in MOVEMENT or n.op is Ops.CAST:
        expanded |= n.op is Ops.EXPAND
        n = n.srcs[0]
    return n, expanded


def contraction_operands(n: Node, users: dict[int, int]) -> tuple[Node, Node] | None:
    """(a, b) if `n` is SUM(MUL(a', b')) with a', b' broadcast views of a and b: a matmul
    (frontend/linalg.py `contract`) or an einsum; None otherwise."""
    if n.op is not Ops.SUM or n.srcs[0].op is not Ops.MUL or users.get(id(n.srcs[0]), 0) != 1:
        return None
    if n.dtype not in (dtypes.float32, dtypes.float64):
        return None
    (a, ea), (b, eb) = (view_base(s) for s in n.srcs[0].srcs)
    if not (ea or eb) or not any(n.srcs[0].shape[ax] > 1 for ax in n.arg):
        return None
    return a, b


# --- fusion decisions ----------------------------------------------------------------------
def _decide(
    order: list[Node], roots: list[Node], buffer_of: BufferOf
) -> tuple[dict[int, Node], set[int]]:
    users: dict[int, int] = defaultdict(int)
    for n in order:
        for s in n.srcs:
            users[id(s)] += 1
    mat: dict[int, Node] = {id(r): r for r in roots}
    contractions: set[int] = set()
    fused: set[int] = set()  # contractions computed by their own kernel (at them or a view)
    tops = _viewed_roots(roots, users)
    for n in order:
        if n.op in _OWN_KERNEL:
            mat[id(n)] = n
            if n.op is Ops.ARGSORT and buffer_of(n.srcs[0]) is None:
                mat[id(n.srcs[0])] = n.srcs[0]  # sorting reads plain rows
        ops = contraction_operands(n, users)
        if ops is not None:
            top = tops.get(id(n), n)  # a root viewing n through a permute: one kernel
            mat[id(top)] = top
            contractions.add(id(top))
            fused.add(id(n))
            for base in ops:
                if buffer_of(base) is None and base.op is not Ops.CONST:
                    mat[id(base)] = base
    ctx: dict[int, set[_State]] = defaultdict(set)
    for n in reversed(order):  # consumers before producers
        states = ctx[id(n)]
        if id(n) in fused and id(n) not in mat:  # the kernel of a root viewing it
            _propagate_root(n, ctx, True)
            continue
        if id(n) not in mat and n.op in REDUCE and not all(_fusable(n, s) for s in states):
            mat[id(n)] = n
        if id(n) not in mat and len({s.kernel for s in states}) > 1 and _expensive(n, mat):
            mat[id(n)] = n
        if id(n) in mat:
            _propagate_root(n, ctx, id(n) in contractions)
        else:
            for st in states:
                _propagate(n, st, ctx)
    return mat, contractions


def _viewed_roots(roots: list[Node], users: dict[int, int]) -> dict[int, Node]:
    """{id(c): root} for each root that is a RESHAPE/PERMUTE chain (and half casts) over a
    value c used by nothing else: if c is a contraction, the root's kernel computes it,
    writing the GEMM's output through the view (a weight gradient (x.T @ g).T needs no
    transpose kernel) and in the root's dtype (a float16 matmul, accumulated in float32,
    stores float16 from the accumulator: no separate cast kernel)."""
    out: dict[int, Node] = {}
    for r in roots:
        n = r
        while (_index_view(n) or _half_cast(n)) and (n is r or users.get(id(n), 0) == 1):
            n = n.srcs[0]
        if n is not r and users.get(id(n), 0) == 1 and n.op is Ops.SUM:
            out.setdefault(id(n), r)
    return out


def _index_view(n: Node) -> bool:
    """A view that only renames axes (a permute, or a reshape adding or dropping 1s): its
    index math stays affine, so a GEMM can write through it."""
    if n.op is Ops.PERMUTE:
        return True
    strip = tuple(d for d in n.shape if d != 1)
    return n.op is Ops.RESHAPE and strip == tuple(d for d in n.srcs[0].shape if d != 1)


def _half_cast(n: Node) -> bool:
    """A float32 value rounded to float16/bfloat16 (a half matmul's result): a contraction's
    store can do the rounding. (Other casts stay kernels of their own: a contraction's
    spec reads its operands through their casts, so its accumulator dtype is not the
    store's to change.)"""
    halves = (dtypes.float16, dtypes.bfloat16)
    return n.op is Ops.CAST and n.dtype in halves and n.srcs[0].dtype is dtypes.float32


def _fusable(r: Node, s: _State) -> bool:
    """Can reduction `r`, met in state `s`, run inside that kernel's loops without being
    recomputed per element? Yes for an epilogue (r's result is the domain) and for a row
    reduction whose reduced axes are the innermost loops (softmax, layer norm)."""
    if not s.pure:
        return False
    if r.shape == s.domain:
        return True
    axes = [a for a in r.arg if r.srcs[0].shape[a] != 1]
    return r.srcs[0].shape == s.domain and list(s.order[len(s.order) - len(axes) :]) == axes


def _inner_state(r: Node, s: _State) -> _State:
    """The state inside reduction `r`'s loops."""
    if r.shape == s.domain and r.srcs[0].shape != s.domain:  # epilogue: its loops go inside
        axes = tuple(a for a in r.arg if r.srcs[0].shape[a] != 1)
        return _State(s.kernel, r.srcs[0].shape, s.order + axes, s.pure)
    return s


def _propagate(n: Node, s: _State, ctx: dict[int, set[_State]]) -> None:
    if n.op in ELEMENTWISE or n.op is Ops.EXPAND:
        for src in n.srcs:
            ctx[id(src)].add(s)
    elif n.op in REDUCE:
        ctx[id(n.srcs[0])].add(_inner_state(n, s))
    elif n.op in MOVEMENT:
        ctx[id(n.srcs[0])].add(_State(s.kernel, s.domain, s.order, False))
    elif n.op is Ops.GATHER:
        ctx[id(n.srcs[0])].add(_State(s.kernel, s.domain, s.order, False))
        ctx[id(n.srcs[1])].add(s)


def _propagate_root(n: Node, ctx: dict[int, set[_State]], contraction: bool) -> None:
    """Start a kernel at `n` and tell its sources how they are reached."""
    nonone = tuple(i for i, d in enumerate(n.shape) if d != 1)
    start = _State(id(n), n.shape, nonone, True)
    if n.op in _OWN_KERNEL or contraction:
        for src in n.srcs:
            ctx[id(src)].add(_State(id(n), n.shape, nonone, False))
    elif n.op in REDUCE:
        src = n.srcs[0]
        axes = tuple(a for a in n.arg if src.shape[a] != 1)
        outer = tuple(i for i in nonone if i not in axes)
        ctx[id(src)].add(_State(id(n), src.shape, outer + axes, True))
    else:
        _propagate(n, start, ctx)


def _expensive(n: Node, mat: dict[int, Node]) -> bool:
    """Would recomputing `n` in each consumer kernel cost a reduction, a gather or many ops?"""
    count, stack, seen = 0, [n], set()
    while stack:
        x = stack.pop()
        if id(x) in seen or (x is not n and id(x) in mat) or x.op in (Ops.BUFFER, Ops.PARAM):
            continue
        seen.add(id(x))
        count += 1
        if x.op in REDUCE or x.op is Ops.GATHER or count > _EXPENSIVE_OPS:
            return True
        stack.extend(x.srcs)
    return False


# --- bounding expression size ---------------------------------------------------------------
def _cap_size(
    order: list[Node], mat: dict[int, Node], contractions: set[int], buffer_of: BufferOf
) -> None:
    """Store (add to `mat`) inlined values until no kernel's expression is deeper than
    MAX_DEPTH or larger than MAX_TREE nodes counted as a tree (a value used twice counts
    twice, as every tree walk of a later pass sees it), bar chains of uncuttable nodes."""
    # the contraction patterns are found only if some expression needs a cut (rarely)
    cap = _Cap(mat, lambda: _contraction_parts(order, mat, contractions), buffer_of)
    for n in order:
        cap.fit(n)


class _Cap:
    """Expression sizes and depths as the scheduler goes, sources first."""

    def __init__(
        self, mat: dict[int, Node], keep: Callable[[], set[int]], buffer_of: BufferOf
    ) -> None:
        self.mat, self.buffer_of = mat, buffer_of
        self._keep_fn = keep
        self._keep: set[int] | None = None  # nodes never cut, found when first needed
        self.size: dict[int, int] = {}  # a node's expression size (as a tree) when inlined
        self.depth: dict[int, int] = {}

    def inlined(self, n: Node) -> bool:
        return id(n) not in self.mat and self.buffer_of(n) is None

    def measure(self, n: Node) -> None:
        inl = [s for s in n.srcs if self.inlined(s)]
        self.size[id(n)] = 1 + sum(self.size[id(s)] for s in inl)
        self.depth[id(n)] = 1 + max((self.depth[id(s)] for s in inl), default=0)

    def fit(self, n: Node) -> None:
        self.measure(n)
        while self.size[id(n)] > MAX_TREE or self.depth[id(n)] > MAX_DEPTH:
            region = self.region(n)
            cut = self.choose(n, region)
            if cut is None:
                return  # only pattern parts (a contraction) left: leave them whole
            self.mat[id(cut)] = cut
            _store_reductions(cut, self.mat, self.buffer_of)
            for x in region:  # sources first: sizes above the cut shrink
                self.measure(x)

    def region(self, n: Node) -> list[Node]:
        """n and the values inlined into it, sources first."""
        out: list[Node] = []
        seen: set[int] = set()
        stack: list[tuple[Node, bool]] = [(n, False)]
        while stack:
            x, done = stack.pop()
            if done:
                out.append(x)
            elif id(x) not in seen:
                seen.add(id(x))
                stack.append((x, True))
                stack.extend((s, False) for s in x.srcs if self.inlined(s))
        return out

    def choose(self, n: Node, region: list[Node]) -> Node | None:
        """The value whose storing shrinks n's expression most: if too deep, the deepest
        source; if too large, the value counted most (paths to it times its own size)."""
        if self._keep is None:
            self._keep = self._keep_fn()
        keep = self._keep
        ok = [x for x in region[:-1] if id(x) not in keep and x.op in _CUTTABLE]
        if not ok:
            return None
        if self.depth[id(n)] > MAX_DEPTH:
            srcs = [s for s in n.srcs if s in ok] or ok
            return max(srcs, key=lambda s: self.depth[id(s)])
        paths: dict[int, int] = defaultdict(int)  # ways from n down to each value
        paths[id(n)] = 1
        for x in reversed(region):  # consumers first
            for s in x.srcs:
                if self.inlined(s):
                    paths[id(s)] += paths[id(x)]
        return max(ok, key=lambda x: paths[id(x)] * self.size[id(x)])


_CUTTABLE = ELEMENTWISE | MOVEMENT | REDUCE


def _contraction_parts(order: list[Node], mat: dict[int, Node], contractions: set[int]) -> set[int]:
    """ids of the nodes a contraction kernel matches as a pattern (SUM(MUL(views))): these
    must stay inlined for the GEMM lowering to see them."""
    keep: set[int] = set()
    users: dict[int, int] = defaultdict(int)
    for n in order:
        for s in n.srcs:
            users[id(s)] += 1
    for n in order:
        if n.op is Ops.SUM and (id(n) in contractions or contraction_operands(n, users)):
            keep.add(id(n))
            keep.add(id(n.srcs[0]))
            for v in n.srcs[0].srcs:
                while v.op in MOVEMENT or v.op is Ops.CAST:
                    keep.add(id(v))
                    v = v.srcs[0]
    for c in contractions:  # a root writing a contraction through a view
        v = mat[c]
        while v.op in MOVEMENT:
            keep.add(id(v))
            v = v.srcs[0]
    return keep


def _store_reductions(n: Node, mat: dict[int, Node], buffer_of: BufferOf) -> None:
    """A reduction inlined below a new kernel root `n` was fused for its old consumer's
    loops; store it so the new kernel needs no fusion decision of its own."""
    stack, seen = list(n.srcs), set()
    while stack:
        x = stack.pop()
        if id(x) in seen or id(x) in mat or buffer_of(x) is not None:
            continue
        seen.add(id(x))
        if x.op in REDUCE:
            mat[id(x)] = x
        stack.extend(x.srcs)


# --- building each kernel's AST -----------------------------------------------------------
def _item(
    root: Node, mat: dict[int, Node], contractions: set[int], buffer_of: BufferOf
) -> ScheduleItem:
    if root.op is Ops.RESHAPE:  # a reshape of a stored value shares its buffer
        base = root.srcs[0]
        while base.op is Ops.RESHAPE and buffer_of(base) is None and id(base) not in mat:
            base = base.srcs[0]
        if buffer_of(base) is not None or id(base) in mat:
            return ScheduleItem(root, (base,), None)
    inputs: list[Node] = []
    scalars: list[Node] = []
    slot: dict[int, int] = {}
    memo: dict[int, Node] = {}
    has_reduce, expanded_reduce = False, False
    stack = [root]
    while stack:  # iterative post-order over the inlined region
        n = stack[-1]
        if id(n) in memo:
            stack.pop()
            continue
        buf = buffer_of(n) if n is not root else None
        if buf is not None or (n is not root and id(n) in mat):
            key = id(buf if buf is not None else n)  # one PARAM per buffer
            if key not in slot:
                slot[key] = len(inputs)
                inputs.append(n)
            memo[id(n)] = Node(Ops.PARAM, n.dtype, n.shape, n.device, (), slot[key])
            stack.pop()
            continue
        pending = [s for s in n.srcs if id(s) not in memo]
        if pending:
            stack.extend(pending)
            continue
        stack.pop()
        if runtime_scalar(n):  # its value is a launch argument, not part of the code
            memo[id(n)] = Node(Ops.ARG, n.dtype, n.shape, n.device, (), len(scalars))
            scalars.append(n)
            continue
        if n.op in REDUCE:
            has_reduce = True
            expanded_reduce |= n.shape != root.shape
        srcs = tuple(memo[id(s)] for s in n.srcs)
        memo[id(n)] = Node(n.op, n.dtype, n.shape, n.device, srcs, n.arg)
    if root.op in _OWN_KERNEL:
        kind = _OWN_KERNEL[root.op]
    elif id(root) in contractions:
        kind = KernelKind.CONTRACTION
    elif root.op in REDUCE or (has_reduce and not expanded_reduce):
        kind = KernelKind.REDUCE
    else:
        kind = KernelKind.ROW if has_reduce else KernelKind.ELEMENTWISE
    shape = "x".join(str(d) for d in root.shape) or "scalar"
    kernel = Kernel(memo[id(root)], f"{kind.value}_{shape}", kind)
    return ScheduleItem(root, tuple(inputs), kernel, tuple(scalars))
