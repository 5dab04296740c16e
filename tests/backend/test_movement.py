"""Movement ops forward and backward against PyTorch: reshape, permute, expand, repeat,
cat, stack, split, pad, flip, roll, narrow and friends, with 0-d and empty tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import anychip as ac
from helpers import check, rand


def _mod(x: Any) -> Any:
    """The library `x` belongs to, for free functions (torch.cat / ac.cat)."""
    return torch if isinstance(x, torch.Tensor) else ac


UNARY = {
    "reshape": ((2, 3, 4), lambda x: x.reshape(4, 6)),
    "reshape_tuple": ((2, 3, 4), lambda x: x.reshape((3, -1))),
    "reshape_0d": ((), lambda x: x.reshape(1, 1)),
    "reshape_to_0d": ((1, 1), lambda x: x.reshape(())),
    "reshape_empty": ((0, 4), lambda x: x.reshape(2, 0, 2)),
    "view": ((2, 3, 4), lambda x: x.view(-1)),
    "view_as": ((2, 6), lambda x: x.view(3, 4).view(12)),
    "flatten": ((2, 3, 4), lambda x: x.flatten()),
    "flatten_mid": ((2, 3, 4, 5), lambda x: x.flatten(1, 2)),
    "flatten_neg": ((2, 3, 4), lambda x: x.flatten(-2)),
    "flatten_0d": ((), lambda x: x.flatten()),
    "flatten_empty": ((2, 0, 3), lambda x: x.flatten(1)),
    "squeeze": ((1, 3, 1, 4), lambda x: x.squeeze()),
    "squeeze_dim": ((1, 3, 1, 4), lambda x: x.squeeze(2)),
    "squeeze_noop": ((1, 3, 1, 4), lambda x: x.squeeze(1)),
    "squeeze_neg": ((1, 3, 1), lambda x: x.squeeze(-1)),
    "squeeze_tuple": ((1, 3, 1, 4), lambda x: x.squeeze((0, 2))),
    "unsqueeze": ((3, 4), lambda x: x.unsqueeze(1)),
    "unsqueeze_end": ((3, 4), lambda x: x.unsqueeze(-1)),
    "unsqueeze_0d": ((), lambda x: x.unsqueeze(0)),
    "permute": ((2, 3, 4), lambda x: x.permute(2, 0, 1)),
    "permute_tuple": ((2, 3, 4), lambda x: x.permute((1, -1, 0))),
    "transpose": ((2, 3, 4), lambda x: x.transpose(0, 2)),
    "transpose_neg": ((2, 3, 4), lambda x: x.transpose(-1, -2)),
    "transpose_1d": ((5,), lambda x: x.transpose(0, -1)),
    "T_2d": ((3, 4), lambda x: x.T),
    "t": ((3, 4), lambda x: x.t()),
    "mT": ((2, 3, 4), lambda x: x.mT),
    "expand": ((3, 1), lambda x: x.expand(3, 4)),
    "expand_lead": ((3, 1), lambda x: x.expand(2, -1, 5)),
    "expand_0d": ((), lambda x: x.expand(2, 3)),
    "expand_empty": ((1, 3), lambda x: x.expand(0, 3)),
    "broadcast_to": ((4,), lambda x: x.broadcast_to((2, 3, 4))),
    "repeat": ((2, 3), lambda x: x.repeat(2, 3)),
    "repeat_lead": ((2, 3), lambda x: x.repeat(2, 1, 2)),
    "repeat_0d": ((), lambda x: x.repeat(3)),
    "repeat_zero": ((2, 3), lambda x: x.repeat(0, 2)),
    "flip": ((3, 4), lambda x: x.flip(0)),
    "flip_many": ((2, 3, 4), lambda x: x.flip((0, -1))),
    "flip_0d": ((), lambda x: x.flip(())),
    "narrow": ((5, 4), lambda x: x.narrow(0, 1, 3)),
    "narrow_neg": ((5, 4), lambda x: x.narrow(-1, -3, 2)),
    "narrow_empty": ((5, 4), lambda x: x.narrow(1, 4, 0)),
    "contiguous": ((2, 3), lambda x: x.T.contiguous()),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_movement(name: str, device: str) -> None:
    shape, fn = UNARY[name]
    check(fn, [rand(*shape, seed=1)], device)


def test_T_3d(device: str) -> None:
    # torch deprecates .T beyond 2-d; it reverses the dimensions, like permute(2, 1, 0)
    check(lambda x: x.T, [rand(2, 3, 4)], device, torch_fn=lambda x: x.permute(2, 1, 0))


def test_movement_finite_differences(device: str) -> None:
    def fn(x: Any) -> Any:
        return x.permute(1, 0, 2).reshape(3, 8).flip(1).repeat(2, 1).narrow(1, 2, 5).T

    check(fn, [rand(2, 3, 4)], device, fd=True)


def test_movement_int_and_bool(device: str) -> None:
    i = np.arange(24).reshape(2, 3, 4).astype(np.int32)
    check(lambda x: x.permute(2, 0, 1).reshape(4, 6).flip(0).repeat(1, 2), [i], device)
    b = i % 3 == 0
    check(lambda x: x.transpose(0, 1).expand(2, 3, 2, 4).flatten(), [b], device)


@pytest.mark.parametrize(
    ("shapes", "dim"),
    [
        (((2, 3), (4, 3)), 0),
        (((2, 3), (2, 1), (2, 5)), 1),
        (((2, 3), (2, 3)), -1),
        (((2, 0, 3), (2, 2, 3)), 1),
        (((0,), (3,)), 0),
    ],
    ids=str,
)
def test_cat(shapes: tuple, dim: int, device: str) -> None:
    arrays = [rand(*s, seed=i) for i, s in enumerate(shapes)]
    check(lambda *xs: _mod(xs[0]).cat(list(xs), dim), arrays, device)


def test_cat_skips_empty_1d_and_promotes(device: str) -> None:
    check(lambda a, b: _mod(a).cat([a, b], 0), [rand(0), rand(2, 3)], device)
    a = ac.tensor([[1, 2]], dtype=ac.int32, device=device)
    b = ac.tensor([[0.5, 1.5]], dtype=ac.float16, device=device)
    out = ac.cat([a, b])
    assert out.dtype is ac.float16 and out.tolist() == [[1.0, 2.0], [0.5, 1.5]]
    assert ac.cat((a, a), dim=1).tolist() == [[1, 2, 1, 2]]


@pytest.mark.parametrize("dim", [0, 1, 2, -1, -3])
def test_stack(dim: int, device: str) -> None:
    arrays = [rand(2, 3, seed=i) for i in range(3)]
    check(lambda *xs: _mod(xs[0]).stack(list(xs), dim), arrays, device)


def test_stack_0d(device: str) -> None:
    check(lambda a, b: _mod(a).stack([a, b]), [rand(seed=1), rand(seed=2)], device)


SPLITS = {
    "split_int": ((7, 3), lambda x: x.split(3)),
    "split_int_dim": ((2, 7), lambda x: x.split(2, dim=1)),
    "split_sections": ((7, 3), lambda x: x.split([1, 4, 2])),
    "split_zero_section": ((4, 3), lambda x: x.split([0, 4], -2)),
    "split_big": ((3, 2), lambda x: x.split(10)),
    "chunk": ((7, 3), lambda x: x.chunk(3)),
    "chunk_uneven": ((2, 5), lambda x: x.chunk(2, 1)),
    "chunk_more_than_size": ((3, 2), lambda x: x.chunk(5)),
    "unbind": ((3, 4), lambda x: x.unbind()),
    "unbind_dim": ((3, 4, 2), lambda x: x.unbind(-1)),
    "tensor_split": ((7, 2), lambda x: x.tensor_split(3)),
}


@pytest.mark.parametrize("name", sorted(SPLITS))
def test_split(name: str, device: str) -> None:
    shape, fn = SPLITS[name]
    check(fn, [rand(*shape, seed=2)], device)


PADS = [
    ((3, 4), (1, 2)),
    ((3, 4), (1, 2, 0, 3)),
    ((2, 3, 4), (0, 0, 2, 1, 1, 0)),
    ((3, 4), (-1, 2)),
    ((3, 4), (1, -2, -1, 1)),
    ((0, 2), (1, 1)),
]


@pytest.mark.parametrize(("shape", "pad"), PADS, ids=str)
@pytest.mark.parametrize("value", [0.0, -1.5])
def test_pad(shape: tuple, pad: tuple, value: float, device: str) -> None:
    check(
        lambda x: x.pad(pad, value=value),
        [rand(*shape, seed=3)],
        device,
        torch_fn=lambda x: torch.nn.functional.pad(x, pad, value=value),
    )


def test_pad_keeps_integer_and_bool_dtypes(device: str) -> None:
    for data, value in (([True, False], 1), ([1, 2], 7), ([1.5], 2.5)):
        got = ac.tensor(data, device=device).pad((1, 2), value=value)
        want = torch.nn.functional.pad(torch.tensor(data), (1, 2), value=value)
        assert got.dtype.name == str(want.dtype).split(".")[-1]
        assert got.tolist() == want.tolist()


@pytest.mark.parametrize(
    ("shape", "shifts", "dims"),
    [((5,), 2, 0), ((3, 4), -1, 1), ((3, 4), (1, 3), (0, 1)), ((3, 4), 7, -1), ((0, 3), 1, 0)],
    ids=str,
)
def test_roll(shape: tuple, shifts: Any, dims: Any, device: str) -> None:
    check(lambda x: _mod(x).roll(x, shifts, dims), [rand(*shape, seed=4)], device)


def test_roll_without_dims(device: str) -> None:
    # torch.roll with no dims rolls the flattened tensor and restores the shape
    check(lambda x: _mod(x).roll(x, 2), [rand(3, 4, seed=5)], device)


def test_free_functions(device: str) -> None:
    def fn(x: Any) -> Any:
        m = _mod(x)
        y = m.reshape(m.transpose(m.unsqueeze(x, 0), 1, 2), (3, 2, 4))
        z = m.flatten(m.permute(m.squeeze(y.unsqueeze(0)), (2, 0, 1)), 1)
        return m.cat([m.flip(z, (0,)), m.narrow(z, 1, 1, 2)], 1)

    check(fn, [rand(2, 3, 4, seed=6)], device)


def test_gradient_accumulates_through_views(device: str) -> None:
    # one tensor used by several movement ops: the gradients add up
    def fn(x: Any) -> Any:
        return x.reshape(6) * x.T.flatten() + x.repeat(1, 2).sum(1).repeat(3)

    check(fn, [rand(2, 3, seed=7)], device)
