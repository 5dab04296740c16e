"""`ref`: a numpy interpreter of the primitive ops, the oracle every backend is checked against.

Each primitive means what its `ref` rule in `ir/primitives.py` computes. bfloat16 values are
held as float32 arrays rounded to bfloat16 after every op.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from anychip import dtypes
from anychip.backends.ref.blocks import blockwise
from anychip.dtypes import DType
from anychip.ir.ops import ELEMENTWISE, REDUCE, Node, Ops, toposort
from anychip.ir.primitives import RULES
from anychip.runtime.device import LAUNCHED, Backend, Buffer, Kernel, Scalar, host_memory


def _load(data: np.ndarray, dtype: DType) -> np.ndarray:
    return dtypes.bf16_to_f32(data) if dtype is dtypes.bfloat16 else data


def _store(value: np.ndarray, dtype: DType) -> np.ndarray:
    if dtype is dtypes.bfloat16:
        return dtypes.f32_to_bf16(value.reshape(-1))
    return np.ascontiguousarray(value, dtype=dtype.np).reshape(-1)


def _contractible(n: Node) -> bool:
    return n.op is Ops.MUL and n.dtype in (dtypes.float32, dtypes.float64)


def _contract(n: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SUM over MUL(a, b) by einsum, without materialising the broadcast product. Where
    the product is no larger than the inputs (a norm's x*x, a broadcast weight's gradient) it
    is formed and summed by the SUM rule, accurately along any axis."""
    if n.srcs[0].numel <= _stored(a) + _stored(b):
        return np.asarray(RULES[Ops.SUM].ref(n.arg, np.multiply(a, b)))
    letters = "abcdefghijklmnopqrstuvwxyz"[: len(n.shape)]
    out = "".join(c for i, c in enumerate(letters) if i not in n.arg)

    def product_sum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        # float32 sums of products in float64 (einsum casts in small buffers): its own
        # float32 loops add every term to one accumulator in a row
        res = np.einsum(f"{letters},{letters}->{out}", a, b, dtype=np.float64)
        return np.expand_dims(np.asarray(res, dtype=a.dtype), tuple(n.arg))

    # a long product (a 1024^3 matmul: seconds) in blocks of its kept axes (Ctrl-C between)
    return blockwise(product_sum, [a, b], n.srcs[0].shape, n.shape, frozenset(n.arg))


def _stored(a: np.ndarray) -> int:
    """Elements `a` really holds: broadcast (zero-stride) axes count once."""
    return math.prod(s for s, st in zip(a.shape, a.strides) if st != 0)


def evaluate(ast: Node, inputs: list[np.ndarray], scalars: tuple[Scalar, ...] = ()) -> np.ndarray:
    """The value of `ast`, whose PARAM i is `inputs[i]` (already loaded) and whose ARG i
    is `scalars[i]`."""
    order = toposort([ast])
    users: dict[int, list[Node]] = {}
    for n in order:
        for s in n.srcs:
            users.setdefault(id(s), []).append(n)
    # a product consumed only by a sum is never materialised (matmul's broadcast product)
    fused = {
        id(n)
        for n in order
        if _contractible(n) and len(users.get(id(n), ())) == 1 and users[id(n)][0].op is Ops.SUM
    }
    values: dict[int, np.ndarray] = {}
    for n in order:
        if id(n) in fused:
            continue
        if n.op is Ops.PARAM:
            v = inputs[n.arg].reshape(n.shape)
        elif n.op is Ops.CONST or n.op is Ops.ARG:
            np_dtype = np.float32 if n.dtype is dtypes.bfloat16 else n.dtype.np
            value = n.arg if n.op is Ops.CONST else scalars[n.arg]
            v = np.broadcast_to(np.array(value, dtype=np_dtype), n.shape)
        elif n.op is Ops.SUM and id(n.srcs[0]) in fused:
            a, b = n.srcs[0].srcs
            v = _contract(n, values[id(a)], values[id(b)])
        else:
            v = _apply(n, [values[id(s)] for s in n.srcs])
            if n.dtype is dtypes.bfloat16:
                v = dtypes.round_bf16(v.astype(np.float32))
        values[id(n)] = v
    return values[id(ast)]


def _apply(n: Node, srcs: list[np.ndarray]) -> np.ndarray:
    """n's rule on its sources' values; a long elementwise op, reduction, cumsum or sort
    runs in blocks of the axes it does not work along (`blocks.py`), so a pending Ctrl-C
    is raised between numpy calls."""
    rule = RULES[n.op].ref

    def fn(*xs: np.ndarray) -> np.ndarray:
        return np.asarray(rule(n.arg, *xs))

    if n.op in ELEMENTWISE:
        return blockwise(fn, srcs, n.shape, n.shape)
    shape = n.srcs[0].shape
    if n.op in REDUCE:
        return blockwise(fn, srcs, shape, n.shape, frozenset(n.arg))
    if n.op is Ops.CUMSUM:
        return blockwise(fn, srcs, shape, n.shape, frozenset({n.arg}))
    if n.op is Ops.ARGSORT:  # arg: (axis, descending[, k])
        return blockwise(fn, srcs, shape, n.shape, frozenset({n.arg[0]}))
    return fn(*srcs)


class RefBackend(Backend):
    name = "ref"

    def host_view(self, handle: Any) -> np.ndarray | None:
        return handle  # type: ignore[no-any-return]

    def memory_limit(self) -> int | None:
        return host_memory()

    def allocate(self, size: int, dtype: DType) -> Any:
        return np.empty(size, dtype=dtype.np)

    def copyin(self, handle: Any, data: np.ndarray) -> None:
        if data.dtype == np.bool_:  # numpy computes on the byte too: store only 0 and 1
            data = data.view(np.uint8) != 0
        handle[...] = data

    def copyout(self, handle: Any, size: int, dtype: DType) -> np.ndarray:
        return np.array(handle, copy=True)

    def compile(self, kernel: Kernel) -> Any:
        return kernel.ast

    def launch(
        self, program: Any, out: Buffer, ins: list[Buffer], scalars: tuple[Scalar, ...] = ()
    ) -> None:
        with np.errstate(all="ignore"):
            value = evaluate(program, [_load(b.handle, b.dtype) for b in ins], scalars)
        value, mark = _store(value, out.dtype), id(out)
        out.handle[...] = value  # every value computed before any write: an input is
        LAUNCHED.out = mark  # overwritten once this line runs (no call in between)


BACKEND = RefBackend
