"""The dispatch layer without a device: structural keys of lazy graphs (what makes two
realisations share a plan) and how recorded launches become a replayable Plan."""

from __future__ import annotations

import re
from typing import Any

import pytest

import anychip as ac
from anychip import dtypes
from anychip.ir.ops import Node, Ops
from anychip.runtime import dispatch, eager_cache
from anychip.runtime.device import Backend, Buffer, Kernel

F32 = dtypes.float32


def buf(n: int = 4) -> Buffer:
    return Buffer("ref", F32, n, None)


def leaf(b: Buffer, shape: tuple[int, ...] = (4,)) -> Node:
    return Node(Ops.BUFFER, F32, shape, "ref", (), b)


def add(x: Node, y: Node) -> Node:
    return Node(Ops.ADD, F32, x.shape, "ref", (x, y))


def const(v: float) -> Node:
    return Node(Ops.CONST, F32, (4,), "ref", (), v)


def key(*roots: Node) -> Any:
    st = eager_cache.structure(list(roots), lambda n: n.arg if n.op is Ops.BUFFER else None)
    assert st is not None
    return st[0]


def test_same_structure_same_key_whatever_the_buffers() -> None:
    assert key(add(leaf(buf()), leaf(buf()))) == key(add(leaf(buf()), leaf(buf())))


def test_key_tells_apart_shapes_constants_and_aliasing() -> None:
    b = buf()
    base = key(add(leaf(buf()), leaf(buf())))
    assert key(add(leaf(b), leaf(b))) != base  # a + a reads one buffer twice
    assert key(add(leaf(buf(8), (8,)), leaf(buf(8), (8,)))) != base
    a = leaf(buf())
    # float constants are runtime scalars: their values are launch arguments, not structure
    assert key(add(a, const(-0.0))) == key(add(a, const(2.5))) == key(add(a, const(-1.0)))
    # but for 0 and 1, which kernels may fold (+0.0 only: -0.0 is a value like any other)
    assert key(add(a, const(0.0))) != key(add(a, const(1.0))) != key(add(a, const(2.5)))
    assert key(add(a, const(0.0))) != key(add(a, const(-0.0)))
    bools = Node(Ops.CONST, dtypes.bool_, (4,), "ref", (), True)
    flip = Node(Ops.CONST, dtypes.bool_, (4,), "ref", (), False)
    assert key(Node(Ops.AND, dtypes.bool_, (4,), "ref", (bools, bools))) != key(
        Node(Ops.AND, dtypes.bool_, (4,), "ref", (flip, flip))
    )  # a bool constant stays part of the kernel


def test_copies_are_not_cached() -> None:
    c = Node(Ops.COPY, F32, (4,), "ref", (leaf(buf()),), "ref")
    assert eager_cache.structure([c], lambda n: n.arg if n.op is Ops.BUFFER else None) is None


class _Adder(Backend):
    """A host backend whose 'program' is a Python function of the inputs' handles."""

    name = "adder"

    def allocate(self, size: int, dtype: Any) -> Any:
        return [0.0] * size

    def copyin(self, handle: Any, data: Any) -> None: ...
    def copyout(self, handle: Any, size: int, dtype: Any) -> Any: ...
    def compile(self, kernel: Kernel) -> Any: ...

    def launch(self, program: Any, out: Buffer, ins: list[Buffer]) -> None:
        out.handle[:] = program(*(b.handle for b in ins))


def test_plan_maps_inputs_temporaries_and_constants() -> None:
    be = _Adder()
    x, y, k = (Buffer("ref", F32, 2, v) for v in ([1.0, 2.0], [10.0, 20.0], [100.0, 100.0]))
    t, out = Buffer("ref", F32, 2, [0.0, 0.0]), Buffer("ref", F32, 2, [0.0, 0.0])
    plus = lambda p, q: [a + b for a, b in zip(p, q)]  # noqa: E731
    with dispatch.recording() as rec:
        dispatch.launch(be, plus, t, [x, y])  # t = x + y
        dispatch.launch(be, plus, out, [t, k])  # out = t + k (k: a constant)
    plan = dispatch.make_plan(rec, [x, y], [out, t])
    assert plan.consts == [k] and len(plan.steps) == 2
    nx, ny = Buffer("ref", F32, 2, [5.0, 6.0]), Buffer("ref", F32, 2, [7.0, 8.0])
    got_out, got_t = plan.run([nx, ny])
    assert got_t.handle == [12.0, 14.0] and got_out.handle == [112.0, 114.0]
    assert got_out is not out and x.handle == [1.0, 2.0]  # fresh outputs, inputs untouched


def test_a_read_that_sees_other_values_fails_its_guard() -> None:
    import numpy as np

    rec = dispatch.Recorder()
    b = Buffer("ref", F32, 2, np.array([1.0, 2.0], np.float32))
    rec.steps.append(dispatch.Step(dispatch.READ, [b], value=b.handle.tobytes()))
    plan = dispatch.make_plan(rec, [b], [])
    assert plan.run([b]) == []
    other = Buffer("ref", F32, 2, np.array([1.0, 3.0], np.float32))
    with pytest.raises(dispatch.GuardFailed):
        plan.run([other])


def test_debug_prints_every_launch_with_its_time_also_on_replay(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(dispatch, "DEBUG", 1)
    a = ac.ones(8, 16).realize()
    for _ in range(2):  # compiled, then replayed from the structural cache
        (a * 3 + 1).sum(1).realize()
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "reduce_8x1" in ln]
    assert len(lines) == 2
    assert all(re.search(r"float32\s+\[8, 1\]\s+\d+\.\d{3} ms$", ln) for ln in lines)
