"""Deep and heavily shared lazy graphs: the scheduler bounds each kernel's expression
(depth and tree size), so no later pass recurses deeply or walks an exponential tree."""

from __future__ import annotations

import pytest

import anychip as ac
from anychip.ir.ops import Node
from anychip.passes import schedule as sched
from anychip.runtime.realize import plan


def tree_size_and_depth(root: Node) -> tuple[int, int]:
    """Size (a value used twice counts twice) and depth of an AST, computed bottom-up."""
    order: list[Node] = []
    seen: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        n, done = stack.pop()
        if done:
            order.append(n)
        elif id(n) not in seen:
            seen.add(id(n))
            stack.append((n, True))
            stack.extend((s, False) for s in n.srcs)
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    for n in order:
        size[id(n)] = 1 + sum(size[id(s)] for s in n.srcs)
        depth[id(n)] = 1 + max((depth[id(s)] for s in n.srcs), default=0)
    return size[id(root)], depth[id(root)]


def bounded(t: ac.Tensor) -> int:
    kernels = [w.kernel for w in plan([t.node]) if w.kernel is not None]
    for k in kernels:
        size, depth = tree_size_and_depth(k.ast)
        assert depth <= sched.MAX_DEPTH + 1, (k.name, depth)
        assert size <= sched.MAX_TREE, (k.name, size)
    return len(kernels)


@pytest.mark.slow
def test_a_100k_chain_is_cut_into_bounded_kernels() -> None:
    x = ac.zeros(4, device="ref")
    one = ac.ones(4, device="ref")
    for _ in range(100_000):
        x = x + one
    n = bounded(x)
    assert n >= 100_000 // sched.MAX_DEPTH  # cut, not one 100k-deep expression


def test_shared_values_cannot_grow_the_tree_exponentially() -> None:
    # each step uses y three times: as a tree the expression triples per step (3^40)
    y = ac.ones(4, device="ref") * 0.3
    for _ in range(40):
        y = ac.where(y > 0.1, y, -y) * 0.5
    assert bounded(y) > 1


def test_relu_chain_is_cut_where_the_tree_is_largest() -> None:
    # relu reads its input several times, so the tree doubles (or more) per step: 32 steps
    # fit in a few kernels of about MAX_TREE each, not one kernel per step
    x = ac.zeros(4, device="ref")
    for _ in range(32):
        x = (x + 1.0).relu()
    assert 1 < bounded(x) <= 8


def test_short_chains_stay_one_kernel() -> None:
    x = ac.zeros(4, device="ref")
    for _ in range(sched.MAX_DEPTH // 4):  # two ops a step, and the constants' leaves
        x = (x + 1.0) * 0.5
    assert bounded(x) == 1
