"""Every public Tensor method that anychip shares with PyTorch and that takes no argument,
walked on 0-d, empty and ordinary inputs: value and gradient against torch's (issue 10:
autograd never silently skips). The list is built from the two classes, so a method added
later joins the sweep by itself; `NOT_SWEPT` says why the others are left out."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch

import anychip as ac

# left out, with the reason: they take arguments, are not differentiable, change their
# input, convert or describe the tensor, or are tested where their semantics are
NOT_SWEPT = {
    # need arguments or describe the tensor, not compute from it
    *("backward", "register_hook", "retain_grad", "requires_grad_", "size", "stride", "dim"),
    *("numel", "nelement", "element_size", "storage_offset", "data_ptr", "get_device"),
    *("view", "reshape", "expand", "permute", "repeat", "tile", "view_as", "expand_as"),
    *("reshape_as", "type_as", "masked_fill", "masked_select", "new_empty", "new_zeros"),
    *("new_ones", "new_full", "new_tensor", "uniform", "normal", "bernoulli", "apply_", "map_"),
    # conversions and copies (tests/backend/test_habits.py, test_views.py)
    *("detach", "numpy", "tolist", "item", "cpu", "to", "type", "realize", "contiguous"),
    *("clone", "cuda", "float", "double", "half", "long", "int", "bool", "bfloat16", "short"),
    *("byte", "char"),
    # integer or boolean results: no gradient to check (test_reduce.py, test_sort.py)
    *("unique", "bincount", "argsort", "sort", "argmax", "argmin", "nonzero", "all", "any"),
    *("isnan", "isinf", "isfinite", "sign", "signbit", "floor", "ceil", "round", "trunc"),
    *("frac", "is_contiguous", "is_floating_point", "is_complex", "is_signed"),
}
SHAPES = [(), (0,), (3,)]


def _input(name: str, shape: tuple[int, ...]) -> np.ndarray:
    x = np.abs(np.random.default_rng(len(shape)).standard_normal(shape)) + 0.5  # in domain
    return x * 0.3 if name in ("acos", "asin", "atanh", "arccos", "arcsin", "arctanh") else x


def _torch(name: str, x0: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """torch's value and gradient of sum(x.name()), or None where torch has none."""
    t = torch.tensor(x0, requires_grad=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y = getattr(t, name)()
            if not isinstance(y, torch.Tensor) or not y.is_floating_point():
                return None
            y.sum().backward()
    except (RuntimeError, TypeError, IndexError, ValueError):
        return None
    assert t.grad is not None
    return y.detach().numpy(), t.grad.numpy()


def _cases() -> list[Any]:
    names = sorted(
        n
        for n in set(dir(ac.Tensor)) & set(dir(torch.Tensor))
        if not n.startswith("_") and not n.endswith("_") and n not in NOT_SWEPT
        and callable(getattr(torch.Tensor, n, None))
    )  # fmt: skip
    cases = []
    for n in names:
        for s in SHAPES:
            if _torch(n, _input(n, s)) is not None:
                cases.append(pytest.param(n, s, id=f"{n}-{s}"))
    return cases


CASES = _cases()


def test_the_sweep_covers_the_common_ops() -> None:
    swept = {c.values[0] for c in CASES}
    for name in ("sum", "mean", "prod", "exp", "log", "sigmoid", "tanh", "sqrt", "abs"):
        assert name in swept, name
    assert {c.values[1] for c in CASES if c.values[0] == "sum"} == set(SHAPES)


@pytest.mark.parametrize("name, shape", CASES)
def test_value_and_gradient_match_torch(name: str, shape: tuple[int, ...], device: str) -> None:
    x0 = _input(name, shape)
    want = _torch(name, x0)
    assert want is not None
    x = ac.tensor(x0, requires_grad=True, device=device)
    y = getattr(x, name)()
    y = y[0] if isinstance(y, tuple) else y
    assert y is not x, f"{name} returned its input: the graph has no node to differentiate"
    y.sum().backward()
    assert x.grad is not None, f"{name}: no gradient reached a {shape} input"
    np.testing.assert_allclose(y.numpy(), want[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(x.grad.numpy(), want[1], rtol=1e-5, atol=1e-7)
