"""Tensor creation and conversion against PyTorch and numpy: dtype inference, constants,
ranges, dtype conversions (bfloat16 round trips), seeded random numbers and their
statistics, repr and the ways back to Python and numpy."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

import anychip as ac

DTYPES = ["float64", "float32", "float16", "bfloat16", "int8", "uint8", "int32", "int64", "bool"]


def _name(dt: Any) -> str:
    return str(dt).split(".")[-1]


DATA = [
    [1, 2, 3],
    [1.0, 2.0],
    [[1, 2.5], [3, 4]],
    True,
    [True, False],
    3,
    -2.5,
    [],
    [[]],
    [[[1], [2]]],
]


@pytest.mark.parametrize("data", DATA, ids=str)
def test_tensor_from_python_infers_dtype(data: Any, device: str) -> None:
    t, want = ac.tensor(data, device=device), torch.tensor(data)
    assert t.dtype.name == _name(want.dtype)
    assert t.shape == tuple(want.shape) and t.ndim == want.ndim
    assert t.tolist() == want.tolist()
    assert t.device == device


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(6, dtype=np.int32).reshape(2, 3),
        np.linspace(0, 1, 4),
        np.array([1.5, 2.5], dtype=np.float16),
        np.array([True, False]),
        np.array([200, 3], dtype=np.uint8),
        np.array(2.0),
        np.float64(2.0),
        np.int8(-3),
    ],
    ids=lambda a: f"{type(a).__name__}-{a.dtype}",
)
def test_tensor_from_numpy_keeps_dtype(arr: Any, device: str) -> None:
    t, want = ac.tensor(arr, device=device), torch.tensor(arr)
    assert t.dtype.name == _name(want.dtype)
    assert t.shape == tuple(want.shape)
    np.testing.assert_array_equal(t.numpy(), want.numpy())
    assert t.numpy().dtype == want.numpy().dtype


@pytest.mark.parametrize("dt", DTYPES)
def test_tensor_with_dtype(dt: str, device: str) -> None:
    data = [[0, 1, 2], [3, 1, 0]]
    t, want = ac.tensor(data, dtype=getattr(ac, dt), device=device), torch.tensor(data)
    want = want.to(getattr(torch, dt))
    assert t.dtype is getattr(ac, dt) and t.dtype.name == _name(want.dtype)
    assert t.tolist() == want.tolist()


def test_tensor_from_tensor_and_requires_grad(device: str) -> None:
    a = ac.tensor([1.0, 2.0], device=device, requires_grad=True)
    b = ac.tensor(a, dtype=ac.float64)
    assert b.dtype is ac.float64 and not b.requires_grad and b.tolist() == [1.0, 2.0]
    assert a.requires_grad and a.is_leaf and a.grad is None
    assert ac.Tensor([1, 2]).dtype is ac.int64


FACTORIES = {
    "zeros": (lambda m, **k: m.zeros(2, 3, **k)),
    "zeros_tuple": (lambda m, **k: m.zeros((2, 3), **k)),
    "ones": (lambda m, **k: m.ones(4, **k)),
    "ones_0d": (lambda m, **k: m.ones((), **k)),
    "empty_shape": (lambda m, **k: m.zeros(0, 3, **k)),
    "full": (lambda m, **k: m.full((2, 2), 3, **k)),
    "eye": (lambda m, **k: m.eye(3, **k)),
    "eye_rect": (lambda m, **k: m.eye(2, 4, **k)),
    "arange": (lambda m, **k: m.arange(5, **k)),
    "arange_start_step": (lambda m, **k: m.arange(2, 11, 3, **k)),
    "arange_negative_step": (lambda m, **k: m.arange(5, -1, -2, **k)),
    "linspace": (lambda m, **k: m.linspace(-1, 2, 7, **k)),
    "linspace_one": (lambda m, **k: m.linspace(3, 9, 1, **k)),
    "linspace_zero": (lambda m, **k: m.linspace(3, 9, 0, **k)),
}


@pytest.mark.parametrize("dt", [None, "float64", "int32", "float16"])
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_factories(name: str, dt: str | None, device: str) -> None:
    fn = FACTORIES[name]
    want = fn(torch, **({"dtype": getattr(torch, dt)} if dt else {}))
    got = fn(ac, device=device, **({"dtype": getattr(ac, dt)} if dt else {}))
    assert got.dtype.name == _name(want.dtype)
    assert got.shape == tuple(want.shape)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-6)


def test_full_and_arange_infer_dtype(device: str) -> None:
    for value in (1.5, 7, True):
        assert ac.full((2,), value, device=device).dtype.name == _name(
            torch.full((2,), value).dtype
        )
    assert ac.arange(5.0, device=device).dtype is ac.float32
    assert ac.arange(0, 1, 0.1, device=device).shape == (10,)
    np.testing.assert_allclose(
        ac.arange(0, 1, 0.1, device=device).numpy(), torch.arange(0, 1, 0.1).numpy(), atol=1e-7
    )
    assert ac.empty(2, 3, device=device).shape == (2, 3)


def test_like_factories(device: str) -> None:
    x = ac.tensor([[1, 2, 3]], dtype=ac.int32, device=device)
    for fn, val in ((ac.zeros_like, 0), (ac.ones_like, 1), (ac.empty_like, 0)):
        out = fn(x)
        assert out.dtype is ac.int32 and out.shape == (1, 3) and out.device == device
        if fn is not ac.empty_like:
            assert out.tolist() == [[val] * 3]
    f = ac.full_like(x, 2.5, dtype=ac.float64)
    assert f.dtype is ac.float64 and f.tolist() == [[2.5] * 3]
    assert ac.zeros_like(x, dtype=ac.float16).dtype is ac.float16
    g = ac.ones_like(ac.zeros(2, device=device), requires_grad=True)
    assert g.requires_grad and g.is_leaf


CONVERSIONS = {
    "float": lambda x: x.float(),
    "double": lambda x: x.double(),
    "half": lambda x: x.half(),
    "bfloat16": lambda x: x.bfloat16(),
    "long": lambda x: x.long(),
    "int": lambda x: x.int(),
    "bool": lambda x: x.bool(),
}


@pytest.mark.parametrize("src", ["float32", "float64", "int32", "bool"])
@pytest.mark.parametrize("conv", sorted(CONVERSIONS))
def test_conversions(conv: str, src: str, device: str) -> None:
    data = np.array([[-2.7, -1.5, -0.5, 0.0], [0.4, 1.5, 2.5, 300.25]])
    tx = torch.tensor(data).to(getattr(torch, src))
    ax = ac.tensor(data, device=device).to(getattr(ac, src))
    want, got = CONVERSIONS[conv](tx), CONVERSIONS[conv](ax)
    assert got.dtype.name == _name(want.dtype)
    np.testing.assert_array_equal(
        got.numpy(), want.float().numpy() if conv == "bfloat16" else want.numpy()
    )


@pytest.mark.parametrize("dt", DTYPES)
def test_to_and_type(dt: str, device: str) -> None:
    data = [[0.0, 1.0], [2.0, 3.0]]
    x = ac.tensor(data, device=device)
    for y in (x.to(getattr(ac, dt)), x.to(dtype=getattr(ac, dt)), x.to(dt), x.type(dt)):
        assert y.dtype is getattr(ac, dt)
        assert y.tolist() == torch.tensor(data).to(getattr(torch, dt)).tolist()
    assert x.to(device).dtype is ac.float32
    assert x.to(device, ac.float64).dtype is ac.float64
    assert x.to(ac.zeros(1, dtype=ac.int8, device=device)).dtype is ac.int8


def test_bfloat16_round_trip(device: str) -> None:
    # every bfloat16 value survives float32 -> bfloat16 -> float32; others round to nearest
    # even like torch, including NaN, infinities, subnormals and the largest finite value
    bits = np.arange(0, 2**16, 97, dtype=np.uint32).astype(np.uint32) << 16
    exact = bits.view(np.float32)
    exact = exact[~np.isnan(exact)]
    out = ac.tensor(exact, device=device).bfloat16().float().numpy()
    np.testing.assert_array_equal(out, exact)
    rng = np.random.default_rng(0)
    vals = np.concatenate(
        [
            rng.standard_normal(500).astype(np.float32) * 1e3,
            np.array([np.inf, -np.inf, 1e-40, 3.4e38, 1.00390625, 1.01171875], np.float32),
        ]
    )
    got = ac.tensor(vals, device=device).to(ac.bfloat16)
    want = torch.from_numpy(vals).to(torch.bfloat16)
    np.testing.assert_array_equal(got.numpy(), want.float().numpy())
    assert got.numpy().dtype == np.float32
    assert np.isnan(ac.tensor([np.nan], device=device).bfloat16().item())


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_filled_halves_hold_rounded_values(dtype: str, device: str) -> None:
    # a filled half tensor holds the half nearest its fill, read back in any wider dtype
    for fill in (0.1, -1.7, 3e38 if dtype == "bfloat16" else 6e4, 1e-40, 257.0):
        want = torch.full((2,), fill, dtype=getattr(torch, dtype)).double().numpy()
        got = ac.full((2,), fill, dtype=getattr(ac, dtype), device=device)
        np.testing.assert_array_equal(got.double().numpy(), want)
        np.testing.assert_array_equal(got.float().numpy(), want.astype(np.float32))


def test_full_refuses_ints_the_dtype_cannot_hold(device: str) -> None:
    # as torch.full: an overflowing fill raises RuntimeError; a negative fill of an unsigned
    # dtype wraps (-1 -> 255); in-range fills are kept
    for fill, dt in ((300, "int8"), (2**40, "int32"), (2**63, "int64"), (-129, "int8")):
        with pytest.raises(RuntimeError):
            torch.full((1,), fill, dtype=getattr(torch, dt))
        with pytest.raises(RuntimeError, match=f"full: value {fill} cannot be converted to {dt}"):
            ac.full((1,), fill, dtype=getattr(ac, dt), device=device)
    for fill, dt in ((-1, "uint8"), (127, "int8"), (2**63 - 1, "int64"), (-(2**31), "int32")):
        want = torch.full((2,), fill, dtype=getattr(torch, dt)).tolist()
        assert ac.full((2,), fill, dtype=getattr(ac, dt), device=device).tolist() == want


def test_float16_overflow_and_int_truncation(device: str) -> None:
    x = ac.tensor([1e10, -1e10, 65504.0], device=device).half()
    assert x.tolist() == torch.tensor([1e10, -1e10, 65504.0]).half().tolist()
    y = ac.tensor([1.9, -1.9, -0.5, 2.5], device=device)
    assert y.int().tolist() == [1, -1, 0, 2] == torch.tensor([1.9, -1.9, -0.5, 2.5]).int().tolist()
    assert ac.tensor([300], device=device).to(ac.uint8).tolist() == [44]


SCALAR_MIXES = {
    "uint8 + negative": lambda m, d: m.tensor([1, 5], dtype=m.uint8, device=d) + (-2),
    "uint8 * big": lambda m, d: m.tensor([1, 5], dtype=m.uint8, device=d) * 300,
    "int8 + big": lambda m, d: m.tensor([1, 5], dtype=m.int8, device=d) + 200,
    "full uint8 -1": lambda m, d: m.full((2,), -1, dtype=m.uint8, device=d),
    "uint8 < -1": lambda m, d: m.tensor([1, 5], dtype=m.uint8, device=d) < -1,
    "bool square": lambda m, d: m.tensor([True, False], device=d).square(),
    "bool pow": lambda m, d: m.tensor([True, False], device=d) ** 2,
    "bool sign": lambda m, d: m.tensor([True, False], device=d).sign(),
    "int32 pow": lambda m, d: m.tensor([3, -2], dtype=m.int32, device=d) ** 2,
}


@pytest.mark.parametrize("name", sorted(SCALAR_MIXES))
def test_python_scalars_with_integer_tensors(name: str, device: str) -> None:
    # torch wraps an out-of-range Python int into the tensor's integer type
    got = SCALAR_MIXES[name](ac, device)
    want = SCALAR_MIXES[name](torch, "cpu")
    assert got.dtype.name == _name(want.dtype) and got.tolist() == want.tolist()


def test_manual_seed_determinism(device: str) -> None:
    ac.manual_seed(123)
    a = (ac.rand(3, 4, device=device), ac.randn(5, device=device), ac.randint(0, 10, (6,)))
    ac.manual_seed(123)
    b = (ac.rand(3, 4, device=device), ac.randn(5, device=device), ac.randint(0, 10, (6,)))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    ac.manual_seed(124)
    assert not np.array_equal(ac.rand(3, 4, device=device).numpy(), a[0].numpy())
    # the stream moves on: two draws after one seed differ
    ac.manual_seed(0)
    assert not np.array_equal(ac.rand(8).numpy(), ac.rand(8).numpy())


def test_random_same_on_every_device() -> None:
    vals = []
    for dev in ac.devices():
        ac.manual_seed(7)
        vals.append(ac.randn(16, device=dev).numpy())
    for v in vals[1:]:
        np.testing.assert_array_equal(v, vals[0])


def _z(sample_mean: float, mean: float, var: float, n: int) -> float:
    return abs(sample_mean - mean) / math.sqrt(var / n)


def test_random_statistics(device: str) -> None:
    n = 20000
    ac.manual_seed(1)
    u = ac.rand(n, device=device).numpy().astype(np.float64)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert _z(u.mean(), 0.5, 1 / 12, n) < 5
    # the sample variance of n draws has standard error sqrt((mu4 - var^2) / n)
    assert abs(u.var() - 1 / 12) < 5 * math.sqrt((1 / 80 - 1 / 144) / n)
    z = ac.randn(n, device=device).numpy().astype(np.float64)
    assert _z(z.mean(), 0.0, 1.0, n) < 5
    assert abs(z.var() - 1.0) < 5 * math.sqrt(2 / n)
    assert abs(float(np.mean(np.abs(z) < 1)) - 0.6827) < 5 * math.sqrt(0.6827 * 0.3173 / n)
    r = ac.randint(-3, 5, (n,), device=device)
    assert r.dtype is ac.int64
    counts = np.bincount(r.numpy() + 3, minlength=8)
    assert counts.size == 8 and r.numpy().min() == -3 and r.numpy().max() == 4
    # chi-square with 7 degrees of freedom: 30 is far beyond its 99.99th percentile (~29.9)
    chi2 = float((((counts - n / 8) ** 2) / (n / 8)).sum())
    assert chi2 < 30


@pytest.mark.parametrize("dt", ["float16", "bfloat16", "float32"])
def test_rand_stays_below_one_in_narrow_dtypes(dt: str, device: str) -> None:
    # a float64 uniform in [1 - 2**-12, 1) rounds to 1.0 in float16 (1 in 4096 draws)
    ac.manual_seed(3)
    u = ac.rand(40000, dtype=getattr(ac, dt), device=device).numpy()
    assert u.min() >= 0.0 and u.max() < 1.0


def test_random_dtypes_and_shapes(device: str) -> None:
    ac.manual_seed(2)
    assert ac.rand(2, 3, dtype=ac.float64, device=device).dtype is ac.float64
    assert ac.randn((4,), dtype=ac.float16, device=device).shape == (4,)
    assert ac.rand((), device=device).shape == ()
    assert ac.rand(0, 3, device=device).shape == (0, 3)
    x = ac.rand(2, 2, requires_grad=True)
    assert x.requires_grad and x.is_leaf
    assert ac.randint(5, (3, 2)).shape == (3, 2)
    assert ac.rand_like(x).shape == (2, 2) and ac.randn_like(x).dtype is ac.float32
    p = ac.randperm(10).tolist()
    assert sorted(p) == list(range(10))


def test_repr(device: str) -> None:
    r = repr(ac.tensor([1.0, 2.0], device=device))
    assert r.startswith("tensor([1., 2.]") and f"device='{device}'" in r
    assert "dtype=anychip.int32" in repr(ac.tensor([1], dtype=ac.int32, device=device))
    assert "dtype" not in repr(ac.tensor([1], device=device))
    assert "requires_grad=True" in repr(ac.ones(2, requires_grad=True, device=device))
    assert "grad_fn" in repr(ac.ones(2, requires_grad=True, device=device) * 2)
    assert "bfloat16" in repr(ac.ones(2, dtype=ac.bfloat16, device=device))
    assert repr(ac.tensor(3.5, device=device)).startswith("tensor(3.5")
    assert str(ac.zeros(0, device=device)).startswith("tensor([]")


def test_host_access(device: str) -> None:
    t = ac.tensor([[1.5, 2.0], [3.0, 4.5]], device=device)
    assert isinstance(t.item, object) and ac.tensor(2.5, device=device).item() == 2.5
    assert isinstance(ac.tensor([7], device=device).item(), int)
    assert isinstance(ac.tensor(True, device=device).item(), bool)
    assert t.tolist() == [[1.5, 2.0], [3.0, 4.5]]
    assert ac.tensor(2.0, device=device).tolist() == 2.0
    a = np.asarray(t)
    assert a.dtype == np.float32 and a.shape == (2, 2)
    np.testing.assert_array_equal(np.array(t, dtype=np.float64), a.astype(np.float64))
    n = t.numpy()
    n[0, 0] = 100.0  # a copy: writing to it leaves the tensor alone
    assert t.tolist()[0][0] == 1.5
    assert float(ac.tensor([2.5])) == 2.5 and int(ac.tensor([3])) == 3
    assert bool(ac.tensor([1])) and not bool(ac.tensor(0.0))
    assert t.numel() == 4 and t.size() == (2, 2) and t.size(-1) == 2
    assert len(t) == 2 and t.element_size() == 4 and t.dim() == 2
    b = ac.tensor([1.0, 2.0], dtype=ac.bfloat16, device=device)
    assert b.numpy().dtype == np.float32 and b.tolist() == [1.0, 2.0]


def test_realize_and_contiguous(device: str) -> None:
    x = ac.tensor([1.0, 2.0], device=device)
    y = (x * 2 + 1).realize()
    assert y.tolist() == [3.0, 5.0]
    assert y.contiguous() is y
    assert (y + y).tolist() == [6.0, 10.0]
