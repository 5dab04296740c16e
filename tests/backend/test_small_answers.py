"""Smaller wrong answers of issue 9 (item 13), each against PyTorch or numpy on every device."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import anychip as ac

SRC = os.path.join(os.path.dirname(__file__), "..", "..", "src")

DIVISIONS: list[tuple[str, Callable[[Any], Any]]] = [
    ("x % 0", lambda x: x % 0),
    ("x // 0", lambda x: x // 0),
    ("fmod", lambda x: x.fmod(0)),
    ("remainder", lambda x: x.remainder(0)),
    ("div trunc", lambda x: x.div(0, rounding_mode="trunc")),
    ("div floor", lambda x: x.div(0, rounding_mode="floor")),
]


@pytest.mark.parametrize("name,f", DIVISIONS, ids=[n for n, _ in DIVISIONS])
def test_integer_division_by_scalar_zero_raises_as_torch(device: str, name: str, f: Any) -> None:
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        f(torch.tensor([5, -7, 3]))
    with pytest.raises(ac.DivisionByZeroError, match="division by zero") as info:
        f(ac.tensor([5, -7, 3], device=device))
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, ZeroDivisionError)
    # floats divide by zero as IEEE says, as torch
    got = f(ac.tensor([5.0, -7.0, 0.0], device=device)).numpy()
    np.testing.assert_array_equal(got, f(torch.tensor([5.0, -7.0, 0.0])).numpy())


def test_integer_zero_divisor_tensors_agree_across_devices(device: str) -> None:
    # (torch raises; checking data would cost a read-back per op: every device gives 0)
    x = ac.tensor([5, -7, 3], device=device)
    zeros = ac.zeros(3, dtype=ac.int64, device=device)  # a constant: once a KeyError on cpu
    varying = ac.tensor([0, 0, 2], device=device)
    assert (x % zeros).tolist() == (x // zeros).tolist() == x.fmod(zeros).tolist() == [0, 0, 0]
    assert (x % varying).tolist() == [0, 0, 1] and (x // varying).tolist() == [0, 0, 1]


def test_cos_of_large_arguments(device: str) -> None:
    vals = [1e20, -1e20, 3.4e38, 1e10, 1e5, 1.5707964, 3.0, -2.5, 0.0, 1e-30]
    for dt, tdt in ((ac.float32, torch.float32), (ac.float64, torch.float64)):
        got = ac.tensor(vals, dtype=dt, device=device).cos().numpy()
        want = torch.tensor(vals, dtype=tdt).cos().numpy()
        # float64: absolute error ~1e-16 near cos's zeros (as sin(x + pi/2) had)
        f32 = dt is ac.float32
        np.testing.assert_allclose(got, want, rtol=2e-7 if f32 else 1e-13, atol=0 if f32 else 1e-15)
    assert ac.tensor([1e20], device=device).cos().item() == pytest.approx(0.7542593, abs=1e-6)


def test_cos_gradient(device: str) -> None:
    x = ac.tensor([1e3, 0.5, -2.0], device=device, requires_grad=True)
    x.cos().sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), -np.sin(np.float32([1e3, 0.5, -2.0])), rtol=1e-5)


def bags_reference(idx: np.ndarray, w: np.ndarray, offsets: list[int], mode: str) -> np.ndarray:
    """embedding_bag with include_last_offset by hand: bag b is idx[offsets[b]:offsets[b+1]].
    (torch is no reference here: its mean divides the last bag by len(input) - offsets[-2],
    and max mode with a single offset crashes it.)"""
    out = np.zeros((len(offsets) - 1, w.shape[1]), np.float64)
    for b in range(len(offsets) - 1):
        rows = w[idx[offsets[b] : offsets[b + 1]]].astype(np.float64)
        if len(rows):
            out[b] = {"sum": rows.sum(0), "mean": rows.mean(0), "max": rows.max(0)}[mode]
    return out


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("offsets", [[0, 2, 4, 6], [0, 2, 4, 8], [0, 3, 3, 5], [0]])
def test_embedding_bag_include_last_offset(device: str, mode: str, offsets: list[int]) -> None:
    w = np.arange(20, dtype=np.float32).reshape(10, 2)
    idx = np.array([1, 2, 4, 5, 4, 3, 2, 9])
    got = ac.nn.functional.embedding_bag(
        ac.tensor(idx, device=device),
        ac.tensor(w, device=device),
        ac.tensor(offsets, device=device),
        mode=mode,
        include_last_offset=True,
    )
    np.testing.assert_allclose(got.numpy(), bags_reference(idx, w, offsets, mode), rtol=1e-6)
    if mode == "sum":  # torch agrees where it is right
        want = torch.nn.functional.embedding_bag(
            torch.tensor(idx),
            torch.tensor(w),
            torch.tensor(offsets),
            mode="sum",
            include_last_offset=True,
        )
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


def test_abs_of_negative_zero_is_positive_zero(device: str) -> None:
    for dt in (ac.float32, ac.float64, ac.float16, ac.bfloat16):
        got = ac.tensor([0.0, -0.0, -2.0, float("-inf")], dtype=dt, device=device).abs()
        out = got.float().numpy()
        want = torch.tensor([0.0, -0.0, -2.0, float("-inf")]).abs().numpy()
        np.testing.assert_array_equal(out, want)
        assert not np.signbit(out).any(), (dt, out)


def test_anychip_debug_accepts_non_integers_with_a_warning() -> None:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(SRC), "ANYCHIP_DEBUG": "yes"}
    code = "import anychip as ac; print((ac.ones(2, device='ref') + 1).tolist())"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "[2.0, 2.0]" in r.stdout
    assert "ANYCHIP_DEBUG='yes' is not an integer" in r.stderr


def test_cat_keeps_negative_zero_and_nan(device: str) -> None:
    # cat picks each part by a select: a sum of zero-padded parts turned -0.0 into +0.0
    a = np.array([[-0.0, np.nan], [1.0, -0.0]], np.float32)
    b = np.array([[-0.0], [np.inf]], np.float32)
    for dim in (0, 1):
        bb = b if dim == 1 else b.T
        got = ac.cat([ac.tensor(a, device=device), ac.tensor(bb, device=device)], dim).numpy()
        want = np.concatenate([a, bb], dim)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
