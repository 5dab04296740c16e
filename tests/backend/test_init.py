"""Initialisers: the statistics of the values drawn against the distributions' formulas,
with fans and gains computed by PyTorch's own helpers as the reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import anychip as ac
from anychip import nn
from anychip.nn import init

N = 200_000  # samples per check: the mean's standard error is std / 447


def _erf_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _ks(sample: np.ndarray, cdf: object) -> float:
    """Kolmogorov-Smirnov distance between the sample and the CDF."""
    s = np.sort(sample.astype(np.float64).reshape(-1))
    f = cdf(s)  # type: ignore[operator]
    n = len(s)
    return float(max((np.arange(1, n + 1) / n - f).max(), (f - np.arange(n) / n).max()))


def _assert_uniform(v: np.ndarray, lo: float, hi: float) -> None:
    assert v.min() >= lo and v.max() <= hi
    assert _ks(v, lambda s: (s - lo) / (hi - lo)) < 1.95 / math.sqrt(v.size)  # 0.1% level


def _assert_normal(v: np.ndarray, mean: float, std: float) -> None:
    assert abs(v.mean() - mean) < 5 * std / math.sqrt(v.size)
    assert abs(v.std() / std - 1) < 5 * math.sqrt(0.5 / v.size)
    n = 20_000  # the KS check on a subsample (math.erf per element is slow)
    assert _ks(v.reshape(-1)[:n], lambda s: _erf_cdf((s - mean) / std)) < 1.95 / math.sqrt(n)


def test_uniform_normal_constant(device: str) -> None:
    ac.manual_seed(0)
    _assert_uniform(init.uniform_(ac.empty(N, device=device), -2, 3).numpy(), -2, 3)
    _assert_normal(init.normal_(ac.empty(N, device=device), 1.5, 0.5).numpy(), 1.5, 0.5)
    assert init.constant_(ac.empty(3, device=device), 2.5).tolist() == [2.5] * 3
    assert init.zeros_(ac.ones(2, device=device)).tolist() == [0.0, 0.0]
    assert init.ones_(ac.zeros(2, device=device)).tolist() == [1.0, 1.0]
    assert init.eye_(ac.empty(2, 3)).tolist() == [[1, 0, 0], [0, 1, 0]]


def test_init_is_in_place_and_seeded(device: str) -> None:
    p = nn.Parameter(ac.zeros(4, 5, device=device))
    ac.manual_seed(7)
    assert init.xavier_uniform_(p) is p
    assert p.requires_grad and p.is_leaf
    first = p.numpy().copy()
    ac.manual_seed(7)
    np.testing.assert_array_equal(init.xavier_uniform_(p).numpy(), first)


@pytest.mark.parametrize("shape", [(400, 500), (64, 32, 3, 3)], ids=str)
def test_fan_based_inits(shape: tuple, device: str) -> None:
    ref = torch.empty(shape)
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(ref)
    ac.manual_seed(1)

    def draw(fn: object, **kw: object) -> np.ndarray:
        return fn(ac.empty(*shape, device=device), **kw).numpy()  # type: ignore[operator]

    a = math.sqrt(6 / (fan_in + fan_out))
    _assert_uniform(draw(init.xavier_uniform_), -a, a)
    g = torch.nn.init.calculate_gain("tanh")
    _assert_uniform(draw(init.xavier_uniform_, gain=g), -a * g, a * g)
    _assert_normal(draw(init.xavier_normal_), 0.0, math.sqrt(2 / (fan_in + fan_out)))
    for mode, fan in (("fan_in", fan_in), ("fan_out", fan_out)):
        gain = torch.nn.init.calculate_gain("relu")
        bound = gain * math.sqrt(3 / fan)
        _assert_uniform(draw(init.kaiming_uniform_, mode=mode, nonlinearity="relu"), -bound, bound)
        _assert_normal(
            draw(init.kaiming_normal_, mode=mode, nonlinearity="relu"), 0, gain / math.sqrt(fan)
        )
    gain = torch.nn.init.calculate_gain("leaky_relu", math.sqrt(5))
    bound = gain * math.sqrt(3 / fan_in)
    _assert_uniform(draw(init.kaiming_uniform_, a=math.sqrt(5)), -bound, bound)


def test_calculate_gain_matches_torch() -> None:
    for name in ("linear", "conv2d", "sigmoid", "tanh", "relu", "selu"):
        assert init.calculate_gain(name) == pytest.approx(torch.nn.init.calculate_gain(name))
    for slope in (None, 0.2, 3):
        assert init.calculate_gain("leaky_relu", slope) == pytest.approx(
            torch.nn.init.calculate_gain("leaky_relu", slope)
        )
    with pytest.raises(ValueError, match="unsupported nonlinearity 'swish'"):
        init.calculate_gain("swish")
    with pytest.raises(ac.ShapeError, match="fewer than 2 dimensions"):
        init.xavier_uniform_(ac.empty(5))
    with pytest.raises(ValueError, match="mode 'fan_avg' not supported"):
        init.kaiming_normal_(ac.empty(3, 3), mode="fan_avg")


def _truncated_moments(mean: float, std: float, a: float, b: float) -> tuple[float, float]:
    """Mean and standard deviation of N(mean, std^2) truncated to [a, b] (float64 math)."""
    al, be = (a - mean) / std, (b - mean) / std
    pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    z = cdf(be) - cdf(al)
    m = (pdf(al) - pdf(be)) / z
    var = 1 + (al * pdf(al) - be * pdf(be)) / z - m * m
    return mean + std * m, std * math.sqrt(var)


@pytest.mark.parametrize(
    "mean,std,a,b",
    [(0.0, 1.0, -2.0, 2.0), (0.0, 0.02, -0.04, 0.04), (1.0, 2.0, 0.0, 9.0), (0.0, 1.0, 3.0, 5.0)],
)
def test_trunc_normal(mean: float, std: float, a: float, b: float, device: str) -> None:
    ac.manual_seed(2)
    n = 50_000
    v = init.trunc_normal_(ac.empty(n, device=device), mean, std, a, b).numpy().astype(np.float64)
    assert v.min() >= a and v.max() <= b
    want_mean, want_std = _truncated_moments(mean, std, a, b)
    assert abs(v.mean() - want_mean) < 5 * want_std / math.sqrt(n)
    assert abs(v.std() / want_std - 1) < 0.02


def test_default_layer_inits_match_torch_distributions(device: str) -> None:
    ac.manual_seed(3)
    lin = nn.Linear(300, 400, device=device)
    bound = 1 / math.sqrt(300)  # what torch's kaiming_uniform_(a=sqrt(5)) comes to
    _assert_uniform(lin.weight.numpy(), -bound, bound)
    assert np.abs(lin.bias.numpy()).max() <= bound  # type: ignore[union-attr]
    emb = nn.Embedding(1000, 200, device=device)
    _assert_normal(emb.weight.numpy(), 0.0, 1.0)
    padded = nn.Embedding(10, 4, padding_idx=-1, device=device)
    assert padded.padding_idx == 9 and padded.weight.numpy()[9].tolist() == [0.0] * 4
    ln = nn.LayerNorm((3, 4), device=device)
    assert ln.weight.numpy().tolist() == [[1.0] * 4] * 3  # type: ignore[union-attr]
    assert ln.bias.numpy().tolist() == [[0.0] * 4] * 3  # type: ignore[union-attr]
    assert nn.RMSNorm(3).weight.tolist() == [1.0] * 3  # type: ignore[union-attr]
    half = nn.Linear(4, 4, dtype=ac.bfloat16, device=device)
    assert half.weight.dtype is ac.bfloat16 and np.abs(half.weight.numpy()).max() <= 0.5
