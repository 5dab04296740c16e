"""Bad input raises a typed error (an anychip.Error that is also the built-in it mirrors)
whose message names the op, the shapes, the dtypes and the device."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import anychip as ac

BUILTIN = {
    ac.ShapeError: ValueError,
    ac.DTypeError: TypeError,
    ac.IndexOutOfRange: IndexError,
    ac.DeviceError: RuntimeError,
    ac.AutogradError: RuntimeError,
    ac.ArgumentError: ValueError,
}


def expect(fn: Callable[[], Any], err: type[ac.Error], *parts: str) -> str:
    """Run fn; it must raise `err` (and its built-in) with every part in the message."""
    with pytest.raises(err) as info:
        fn()
    assert isinstance(info.value, ac.Error) and isinstance(info.value, BUILTIN[err])
    msg = str(info.value)
    for p in parts:
        assert p in msg, f"{p!r} missing from the message: {msg}"
    return msg


def _t(*shape: int, device: str, dtype: Any = ac.float32) -> ac.Tensor:
    return ac.ones(*shape, dtype=dtype, device=device)


# name -> (call on tensors a (2, 3) float32, b (4, 5) float32, i (2, 3) int32, error, parts)
# every message must also name the op (the name's first word) and the device
CASES: dict[str, tuple[Callable[..., Any], type[ac.Error], tuple[str, ...]]] = {
    "add": (lambda a, b, i: a + b, ac.ShapeError, ("(2, 3)", "(4, 5)", "float32")),
    "mul": (lambda a, b, i: a * b.T, ac.ShapeError, ("(2, 3)", "(5, 4)", "float32")),
    "sub": (lambda a, b, i: a - b, ac.ShapeError, ("(2, 3)", "(4, 5)", "float32")),
    "gt": (lambda a, b, i: a > b, ac.ShapeError, ("(2, 3)", "(4, 5)", "float32")),
    "maximum": (lambda a, b, i: a.maximum(b), ac.ShapeError, ("(2, 3)", "(4, 5)")),
    "where": (lambda a, b, i: ac.where(a > 0, a, b), ac.ShapeError, ("(4, 5)", "bool")),
    "matmul": (lambda a, b, i: a @ b, ac.ShapeError, ("(2, 3)", "(4, 5)", "float32")),
    "matmul batch": (
        lambda a, b, i: a.expand(3, 2, 3) @ ac.ones(2, 3, 4, device=a.device),
        ac.ShapeError,
        ("(3, 2, 3)", "(2, 3, 4)", "float32"),
    ),
    "matmul dtype": (
        lambda a, b, i: a @ i.T,
        ac.DTypeError,
        ("(2, 3)", "(3, 2)", "float32", "int32"),
    ),
    "matmul 0-d": (lambda a, b, i: a @ a.sum(), ac.ShapeError, ("(2, 3)", "()", "float32")),
    "mm": (lambda a, b, i: a.sum(0).mm(a), ac.ShapeError, ("(3,)", "(2, 3)", "float32")),
    "dot": (lambda a, b, i: a.sum(0).dot(a.sum(1)), ac.ShapeError, ("(3,)", "(2,)")),
    "einsum": (
        lambda a, b, i: ac.einsum("ij,jk->ik", a, b),
        ac.ShapeError,
        ("(2, 3)", "(4, 5)", "float32", "'j'"),
    ),
    "einsum operands": (
        lambda a, b, i: ac.einsum("ij,jk", a),
        ac.ShapeError,
        ("(2, 3)", "float32", "2 operands"),
    ),
    "einsum subscripts": (lambda a, b, i: ac.einsum("ijk", a), ac.ShapeError, ("(2, 3)",)),
    "einsum output": (lambda a, b, i: ac.einsum("ij->k", a), ac.ShapeError, ("(2, 3)", "'k'")),
    "reshape": (lambda a, b, i: a.reshape(4, 2), ac.ShapeError, ("(4, 2)", "(2, 3)", "float32")),
    "reshape -1": (lambda a, b, i: a.reshape(-1, 4), ac.ShapeError, ("(-1, 4)", "(2, 3)")),
    "reshape two -1": (lambda a, b, i: a.reshape(-1, -1), ac.ShapeError, ("(2, 3)", "float32")),
    "reshape view": (lambda a, b, i: a.view(5), ac.ShapeError, ("(5,)", "(2, 3)")),
    "cat": (lambda a, b, i: ac.cat([a, b]), ac.ShapeError, ("(2, 3)", "(4, 5)", "float32")),
    "cat 0-d": (lambda a, b, i: ac.cat([a.sum(), a.sum()]), ac.ShapeError, ("()", "float32")),
    "cat dim": (lambda a, b, i: ac.cat([a, a], 2), ac.IndexOutOfRange, ("2", "(2, 3)")),
    "stack": (lambda a, b, i: ac.stack([a, b]), ac.ShapeError, ("(2, 3)", "(4, 5)", "float32")),
    "stack dim": (lambda a, b, i: ac.stack([a, a], 4), ac.IndexOutOfRange, ("4", "(2, 3)")),
    "expand": (lambda a, b, i: a.expand(4, 3), ac.ShapeError, ("(4, 3)", "(2, 3)", "float32")),
    "expand sizes": (lambda a, b, i: a.expand(3), ac.ShapeError, ("(3,)", "(2, 3)")),
    "expand broadcast_to": (lambda a, b, i: a.broadcast_to((3,)), ac.ShapeError, ("(2, 3)",)),
    "permute": (lambda a, b, i: a.permute(0, 0), ac.ShapeError, ("(0, 0)", "(2, 3)", "float32")),
    "repeat": (lambda a, b, i: a.repeat(2), ac.ShapeError, ("(2, 3)", "float32")),
    "split": (lambda a, b, i: a.split([1, 1, 2], 1), ac.ShapeError, ("(1, 1, 2)", "(2, 3)")),
    "split size": (lambda a, b, i: a.split(0), ac.ShapeError, ("(2, 3)", "float32")),
    "chunk": (lambda a, b, i: a.chunk(0), ac.ShapeError, ("(2, 3)", "float32")),
    "tensor_split": (lambda a, b, i: a.tensor_split(0), ac.ShapeError, ("(2, 3)",)),
    "narrow": (lambda a, b, i: a.narrow(0, 1, 5), ac.IndexOutOfRange, ("(2, 3)", "float32")),
    "pad": (lambda a, b, i: a.pad((1, 2, 3)), ac.ShapeError, ("(2, 3)", "float32")),
    "pad mode": (lambda a, b, i: a.pad((1, 1), mode="typo"), ac.ArgumentError, ("typo",)),
    "pad crop": (lambda a, b, i: a.pad((-2, -2)), ac.ShapeError, ("(2, 3)", "float32")),
    "flatten": (lambda a, b, i: a.flatten(1, 0), ac.ShapeError, ("(2, 3)", "float32")),
    "t": (lambda a, b, i: a.expand(2, 2, 3).t(), ac.ShapeError, ("(2, 2, 3)",)),
    "roll": (lambda a, b, i: a.roll((1, 2), 0), ac.ShapeError, ("(2, 3)", "float32")),
    "mean": (lambda a, b, i: i.mean(), ac.DTypeError, ("(2, 3)", "int32")),
    "var": (lambda a, b, i: i.var(1), ac.DTypeError, ("(2, 3)", "int32")),
    "amax": (
        lambda a, b, i: a.narrow(0, 0, 0).amax(0),
        ac.ShapeError,
        ("(0, 3)", "float32"),
    ),
    "max": (lambda a, b, i: a.narrow(0, 0, 0).max(), ac.ShapeError, ("(0, 3)", "float32")),
    "argmax": (lambda a, b, i: a.narrow(1, 0, 0).argmax(1), ac.ShapeError, ("(2, 0)",)),
    "sum": (lambda a, b, i: a.sum((0, 0)), ac.ShapeError, ("(0, 0)", "(2, 3)", "float32")),
    "sub bool": (lambda a, b, i: (a > 0) - (a > 0), ac.DTypeError, ("(2, 3)", "bool")),
    "neg": (lambda a, b, i: -(a > 0), ac.DTypeError, ("(2, 3)", "bool")),
    "and": (lambda a, b, i: a & i, ac.DTypeError, ("(2, 3)", "float32", "int32")),
    "bitwise_not": (lambda a, b, i: ~a, ac.DTypeError, ("(2, 3)", "float32")),
    "where condition": (lambda a, b, i: ac.where(a, a, a), ac.DTypeError, ("(2, 3)", "float32")),
    "clamp": (lambda a, b, i: a.clamp(), ac.DTypeError, ("(2, 3)", "float32")),
    "div": (lambda a, b, i: a.div(a, rounding_mode="up"), ac.DTypeError, ("'up'", "(2, 3)")),
    "add_": (lambda a, b, i: a.add_(a.expand(2, 2, 3)), ac.ShapeError, ("(2, 3)", "(2, 2, 3)")),
    "add_ dtype": (lambda a, b, i: i.add_(a), ac.DTypeError, ("(2, 3)", "int32", "float32")),
    "copy_": (lambda a, b, i: a.copy_(b), ac.ShapeError, ("(4, 5)", "(2, 3)", "float32")),
    "item": (lambda a, b, i: a.item(), ac.DTypeError, ("6 elements", "(2, 3)", "float32")),
    "bool": (lambda a, b, i: bool(a), ac.DTypeError, ("(2, 3)", "float32")),
    "len": (lambda a, b, i: len(a.sum()), ac.DTypeError, ("()", "float32")),
    "requires_grad": (lambda a, b, i: i.requires_grad_(), ac.AutogradError, ("(2, 3)", "int32")),
    "backward": (
        lambda a, b, i: (a.requires_grad_() * 2).backward(),
        ac.AutogradError,
        ("(2, 3)", "float32", "gradient"),
    ),
    "to": (lambda a, b, i: a.to("nope"), ac.DeviceError, ("'nope'", "(2, 3)", "float32")),
}

# errors from a dimension out of range: the op, the bad dim, the shape, dtype and device
DIM_CASES: dict[str, Callable[[ac.Tensor], Any]] = {
    "sum": lambda a: a.sum(2),
    "mean": lambda a: a.mean(-3),
    "prod": lambda a: a.prod(2),
    "amax": lambda a: a.amax(5),
    "argmax": lambda a: a.argmax(2),
    "logsumexp": lambda a: a.logsumexp(2),
    "softmax": lambda a: a.softmax(3),
    "log_softmax": lambda a: a.log_softmax(-3),
    "cumsum": lambda a: a.cumsum(2),
    "all": lambda a: a.all(2),
    "norm": lambda a: a.norm(dim=3),
    "transpose": lambda a: a.transpose(0, 5),
    "squeeze": lambda a: a.squeeze(4),
    "unsqueeze": lambda a: a.unsqueeze(4),
    "permute": lambda a: a.permute(0, 3),
    "flip": lambda a: a.flip(3),
    "roll": lambda a: a.roll(1, 5),
    "narrow": lambda a: a.narrow(2, 0, 1),
    "unbind": lambda a: a.unbind(2),
    "split": lambda a: a.split(1, 2),
    "flatten": lambda a: a.flatten(0, 4),
    "size": lambda a: a.size(3),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_error(name: str, device: str) -> None:
    fn, err, parts = CASES[name]
    a, b = _t(2, 3, device=device), _t(4, 5, device=device)
    i = _t(2, 3, device=device, dtype=ac.int32)
    msg = expect(lambda: fn(a, b, i), err, name.split()[0], *parts)
    if err is not ac.DeviceError:
        assert f"device {device}" in msg, msg


@pytest.mark.parametrize("name", sorted(DIM_CASES))
def test_dim_out_of_range(name: str, device: str) -> None:
    a = _t(2, 3, device=device)
    msg = expect(lambda: DIM_CASES[name](a), ac.IndexOutOfRange, name, "(2, 3)", "float32")
    assert "out of range" in msg and f"device {device}" in msg


@pytest.mark.parametrize(
    "name",
    ["unbind", "split", "chunk", "narrow", "roll"],
)
def test_ops_that_need_a_dimension_reject_0d(name: str, device: str) -> None:
    calls = {
        "unbind": lambda x: x.unbind(0),
        "split": lambda x: x.split(1),
        "chunk": lambda x: x.chunk(2),
        "narrow": lambda x: x.narrow(0, 0, 1),
        "roll": lambda x: x.roll(1, 0),
    }
    x = ac.tensor(2.0, device=device)
    expect(lambda: calls[name](x), ac.IndexOutOfRange, name, "()", "float32", device)


def test_repeated_dims(device: str) -> None:
    x = ac.ones(1, 2, device=device)
    for op, call in [
        ("flip", lambda: x.flip(0, 0)),
        ("squeeze", lambda: x.squeeze((0, -2))),
        ("sum", lambda: x.sum((1, -1))),
        ("permute", lambda: x.permute(1, 1)),
    ]:
        expect(call, ac.ShapeError, op, "(1, 2)", "float32", device)


def test_sizes_must_be_integers(device: str) -> None:
    x = ac.ones(2, 2, device=device)
    expect(lambda: x.reshape(2.0, 2), ac.DTypeError, "reshape", "2.0")
    expect(lambda: ac.zeros(2.5), ac.DTypeError, "zeros", "2.5")
    expect(lambda: ac.rand((2, 1.5)), ac.DTypeError, "rand", "1.5")
    expect(lambda: x.expand(-1, 2, 2), ac.ShapeError, "expand", "(-1, 2, 2)", "(2, 2)")


def test_unknown_device() -> None:
    for fn, op in [
        (lambda: ac.ones(2, 3, device="nope"), "ones"),
        (lambda: ac.zeros(2, device="nope"), "zeros"),
        (lambda: ac.full((2,), 1.0, device="nope"), "full"),
        (lambda: ac.tensor([1.0, 2.0], device="nope"), "tensor"),
        (lambda: ac.arange(3, device="nope"), "arange"),
        (lambda: ac.eye(2, device="nope"), "eye"),
        (lambda: ac.rand(2, device="nope"), "rand"),
        (lambda: ac.randn(2, device="nope"), "randn"),
    ]:
        msg = expect(fn, ac.DeviceError, op, "'nope'", "known devices", "ref")
        assert "float32" in msg or "int64" in msg
    expect(lambda: ac.ones(2).to("nope"), ac.DeviceError, "to", "'nope'", "(2,)", "float32")
    expect(lambda: ac.set_default_device("nope"), ac.DeviceError, "'nope'")


def test_bad_dtypes() -> None:
    expect(lambda: ac.ones(2, dtype="nope"), ac.DTypeError, "ones", "'nope'", "float32")
    # not a known dtype, so taken as a device name, as torch does
    expect(lambda: ac.ones(2).to("complex64"), ac.DeviceError, "to", "'complex64'", "(2,)")
    expect(lambda: ac.tensor(["a", "b"]), ac.DTypeError, "tensor")
    expect(lambda: ac.tensor([[1, 2], [3]]), ac.ShapeError, "tensor")
    expect(lambda: ac.rand(2, dtype=ac.int32), ac.DTypeError, "rand", "int32")
    expect(lambda: ac.full((2,), float("inf"), dtype=ac.int32), ac.DTypeError, "full", "int32")
    expect(lambda: ac.ones(2) + "x", ac.DTypeError, "add", "str")


def test_bad_sizes() -> None:
    expect(lambda: ac.zeros(-1, 2), ac.ShapeError, "zeros", "(-1, 2)")
    expect(lambda: ac.full((2, -3), 1.0), ac.ShapeError, "full", "(2, -3)")
    expect(lambda: ac.randn(-1), ac.ShapeError, "randn", "(-1,)")
    expect(lambda: ac.eye(-1), ac.ShapeError, "eye", "-1")
    expect(lambda: ac.arange(0, 5, 0), ac.ShapeError, "arange", "step")
    expect(lambda: ac.arange(0, 5, -1), ac.ShapeError, "arange", "step -1")
    expect(lambda: ac.linspace(0, 1, -1), ac.ShapeError, "linspace", "-1")
    expect(lambda: ac.randint(5, 2, (3,)), ac.ShapeError, "randint", "low=5", "high=2")
    expect(lambda: ac.cat([]), ac.ShapeError, "cat")
    expect(lambda: ac.stack([]), ac.ShapeError, "stack")


def test_backward_errors(device: str) -> None:
    a = ac.ones(2, 3, device=device, requires_grad=True)
    expect(lambda: (a * 2).backward(), ac.AutogradError, "backward", "(2, 3)", device)
    expect(lambda: ac.ones(2, device=device).sum().backward(), ac.AutogradError, "backward")
    expect(
        lambda: (a * 2).backward(ac.ones(3, device=device)),
        ac.ShapeError,
        "backward",
        "(3,)",
        "(2, 3)",
        "float32",
    )
    expect(lambda: a.add_(1), ac.AutogradError, "add_", "leaf")


def test_nothing_is_lost_on_bad_input(device: str) -> None:
    # a failed in-place op leaves the tensor as it was
    x = ac.tensor([[1.0, 2.0, 3.0]], device=device)
    with pytest.raises(ac.ShapeError):
        x += ac.ones(2, 3, device=device)
    with pytest.raises(ac.DTypeError):
        i = ac.tensor([1, 2], device=device)
        i += ac.tensor([0.5, 0.5], device=device)
    assert x.tolist() == [[1.0, 2.0, 3.0]] and i.tolist() == [1, 2]
