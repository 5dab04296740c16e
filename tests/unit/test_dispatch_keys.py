"""Structural keys against everything that makes two graphs different computations, and the
realised-buffer memo on nodes (`Node.realised`) that the eager cache reads as leaves."""

from __future__ import annotations

from typing import Any

import numpy as np

import anychip as ac
from anychip import dtypes
from anychip.ir.ops import Node, Ops
from anychip.runtime import eager_cache, realize as rt
from anychip.runtime.device import Buffer

F32, F64 = dtypes.float32, dtypes.float64


def leaf(dt: Any = F32, shape: tuple[int, ...] = (4,), device: str = "ref") -> Node:
    return Node(Ops.BUFFER, dt, shape, device, (), Buffer(device, dt, 4, None))


def scaled(x: Node, c: Any) -> Node:
    k = Node(Ops.CONST, x.dtype, x.shape, x.device, (), c)
    return Node(
        Ops.MUL, x.dtype, x.shape, x.device, (Node(Ops.EXP, x.dtype, x.shape, x.device, (x,)), k)
    )


def key(*roots: Node) -> Any:
    st = eager_cache.structure(list(roots), rt.buffer_of)
    assert st is not None
    return st[0]


def test_keys_differ_by_dtype_shape_and_device_not_by_a_float_value() -> None:
    base = key(scaled(leaf(), 2.0))
    assert key(scaled(leaf(), 2.0)) == base  # other buffers, same computation
    assert key(scaled(leaf(), 3.0)) == base  # a runtime scalar: the value is an argument
    assert key(scaled(leaf(F64), 2.0)) != base
    assert key(scaled(leaf(shape=(2, 2)), 2.0)) != base
    assert key(scaled(leaf(device="cpu"), 2.0)) != base


def test_a_realised_node_is_a_leaf_of_later_keys() -> None:
    x = leaf()
    e = Node(Ops.EXP, F32, (4,), "ref", (x,))
    k = Node(Ops.CONST, F32, (4,), "ref", (), 2.0)
    y = Node(Ops.MUL, F32, (4,), "ref", (e, k))
    before = key(y)
    assert rt.buffer_of(e) is None
    rt.remember(e, Buffer("ref", F32, 4, None))
    after = key(y)
    assert after != before and len(after) == len(before) - 1  # exp and x fold into one leaf
    assert rt.buffer_of(e) is e.realised


def test_a_changed_constant_is_not_served_a_stale_plan() -> None:
    x = ac.tensor(np.arange(4, dtype=np.float32))
    for c in (2.0, 3.0, -0.0, 2.0):  # the same graph shape, other constants
        got = (x * c + 1).numpy()
        np.testing.assert_array_equal(got, np.arange(4, dtype=np.float32) * c + 1)


def test_realised_intermediates_are_reused_not_recomputed() -> None:
    x = ac.tensor(np.arange(4, dtype=np.float32))
    e = (x * 2).exp()
    e.realize()
    y = e.detach() + 1  # e's node is a buffer now: the new graph reads it
    np.testing.assert_allclose(y.numpy(), np.exp(np.arange(4) * 2) + 1, rtol=1e-6)
    z = x * 2  # fused into w's kernel (not materialised), then computed on its own
    w = z.exp() + z
    np.testing.assert_allclose(w.numpy(), np.exp(np.arange(4) * 2) + np.arange(4) * 2, rtol=1e-6)
    np.testing.assert_allclose(z.numpy(), np.arange(4) * 2)
    assert rt.buffer_of(z.node) is not None  # realised: its buffer is kept on the node


def op(o: Ops, *srcs: Node, arg: Any = None, shape: tuple[int, ...] | None = None) -> Node:
    return Node(o, srcs[0].dtype, shape or srcs[0].shape, srcs[0].device, srcs, arg)


def test_keys_follow_which_value_each_op_reads_and_its_arguments() -> None:
    """Graphs alike but for the wiring of one operand or one op argument never share a
    key: a shared key would replay one graph's plan for the other (a wrong answer)."""
    a, b = leaf(), leaf()
    e = op(Ops.EXP, a)
    assert key(op(Ops.DIV, e, b)) != key(op(Ops.DIV, b, e))  # operand order
    assert key(op(Ops.MUL, e, a)) != key(op(Ops.MUL, e, b))  # exp's own input again
    assert key(op(Ops.MUL, e, e)) != key(op(Ops.MUL, e, op(Ops.EXP, a)))  # one exp or two
    # a/b + a and a/b + b walk their nodes in the same order: only the wiring differs
    assert key(op(Ops.ADD, op(Ops.DIV, a, b), a)) != key(op(Ops.ADD, op(Ops.DIV, a, b), b))
    m = leaf(shape=(2, 2))
    assert key(op(Ops.SUM, m, arg=(0,), shape=(1, 2))) != key(
        op(Ops.SUM, m, arg=(1,), shape=(2, 1))
    )
    assert key(op(Ops.PAD, a, arg=((0, 1),), shape=(5,))) != key(
        op(Ops.PAD, a, arg=((1, 0),), shape=(5,))
    )
    assert key(op(Ops.PERMUTE, m, arg=(1, 0))) != key(op(Ops.RESHAPE, m, arg=(2, 2)))


def test_one_structure_on_other_buffers_reads_each_graphs_own_inputs() -> None:
    """exp(a) * b and exp(b) * a share a key (their leaves are listed in walk order), and
    each replay computes with its own buffers; an intermediate realised in between (a
    leaf now, not a computation) gets a key of its own."""
    a0, b0 = np.array([0.5, 1.0, 2.0], np.float32), np.array([3.0, -1.0, 0.25], np.float32)
    a, b = ac.tensor(a0), ac.tensor(b0)
    eager_cache.clear_cache()
    for _ in range(2):
        np.testing.assert_allclose((a.exp() * b).numpy(), np.exp(a0) * b0, rtol=1e-6)
        np.testing.assert_allclose((b.exp() * a).numpy(), np.exp(b0) * a0, rtol=1e-6)
        np.testing.assert_allclose((a.exp() * a).numpy(), np.exp(a0) * a0, rtol=1e-6)
        np.testing.assert_allclose((a / b + a).numpy(), a0 / b0 + a0, rtol=1e-6)
        np.testing.assert_allclose((a / b + b).numpy(), a0 / b0 + b0, rtol=1e-6)
        e = b.exp()
        e.realize()
        np.testing.assert_allclose((e * a).numpy(), np.exp(b0) * a0, rtol=1e-6)
    assert eager_cache.cache_info()["hits"] >= 4
