"""What a training step compiles to: weight gradients are one GEMM kernel reading their
operands in place (no transpose kernel), an SGD-momentum update is two kernels per
parameter, values checked against PyTorch and float64 numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import anychip as ac
import anychip.nn.functional as F
from anychip.frontend.autograd import grad
from anychip.ir.kernel import KernelKind
from anychip.ir.ops import Ops
from anychip.passes.pipeline import lower_kernel
from anychip.runtime import dispatch
from anychip.runtime.realize import plan


def arr(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_linear_weight_grad_is_one_gemm_read_in_place(device: str) -> None:
    xs, ws, gs = arr(8, 5), arr(3, 5, seed=1), arr(8, 3, seed=2)
    x, g = ac.tensor(xs, device=device).realize(), ac.tensor(gs, device=device).realize()
    w = ac.nn.Parameter(ac.tensor(ws, device=device))
    (gw,) = grad(F.linear(x, w), [w], g)  # lazy (backward() would compute it at once)
    assert gw is not None
    (item,) = [i for i in plan([gw.node]) if i.kernel is not None]
    assert item.kernel.kind is KernelKind.CONTRACTION
    # its inputs are x's and g's own buffers: nothing transposed or copied first
    assert {id(b) for b in item.ins} == {id(x.node.arg), id(g.node.arg)}
    c = lower_kernel(item.kernel).contraction
    assert c is not None and (c.m, c.n, c.k) == (3, 5, 8)
    assert (c.out.rows, c.out.cols) == (5, 1)  # W's own row-major layout
    np.testing.assert_allclose(gw.numpy(), gs.T.astype(np.float64) @ xs, rtol=1e-5)


def test_column_major_product_is_computed_transposed(device: str) -> None:
    # out[n, m] = sum_k a[k, m] * b[k, n]: the multiply lists a first, but out's contiguous
    # axis is m, so the GEMM computes out as b.T @ a with contiguous rows
    a_np, b_np = arr(6, 4), arr(6, 7, seed=1)
    a, b = ac.tensor(a_np, device=device), ac.tensor(b_np, device=device)
    out = (a.reshape(6, 1, 4) * b.reshape(6, 7, 1)).sum(0)
    (item,) = [i for i in plan([out.node]) if i.kernel is not None]
    c = lower_kernel(item.kernel).contraction
    assert c is not None and (c.m, c.n, c.k) == (7, 4, 6)
    assert c.out.cols == 1 and c.out.rows == 4
    np.testing.assert_allclose(out.numpy(), b_np.T.astype(np.float64) @ a_np, rtol=1e-5)


def test_sgd_momentum_update_is_two_kernels_per_parameter(device: str) -> None:
    ps, gs = arr(4, 3), arr(4, 3, seed=1)
    p = ac.nn.Parameter(ac.tensor(ps, device=device))
    opt = ac.optim.SGD([p], lr=0.1, momentum=0.9)
    tp = torch.nn.Parameter(torch.from_numpy(ps.copy()))
    topt = torch.optim.SGD([tp], lr=0.1, momentum=0.9)
    for step in range(3):
        p.grad = ac.tensor(gs * (step + 1), device=device).realize()
        tp.grad = torch.from_numpy(gs * (step + 1))
        with dispatch.recording() as rec:
            opt.step()
        topt.step()
        launches = [s for s in rec.steps if s.kind == dispatch.LAUNCH]
        # step 0: the buffer is the gradient itself, only p moves; later: buffer, then p
        assert len(launches) == (1 if step == 0 else 2)
    np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-6, atol=1e-7)
    buf = opt.state[p]["momentum_buffer"].numpy()
    np.testing.assert_allclose(buf, topt.state[tp]["momentum_buffer"].numpy(), rtol=1e-6)


def test_mlp_step_kernels_have_no_transposes(device: str) -> None:
    # a two-layer step: three products forward and back per layer, no copy kernels
    xs, ys = arr(16, 6), np.random.default_rng(3).integers(0, 4, 16)
    model = ac.nn.Sequential(ac.nn.Linear(6, 5), ac.nn.ReLU(), ac.nn.Linear(5, 4)).to(device)
    for p in model.parameters():
        p.realize()  # their random init is not part of the step
    x, y = ac.tensor(xs, device=device).realize(), ac.tensor(ys, device=device).realize()
    params = list(model.parameters())
    gs = grad(F.cross_entropy(model(x), y), params)  # lazy, as backward() would compute
    grads = [g.node for g in gs if g is not None]
    items = [i for i in plan(grads) if i.kernel is not None]
    kinds = [i.kernel.kind for i in items]
    # 2 forward, 1 input-gradient and 2 weight-gradient products
    assert kinds.count(KernelKind.CONTRACTION) == 5
    # every weight gradient is written by its GEMM, in the weight's own layout
    weights = {p.shape for p in params if p.ndim == 2}
    made = {i.node.shape for i in items if i.kernel.kind is KernelKind.CONTRACTION}
    assert weights <= made
    assert not [
        i for i in items if i.kernel.kind is not KernelKind.CONTRACTION and i.node.shape in weights
    ]


def test_backward_computes_the_loss_and_gradients_at_once(device: str) -> None:
    model = ac.nn.Sequential(ac.nn.Linear(6, 5), ac.nn.ReLU(), ac.nn.Linear(5, 4)).to(device)
    x = ac.tensor(arr(16, 6), device=device).realize()
    y = ac.tensor(np.random.default_rng(3).integers(0, 4, 16), device=device).realize()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    # as in PyTorch, the values exist once backward returns: reading them runs nothing
    assert loss.node.op is Ops.BUFFER
    assert all(p.grad is not None and p.grad.node.op is Ops.BUFFER for p in model.parameters())
    with dispatch.recording() as rec:
        value = loss.item()
    assert rec.steps == [] or all(s.kind is not dispatch.LAUNCH for s in rec.steps)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 4))
    with torch.no_grad():
        for tp, ap in zip(net.parameters(), model.parameters()):
            tp.copy_(torch.from_numpy(ap.numpy()))
    tl = torch.nn.functional.cross_entropy(
        net(torch.from_numpy(x.numpy())), torch.tensor(y.numpy())
    )
    tl.backward()
    assert value == pytest.approx(tl.item(), rel=1e-5)
    for tp, ap in zip(net.parameters(), model.parameters()):
        np.testing.assert_allclose(ap.grad.numpy(), tp.grad.numpy(), rtol=1e-4, atol=1e-6)
