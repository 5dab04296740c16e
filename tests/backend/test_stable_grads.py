"""Gradients that stay finite where PyTorch's do: the sigmoid family, softplus, gelu,
log-sigmoid, logsumexp and pow at 0, over +-1000 and at special values, against torch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import anychip as ac

AF = ac.nn.functional
SPECIAL = [-0.0, 0.0, 1e-3, -1e-3, 1.0, -1.0, 20.0, -20.0, 88.0, 89.0, -89.0, -90.0, 300.0, -300.0]
GRID = np.concatenate([np.linspace(-1000, 1000, 81), np.linspace(-30, 30, 61), SPECIAL])
INF_NAN = [np.inf, -np.inf, np.nan]

Pair = tuple[Callable[[Any], Any], Callable[[Any], Any]]
FNS: dict[str, Pair] = {
    "sigmoid": (lambda x: x.sigmoid(), lambda x: x.sigmoid()),
    "silu": (lambda x: AF.silu(x), lambda x: TF.silu(x)),
    "quick_gelu": (lambda x: x * (x * 1.702).sigmoid(), lambda x: x * (x * 1.702).sigmoid()),
    "softplus": (lambda x: AF.softplus(x), lambda x: TF.softplus(x)),
    "softplus_beta": (
        lambda x: AF.softplus(x, beta=2.0, threshold=10.0),
        lambda x: TF.softplus(x, beta=2.0, threshold=10.0),
    ),
    "gelu": (lambda x: AF.gelu(x), lambda x: TF.gelu(x)),
    "gelu_tanh": (
        lambda x: AF.gelu(x, approximate="tanh"),
        lambda x: TF.gelu(x, approximate="tanh"),
    ),
    "tanh": (lambda x: x.tanh(), lambda x: x.tanh()),
    "logsigmoid": (lambda x: AF.logsigmoid(x), lambda x: TF.logsigmoid(x)),
    "elu": (lambda x: AF.elu(x), lambda x: TF.elu(x)),
    "logsumexp": (
        lambda x: ac.stack([x, x * 0.5 - 3], 1).logsumexp(1),
        lambda x: torch.stack([x, x * 0.5 - 3], 1).logsumexp(1),
    ),
    "log_softmax": (
        lambda x: ac.stack([x, -x], 1).log_softmax(1)[:, 0],
        lambda x: torch.stack([x, -x], 1).log_softmax(1)[:, 0],
    ),
    "bce_with_logits": (
        lambda x: AF.binary_cross_entropy_with_logits(x, x * 0 + 0.3, reduction="none"),
        lambda x: TF.binary_cross_entropy_with_logits(x, x * 0 + 0.3, reduction="none"),
    ),
    "zero_pow_x": (lambda x: 0**x, lambda x: 0**x),
    "x_pow_neg": (lambda x: x**-1.0, lambda x: x**-1.0),
    "sqrt_abs": (lambda x: x.abs().sqrt(), lambda x: x.abs().sqrt()),
}
# where torch's own value is a quirk we do not copy: (function, input, forward or gradient)
DIFFERENT = {("gelu", "inf", "fwd"), ("elu", "nan", "grad"), ("log_softmax", "-inf", "fwd")}


def _compare(name: str, xs: np.ndarray, dtype: str, device: str) -> None:
    fa, ft = FNS[name]
    a = ac.tensor(xs, dtype=getattr(ac, dtype), device=device, requires_grad=True)
    t = torch.tensor(xs, dtype=getattr(torch, dtype), requires_grad=True)
    ya, yt = fa(a), ft(t)
    ya.sum().backward()
    yt.sum().backward()
    tol = 2e-5 if dtype == "float32" else 1e-10
    for what, got, want in (("fwd", ya, yt), ("grad", a.grad, t.grad)):
        g, w = got.numpy().astype(np.float64), want.detach().numpy().astype(np.float64)
        for i, x in enumerate(xs):
            if (name, str(x), what) in DIFFERENT:
                continue
            msg = f"{name} {what} at x={x} ({dtype}): ours {g[i]}, torch {w[i]}"
            if np.isfinite(w[i]):
                assert np.isfinite(g[i]), msg
                assert abs(g[i] - w[i]) <= tol * (1 + abs(w[i])), msg
            else:
                assert (np.isnan(g[i]) and np.isnan(w[i])) or g[i] == w[i], msg


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(FNS))
def test_gradient_finite_where_torchs_is(name: str, dtype: str, device: str) -> None:
    _compare(name, GRID, dtype, device)


@pytest.mark.parametrize("name", sorted(FNS))
def test_infinities_and_nan(name: str, device: str) -> None:
    if name == "sqrt_abs":
        pytest.skip("abs' gradient at +-inf is nan here (maximum's tie rule), inf in torch")
    _compare(name, np.array(INF_NAN), "float32", device)


def test_pow_at_zero_both_gradients(device: str) -> None:
    """x ** y on a grid with x = 0 included: d/dx and d/dy as torch (inf, -inf, 0)."""
    xs = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.5, 1.0])
    ys = np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 2.0, -1.0, 0.0, 3.0])
    a = ac.tensor(xs, device=device, requires_grad=True)
    b = ac.tensor(ys, device=device, requires_grad=True)
    t, u = torch.tensor(xs, requires_grad=True), torch.tensor(ys, requires_grad=True)
    (a**b).sum().backward()
    (t**u).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), t.grad.numpy())
    np.testing.assert_allclose(b.grad.numpy(), u.grad.numpy(), rtol=1e-12)
    assert b.grad.numpy()[0] == -np.inf  # the issue's case: d(0 ** y)/dy for y < 0


def test_the_issues_examples(device: str) -> None:
    x = ac.tensor([-300.0], requires_grad=True, device=device)
    x.sigmoid().sum().backward()
    assert x.grad.tolist() == [0.0]
    for v in (300.0, 400.0):
        s = ac.tensor([v], requires_grad=True, device=device)
        AF.softplus(s).sum().backward()
        assert s.grad.tolist() == [1.0]
