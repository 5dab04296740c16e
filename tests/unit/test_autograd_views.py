"""Autograd through in-place changes and views, against PyTorch: gradients through writes
into slices, transposes and rows; version counters shared by a base and its views (a value
saved for backward and then overwritten makes backward raise); the errors PyTorch raises
for views of leaves and views made under no_grad; and `z = x.clone(); x.mul_(2)`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import anychip as ac

A = np.arange(12, dtype=np.float64).reshape(3, 4) * 0.25 - 1.0
B = np.array([0.5, -2.0, 1.5])
W = np.linspace(-1.0, 1.0, 12).reshape(3, 4)


def _inputs(lib: Any) -> list[Any]:
    if lib is torch:
        return [torch.tensor(v, requires_grad=True) for v in (A, B, W)]
    return [ac.tensor(v, dtype=ac.float64, requires_grad=True) for v in (A, B, W)]


def _compare(fn: Callable[[Any, Any, Any], Any]) -> None:
    """fn(a, b, w) -> scalar loss, run on both libraries: loss and every gradient agree."""
    ins_a, ins_t = _inputs(ac), _inputs(torch)
    la, lt = fn(*ins_a), fn(*ins_t)
    la.backward()
    lt.backward()
    np.testing.assert_allclose(la.item(), lt.item(), rtol=1e-12)
    for i, (x, t) in enumerate(zip(ins_a, ins_t)):
        if t.grad is None:
            assert x.grad is None or not np.any(x.grad.numpy()), f"grad {i}"
            continue
        assert x.grad is not None, f"grad {i}: none"
        np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-12, atol=1e-12)


def _through_views(a: Any, b: Any, w: Any) -> Any:
    x = a * 1
    x[0].mul_(2)
    x[:, 1].add_(b)
    x.t()[2].mul_(b.sum())
    for i in range(3):  # (PyTorch refuses this through unbind's views, e.g. `for row in x`)
        x[i].mul_(w[i])
    x.view(-1)[::3].sub_(w.view(-1)[:4])
    x.narrow(1, 2, 2).copy_(w[:, :2] * 3)
    return (x * x).sum()


def _views_then_reads(a: Any, b: Any, w: Any) -> Any:
    x = a + 1
    r = x[1]  # a view made before the change re-derives from the changed base
    c = x[:, 0]
    x.mul_(w)
    x[2, 1:3].fill_(0.5)
    return (r * r).sum() + (c * b).sum() + x.sum()


def _chain_of_views(a: Any, b: Any, w: Any) -> Any:
    x = a * w
    v = x.view(2, 6)[1].view(3, 2).t()
    v.mul_(b[:2].unsqueeze(1))
    u = x.unsqueeze(0).permute(2, 0, 1)[1:3]
    u.add_(b.reshape(1, 1, 3))
    return (x.sin() * w).sum()


def _clone_then_mul(a: Any, b: Any, w: Any) -> Any:
    x = a * 1
    z = x.clone()
    x.mul_(2)  # the reproducer: z does not depend on the change
    return z.sum() + (x * w).sum()


def _inplace_with_grad_operand(a: Any, b: Any, w: Any) -> Any:
    x = a * 1
    x.mul_(w)  # the rule reads x's old value, which the change itself must keep
    x[1:].div_(w[1:] + 3)
    return x.sum()


def _detached_writes(a: Any, b: Any, w: Any) -> Any:
    x = a * 2
    x.detach()[0].zero_()  # changes x's value, not its history
    return (x * w).sum()


def _into_a_tensor_without_grad(a: Any, b: Any, w: Any) -> Any:
    x = (w * 0).detach()  # no history: writing gradients into it gives it one
    x[1].copy_(a[0])
    x[:, 2].add_(b)
    return (x * w).sum()


@pytest.mark.parametrize(
    "fn",
    [
        _into_a_tensor_without_grad,
        _through_views,
        _views_then_reads,
        _chain_of_views,
        _clone_then_mul,
        _inplace_with_grad_operand,
        _detached_writes,
    ],
)
def test_gradients_through_inplace_views_match_torch(fn: Callable[..., Any]) -> None:
    _compare(fn)


def test_clone_then_mul_reproducer() -> None:
    for lib in (torch, ac):
        a = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
        x = a * 1
        z = x.clone()
        x.mul_(2)
        z.sum().backward()
        assert a.grad is not None and a.grad.tolist() == [1.0, 1.0, 1.0]


def _raises_like_torch(fn: Callable[[Any], Any], match: str) -> None:
    with pytest.raises(RuntimeError):
        fn(torch)
    with pytest.raises(ac.AutogradError, match=match):
        fn(ac)


def test_saved_value_overwritten_through_a_view_raises() -> None:
    def fn(lib: Any) -> None:
        a = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
        h = a * 1
        v = h[:2]
        y = (v * v).sum()  # MUL saved v
        h[2:].add_(1)  # v shares h's version counter: its saved value counts as changed
        y.backward()

    _raises_like_torch(fn, "modified in place")


def test_saved_output_overwritten_raises() -> None:
    def fn(lib: Any) -> None:
        a = lib.tensor([1.0, 2.0], requires_grad=True)
        x = a.exp()  # exp's derivative reads its output
        x.mul_(2)
        x.sum().backward()

    _raises_like_torch(fn, r"modified in place.*output")


def test_view_of_leaf_cannot_change_in_place() -> None:
    def fn(lib: Any) -> None:
        a = lib.ones(3, requires_grad=True)
        a[0].fill_(2)

    _raises_like_torch(fn, "view of a leaf")
    a = ac.ones(3, requires_grad=True)
    with ac.no_grad():
        a[0].fill_(2)  # an optimiser-style update is fine
        a.t().mul_(3)
    assert a.tolist() == [6.0, 3.0, 3.0] and a.is_leaf and a.requires_grad


def test_view_made_under_no_grad_changed_with_grad_raises() -> None:
    def fn(lib: Any) -> None:
        a = lib.ones(3, requires_grad=True)
        h = a * 2
        with lib.no_grad():
            v = h[:2]
        v.add_(1)

    _raises_like_torch(fn, "no_grad")


def test_versions_are_shared_with_views() -> None:
    pairs = []
    for lib in (torch, ac):
        x = lib.zeros(3, 4)
        v, w = x[0], x.t()
        v.add_(1)
        x.mul_(2)
        w[1].fill_(3)
        pairs.append((x._version, v._version, w._version))
    assert pairs[0] == pairs[1]
