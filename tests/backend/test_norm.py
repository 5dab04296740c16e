"""BatchNorm1d/2d/3d and GroupNorm against torch.nn: outputs, gradients, running statistics
over several training steps (momentum, cumulative average), eval mode and shape errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import anychip as ac

BN = [
    ("BatchNorm1d", (6, 3), {}),
    ("BatchNorm1d", (4, 3, 5), {"momentum": 0.3}),
    ("BatchNorm2d", (2, 3, 4, 4), {}),
    ("BatchNorm2d", (3, 3, 2, 2), {"momentum": None}),
    ("BatchNorm2d", (2, 3, 2, 3), {"affine": False, "eps": 1e-3}),
    ("BatchNorm2d", (2, 3, 2, 3), {"track_running_stats": False}),
    ("BatchNorm3d", (2, 3, 2, 2, 2), {}),
]


def _close(a: Any, b: Any, tol: float = 2e-5) -> None:
    np.testing.assert_allclose(
        a.numpy() if isinstance(a, ac.Tensor) else a, b.detach().numpy(), rtol=tol, atol=tol
    )


@pytest.mark.parametrize(
    ("name", "shape", "kw"), BN, ids=[f"{n}-{len(s)}d-{','.join(k)}" for n, s, k in BN]
)
def test_batchnorm_train_then_eval(
    name: str, shape: tuple[int, ...], kw: dict[str, Any], device: str
) -> None:
    rng = np.random.default_rng(0)
    ours, theirs = getattr(ac.nn, name)(3, device=device, **kw), getattr(torch.nn, name)(3, **kw)
    if ours.affine:
        w, b = rng.standard_normal(3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
        ours.weight.data, ours.bias.data = ac.tensor(w, device=device), ac.tensor(b, device=device)
        theirs.weight.data, theirs.bias.data = torch.tensor(w), torch.tensor(b)
    for _ in range(3):
        x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
        xa, xt = (
            ac.tensor(x, device=device, requires_grad=True),
            torch.tensor(x, requires_grad=True),
        )
        ya, yt = ours(xa), theirs(xt)
        _close(ya, yt)
        g = rng.standard_normal(shape).astype(np.float32)
        (ya * ac.tensor(g, device=device)).sum().backward()
        (yt * torch.tensor(g)).sum().backward()
        _close(xa.grad, xt.grad, 1e-4)
        if ours.affine:
            _close(ours.weight.grad, theirs.weight.grad, 1e-4)
    if ours.track_running_stats:
        _close(ours.running_mean, theirs.running_mean)
        _close(ours.running_var, theirs.running_var)
        assert ours.num_batches_tracked.item() == theirs.num_batches_tracked.item() == 3
        assert set(ours.state_dict()) == set(theirs.state_dict())
    ours.eval(), theirs.eval()
    x = rng.standard_normal(shape).astype(np.float32)
    _close(ours(ac.tensor(x, device=device)), theirs(torch.tensor(x)))


@pytest.mark.parametrize(("groups", "shape"), [(1, (2, 4, 3)), (2, (2, 4, 3, 2)), (4, (3, 4))])
def test_groupnorm(groups: int, shape: tuple[int, ...], device: str) -> None:
    rng = np.random.default_rng(1)
    ours, theirs = ac.nn.GroupNorm(groups, 4, device=device), torch.nn.GroupNorm(groups, 4)
    w, b = rng.standard_normal(4).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    ours.weight.data, ours.bias.data = ac.tensor(w, device=device), ac.tensor(b, device=device)
    theirs.weight.data, theirs.bias.data = torch.tensor(w), torch.tensor(b)
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    xa, xt = ac.tensor(x, device=device, requires_grad=True), torch.tensor(x, requires_grad=True)
    ya, yt = ours(xa), theirs(xt)
    _close(ya, yt)
    ya.pow(2).sum().backward()
    yt.pow(2).sum().backward()
    _close(xa.grad, xt.grad, 1e-4)
    _close(ours.bias.grad, theirs.bias.grad, 1e-4)


def test_norm_errors_match_torch() -> None:
    for ours, theirs in (
        (
            lambda: ac.nn.BatchNorm2d(3)(ac.ones(2, 3)),
            lambda: torch.nn.BatchNorm2d(3)(torch.ones(2, 3)),
        ),
        (
            lambda: ac.nn.BatchNorm1d(3)(ac.ones(1, 3)),
            lambda: torch.nn.BatchNorm1d(3)(torch.ones(1, 3)),
        ),
        (lambda: ac.nn.GroupNorm(3, 4), lambda: torch.nn.GroupNorm(3, 4)),
    ):
        with pytest.raises(Exception) as want:
            theirs()
        with pytest.raises(ac.Error) as got:
            ours()
        assert isinstance(got.value, type(want.value))


def test_functional_forms(device: str) -> None:
    x = np.random.default_rng(2).standard_normal((4, 3, 2)).astype(np.float32)
    rm, rv = ac.zeros(3, device=device), ac.ones(3, device=device)
    trm, trv = torch.zeros(3), torch.ones(3)
    F, TF = ac.nn.functional, torch.nn.functional
    _close(
        F.batch_norm(ac.tensor(x, device=device), rm, rv, training=True, momentum=0.2),
        TF.batch_norm(torch.tensor(x), trm, trv, training=True, momentum=0.2),
    )
    _close(rm, trm)
    _close(rv, trv)
    _close(F.group_norm(ac.tensor(x, device=device), 3), TF.group_norm(torch.tensor(x), 3))
