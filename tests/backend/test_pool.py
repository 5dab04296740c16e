"""Pooling and resizing (max/avg/adaptive pools, max_unpool, interpolate, their nn modules)
against PyTorch: forward values and gradients, on every device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import anychip as ac
import anychip.nn.functional as F
from helpers import check, rand

TF = torch.nn.functional


def _perm(*shape: int, seed: int = 0) -> np.ndarray:
    # distinct values: no ties, so max gradients are unambiguous
    n = int(np.prod(shape))
    return np.random.default_rng(seed).permutation(n).reshape(shape).astype(np.float64) / n


MAX = [
    ("max_pool1d", (2, 3, 9), {"kernel_size": 3}),
    ("max_pool1d", (2, 3, 10), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    ("max_pool2d", (2, 3, 6, 7), {"kernel_size": 2}),
    ("max_pool2d", (1, 2, 7, 7), {"kernel_size": 3, "stride": 2, "padding": 1}),
    ("max_pool2d", (1, 2, 8, 7), {"kernel_size": (2, 3), "stride": 2, "dilation": 2}),
    ("max_pool2d", (1, 2, 7, 6), {"kernel_size": 3, "stride": 2, "ceil_mode": True}),
    ("max_pool2d", (2, 5, 5), {"kernel_size": 2}),  # unbatched
    ("max_pool3d", (1, 2, 4, 5, 4), {"kernel_size": 2, "stride": (1, 2, 2)}),
]


@pytest.mark.parametrize(("name", "shape", "kw"), MAX)
def test_max_pool_matches_torch(device: str, name: str, shape: tuple, kw: dict) -> None:
    check(
        lambda x: getattr(F, name)(x, **kw),
        [_perm(*shape)],
        device,
        torch_fn=lambda x: getattr(TF, name)(x, **kw),
        dtype="float32",
    )


@pytest.mark.parametrize(("name", "shape", "kw"), MAX[:7])
def test_max_pool_indices_match_torch(device: str, name: str, shape: tuple, kw: dict) -> None:
    x = _perm(*shape).astype(np.float32)
    out, idx = getattr(F, name)(ac.tensor(x, device=device), return_indices=True, **kw)
    tout, tidx = getattr(TF, name)(torch.tensor(x), return_indices=True, **kw)
    np.testing.assert_array_equal(out.numpy(), tout.numpy())
    np.testing.assert_array_equal(idx.numpy(), tidx.numpy())
    assert idx.dtype is ac.int64


def test_max_unpool2d_matches_torch(device: str) -> None:
    x = _perm(2, 3, 6, 6).astype(np.float32)
    _, idx = TF.max_pool2d(torch.tensor(x), 2, return_indices=True)
    vals = rand(2, 3, 3, 3)

    def ours(v: ac.Tensor) -> ac.Tensor:
        return F.max_unpool2d(v, ac.tensor(idx.numpy(), device=device), 2)

    check(ours, [vals], device, torch_fn=lambda v: TF.max_unpool2d(v, idx, 2))


AVG = [
    ("avg_pool1d", (2, 3, 9), {"kernel_size": 3}),
    ("avg_pool1d", (2, 3, 10), {"kernel_size": 4, "stride": 3, "padding": 2, "ceil_mode": True}),
    ("avg_pool2d", (2, 3, 6, 7), {"kernel_size": 2}),
    ("avg_pool2d", (1, 2, 7, 7), {"kernel_size": 3, "stride": 2, "padding": 1}),
    (
        "avg_pool2d",
        (1, 2, 7, 7),
        {"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False},
    ),
    ("avg_pool2d", (1, 2, 7, 6), {"kernel_size": 3, "stride": 2, "ceil_mode": True, "padding": 1}),
    (
        "avg_pool2d",
        (1, 2, 8, 5),
        {"kernel_size": 3, "stride": 2, "ceil_mode": True, "count_include_pad": False},
    ),
    ("avg_pool2d", (1, 2, 6, 6), {"kernel_size": 2, "divisor_override": 3}),
    ("avg_pool3d", (1, 2, 4, 5, 4), {"kernel_size": 2, "stride": (1, 2, 2), "padding": 1}),
]


@pytest.mark.parametrize(("name", "shape", "kw"), AVG)
def test_avg_pool_matches_torch(device: str, name: str, shape: tuple, kw: dict) -> None:
    check(
        lambda x: getattr(F, name)(x, **kw),
        [rand(*shape)],
        device,
        torch_fn=lambda x: getattr(TF, name)(x, **kw),
    )


@pytest.mark.parametrize(
    ("name", "shape", "size"),
    [
        ("adaptive_avg_pool1d", (2, 3, 10), 4),
        ("adaptive_avg_pool2d", (2, 3, 7, 9), (3, 4)),
        ("adaptive_avg_pool2d", (2, 3, 7, 9), 1),
        ("adaptive_avg_pool2d", (2, 3, 7, 9), (None, 5)),
        ("adaptive_avg_pool3d", (1, 2, 5, 4, 6), (2, 3, 4)),
        ("adaptive_max_pool2d", (2, 3, 7, 9), (3, 4)),
        ("adaptive_max_pool1d", (2, 3, 10), 3),
    ],
)
def test_adaptive_pools_match_torch(device: str, name: str, shape: tuple, size: object) -> None:
    check(
        lambda x: getattr(F, name)(x, size),
        [_perm(*shape)],
        device,
        torch_fn=lambda x: getattr(TF, name)(x, size),
    )


@pytest.mark.parametrize(
    ("shape", "kw"),
    [
        ((2, 3, 5), {"scale_factor": 2}),
        ((2, 3, 5), {"size": 7}),
        ((2, 3, 4, 5), {"scale_factor": 2, "mode": "nearest"}),
        ((2, 3, 4, 5), {"size": (3, 7), "mode": "nearest"}),
        ((2, 3, 4, 5), {"scale_factor": 2, "mode": "bilinear", "align_corners": False}),
        ((2, 3, 4, 5), {"size": (7, 3), "mode": "bilinear", "align_corners": True}),
        ((2, 3, 4, 5), {"scale_factor": 1.5, "mode": "bilinear"}),
        ((2, 3, 6), {"size": 4, "mode": "linear", "align_corners": False}),
        ((1, 2, 3, 4, 3), {"scale_factor": 2, "mode": "trilinear"}),
        ((2, 3, 5, 7), {"size": (9, 4), "mode": "bicubic"}),
        ((2, 3, 5, 7), {"scale_factor": 1.7, "mode": "bicubic", "align_corners": True}),
        ((2, 3, 5, 7), {"scale_factor": (0.6, 2.3), "mode": "bicubic"}),
        ((2, 3, 10), {"size": 4, "mode": "area"}),
        ((2, 3, 5, 7), {"scale_factor": (0.6, 2.3), "mode": "area"}),
        ((2, 3, 7), {"scale_factor": 2.3, "mode": "nearest-exact"}),
        ((2, 3, 5, 7), {"size": (3, 11), "mode": "nearest-exact"}),
        # an axis that keeps its size under a scale: torch's kernels differ by rank and mode
        ((2, 3, 3, 3), {"scale_factor": 1.1, "mode": "nearest"}),
        ((2, 3, 3, 3), {"scale_factor": 1.1, "mode": "bilinear"}),
    ],
)
def test_interpolate_matches_torch(device: str, shape: tuple, kw: dict) -> None:
    check(
        lambda x: F.interpolate(x, **kw),
        [rand(*shape)],
        device,
        torch_fn=lambda x: TF.interpolate(x, **kw),
    )


@pytest.mark.parametrize(("shape", "mode"), [((2, 3, 3), "nearest"), ((2, 3, 3, 3), "bicubic")])
def test_interpolate_keeping_size_under_a_scale_follows_torch_forward(
    device: str, shape: tuple, mode: str
) -> None:
    # torch's forward kernels move these picks while its backward kernels copy the axis;
    # anychip's gradient is the derivative of the forward it computes, so only the values
    # are compared with torch here
    x = rand(*shape)
    got = F.interpolate(ac.tensor(x, device=device), scale_factor=1.1, mode=mode)
    want = TF.interpolate(torch.tensor(x), scale_factor=1.1, mode=mode)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("cls", "args", "kw", "shape"),
    [
        ("MaxPool1d", (3,), {"stride": 2}, (2, 3, 9)),
        ("MaxPool2d", (2,), {}, (2, 3, 6, 6)),
        ("MaxPool3d", (2,), {}, (1, 2, 4, 4, 4)),
        ("AvgPool1d", (3,), {"padding": 1}, (2, 3, 9)),
        ("AvgPool2d", (3,), {"stride": 2, "count_include_pad": False, "padding": 1}, (2, 3, 7, 7)),
        ("AvgPool3d", (2,), {}, (1, 2, 4, 4, 4)),
        ("AdaptiveAvgPool1d", (3,), {}, (2, 3, 8)),
        ("AdaptiveAvgPool2d", ((1, 1),), {}, (2, 3, 5, 5)),
        ("AdaptiveAvgPool3d", (2,), {}, (1, 2, 4, 5, 3)),
        ("AdaptiveMaxPool2d", (2,), {}, (2, 3, 5, 5)),
        ("Upsample", (), {"scale_factor": 2, "mode": "nearest"}, (1, 2, 3, 3)),
        ("Upsample", (), {"size": (5, 4), "mode": "bilinear", "align_corners": True}, (1, 2, 3, 3)),
    ],
)
def test_pool_modules_match_torch(
    device: str, cls: str, args: tuple, kw: dict, shape: tuple
) -> None:
    check(
        lambda x: getattr(ac.nn, cls)(*args, **kw)(x),
        [_perm(*shape)],
        device,
        torch_fn=lambda x: getattr(torch.nn, cls)(*args, **kw)(x),
    )


def test_max_pool_module_return_indices_and_unpool(device: str) -> None:
    x = ac.tensor(_perm(1, 1, 4, 4).astype(np.float32), device=device)
    out, idx = ac.nn.MaxPool2d(2, return_indices=True)(x)
    back = ac.nn.MaxUnpool2d(2)(out, idx)
    t_out, t_idx = torch.nn.MaxPool2d(2, return_indices=True)(torch.tensor(x.numpy()))
    np.testing.assert_array_equal(back.numpy(), torch.nn.MaxUnpool2d(2)(t_out, t_idx).numpy())


def test_pool_errors() -> None:
    with pytest.raises(ac.ShapeError, match=r"max_pool2d: expected a 3-d \(unbatched\) or 4-d"):
        F.max_pool2d(ac.ones(4, 4), 2)
    with pytest.raises(ac.ArgumentError, match=r"max_pool2d: padding 2 must be at most half"):
        F.max_pool2d(ac.ones(1, 1, 8, 8), 3, padding=2)
    with pytest.raises(ac.ArgumentError, match=r"interpolate: mode must be"):
        F.interpolate(ac.ones(1, 1, 4), size=3, mode="cubic")
    with pytest.raises(ac.ArgumentError, match=r"exactly one of size and scale_factor"):
        F.interpolate(ac.ones(1, 1, 4))


@pytest.mark.parametrize(
    ("out", "k", "d", "p", "s"),
    [((5, 6), 2, 1, 0, 1), ((7, 5), (3, 2), (2, 1), (1, 2), (2, 1)), ((4, 4), 3, 1, 1, 1)],
)
def test_fold_matches_torch(
    device: str, out: tuple, k: object, d: object, p: object, s: object
) -> None:
    kk = 9 if k == 3 else 4 if k == 2 else 6
    blocks = TF.unfold(torch.zeros(1, 1, *out), k, d, p, s).shape[-1]
    check(
        lambda x: F.fold(x, out, k, d, p, s),
        [rand(2, 3 * kk, blocks)],
        device,
        torch_fn=lambda x: TF.fold(x, out, k, d, p, s),
    )
    x = rand(3 * kk, blocks)  # unbatched, through the module
    got = ac.nn.Fold(out, k, d, p, s)(ac.tensor(x, device=device)).numpy()
    np.testing.assert_allclose(got, torch.nn.Fold(out, k, d, p, s)(torch.tensor(x)).numpy())


def test_fold_rejects_inputs_that_do_not_tile() -> None:
    with pytest.raises(RuntimeError, match=r"fold: input shapes \(1, 5, 4\).*divisible by 4"):
        F.fold(ac.ones(1, 5, 4), (3, 3), 2)
