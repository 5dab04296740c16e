"""Autograd behaviour against PyTorch: gradient accumulation, no_grad, detach, backward
with `gradient=`, in-place updates on leaves and non-leaves, and autograd.grad."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import anychip as ac
from anychip.frontend import autograd


def _pair(data: list, grad: bool = True) -> tuple[ac.Tensor, torch.Tensor]:
    return (
        ac.tensor(data, dtype=ac.float64, requires_grad=grad),
        torch.tensor(data, dtype=torch.float64, requires_grad=grad),
    )


def _same(a: ac.Tensor | None, t: torch.Tensor | None) -> None:
    assert (a is None) == (t is None)
    if a is not None and t is not None:
        np.testing.assert_allclose(a.numpy(), t.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_grad_accumulates_across_backward_calls() -> None:
    a, t = _pair([1.0, -2.0, 3.0])
    for _ in range(3):
        (a * a).sum().backward()
        (t * t).sum().backward()
    _same(a.grad, t.grad)
    (a.exp().sum() * 2).backward()
    (t.exp().sum() * 2).backward()
    _same(a.grad, t.grad)
    a.grad = None
    (a * 3).sum().backward()
    assert a.grad is not None and a.grad.tolist() == [3.0, 3.0, 3.0]


def test_gradient_flows_to_every_use() -> None:
    a, t = _pair([[1.0, 2.0], [3.0, 4.0]])
    b, u = _pair([0.5, -1.0])
    fa = (a * b).sum(1) * (a @ b) + a.sum() * b.sum()
    ft = (t * u).sum(1) * (t @ u) + t.sum() * u.sum()
    fa.sum().backward()
    ft.sum().backward()
    _same(a.grad, t.grad)
    _same(b.grad, u.grad)


def test_no_grad() -> None:
    a = ac.tensor([1.0, 2.0], requires_grad=True)
    with ac.no_grad():
        b = a * 2
        assert not ac.is_grad_enabled()
        with ac.enable_grad():
            c = a * 2
    assert ac.is_grad_enabled()
    assert not b.requires_grad and b.is_leaf
    assert c.requires_grad and not c.is_leaf

    @ac.no_grad()
    def double(x: ac.Tensor) -> ac.Tensor:
        return x * 2

    assert not double(a).requires_grad
    assert ac.is_grad_enabled()


def test_no_grad_restores_state_after_an_error() -> None:
    with pytest.raises(ZeroDivisionError), ac.no_grad():
        _ = 1 / 0
    assert ac.is_grad_enabled()


def test_detach() -> None:
    a, t = _pair([1.0, 2.0, 3.0])
    fa = a * a.detach() + a
    ft = t * t.detach() + t
    assert not a.detach().requires_grad and a.detach().tolist() == a.tolist()
    fa.sum().backward()
    ft.sum().backward()
    _same(a.grad, t.grad)
    assert not a.data.requires_grad


def test_backward_with_gradient_for_non_scalars() -> None:
    a, t = _pair([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    g = [[1.0, 0.5, -1.0], [2.0, 0.0, 3.0]]
    (a.sin() * 2).backward(ac.tensor(g, dtype=ac.float64))
    (t.sin() * 2).backward(torch.tensor(g, dtype=torch.float64))
    _same(a.grad, t.grad)
    b, u = _pair([1.0, 2.0])
    (b * b).backward(gradient=ac.tensor([1.0, -1.0], dtype=ac.float64))
    (u * u).backward(gradient=torch.tensor([1.0, -1.0], dtype=torch.float64))
    _same(b.grad, u.grad)


def test_backward_from_one_element_non_0d() -> None:
    a, t = _pair([[2.0]])
    (a * a).backward()
    (t * t).backward()
    _same(a.grad, t.grad)


def test_backward_from_non_scalar_without_gradient_errors() -> None:
    a = ac.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ac.AutogradError) as e:
        (a * 2).backward()
    assert isinstance(e.value, RuntimeError)
    assert "backward" in str(e.value) and "(2,)" in str(e.value) and "gradient" in str(e.value)


def test_backward_without_grad_errors() -> None:
    with pytest.raises(ac.AutogradError, match="does not require grad"):
        ac.tensor([1.0]).sum().backward()


def test_backward_gradient_shape_mismatch_errors() -> None:
    a = ac.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ac.ShapeError, match=r"\(3,\).*\(2,\)"):
        (a * 2).backward(ac.ones(3))


def test_inplace_on_leaf_requiring_grad_errors() -> None:
    a = ac.tensor([1.0, 2.0], requires_grad=True)
    for op in (lambda x: x.add_(1), lambda x: x.mul_(2), lambda x: x.zero_()):
        with pytest.raises(ac.AutogradError, match="leaf") as e:
            op(a)
        assert isinstance(e.value, RuntimeError)
    with pytest.raises(ac.AutogradError):
        a += 1
    assert a.tolist() == [1.0, 2.0]  # nothing was changed by the failed updates
    with ac.no_grad():
        a -= 0.5  # an optimiser step
    assert a.tolist() == [0.5, 1.5] and a.requires_grad and a.is_leaf


def test_inplace_on_non_leaf_keeps_gradients_right() -> None:
    a, t = _pair([1.0, -2.0, 3.0])
    ha, ht = a * 2, t * 2
    for h, x in ((ha, a), (ht, t)):
        h.add_(x)
        h.mul_(3)
        h.sub_(x.sin())
        h.div_(2)
    (ha * a).sum().backward()
    (ht * t).sum().backward()
    _same(ha.detach(), ht.detach())
    _same(a.grad, t.grad)


def test_inplace_square_of_itself() -> None:
    # torch refuses this (mul_ saves the tensor it overwrites); anychip moves the old value
    # aside, so h = (2a)^2 + a and dh/da = 8a + 1
    a = ac.tensor([1.0, -2.0, 3.0], dtype=ac.float64, requires_grad=True)
    h = a * 2
    h.mul_(h)
    h.add_(a)
    h.sum().backward()
    assert h.tolist() == [5.0, 14.0, 39.0]
    assert a.grad is not None and a.grad.tolist() == [9.0, -15.0, 25.0]


def test_inplace_ops_in_a_chain() -> None:
    a, t = _pair([0.5, 1.5, -1.0])
    outs = []
    for x in (a, t):
        y = x.sin()
        y -= x
        y *= 3
        y /= x + 4
        z = y.clone()
        z += y
        outs.append(z * y)
    outs[0].sum().backward()
    outs[1].sum().backward()
    _same(outs[0].detach(), outs[1].detach())
    _same(a.grad, t.grad)


def test_modified_after_use_errors() -> None:
    a = ac.tensor([1.0, 2.0], requires_grad=True)
    h = a * 1
    out = (h * h).sum()  # MUL saved h
    h.add_(1)
    with pytest.raises(ac.AutogradError, match="modified in place"):
        out.backward()


def test_autograd_grad() -> None:
    a, t = _pair([1.0, 2.0, 3.0])
    b, u = _pair([0.5, 0.25, 2.0])
    fa = (a * b).exp().sum() + (a * a).sum()
    ft = (t * u).exp().sum() + (t * t).sum()
    ga, gb = autograd.grad(fa, [a, b])
    gt, gu = torch.autograd.grad(ft, [t, u])
    _same(ga, gt)
    _same(gb, gu)
    assert a.grad is None and b.grad is None  # grad does not touch .grad


def test_autograd_grad_with_grad_outputs_and_intermediates() -> None:
    a, t = _pair([1.0, 2.0])
    ha, ht = a.sin(), t.sin()
    fa, ft = ha * ha * 3, ht * ht * 3
    go = [1.0, -2.0]
    (gha, ga) = autograd.grad(fa, [ha, a], ac.tensor(go, dtype=ac.float64))
    (ght, gt) = torch.autograd.grad(ft, [ht, t], torch.tensor(go, dtype=torch.float64))
    _same(gha, ght)
    _same(ga, gt)


def test_autograd_grad_unused_input_is_none() -> None:
    a = ac.tensor([1.0], requires_grad=True)
    b = ac.tensor([2.0], requires_grad=True)
    ga, gb = autograd.grad((a * 2).sum(), [a, b], allow_unused=True)
    assert ga is not None and ga.tolist() == [2.0] and gb is None
    with pytest.raises(RuntimeError, match="allow_unused"):  # as torch.autograd.grad
        autograd.grad((a * 2).sum(), [a, b])


def test_requires_grad_rules() -> None:
    with pytest.raises(ac.AutogradError, match="int64"):
        ac.tensor([1, 2], requires_grad=True)
    a = ac.tensor([1.0, 2.0])
    assert a.requires_grad_() is a and a.requires_grad
    b = a * 2
    assert b.requires_grad and not b.is_leaf
    # integer results are not differentiable: no gradient flows through argmax or compares
    assert not a.argmax().requires_grad and not (a > 1).requires_grad
    c = (a * 2).detach().requires_grad_()
    assert c.is_leaf and c.requires_grad


def test_integer_results_do_not_require_grad() -> None:
    a, t = _pair([1.5, 2.5])
    assert not a.long().requires_grad and not t.long().requires_grad
    assert not a.sum(dtype=ac.int64).requires_grad
    with pytest.raises(ac.AutogradError, match="does not require grad"):
        a.long().sum().backward()
    # an integer detour is a constant: the gradient flows only through the float path
    ((a.long() * 2).double() * a).sum().backward()
    ((t.long() * 2).double() * t).sum().backward()
    _same(a.grad, t.grad)


def test_gradient_dtype_follows_the_leaf() -> None:
    a = ac.tensor([1.0, 2.0], dtype=ac.float16, requires_grad=True)
    (a.float() * 3).sum().backward()
    assert a.grad is not None and a.grad.dtype is ac.float16 and a.grad.tolist() == [3.0, 3.0]
    b = ac.tensor([1.0, 2.0], dtype=ac.float64, requires_grad=True)
    (b * ac.tensor([1.0, 1.0])).sum().backward()
    assert b.grad is not None and b.grad.dtype is ac.float64
