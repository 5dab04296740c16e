"""Losses forward and backward against PyTorch: every reduction, class indices and class
probabilities, ignore_index, label_smoothing, class weights and pos_weight."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import anychip as ac
import anychip.nn.functional as F
from anychip import nn
from helpers import check, rand

TF = torch.nn.functional
REDUCTIONS = ["mean", "sum", "none"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_regression_losses(reduction: str, device: str) -> None:
    x, y = rand(4, 3, seed=1), rand(4, 3, seed=2)
    pairs = [
        (F.mse_loss, TF.mse_loss),
        (F.l1_loss, TF.l1_loss),
        (
            lambda a, b, **k: F.huber_loss(a, b, delta=0.7, **k),
            lambda a, b, **k: TF.huber_loss(a, b, delta=0.7, **k),
        ),
        (
            lambda a, b, **k: F.smooth_l1_loss(a, b, beta=0.5, **k),
            lambda a, b, **k: TF.smooth_l1_loss(a, b, beta=0.5, **k),
        ),
    ]
    for ours, theirs in pairs:
        check(
            lambda a, b, f=ours: f(a, b, reduction=reduction),
            [x, y],
            device,
            lambda a, b, f=theirs: f(a, b, reduction=reduction),
            fd=reduction == "mean",
        )


def _targets(shape: tuple[int, ...], classes: int, seed: int, ignore: int | None = None):
    t = np.random.default_rng(seed).integers(0, classes, shape)
    if ignore is not None:
        t.reshape(-1)[::3] = ignore  # every third target is ignored
    return t


CE_CASES = {
    "plain": {},
    "weight": {"weight": [0.2, 1.0, 3.0, 0.5]},
    "ignore": {"ignore_index": 2},
    "ignore_default": {"ignore_index": -100},
    "smoothing": {"label_smoothing": 0.2},
    "all": {"weight": [0.2, 1.0, 3.0, 0.5], "ignore_index": 1, "label_smoothing": 0.1},
}


def _ce_kwargs(case: dict, lib: object, device: str | None = None) -> dict:
    kw = dict(case)
    if "weight" in kw:
        kw["weight"] = lib.tensor(kw["weight"], dtype=lib.float64)  # type: ignore[attr-defined]
        if device is not None:
            kw["weight"] = kw["weight"].to(device)
    return kw


@pytest.mark.parametrize("case", sorted(CE_CASES))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(5, 4), (3, 4, 2)], ids=str)
def test_cross_entropy_class_indices(case: str, reduction: str, shape: tuple, device: str) -> None:
    spec = CE_CASES[case]
    ignore = spec.get("ignore_index")
    tshape = (shape[0], *shape[2:])
    x, t = rand(*shape, seed=3), _targets(tshape, 4, seed=4, ignore=ignore)
    check(
        lambda a, b: F.cross_entropy(a, b, reduction=reduction, **_ce_kwargs(spec, ac, device)),
        [x, t],
        device,
        lambda a, b: TF.cross_entropy(a, b, reduction=reduction, **_ce_kwargs(spec, torch)),
    )


def test_cross_entropy_unbatched_and_fd(device: str) -> None:
    check(F.cross_entropy, [rand(5, seed=5), np.array(3)], device, TF.cross_entropy)
    x, t = rand(6, 3, seed=6), _targets((6,), 3, 7)
    check(F.cross_entropy, [x, t], device, TF.cross_entropy, fd=True)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_class_probabilities(
    reduction: str, smoothing: float, weighted: bool, device: str
) -> None:
    x = rand(4, 3, 2, seed=8)
    p = np.random.default_rng(9).dirichlet(np.ones(3), size=(4, 2)).transpose(0, 2, 1)
    w = [0.5, 2.0, 1.0] if weighted else None

    def kw(lib: object) -> dict:
        weight = lib.tensor(w, dtype=lib.float64) if w else None  # type: ignore[attr-defined]
        if weight is not None and lib is ac:
            weight = weight.to(device)
        return {"weight": weight, "reduction": reduction, "label_smoothing": smoothing}

    check(
        lambda a, b: F.cross_entropy(a, b, **kw(ac)),
        [x, p],
        device,
        lambda a, b: TF.cross_entropy(a, b, **kw(torch)),
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss(reduction: str, device: str) -> None:
    logp = np.log(np.random.default_rng(10).dirichlet(np.ones(5), size=6))
    t = _targets((6,), 5, 11, ignore=0)
    w = [1.0, 2.0, 0.5, 1.5, 1.0]
    check(
        lambda a, b: F.nll_loss(a, b, ac.tensor(w, dtype=ac.float64, device=device), 0, reduction),
        [logp, t],
        device,
        lambda a, b: TF.nll_loss(
            a, b, torch.tensor(w, dtype=torch.float64), ignore_index=0, reduction=reduction
        ),
    )
    check(F.nll_loss, [rand(2, 3, 4, seed=12), _targets((2, 4), 3, 13)], device, TF.nll_loss)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits(reduction: str, device: str) -> None:
    x = rand(4, 3, seed=14, low=-30, high=30)  # far into both tails: must stay finite
    y = np.random.default_rng(15).uniform(0, 1, (4, 3))
    check(
        lambda a, b: F.binary_cross_entropy_with_logits(a, b, reduction=reduction),
        [x, y],
        device,
        lambda a, b: TF.binary_cross_entropy_with_logits(a, b, reduction=reduction),
    )
    w, pw = rand(4, 3, seed=16, low=0.1, high=2), rand(3, seed=17, low=0.1, high=3)

    def kw(lib: object) -> dict:  # torch has no gradient for weight and pos_weight
        on = {"device": device} if lib is ac else {}
        return {
            "weight": lib.tensor(w, **on),  # type: ignore[attr-defined]
            "pos_weight": lib.tensor(pw, **on),  # type: ignore[attr-defined]
            "reduction": reduction,
        }

    check(
        lambda a, b: F.binary_cross_entropy_with_logits(a, b, **kw(ac)),
        [rand(4, 3, seed=18), y],
        device,
        lambda a, b: TF.binary_cross_entropy_with_logits(a, b, **kw(torch)),
        fd=reduction == "sum",
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy(reduction: str, device: str) -> None:
    p = np.random.default_rng(22).uniform(0.02, 0.98, (4, 3))
    y = np.random.default_rng(23).uniform(0, 1, (4, 3))
    w = rand(4, 3, seed=24, low=0.1, high=2)
    check(
        lambda a, b: F.binary_cross_entropy(a, b, ac.tensor(w, device=device), reduction),
        [p, y],
        device,
        lambda a, b: TF.binary_cross_entropy(a, b, torch.tensor(w), reduction=reduction),
    )
    edge = ac.tensor([0.0, 1.0, 0.5], dtype=ac.float64, device=device)
    got = F.binary_cross_entropy(edge, ac.tensor([1.0, 0.0, 1.0], dtype=ac.float64, device=device))
    want = TF.binary_cross_entropy(torch.tensor([0.0, 1.0, 0.5]), torch.tensor([1.0, 0.0, 1.0]))
    assert got.item() == pytest.approx(want.item())  # logs clamped at -100: finite


def test_loss_modules(device: str) -> None:
    x, t = rand(5, 4, seed=19).astype(np.float32), _targets((5,), 4, 20, ignore=3)
    w = np.array([1.0, 2.0, 0.5, 1.0], np.float32)
    pairs = [
        (
            nn.CrossEntropyLoss(ac.tensor(w, device=device), ignore_index=3, label_smoothing=0.1),
            torch.nn.CrossEntropyLoss(torch.tensor(w), ignore_index=3, label_smoothing=0.1),
        ),
        (nn.NLLLoss(reduction="sum"), torch.nn.NLLLoss(reduction="sum")),
    ]
    for ours, theirs in pairs:
        check(lambda a, b, m=ours: m(a, b), [x, t], device, lambda a, b, m=theirs: m(a, b))
    y = rand(5, 4, seed=21).astype(np.float32)
    for name in ("MSELoss", "L1Loss", "BCEWithLogitsLoss", "HuberLoss", "SmoothL1Loss"):
        ours, theirs = getattr(nn, name)(reduction="sum"), getattr(torch.nn, name)(reduction="sum")
        check(lambda a, b, m=ours: m(a, b), [x, y], device, lambda a, b, m=theirs: m(a, b))
    assert repr(nn.MSELoss(reduction="sum")) == "MSELoss(reduction='sum')"


def test_loss_errors(device: str) -> None:
    x = ac.zeros(3, 4, device=device)
    with pytest.raises(ac.IndexOutOfRange, match=r"cross_entropy: target values span \[0, 4\]"):
        F.cross_entropy(x, ac.tensor([0, 1, 4], device=device))
    with pytest.raises(IndexError, match="out of bounds for 4 classes"):
        F.nll_loss(x, ac.tensor([-1, 0, 0], device=device))
    with pytest.raises(ac.ShapeError, match=r"expected target of shape \(3,\)"):
        F.cross_entropy(x, ac.tensor([0, 1], device=device))
    with pytest.raises(ValueError, match="reduction must be one of"):
        F.mse_loss(x, x, reduction="avg")
    with pytest.raises(ac.ShapeError, match="target size must be the same as input size"):
        F.binary_cross_entropy_with_logits(x, ac.zeros(3, device=device))
    with pytest.raises(ac.ShapeError, match="weight must be a 1-d tensor with one entry per"):
        F.cross_entropy(x, ac.tensor([0, 1, 2], device=device), weight=ac.ones(3))
    with pytest.raises(ac.DTypeError, match="class-index targets must be integers"):
        F.nll_loss(x, ac.tensor([True, False, True], device=device))
