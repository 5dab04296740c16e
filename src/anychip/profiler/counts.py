"""What one kernel does, counted from its primitive graph: a readable name, its arithmetic
(FLOPs) and its device-memory traffic (bytes). The rules are in docs/profiler.md.

The counts describe the math the kernel's graph asks for, not the code a backend made of it,
so they are the same on every device: a roofline's numerator and denominator.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from dataclasses import dataclass

from anychip.ir.kernel import KernelKind
from anychip.ir.ops import ELEMENTWISE, MOVEMENT, REDUCE, SOURCES, Node, Ops, toposort
from anychip.runtime.device import Kernel

MAX_NAME_OPS = 4  # ops spelled out in a kernel's name; more are written as "+N"


@dataclass(frozen=True, slots=True)
class Counts:
    """`flops`: operations the graph asks for; `matrix_flops`: the part that is a
    contraction's multiply-accumulates (2 per product: what a matrix unit runs); `bytes`:
    input elements the kernel can touch plus the output it writes, in bytes."""

    name: str
    flops: int
    matrix_flops: int
    bytes: int


@functools.lru_cache(maxsize=4096)  # a replayed plan launches the same Kernel again
def kernel_counts(kernel: Kernel) -> Counts:
    """Name, FLOPs and bytes of `kernel`.

    >>> import anychip as ac
    >>> from anychip.runtime.realize import plan
    >>> a, b = ac.ones(8, 4).realize(), ac.ones(4, 16).realize()
    >>> c = kernel_counts(plan([(a @ b).node])[0].kernel)
    >>> c.name, c.flops, c.bytes  # 2*M*N*K; (8*4 + 4*16 + 8*16) float32 elements
    ('contraction', 1024, 896)
    """
    order = toposort([kernel.ast])
    macs = _macs(order) if kernel.kind is KernelKind.CONTRACTION else set()
    products = _mac_products(order, macs)
    flops = matrix = 0
    for n in order:
        if id(n) in macs:  # SUM over a MUL of a contraction: 2 per product, counted once
            matrix += 2 * n.srcs[0].numel
        elif id(n) not in products:
            flops += node_flops(n)
    nbytes = _input_bytes(order) + kernel.ast.numel * kernel.ast.dtype.itemsize
    return Counts(_name(kernel, order, macs), flops + matrix, matrix, nbytes)


def node_flops(n: Node) -> int:
    """Operations of one primitive node (its sources' work not included).

    >>> from anychip import dtypes
    >>> x = Node(Ops.PARAM, dtypes.float32, (3, 5), "cpu", (), 0)
    >>> node_flops(Node(Ops.SUM, dtypes.float32, (3, 1), "cpu", (x,), (1,)))  # 3 * (5 - 1)
    12
    """
    op = n.op
    if op is Ops.CAST or op in SOURCES or op in MOVEMENT or op is Ops.GATHER:
        return 0  # conversions and data movement: no arithmetic
    if op in ELEMENTWISE:
        return n.numel
    if op in REDUCE:  # one combine per input element beyond the first of each output
        return n.srcs[0].numel - n.numel
    if op is Ops.CUMSUM:
        along: int = n.shape[n.arg]
        return n.numel - n.numel // max(1, along)
    if op is Ops.SCATTER_ADD:  # one add per source element
        return n.srcs[2].numel
    if op is Ops.ARGSORT:  # comparisons of a comparison sort: n*ceil(log2 n) per row
        src = n.srcs[0]
        length: int = src.shape[n.arg[0]]
        rows = src.numel // max(1, length)
        return rows * length * max(1, math.ceil(math.log2(max(2, length))))
    return 0


def _macs(order: list[Node]) -> set[int]:
    """ids of a contraction's SUM nodes summing a MUL directly (multiply-accumulates)."""
    return {id(n) for n in order if n.op is Ops.SUM and n.srcs[0].op is Ops.MUL}


def _mac_products(order: list[Node], macs: set[int]) -> set[int]:
    """ids of the MUL nodes those SUMs consume (their products are counted by the SUM)."""
    return {id(n.srcs[0]) for n in order if id(n) in macs}


def _input_bytes(order: list[Node]) -> int:
    """Bytes of each input buffer (PARAM) the kernel can touch, each element counted once:
    the whole buffer, unless every use sees it through a SHRINK or as a GATHER's source,
    which bound the elements read (a gathered embedding table is not read whole)."""
    users: dict[int, list[Node]] = defaultdict(list)
    for n in order:
        for s in n.srcs:
            users[id(s)].append(n)
    reach: dict[int, int] = defaultdict(int)  # PARAM index -> elements touched
    params: dict[int, Node] = {}
    for n in order:
        if n.op is Ops.PARAM:
            params[n.arg] = n
            reach[n.arg] += _touched(n, n.numel, users)
    return sum(min(p.numel, reach[i]) * p.dtype.itemsize for i, p in params.items())


def _touched(v: Node, bound: int, users: dict[int, list[Node]]) -> int:
    """Elements of a buffer reached through `v` (at most `bound` distinct ones so far)."""
    total = 0
    for u in users[id(v)]:
        if u.op in MOVEMENT:  # views never add distinct elements; a SHRINK removes some
            total += _touched(u, min(bound, u.numel), users)
        elif u.op is Ops.GATHER and u.srcs[0] is v:  # one source element per output
            total += min(bound, u.numel)
        else:
            total += bound
    return total


def _name(kernel: Kernel, order: list[Node], macs: set[int]) -> str:
    """The kernel's kind and its main ops in graph order, e.g. `elementwise_mul_add`,
    `contraction` (a plain matmul), `row_rmax_neg_add_exp_+3`, `elementwise_cast`."""
    skip = _mac_products(order, macs) | macs
    ops: list[str] = []
    for n in order:
        if id(n) in skip or n.op in SOURCES or n.op in MOVEMENT or n.op is Ops.CAST:
            continue
        name = n.op.name.lower()
        if name not in ops:
            ops.append(name)
    if not ops and not macs:  # only data movement: say whether values are converted on the way
        ops = ["cast" if any(n.op is Ops.CAST for n in order) else "copy"]
    shown = ops[:MAX_NAME_OPS] + (
        [f"+{len(ops) - MAX_NAME_OPS}"] if len(ops) > MAX_NAME_OPS else []
    )
    return "_".join([kernel.kind.value, *shown])
