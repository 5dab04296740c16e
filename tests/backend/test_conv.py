"""Convolutions (F.conv*, F.conv_transpose*, nn.Conv*, nn.ConvTranspose*) against PyTorch:
forward values and gradients of input, weight and bias, on every device."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import anychip as ac
import anychip.nn.functional as F
from anychip.passes.pipeline import lower_kernel
from anychip.runtime.realize import plan
from helpers import check, rand

CONV = [
    # (nd, input shape, weight shape, kwargs)
    (1, (2, 3, 9), (4, 3, 3), {}),
    (1, (2, 3, 9), (4, 3, 4), {"padding": "same", "dilation": 2}),
    (1, (2, 4, 11), (6, 2, 2), {"stride": 5, "groups": 2}),
    (2, (2, 4, 7, 6), (6, 4, 3, 3), {"padding": 1}),
    (
        2,
        (2, 4, 7, 6),
        (6, 2, 3, 2),
        {"stride": (2, 1), "padding": (1, 0), "dilation": (1, 2), "groups": 2},
    ),
    (2, (2, 4, 5, 5), (3, 4, 1, 1), {}),
    (2, (1, 2, 6, 5), (2, 2, 2, 3), {"padding": "valid", "stride": 3}),
    (2, (3, 6, 6), (2, 3, 3, 3), {"padding": "same"}),  # unbatched
    (3, (1, 2, 4, 5, 5), (3, 2, 2, 3, 2), {"stride": (1, 2, 1), "padding": 1}),
    # an even kernel padded 'same' (one more after than before), and stride with dilation
    (2, (2, 3, 6, 7), (4, 3, 2, 4), {"padding": "same"}),
    (2, (1, 2, 9, 8), (3, 2, 3, 2), {"stride": (3, 2), "dilation": (2, 3), "padding": 2}),
    # stride 1 (the implicit GEMM, conv_implicit.py): odd sizes and channel counts off the
    # register tile, no padding, uneven padding, K = 64 x 9 longer than one K block
    (2, (3, 19, 9, 11), (21, 19, 3, 3), {"padding": 1}),
    (2, (2, 3, 7, 9), (4, 3, 3, 3), {}),
    (2, (2, 3, 8, 7), (5, 3, 5, 3), {"padding": (2, 0)}),
    (2, (1, 64, 6, 5), (8, 64, 3, 3), {"padding": 1}),
    # the input read unpadded through guards: one output row, uneven 'same', a 1-wide
    # image, channels off the tile and rows of output longer than the register tile
    (2, (1, 4, 1, 7), (2, 4, 3, 3), {"padding": 1}),
    (2, (2, 3, 6, 6), (4, 3, 2, 4), {"padding": "same"}),
    (2, (2, 5, 9, 1), (3, 5, 3, 3), {"padding": 1}),
    (2, (2, 7, 5, 70), (13, 7, 3, 3), {"padding": (0, 2)}),
    (2, (1, 2, 5, 5), (3, 2, 2, 2), {"padding": 2}),  # padding > k - 1: im2col
    # more taps than MAX_TAPS: the window view's own gradient rules
    (1, (2, 2, 80), (3, 2, 66), {"padding": 1}),
]


@pytest.mark.parametrize(("nd", "xs", "ws", "kw"), CONV)
def test_conv_matches_torch(device: str, nd: int, xs: tuple, ws: tuple, kw: dict) -> None:
    name = f"conv{nd}d"
    bias = rand(ws[0], seed=3)
    check(
        lambda x, w, b: getattr(F, name)(x, w, b, **kw),
        [rand(*xs), rand(*ws, seed=1), bias],
        device,
        torch_fn=lambda x, w, b: getattr(torch.nn.functional, name)(x, w, b, **kw),
        atol=1e-4,
        rtol=1e-4,
    )


@pytest.mark.parametrize(
    ("xs", "ws", "kw"),
    [
        ((2, 3, 7, 9), (4, 3, 3, 3), {"padding": 1}),
        ((2, 3, 6, 6), (4, 3, 2, 4), {"padding": "same"}),
        ((1, 19, 5, 70), (21, 19, 3, 3), {"padding": (2, 0)}),
    ],
)
def test_conv2d_stride1_float64_matches_torch(device: str, xs: tuple, ws: tuple, kw: dict) -> None:
    # the implicit GEMM in float64 (8 lanes a vector): exact to float64 rounding
    check(
        lambda x, w: F.conv2d(x, w, **kw),
        [rand(*xs), rand(*ws, seed=1)],
        device,
        torch_fn=lambda x, w: torch.nn.functional.conv2d(x, w, **kw),
        dtype="float64",
        atol=1e-10,
        rtol=1e-10,
    )


TRANSPOSED = [
    (1, (2, 4, 5), (4, 3, 3), {"stride": 3}),
    (2, (2, 4, 5, 4), (4, 3, 3, 3), {"stride": 2, "padding": 1, "output_padding": 1}),
    (
        2,
        (2, 4, 5, 4),
        (4, 3, 3, 2),
        {"stride": (1, 2), "padding": (0, 1), "groups": 2, "dilation": 2},
    ),
    (3, (1, 2, 3, 3, 3), (2, 2, 2, 2, 2), {"stride": 2}),
]


@pytest.mark.parametrize(("nd", "xs", "ws", "kw"), TRANSPOSED)
def test_conv_transpose_matches_torch(device: str, nd: int, xs: tuple, ws: tuple, kw: dict) -> None:
    name = f"conv_transpose{nd}d"
    out_ch = ws[1] * kw.get("groups", 1)
    check(
        lambda x, w, b: getattr(F, name)(x, w, b, **kw),
        [rand(*xs), rand(*ws, seed=1), rand(out_ch, seed=3)],
        device,
        torch_fn=lambda x, w, b: getattr(torch.nn.functional, name)(x, w, b, **kw),
        atol=1e-4,
        rtol=1e-4,
    )


@pytest.mark.parametrize(
    ("cls", "args", "kw", "xs"),
    [
        ("Conv1d", (3, 4, 3), {"padding": 1, "padding_mode": "reflect"}, (2, 3, 8)),
        ("Conv2d", (4, 6, 3), {"stride": 2, "groups": 2, "bias": False}, (2, 4, 7, 7)),
        ("Conv2d", (2, 3, (3, 2)), {"padding": "same", "padding_mode": "circular"}, (1, 2, 5, 6)),
        ("Conv2d", (2, 3, 3), {"padding": 1, "padding_mode": "replicate"}, (1, 2, 5, 6)),
        ("Conv3d", (2, 3, 2), {}, (1, 2, 3, 4, 4)),
        ("ConvTranspose1d", (3, 2, 3), {"stride": 2}, (2, 3, 4)),
        (
            "ConvTranspose2d",
            (4, 2, 3),
            {"stride": 2, "padding": 1, "output_padding": 1},
            (1, 4, 3, 3),
        ),
        ("ConvTranspose3d", (2, 2, 2), {"stride": 2}, (1, 2, 2, 2, 2)),
    ],
)
def test_conv_modules_match_torch(device: str, cls: str, args: tuple, kw: dict, xs: tuple) -> None:
    torch.manual_seed(0)
    tm = getattr(torch.nn, cls)(*args, **kw)
    am = getattr(ac.nn, cls)(*args, **kw).to(device)
    assert am.weight.shape == tuple(tm.weight.shape)
    am.load_state_dict({k: ac.tensor(v.detach().numpy()) for k, v in tm.state_dict().items()})
    x = rand(*xs).astype(np.float32)
    tx, ax = torch.tensor(x, requires_grad=True), ac.tensor(x, device=device, requires_grad=True)
    ty, ay = tm(tx), am(ax)
    np.testing.assert_allclose(ay.numpy(), ty.detach().numpy(), atol=1e-4, rtol=1e-4)
    ty.square().sum().backward()
    ay.square().sum().backward()
    np.testing.assert_allclose(ax.grad.numpy(), tx.grad.numpy(), atol=1e-3, rtol=1e-4)
    np.testing.assert_allclose(am.weight.grad.numpy(), tm.weight.grad.numpy(), atol=1e-3, rtol=1e-4)


def test_conv_module_default_init_bounds() -> None:
    # kaiming_uniform_(a=sqrt(5)): |w| <= 1/sqrt(fan_in), as torch
    m = ac.nn.Conv2d(4, 8, 3)
    bound = 1 / np.sqrt(4 * 9)
    assert np.abs(m.weight.numpy()).max() <= bound
    assert np.abs(m.bias.numpy()).max() <= bound


def _contractions(*ts: ac.Tensor) -> list:
    return [
        lower_kernel(it.kernel).contraction
        for it in plan([t.node for t in ts])
        if it.kernel is not None and it.kernel.kind.value == "contraction"
    ]


def test_conv_reaches_the_gemm_generator() -> None:
    # the forward product is a contraction with a strided-matmul spec (not a loop fallback)
    x = ac.ones(2, 4, 6, 6).realize()
    w = ac.ones(5, 4, 3, 3).realize()
    specs = _contractions(F.conv2d(x, w, stride=2, padding=1))  # im2col, then one GEMM
    assert specs and all(s is not None for s in specs)
    assert (specs[0].m, specs[0].n, specs[0].k, specs[0].k_dims) == (5, 9, 36, ())


def test_conv_stride1_is_an_implicit_gemm() -> None:
    # stride 1: the GEMM reads K = C x kh x kw straight from the unpadded input (planes of
    # 6 x 6), N the 6 x 6 output positions as rows and columns, the padding a guard:
    # input row y + i - 1 in [0, 6) (bound 1 <= i + y < 7), column x + j - 1 likewise
    x = ac.tensor(rand(2, 4, 6, 6), requires_grad=True)
    w = ac.tensor(rand(5, 4, 3, 3), requires_grad=True)
    y = F.conv2d(x, w, padding=1)
    (fwd,) = _contractions(y)
    assert (fwd.batch, fwd.m, fwd.n, fwd.k) == ((2,), 5, 36, 36)
    assert fwd.k_dims == ((4, 36), (3, 6), (3, 1)) and fwd.a.cols == 1
    assert fwd.n_dims == ((6, 6), (6, 1)) and fwd.out.cols == 1
    assert sorted(fwd.b_bounds) == [(1, 0, 1, 7), (2, 1, 1, 7)]
    assert fwd.b.offset == -7  # element (0, 0) is padding: one row and one column before
    gx, gw = ac.autograd.grad(y, [x, w], ac.tensor(rand(2, 5, 6, 6, seed=1)))
    # input gradient: the same product with the flipped kernel (C = 4 rows, O x 3 x 3 taps)
    (bx,) = _contractions(gx)
    assert (bx.m, bx.n, bx.k) == (4, 36, 45) and len(bx.k_dims) == 3 and len(bx.b_bounds) == 2
    # weight gradient: columns C x kh x kw of the padded input (9 x 8 per channel: 6 + 2
    # padding + 1 spare row, 6 + 2) through a column table, K the 6 x 8 wide positions
    (bw,) = _contractions(gw)
    assert (bw.batch, bw.m, bw.n, bw.k) == ((2,), 5, 36, 48)
    assert bw.n_dims == ((4, 72), (3, 8), (3, 1)) and bw.k_dims == ()


def test_conv_stride1_gradient_of_a_sum_reaches_the_gemm() -> None:
    # y.sum()'s cotangent is a broadcast constant: copied once, so the input gradient's
    # product still reads B from memory (a GEMM, not loops)
    x = ac.tensor(rand(2, 4, 6, 6), requires_grad=True)
    w = ac.tensor(rand(5, 4, 3, 3), requires_grad=True)
    gx, gw = ac.autograd.grad(F.conv2d(x, w, padding=1).sum(), [x, w])
    specs = _contractions(gx, gw)
    assert len(specs) == 2 and all(s is not None for s in specs)


@pytest.mark.parametrize(
    ("xs", "ws", "padding", "bounds"),
    [
        ((2, 3, 8, 7), (5, 3, 5, 3), (2, 0), 1),  # padding on rows only
        ((2, 5, 7, 9), (3, 5, 3, 2), 0, 0),  # none: N still rows x columns of B
        ((1, 4, 1, 7), (2, 4, 3, 3), 1, 2),  # one output row: a bound on the tap alone
        ((2, 3, 6, 6), (4, 3, 2, 4), "same", 2),  # uneven: (0, 1) rows, (1, 2) columns
    ],
)
def test_conv_stride1_shapes_reach_the_gemm(
    xs: tuple, ws: tuple, padding: object, bounds: int
) -> None:
    # every implicit-GEMM forward gets a spec (no loop fallback) with rows and columns
    x, w = ac.tensor(rand(*xs)), ac.tensor(rand(*ws, seed=1))
    (fwd,) = _contractions(F.conv2d(x, w, padding=padding))
    assert fwd.k_dims and fwd.n_dims and len(fwd.b_bounds) == bounds
    assert fwd.n == math.prod(F.conv2d(x, w, padding=padding).shape[2:])


def test_conv_errors() -> None:
    x, w = ac.ones(1, 4, 5, 5), ac.ones(2, 3, 3, 3)
    with pytest.raises(ac.ShapeError, match=r"conv2d: .*groups"):
        F.conv2d(x, w)
    with pytest.raises(ac.ShapeError, match=r"conv2d: .*larger than the padded input"):
        F.conv2d(ac.ones(1, 3, 2, 2), w)
    with pytest.raises(ac.ArgumentError, match=r"conv2d: padding='same' needs stride 1"):
        F.conv2d(ac.ones(1, 3, 5, 5), w, stride=2, padding="same")
    with pytest.raises(ac.ShapeError, match=r"conv1d: expected a 2-d .* or 3-d input"):
        F.conv1d(ac.ones(5), ac.ones(1, 1, 1))


@pytest.mark.parametrize(
    ("kw", "out"),
    [({"stride": (2, 1), "padding": 1}, (3, 6)), ({"padding": (1, 0)}, (6, 4))],
    ids=["im2col", "implicit"],
)
def test_conv_second_derivatives_match_torch(device: str, kw: dict, out: tuple) -> None:
    # the input gradient is conv's own rule (shifted slices summed, or the flipped kernel's
    # implicit GEMM): differentiable again, d/dx and d/dw of sum(dL/dx * v), with
    # create_graph, against torch
    x0, w0, v0 = rand(2, 3, 6, 5), rand(4, 3, 3, 2, seed=1), rand(2, 3, 6, 5, seed=2)
    g0 = rand(2, 4, *out, seed=3)

    def run(lib, mod, tensor):
        x, w = tensor(x0, requires_grad=True), tensor(w0, requires_grad=True)
        y = mod.conv2d(x, w, **kw)
        (gx,) = lib.autograd.grad(y, [x], tensor(g0), create_graph=True)
        return lib.autograd.grad((gx * tensor(v0)).sum(), [x, w], allow_unused=True)

    def ac_tensor(a, requires_grad=False):
        return ac.tensor(a, device=device, requires_grad=requires_grad)

    ours = run(ac, F, ac_tensor)
    theirs = run(torch, torch.nn.functional, lambda a, **k: torch.tensor(a, **k))
    assert ours[0] is None or np.abs(ours[0].numpy()).max() == 0  # linear in x
    np.testing.assert_allclose(ours[1].numpy(), theirs[1].numpy(), rtol=1e-4, atol=1e-4)


def test_conv_input_changed_in_place_after_use_keeps_its_values(device: str) -> None:
    # the conv record keeps the im2col it multiplied: a later in-place change to its input
    # does not reach the gradients (torch raises here; the values it would need are kept)
    x0, w0 = rand(1, 2, 5, 5), rand(3, 2, 3, 3, seed=1)
    x = ac.tensor(x0, device=device, requires_grad=True)
    w = ac.tensor(w0, device=device, requires_grad=True)
    h = x * 1.0
    y = F.conv2d(h, w, padding=1)
    h.add_(1.0)
    y.sum().backward()
    tx, tw = torch.tensor(x0, requires_grad=True), torch.tensor(w0, requires_grad=True)
    torch.nn.functional.conv2d(tx, tw, padding=1).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-6, atol=1e-6)
