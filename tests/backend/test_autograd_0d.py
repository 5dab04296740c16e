"""Every differentiable op on a 0-d input returns a new graph node, so gradients reach the
input (issue 10: `x.sum()` of a 0-d `x` used to return `x` itself and `x.grad` stayed None).
Values and gradients against PyTorch on every device."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import anychip as ac
from helpers import check


def _lib(x: Any) -> Any:
    return torch if isinstance(x, torch.Tensor) else ac


OPS: dict[str, Callable[[Any], Any]] = {
    "sum": lambda x: x.sum(),
    "sum_dim": lambda x: x.sum(0),
    "mean": lambda x: x.mean(),
    "prod": lambda x: x.prod(),
    "max": lambda x: x.max(),
    "min": lambda x: x.min(),
    "amax": lambda x: x.amax(),
    "permute": lambda x: x.permute(()),
    "reshape": lambda x: x.reshape(()),
    "view": lambda x: x.view(()),
    "flip": lambda x: x.flip(()),
    "squeeze": lambda x: x.squeeze(),
    "squeeze_dim": lambda x: x.squeeze(0),
    "expand": lambda x: x.expand([]),
    "cumsum": lambda x: x.cumsum(0),
    "einsum": lambda x: _lib(x).einsum("->", x),
    "t": lambda x: x.t(),
    "transpose": lambda x: x.transpose(0, -1),
    "contiguous": lambda x: x.contiguous() * 1,
    "clone": lambda x: x.clone(),
    "pos": lambda x: +x,
    "getitem_ellipsis": lambda x: x[...],
    "getitem_none": lambda x: x[None],
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_0d_ops_differentiate_as_torch(name: str, device: str) -> None:
    check(OPS[name], [np.array(1.5)], device)


@pytest.mark.parametrize("name", sorted(OPS))
def test_0d_ops_return_a_new_node(name: str, device: str) -> None:
    x = ac.tensor(1.5, requires_grad=True, device=device)
    y = OPS[name](x)
    assert y is not x and not y.is_leaf
    y.sum().backward()
    t = torch.tensor(1.5, requires_grad=True)
    OPS[name](t).sum().backward()
    assert x.grad is not None and t.grad is not None
    assert x.grad.item() == t.grad.item()


def test_issue_reproducer(device: str) -> None:
    x = ac.tensor(1.5, requires_grad=True, device=device)
    x.sum().backward()
    assert x.grad is not None and x.grad.item() == 1.0


def test_backward_from_a_leaf_itself() -> None:
    for lib in (ac, torch):
        x = lib.tensor(1.5, requires_grad=True)
        x.backward()
        assert x.grad is not None and x.grad.item() == 1.0


def test_cumsum_of_0d_checks_the_dim_as_torch() -> None:
    with pytest.raises(IndexError):
        torch.tensor(1.0).cumsum(1)
    with pytest.raises(ac.IndexOutOfRange, match="cumsum"):
        ac.tensor(1.0).cumsum(1)
