"""The PyTorch ops issue 10 lists as missing, against PyTorch: forward values and
gradients on every device (math, activations, scans, scatter, triangles, unfold, shifts,
pad modes, dtype views)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import anychip as ac
import anychip.nn.functional as F
from helpers import check, rand

TF = torch.nn.functional
X = rand(3, 5)


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("atan", -5, 5),
        ("asin", -0.99, 0.99),
        ("acos", -0.99, 0.99),
        ("sinh", -3, 3),
        ("cosh", -3, 3),
        ("asinh", -5, 5),
        ("acosh", 1.01, 5),
        ("atanh", -0.99, 0.99),
        ("arctan", -5, 5),
    ],
)
def test_inverse_and_hyperbolic_math(device: str, name: str, low: float, high: float) -> None:
    x = rand(4, 6, low=low, high=high)
    check(lambda t: getattr(t, name)(), [x], device, fd=False)
    check(lambda t: getattr(t, name)(), [x], device, dtype="float32")


def test_atan2_all_quadrants(device: str) -> None:
    check(lambda y, x: y.atan2(x), [rand(4, 6), rand(4, 6, seed=1)], device)
    check(lambda y, x: torch.atan2(y, x) if isinstance(y, torch.Tensor) else ac.atan2(y, x),
          [rand(3, 1), rand(1, 4, seed=2)], device, dtype="float32")  # fmt: skip


def test_special_values_of_inverse_math() -> None:
    v = ac.tensor([0.0, np.inf, -np.inf, 1e30], dtype=ac.float64)
    np.testing.assert_allclose(v.atan().numpy(), np.arctan(v.numpy()), rtol=1e-15)
    np.testing.assert_allclose(v.asinh().numpy(), np.arcsinh(v.numpy()), rtol=1e-15)
    y, x = ac.tensor([0.0, 0.0, 1.0, -1.0]), ac.tensor([1.0, -1.0, 0.0, 0.0])
    np.testing.assert_allclose(y.atan2(x).numpy(), np.arctan2(y.numpy(), x.numpy()), rtol=1e-6)


@pytest.mark.parametrize(
    "name", ["relu6", "hardsigmoid", "hardswish", "softsign", "logsigmoid", "mish", "selu"]
)
def test_activations(device: str, name: str) -> None:
    x = rand(4, 6, low=-8, high=8)
    check(lambda t: getattr(F, name)(t), [x], device, torch_fn=lambda t: getattr(TF, name)(t))


def test_parametrised_activations(device: str) -> None:
    x = rand(4, 6, low=-4, high=4)
    check(lambda t: F.celu(t, 0.7), [x], device, torch_fn=lambda t: TF.celu(t, 0.7))
    check(
        lambda t: F.hardtanh(t, -2.0, 3.0),
        [x],
        device,
        torch_fn=lambda t: TF.hardtanh(t, -2.0, 3.0),
    )
    check(lambda t: F.softmin(t, 1), [x], device, torch_fn=lambda t: TF.softmin(t, 1))


def test_logsigmoid_is_finite_at_extremes(device: str) -> None:
    x = ac.tensor([-1000.0, -90.0, 0.0, 90.0, 1000.0], device=device, requires_grad=True)
    y = F.logsigmoid(x)
    y.sum().backward()
    t = torch.tensor(x.numpy(), requires_grad=True)
    TF.logsigmoid(t).sum().backward()
    np.testing.assert_allclose(y.numpy(), TF.logsigmoid(t).detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    "cls",
    [
        "ReLU6",
        "Hardsigmoid",
        "Hardswish",
        "Softsign",
        "LogSigmoid",
        "Mish",
        "SELU",
        "CELU",
        "Hardtanh",
    ],
)
def test_activation_modules(device: str, cls: str) -> None:
    check(lambda t: getattr(ac.nn, cls)()(t), [rand(3, 4, low=-5, high=5)], device,
          torch_fn=lambda t: getattr(torch.nn, cls)()(t))  # fmt: skip
    check(
        lambda t: ac.nn.Softmin(dim=1)(t),
        [X],
        device,
        torch_fn=lambda t: torch.nn.Softmin(dim=1)(t),
    )


def test_copysign_and_logaddexp(device: str) -> None:
    b = np.array([[1.0, -2.0, 0.0, -0.0, 3.0]])
    check(lambda a, s: a.copysign(s), [rand(3, 5), b], device)
    check(lambda a, c: a.logaddexp(c), [rand(3, 5, low=-30, high=30), rand(3, 5, seed=1)], device)
    inf = ac.tensor([-np.inf, np.inf], device=device)
    assert inf.logaddexp(inf).tolist() == [-np.inf, np.inf]


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_scans(device: str, dim: int) -> None:
    check(lambda t: t.cumprod(dim), [X], device)
    check(lambda t: t.logcumsumexp(dim), [X], device)
    check(lambda t: t.cummax(dim), [X], device)
    check(lambda t: t.cummin(dim), [X], device)
    zeros = X.copy()
    zeros[1, 2] = 0.0
    check(lambda t: t.cumprod(dim), [zeros], device)


def test_cummax_ties_take_the_last_index(device: str) -> None:
    x = np.array([1.0, 3.0, 3.0, 2.0, 3.0])
    got = ac.tensor(x, device=device).cummax(0)
    want = torch.tensor(x).cummax(0)
    np.testing.assert_array_equal(got.indices.numpy(), want.indices.numpy())
    assert ac.tensor([3, 1, 2], device=device).cummin(0).values.tolist() == [3, 1, 1]


def test_scatter(device: str) -> None:
    idx = np.array([[0, 2, 1], [1, 0, 2]])
    check(
        lambda t, s: t.scatter(1, torch_or_ac(t, idx), s), [rand(2, 4), rand(2, 3, seed=1)], device
    )
    check(
        lambda t: t.scatter(0, torch_or_ac(t, np.array([[1, 0, 1, 0]])), 5.0), [rand(2, 4)], device
    )


def torch_or_ac(like: object, a: np.ndarray) -> object:
    if isinstance(like, torch.Tensor):
        return torch.tensor(a)
    return ac.tensor(a, device=like.device)  # type: ignore[attr-defined]


@pytest.mark.parametrize("reduce", ["sum", "prod", "mean", "amax", "amin"])
@pytest.mark.parametrize("include_self", [True, False])
def test_scatter_reduce(device: str, reduce: str, include_self: bool) -> None:
    idx = np.array([[0, 2, 2, 1, 0], [1, 1, 3, 3, 0]])
    check(
        lambda t, s: t.scatter_reduce(1, torch_or_ac(t, idx), s, reduce, include_self=include_self),
        [rand(2, 4), rand(2, 5, seed=1)],
        device,
        grad=reduce in ("sum", "mean"),  # torch's prod/amax gradients split ties its own way
    )
    if reduce in ("amax", "amin", "prod"):  # forward only, plus integer dtypes
        a = np.arange(8).reshape(2, 4) - 3
        got = ac.tensor(a, device=device).scatter_reduce(
            1,
            ac.tensor(idx, device=device),
            ac.tensor(idx * 2 - 1, device=device),
            reduce,
            include_self=include_self,
        )
        want = torch.tensor(a).scatter_reduce(
            1, torch.tensor(idx), torch.tensor(idx * 2 - 1), reduce, include_self=include_self
        )
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_triangles_and_diagonals(device: str) -> None:
    m = rand(4, 5)
    for k in (-1, 0, 2):
        check(lambda t, k=k: t.tril(k), [m], device)
        check(lambda t, k=k: t.triu(k), [m], device)
        check(lambda t, k=k: t.diagonal(k), [m], device)
        check(
            lambda t, k=k: torch.diag(t, k) if isinstance(t, torch.Tensor) else t.diag(k),
            [m],
            device,
        )
        check(
            lambda t, k=k: torch.diag(t, k) if isinstance(t, torch.Tensor) else t.diag(k),
            [rand(3)],
            device,
        )
    check(lambda t: t.diagonal(1, 0, 2), [rand(3, 2, 4)], device)
    check(lambda t: t.tril(), [rand(2, 3, 3)], device)


def test_unfold_and_repeat_interleave(device: str) -> None:
    check(lambda t: t.unfold(1, 3, 2), [rand(2, 7, 3)], device)
    check(lambda t: t.unfold(0, 2, 1), [rand(5)], device)
    check(
        lambda t: F.unfold(t, 2, padding=1, stride=2),
        [rand(2, 3, 5, 4)],
        device,
        torch_fn=lambda t: TF.unfold(t, 2, padding=1, stride=2),
    )
    check(lambda t: t.repeat_interleave(2, 1), [X], device)
    check(lambda t: t.repeat_interleave(3), [X], device)
    reps = np.array([1, 0, 2])
    check(lambda t: t.repeat_interleave(torch_or_ac(t, reps), dim=0), [X], device)


def test_std_mean_and_meshgrid(device: str) -> None:
    check(
        lambda t: torch.std_mean(t, 1) if isinstance(t, torch.Tensor) else ac.std_mean(t, 1),
        [X],
        device,
    )
    check(
        lambda t: (
            torch.var_mean(t, 0, correction=0)
            if isinstance(t, torch.Tensor)
            else t.var_mean(0, correction=0)
        ),
        [X],
        device,
    )
    a, b = rand(3), rand(4, seed=1)
    for indexing in ("ij", "xy"):
        check(
            lambda p, q, i=indexing: (torch if isinstance(p, torch.Tensor) else ac).meshgrid(
                p, q, indexing=i
            ),
            [a, b],
            device,
        )


def test_sign_has_a_zero_gradient(device: str) -> None:
    check(lambda t: t.sign(), [np.array([-2.0, 0.0, 3.0])], device)
    x = ac.tensor([-2.0, 0.0, 3.0], device=device, requires_grad=True)
    x.sign().sum().backward()
    assert x.grad is not None and x.grad.tolist() == [0.0, 0.0, 0.0]


def test_normalize_p0(device: str) -> None:
    x = rand(3, 5)
    x[0, 1] = 0.0
    check(
        lambda t: F.normalize(t, p=0, dim=1),
        [x],
        device,
        torch_fn=lambda t: TF.normalize(t, p=0, dim=1),
    )


def test_bit_shifts(device: str) -> None:
    a = np.array([1, -8, 7, 1 << 20, -1], dtype=np.int64)
    s = np.array([2, 1, 3, 4, 0], dtype=np.int64)
    ta, ts, xa, xs = (
        torch.tensor(a),
        torch.tensor(s),
        ac.tensor(a, device=device),
        ac.tensor(s, device=device),
    )
    np.testing.assert_array_equal((xa << xs).numpy(), (ta << ts).numpy())
    np.testing.assert_array_equal((xa >> xs).numpy(), (ta >> ts).numpy())
    np.testing.assert_array_equal((xa >> 2).numpy(), (ta >> 2).numpy())
    np.testing.assert_array_equal((3 << xs).numpy(), (3 << ts).numpy())
    np.testing.assert_array_equal(
        ac.bitwise_left_shift(xa, 1).numpy(), torch.bitwise_left_shift(ta, 1).numpy()
    )
    u = np.array([200, 7], dtype=np.uint8)
    np.testing.assert_array_equal(
        (ac.tensor(u, device=device) >> 2).numpy(), (torch.tensor(u) >> 2).numpy()
    )
    with pytest.raises(ac.DTypeError, match="bitwise shift: integer tensors only"):
        ac.ones(2) << 1


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_pad_modes(device: str, mode: str) -> None:
    check(
        lambda t: F.pad(t, (2, 1), mode=mode),
        [rand(2, 3, 5)],
        device,
        torch_fn=lambda t: TF.pad(t, (2, 1), mode=mode),
    )
    check(lambda t: F.pad(t, (1, 2, 2, 0), mode=mode), [rand(1, 2, 4, 5)], device,
          torch_fn=lambda t: TF.pad(t, (1, 2, 2, 0), mode=mode))  # fmt: skip


def test_pad_mode_errors() -> None:
    with pytest.raises(ac.ShapeError, match="pad: reflect padding"):
        F.pad(ac.ones(1, 1, 3), (3, 0), mode="reflect")
    with pytest.raises(ac.Error, match="pad: mode must be one of"):
        F.pad(ac.ones(1, 1, 3), (1, 0), mode="typo")


def test_dtype_views(device: str) -> None:
    x = np.array([[1.0, -2.5], [0.0, 3.0]], dtype=np.float32)
    got = ac.tensor(x, device=device).view(ac.int32)
    assert got.dtype is ac.int32 and got.device == device
    np.testing.assert_array_equal(got.numpy(), torch.tensor(x).view(torch.int32).numpy())
    np.testing.assert_array_equal(
        ac.tensor(x, device=device).view(ac.uint8).numpy(),
        torch.tensor(x).view(torch.uint8).numpy(),
    )
    back = got.view(ac.float32)
    np.testing.assert_array_equal(back.numpy(), x)
