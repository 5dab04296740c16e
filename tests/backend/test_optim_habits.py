"""RMSprop and SparseAdam against torch.optim: the same weights and batches, several steps,
compared parameter by parameter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import anychip as ac
from anychip import nn, optim

RMSPROP = [
    {"lr": 0.01},
    {"lr": 0.01, "alpha": 0.9, "eps": 1e-6, "weight_decay": 0.1},
    {"lr": 0.01, "momentum": 0.9},
    {"lr": 0.01, "centered": True},
    {"lr": 0.01, "momentum": 0.5, "centered": True, "maximize": True},
]


def _mlp_run(opt_name: str, kw: dict, device: str, dtype: str, steps: int = 5) -> None:
    rng = np.random.default_rng(0)
    init = {"w": rng.standard_normal((4, 3)) * 0.5, "b": rng.standard_normal(4) * 0.1}
    batches = [(rng.standard_normal((8, 3)), rng.standard_normal((8, 4))) for _ in range(steps)]
    tdt, adt = getattr(torch, dtype), getattr(ac, dtype)
    tp = {k: torch.tensor(v, dtype=tdt, requires_grad=True) for k, v in init.items()}
    ap = {k: nn.Parameter(ac.tensor(v, dtype=adt, device=device)) for k, v in init.items()}
    topt = getattr(torch.optim, opt_name)(list(tp.values()), **kw)
    aopt = getattr(optim, opt_name)(list(ap.values()), **kw)
    for x, y in batches:
        for lib, p, o, dt, dev in ((torch, tp, topt, tdt, "cpu"), (ac, ap, aopt, adt, device)):
            o.zero_grad()
            xx, yy = lib.tensor(x, dtype=dt, device=dev), lib.tensor(y, dtype=dt, device=dev)
            (((xx @ p["w"].T + p["b"]).tanh() - yy) ** 2).mean().backward()
            o.step()
    rtol = 1e-10 if dtype == "float64" else 3e-5
    for k in init:
        np.testing.assert_allclose(ap[k].numpy(), tp[k].detach().numpy(), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("kw", RMSPROP, ids=lambda kw: ",".join(kw))
def test_rmsprop_matches_torch(kw: dict, device: str) -> None:
    _mlp_run("RMSprop", kw, device, "float32")


def test_rmsprop_float64(device: str) -> None:
    _mlp_run("RMSprop", {"lr": 0.02, "momentum": 0.9, "centered": True}, device, "float64")


def test_sparse_adam_matches_torch_on_an_embedding(device: str) -> None:
    """torch gets sparse gradients from Embedding(sparse=True); ours are dense, and the
    rows no batch looks up must stay put (values and moments) exactly as torch's."""
    rng = np.random.default_rng(3)
    table = rng.standard_normal((10, 4)).astype(np.float32)
    temb = torch.nn.Embedding(10, 4, sparse=True)
    temb.weight.data = torch.tensor(table)
    aemb = nn.Embedding(10, 4, device=device)
    aemb.weight.data = ac.tensor(table, device=device)
    kw = {"lr": 0.05, "betas": (0.8, 0.95), "eps": 1e-6}
    topt, aopt = (
        torch.optim.SparseAdam(temb.parameters(), **kw),
        optim.SparseAdam(aemb.parameters(), **kw),
    )
    for _ in range(4):
        ids = rng.integers(0, 6, size=5)  # rows 6..9 never touched
        target = rng.standard_normal((5, 4)).astype(np.float32)
        topt.zero_grad()
        ((temb(torch.tensor(ids)) - torch.tensor(target)) ** 2).sum().backward()
        topt.step()
        aopt.zero_grad()
        (
            (aemb(ac.tensor(ids, device=device)) - ac.tensor(target, device=device)) ** 2
        ).sum().backward()
        aopt.step()
    np.testing.assert_allclose(
        aemb.weight.numpy(), temb.weight.detach().numpy(), rtol=2e-5, atol=2e-6
    )
    np.testing.assert_array_equal(aemb.weight.numpy()[6:], table[6:])
    t_state = topt.state[temb.weight]
    a_state = aopt.state[aemb.weight]
    np.testing.assert_allclose(
        a_state["exp_avg_sq"].numpy(),
        t_state["exp_avg_sq"].to_dense().numpy(),
        rtol=2e-5,
        atol=1e-7,
    )


def test_bad_hyperparameters_raise() -> None:
    w = nn.Parameter(ac.ones(2))
    with pytest.raises(ValueError, match="learning rate"):
        optim.RMSprop([w], lr=-1.0)
    with pytest.raises(ValueError, match="beta"):
        optim.SparseAdam([w], betas=(1.0, 0.9))
