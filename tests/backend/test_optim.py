"""Optimizers and schedulers against torch.optim: the same weights, the same gradients, then
several steps compared parameter by parameter."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import anychip as ac
from anychip import nn, optim
from anychip.ir.ops import Ops

CONFIGS = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9}),
    ("SGD", {"lr": 0.05, "momentum": 0.8, "dampening": 0.3, "weight_decay": 0.01}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.05, "momentum": 0.5, "maximize": True}),
    ("Adam", {"lr": 0.01}),
    ("Adam", {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}),
    ("Adam", {"lr": 0.01, "amsgrad": True}),
    ("Adam", {"lr": 0.01, "maximize": True}),
    ("AdamW", {"lr": 0.01}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.3, "amsgrad": True}),
    ("Adagrad", {"lr": 0.1}),
    (
        "Adagrad",
        {
            "lr": 0.1,
            "lr_decay": 0.05,
            "weight_decay": 0.01,
            "initial_accumulator_value": 0.1,
            "eps": 1e-6,
        },
    ),
]


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w1": rng.standard_normal((6, 3)) * 0.5,
        "b1": rng.standard_normal(6) * 0.1,
        "w2": rng.standard_normal((2, 6)) * 0.5,
        "b2": rng.standard_normal(2) * 0.1,
    }


def _loss(p: dict, x: object, y: object) -> object:
    h = (x @ p["w1"].T + p["b1"]).tanh()  # type: ignore[operator]
    out = h @ p["w2"].T + p["b2"]
    return ((out - y) ** 2).mean()


def _run(name: str, kw: dict, dtype: str, device: str, steps: int = 6) -> None:
    init, rng = _weights(), np.random.default_rng(1)
    batches = [(rng.standard_normal((8, 3)), rng.standard_normal((8, 2))) for _ in range(steps)]
    tp = {
        k: torch.tensor(v, dtype=getattr(torch, dtype), requires_grad=True) for k, v in init.items()
    }
    ap = {
        k: nn.Parameter(ac.tensor(v, dtype=getattr(ac, dtype), device=device))
        for k, v in init.items()
    }
    topt = getattr(torch.optim, name)(list(tp.values()), **kw)
    aopt = getattr(optim, name)(list(ap.values()), **kw)
    rtol = 1e-10 if dtype == "float64" else 2e-5  # float64: tanh differs from libm by ulps
    for step, (x, y) in enumerate(batches):
        topt.zero_grad()
        _loss(
            tp, torch.tensor(x, dtype=tp["w1"].dtype), torch.tensor(y, dtype=tp["w1"].dtype)
        ).backward()  # type: ignore[attr-defined]
        topt.step()
        aopt.zero_grad()
        ax = ac.tensor(x, dtype=ap["w1"].dtype, device=device)
        _loss(ap, ax, ac.tensor(y, dtype=ap["w1"].dtype, device=device)).backward()  # type: ignore[attr-defined]
        aopt.step()
        for k in init:
            np.testing.assert_allclose(
                ap[k].numpy(),
                tp[k].detach().numpy(),
                rtol=rtol,
                atol=rtol,
                err_msg=f"{name} {kw}: parameter {k} after step {step + 1}",
            )


@pytest.mark.parametrize("name,kw", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_matches_torch_float64(name: str, kw: dict, device: str) -> None:
    _run(name, kw, "float64", device)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "Adagrad"])
def test_matches_torch_float32(name: str, device: str) -> None:
    kw = dict(next(k for n, k in CONFIGS if n == name))
    _run(name, kw, "float32", device)


def test_param_groups_and_missing_grads(device: str) -> None:
    a = nn.Parameter(ac.ones(2, device=device))
    b = nn.Parameter(ac.ones(2, device=device))
    c = nn.Parameter(ac.ones(2, device=device))  # never gets a gradient
    opt = optim.SGD([{"params": [a]}, {"params": [b, c], "lr": 1.0}], lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 1.0]
    assert opt.param_groups[1]["momentum"] == 0.0  # filled from defaults
    (a.sum() + b.sum()).backward()
    opt.step()
    assert a.tolist() == pytest.approx([0.9, 0.9]) and b.tolist() == [0.0, 0.0]
    assert c.tolist() == [1.0, 1.0]
    opt.zero_grad()
    assert a.grad is None and b.grad is None
    (a.sum()).backward()
    opt.zero_grad(set_to_none=False)
    assert a.grad is not None and a.grad.tolist() == [0.0, 0.0]


def test_step_realises_state_and_parameters(device: str) -> None:
    model = nn.Linear(3, 2).to(device)
    opt = optim.Adam(model.parameters(), lr=0.1, amsgrad=True)
    for _ in range(3):
        opt.zero_grad()
        model(ac.ones(4, 3, device=device)).sum().backward()
        opt.step()
        # each parameter and state tensor is a plain buffer: no graph carried across steps
        for p in model.parameters():
            assert p.node.op is Ops.BUFFER and p.requires_grad and p.is_leaf
            for v in opt.state[p].values():
                assert not isinstance(v, ac.Tensor) or v.node.op is Ops.BUFFER
    assert opt.state[model.weight]["step"] == 3


def test_closure_and_state_dict_round_trip(device: str) -> None:
    def make() -> tuple[nn.Module, optim.Optimizer]:
        ac.manual_seed(3)
        m = nn.Linear(3, 1).to(device)
        return m, optim.Adam(m.parameters(), lr=0.05)

    x = ac.randn(5, 3, device=device)
    m1, o1 = make()

    def closure() -> ac.Tensor:
        o1.zero_grad()
        loss = (m1(x) ** 2).mean()
        loss.backward()
        return loss

    first = o1.step(closure)
    assert isinstance(first, ac.Tensor)
    saved_opt, saved_model = o1.state_dict(), m1.state_dict()
    assert saved_opt["param_groups"][0]["params"] == [0, 1]
    assert set(saved_opt["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    m2, o2 = make()
    m2.load_state_dict(saved_model)
    o2.load_state_dict(saved_opt)
    for m, o in ((m1, o1), (m2, o2)):  # the same next steps from the restored copy
        for _ in range(2):
            o.zero_grad()
            (m(x) ** 2).mean().backward()
            o.step()
    np.testing.assert_array_equal(m1.weight.numpy(), m2.weight.numpy())


def test_optimizer_errors() -> None:
    w = nn.Parameter(ac.ones(2))
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        optim.SGD([w], lr=-1)
    with pytest.raises(ac.ArgumentError, match=r"Invalid beta parameter at index 1: 1\.0"):
        optim.Adam([w], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum"):
        optim.SGD([w], lr=0.1, nesterov=True)
    with pytest.raises(TypeError, match="got a Tensor; wrap it in a list"):
        optim.SGD(w, lr=0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [w]}, {"params": [w]}], lr=0.1)
    with pytest.raises(RuntimeError, match="non-leaf"):
        optim.SGD([w * 2], lr=0.1)


def _lrs(lib: object, make_sched: object, steps: int = 12) -> list[float]:
    p = lib.nn.Parameter(lib.zeros(1))  # type: ignore[attr-defined]
    opt = lib.optim.SGD([p], lr=0.5)  # type: ignore[attr-defined]
    sched = make_sched(lib.optim.lr_scheduler, opt)  # type: ignore[attr-defined, operator]
    out = []
    for _ in range(steps):
        opt.step()
        sched.step()
        out.append(opt.param_groups[0]["lr"])
    assert sched.get_last_lr() == [out[-1]]
    return out


@pytest.mark.parametrize(
    "make",
    [
        lambda s, o: s.StepLR(o, step_size=3, gamma=0.5),
        lambda s, o: s.ExponentialLR(o, gamma=0.9),
        lambda s, o: s.CosineAnnealingLR(o, T_max=5, eta_min=0.01),
        lambda s, o: s.LambdaLR(o, lambda e: 1 / (1 + e)),
    ],
    ids=["StepLR", "ExponentialLR", "CosineAnnealingLR", "LambdaLR"],
)
def test_schedulers_match_torch(make: object) -> None:
    ours, theirs = _lrs(ac, make), _lrs(torch, make)
    for a, b in zip(ours, theirs, strict=True):
        assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15), (ours, theirs)
