"""autograd.composite: a value computed outside autograd, differentiated by its own rule,
checked against the same function differentiated primitive by primitive."""

from __future__ import annotations

import numpy as np
import pytest

import anychip as ac
from anychip.frontend.autograd import composite


def cube_rule(g, out, srcs, arg):
    (x,) = srcs
    return (g * x * x * arg,)  # d(x^3)/dx = 3 x^2, arg = 3


def cube(x):
    y = x._detached() * x._detached() * x._detached()
    return composite(y, (x,), cube_rule, 3.0)


def test_composite_gradient_and_second_derivative():
    a = np.array([0.5, -1.5, 2.0], np.float32)
    x = ac.tensor(a, requires_grad=True)
    (gx,) = ac.autograd.grad(cube(x).sum(), [x], create_graph=True)
    np.testing.assert_allclose(gx.numpy(), 3 * a**2, rtol=1e-6)
    (ggx,) = ac.autograd.grad(gx.sum(), [x])  # the rule's own ops carry history
    np.testing.assert_allclose(ggx.numpy(), 6 * a, rtol=1e-6)


def test_composite_without_grad_records_nothing():
    x = ac.tensor([1.0, 2.0])
    assert not cube(x).requires_grad
    with ac.no_grad():
        assert not cube(ac.tensor([1.0], requires_grad=True)).requires_grad


def test_composite_frees_what_it_saved():
    x = ac.tensor([1.0, 2.0], requires_grad=True)
    y = cube(x).sum()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 12.0])
    with pytest.raises(ac.AutogradError, match="second time"):
        y.backward()
