"""PyTorch habits, each against PyTorch itself: from_numpy, as_tensor, closeness tests,
Size, the default dtype, inference_mode, in-place methods, new_*, strides, unique,
bincount, dim/axis aliases, retain_graph, hooks and autograd.grad."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import anychip as ac
from anychip.runtime.device import default_device


def _np(x: Any) -> np.ndarray:
    return x.detach().numpy() if isinstance(x, torch.Tensor) else x.numpy()


def _pair(a: Any, device: str, grad: bool = False) -> tuple[ac.Tensor, torch.Tensor]:
    arr = np.asarray(a)
    return ac.tensor(arr, device=device, requires_grad=grad), torch.tensor(arr, requires_grad=grad)


def test_from_numpy_and_as_tensor(device: str) -> None:
    for arr in (np.arange(6, dtype=np.float64).reshape(2, 3), np.array([1, 2], np.int32)):
        t, w = ac.from_numpy(arr), torch.from_numpy(arr)
        assert t.dtype.name == str(w.dtype).removeprefix("torch.")
        np.testing.assert_array_equal(t.numpy(), arr)
    with pytest.raises(TypeError):
        ac.from_numpy([1, 2])  # type: ignore[arg-type]
    x = ac.ones(2, device=device)
    assert ac.as_tensor(x) is x and ac.as_tensor(x, dtype=ac.float32, device=device) is x
    assert ac.as_tensor([1.5], device=device).dtype is ac.float32
    assert ac.as_tensor(x, dtype=ac.float64).dtype is ac.float64


def test_closeness(device: str) -> None:
    a = [1.0, 2.0, float("nan"), float("inf"), -float("inf"), 1e-9]
    b = [1.0 + 1e-6, 2.1, float("nan"), float("inf"), float("inf"), 0.0]
    (x, tx), (y, ty) = _pair(a, device), _pair(b, device)
    for kw in ({}, {"equal_nan": True}, {"rtol": 0.1, "atol": 0.0}):
        np.testing.assert_array_equal(_np(ac.isclose(x, y, **kw)), _np(torch.isclose(tx, ty, **kw)))
        assert ac.allclose(x, y, **kw) == torch.allclose(tx, ty, **kw)
        assert x[:2].allclose(y[:2], **kw) == tx[:2].allclose(ty[:2], **kw)
    assert ac.equal(x[:2], x[:2]) and not ac.equal(x[:2], y[:2]) and not ac.equal(x, x[:2])
    ia, ib = _pair([1, 2], device)
    assert ac.equal(ia, x[:2]) == torch.equal(ib, tx[:2])


def test_size_and_strides(device: str) -> None:
    x, tx = ac.zeros(2, 3, 4, device=device), torch.zeros(2, 3, 4)
    assert x.size() == tx.size() == ac.Size([2, 3, 4]) and isinstance(x.size(), ac.Size)
    assert ac.Size([2, 3]).numel() == torch.Size([2, 3]).numel() == 6
    assert x.stride() == tx.stride() and x.stride(1) == tx.stride(1) == 4
    assert ac.zeros(0, 2).stride() == torch.zeros(0, 2).stride()
    assert (
        x.is_contiguous()
        and x.is_floating_point()
        and not ac.ones(1, dtype=ac.int64).is_floating_point()
    )
    assert x.cpu().device == "cpu" and x.cpu().tolist() == tx.tolist()


def test_small_attributes(device: str) -> None:
    (a, t) = _pair(np.ones((2, 3), np.float32), device)
    for name in ("nelement", "ndimension", "get_device", "is_pinned"):
        assert getattr(a, name)() == getattr(t, name)(), name
    for name in ("nbytes", "itemsize", "is_cuda"):
        assert getattr(a, name) == getattr(t, name), name
    for name in ("short", "byte", "char"):
        assert getattr(a, name)().dtype.name == str(getattr(t, name)().dtype)[6:]
    assert a.type_as(ac.ones(1, dtype=ac.float64)).dtype is ac.float64
    assert a.pin_memory() is a
    (b, u) = _pair([1.0], device, grad=True)
    assert (b.grad_fn is None) == (u.grad_fn is None)
    assert ((b * 2).grad_fn is None) == ((u * 2).grad_fn is None)
    y = b * 2
    y.detach_()
    assert not y.requires_grad and y.grad_fn is None and y.tolist() == [2.0]
    ac.manual_seed(0)
    m = ac.zeros(4000, device=device).bernoulli_(0.25).numpy()
    assert set(np.unique(m)) <= {0.0, 1.0} and abs(m.mean() - 0.25) < 0.03


def test_new_tensors(device: str) -> None:
    x = ac.ones(2, dtype=ac.float64, device=device)
    tx = torch.ones(2, dtype=torch.float64)
    cases = [
        (lambda t: t.new_zeros(2, 3), lambda t: t.new_zeros(2, 3)),
        (lambda t: t.new_ones((3,)), lambda t: t.new_ones((3,))),
        (lambda t: t.new_full((2,), 7), lambda t: t.new_full((2,), 7)),
        (lambda t: t.new_empty(2).zero_(), lambda t: t.new_empty(2).zero_()),
        (lambda t: t.new_tensor([1, 2]), lambda t: t.new_tensor([1, 2])),
        (lambda t: t.new_zeros(2, dtype=ac.int32), lambda t: t.new_zeros(2, dtype=torch.int32)),
    ]
    for ours, theirs in cases:
        got, want = ours(x), theirs(tx)
        assert got.dtype.name == str(want.dtype).removeprefix("torch.") and got.device == device
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert x.new_ones(2, requires_grad=True).requires_grad


def test_default_dtype() -> None:
    try:
        ac.set_default_dtype(ac.float64)
        torch.set_default_dtype(torch.float64)
        assert ac.get_default_dtype() is ac.float64
        assert ac.tensor([1.5]).dtype is ac.float64 and ac.zeros(2).dtype is ac.float64
        assert (ac.tensor([1]) * 1.5).dtype.name == str((torch.tensor([1]) * 1.5).dtype)[6:]
        with pytest.raises(TypeError):
            ac.set_default_dtype(ac.int32)
    finally:
        ac.set_default_dtype(ac.float32)
        torch.set_default_dtype(torch.float32)
    assert ac.tensor([1.5]).dtype is ac.float32


def test_inference_mode(device: str) -> None:
    w = ac.ones(2, requires_grad=True, device=device)
    with ac.inference_mode():
        assert ac.is_inference_mode_enabled() and not ac.is_grad_enabled()
        assert not (w * 2).requires_grad
    assert (w * 2).requires_grad and not ac.is_inference_mode_enabled()

    @ac.inference_mode()
    def f(t: ac.Tensor) -> ac.Tensor:
        return t * 3

    assert not f(w).requires_grad
    with ac.inference_mode(False):
        assert (w * 2).requires_grad


INPLACE = [
    ("masked_fill_", lambda t, m: t.masked_fill_(t > 0, -1.0)),
    ("sqrt_", lambda t, m: t.abs_().sqrt_()),
    ("exp_", lambda t, m: t.exp_()),
    ("neg_", lambda t, m: t.neg_()),
    ("clamp_min_", lambda t, m: t.clamp_min_(0.0)),
    ("sigmoid_", lambda t, m: t.sigmoid_()),
    ("pow_", lambda t, m: t.pow_(2)),
    ("addcmul_", lambda t, m: t.addcmul_(m.full((3, 3), 2.0), m.full((3, 3), 3.0), value=0.5)),
    ("addcdiv_", lambda t, m: t.addcdiv_(m.full((3, 3), 2.0), m.full((3, 3), 3.0), value=2.0)),
    ("index_add_", lambda t, m: t.index_add_(0, m.tensor([2, 0, 2]), m.ones(3, 3), alpha=2)),
    (
        "scatter_add_",
        lambda t, m: t.scatter_add_(1, m.tensor([[0, 0], [2, 1], [1, 1]]), m.ones(3, 2)),
    ),
    ("scatter_", lambda t, m: t.scatter_(1, m.tensor([[0, 1], [2, 0], [1, 2]]), t[:, :2] * 10)),
    ("scatter_value", lambda t, m: t.scatter_(0, m.tensor([[2, 0, 1]]), 5.0)),
    (
        "scatter_add_reduce",
        lambda t, m: t.scatter_(1, m.tensor([[1], [1], [0]]), m.full((3, 1), 2.0), reduce="add"),
    ),
    ("floor_", lambda t, m: t.mul_(3).floor_()),
    ("round_", lambda t, m: t.mul_(3).round_()),
    ("reciprocal_", lambda t, m: t.reciprocal_()),
    ("square_", lambda t, m: t.square_()),
    ("index_fill_", lambda t, m: t.index_fill_(1, m.tensor([0, 2]), -2.0)),
    ("index_copy_", lambda t, m: t.index_copy_(0, m.tensor([2, 0]), t[:2] * 5)),
    ("index_copy_dim1", lambda t, m: t.index_copy_(1, m.tensor([1]), t[:, :1] + 1)),
    (
        "index_put_",
        lambda t, m: t.index_put_((m.tensor([0, 2]), m.tensor([1, 1])), m.tensor([7.0, 8.0])),
    ),
    (
        "index_put_accumulate",
        lambda t, m: t.index_put_((m.tensor([0, 0, 2]),), m.ones(3, 3), accumulate=True),
    ),
    (
        "index_put_accumulate_2d",
        lambda t, m: t.index_put_(
            (m.tensor([0, 0, -1]), m.tensor([1, 1, 2])), m.tensor(2.0), accumulate=True
        ),
    ),
]


@pytest.mark.parametrize("name", [n for n, _ in INPLACE])
def test_inplace_matches_torch_with_gradients(name: str, device: str) -> None:
    fn = dict(INPLACE)[name]
    base = np.random.default_rng(0).standard_normal((3, 3)).astype(np.float32)
    a, t = _pair(base, device, grad=True)
    ya, yt = a * 1.0, t * 1.0  # non-leaves: in place is allowed under autograd
    before = default_device()
    ac.set_default_device(device)  # the cases' own tensors (indices, sources) go there too
    try:
        ra, rt = fn(ya, ac), fn(yt, torch)
    finally:
        ac.set_default_device(before)
    assert ra is ya and rt is yt
    np.testing.assert_allclose(_np(ya), _np(yt), rtol=1e-6)
    if name == "scatter_add_reduce":
        return  # torch has no derivative for scatter_(reduce=)
    weights = np.arange(9.0, dtype=np.float32).reshape(3, 3)
    (ya * ac.tensor(weights, device=device)).sum().backward()
    (yt * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(_np(a.grad), _np(t.grad), rtol=1e-6)


def test_random_fills(device: str) -> None:
    ac.manual_seed(0)
    x = ac.zeros(2000, device=device).uniform_(-2.0, 3.0)
    v = x.numpy()
    assert v.min() >= -2.0 and v.max() < 3.0 and abs(v.mean() - 0.5) < 0.15
    z = ac.zeros(2000, dtype=ac.float64, device=device).normal_(1.0, 2.0).numpy()
    assert abs(z.mean() - 1.0) < 0.2 and abs(z.std() - 2.0) < 0.2
    with pytest.raises(TypeError):
        ac.zeros(2, dtype=ac.int64).uniform_()
    a = ac.zeros(5, device=device).uniform_(generator=ac.Generator().manual_seed(3))
    b = ac.zeros(5, device=device).uniform_(generator=ac.Generator().manual_seed(3))
    c = ac.zeros(5, device=device).normal_(generator=ac.Generator().manual_seed(4))
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"return_inverse": True},
        {"return_counts": True},
        {"return_inverse": True, "return_counts": True},
        {"dim": 0},
    ],
)
def test_unique(kw: dict[str, Any], device: str) -> None:
    data = [[3, 1, 3], [2, 1, 3], [3, 1, 3]] if "dim" in kw else [3, 1, 3, 2, -1, 2, 2]
    a, t = _pair(data, device)
    got, want = ac.unique(a, **kw), torch.unique(t, **kw)
    got, want = (got, want) if isinstance(want, tuple) else ((got,), (want,))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(_np(g), _np(w))
        assert g.dtype.name == str(w.dtype)[6:]


def test_bincount(device: str) -> None:
    a, t = _pair([1, 1, 3, 0, 1], device)
    np.testing.assert_array_equal(_np(ac.bincount(a)), _np(torch.bincount(t)))
    np.testing.assert_array_equal(_np(a.bincount(minlength=7)), _np(t.bincount(minlength=7)))
    w, tw = _pair([0.5, 1.0, 2.0, 0.25, 4.0], device)
    got, want = a.bincount(w), t.bincount(tw)
    np.testing.assert_allclose(_np(got), _np(want))
    assert got.dtype.name == str(want.dtype)[6:]
    e, te = _pair(np.zeros(0, np.int64), device)
    assert _np(ac.bincount(e)).tolist() == _np(torch.bincount(te)).tolist() == []
    with pytest.raises(RuntimeError):
        ac.bincount(ac.tensor([-1, 2], device=device))


# --- dim/axis and keepdim/keepdims -----------------------------------------------------------
AXIS_CASES = [
    ("sum", lambda m, x: m.sum(x, axis=1, keepdims=True)),
    ("mean", lambda m, x: x.mean(axis=(0, 1))),
    ("std", lambda m, x: x.std(axis=0)),
    ("var", lambda m, x: x.var(axis=1, keepdims=True)),
    ("amax", lambda m, x: x.amax(axis=0, keepdims=True)),
    ("argmax", lambda m, x: x.argmax(axis=1, keepdims=True)),
    ("max", lambda m, x: x.max(axis=1, keepdims=True)[0]),
    ("prod", lambda m, x: x.prod(axis=1)),
    ("logsumexp", lambda m, x: x.logsumexp(axis=1)),
    ("all", lambda m, x: (x > 0).all(axis=0)),
    ("any", lambda m, x: (x > 0).any(axis=1, keepdims=True)),
    ("count_nonzero", lambda m, x: x.count_nonzero(axis=0)),
    ("softmax", lambda m, x: x.softmax(axis=0)),
    ("log_softmax", lambda m, x: m.log_softmax(x, axis=1)),
    ("cumsum", lambda m, x: x.cumsum(axis=1)),
    ("cat", lambda m, x: m.cat([x, x], axis=1)),
    ("stack", lambda m, x: m.stack([x, x], axis=2)),
    ("squeeze", lambda m, x: x[:1].squeeze(axis=0)),
    ("unsqueeze", lambda m, x: x.unsqueeze(axis=1)),
    ("sort", lambda m, x: x.sort(axis=0)[0]),
    ("topk", lambda m, x: x.topk(2, axis=0)[0]),
    ("gather", lambda m, x: x.gather(axis=0, index=m.tensor([[1, 0, 1, 0]]))),
    ("index_select", lambda m, x: x.index_select(axis=1, index=m.tensor([3, 0]))),
    ("chunk", lambda m, x: x.chunk(2, axis=1)[1]),
    ("unbind", lambda m, x: x.unbind(axis=1)[2]),
    ("narrow", lambda m, x: x.narrow(axis=1, start=1, length=2)),
]


@pytest.mark.parametrize("name", [n for n, _ in AXIS_CASES])
def test_axis_and_keepdims_aliases(name: str, device: str) -> None:
    fn = dict(AXIS_CASES)[name]
    a, t = _pair(np.random.default_rng(1).standard_normal((3, 4)), device)
    np.testing.assert_allclose(_np(fn(ac, a)), _np(fn(torch, t)), rtol=1e-12)


def test_numpy_style_aliases_torch_lacks(device: str) -> None:
    x = np.arange(12.0).reshape(3, 4)
    a = ac.tensor(x, device=device)
    np.testing.assert_array_equal(a.flip(axis=0).numpy(), np.flip(x, axis=0))
    np.testing.assert_array_equal(a.roll(1, axis=1).numpy(), np.roll(x, 1, axis=1))
    np.testing.assert_array_equal(ac.concatenate([a, a], axis=0).numpy(), np.concatenate([x, x], 0))
    np.testing.assert_allclose(
        ac.nn.functional.softmax(a, axis=1).numpy(), torch.softmax(torch.tensor(x), 1).numpy()
    )
    with pytest.raises(TypeError, match="alias"):
        a.sum(dim=0, axis=1)


# --- autograd habits ---------------------------------------------------------------------------
def test_retain_graph_and_second_backward(device: str) -> None:
    (a, t) = _pair([1.0, -2.0], device, grad=True)
    ya, yt = (a * a).exp().sum(), (t * t).exp().sum()
    ya.backward(retain_graph=True)
    yt.backward(retain_graph=True)
    ya.backward()
    yt.backward()
    np.testing.assert_allclose(_np(a.grad), _np(t.grad), rtol=1e-12)
    with pytest.raises(RuntimeError) as ours:
        ya.backward()
    with pytest.raises(RuntimeError) as theirs:
        yt.backward()
    assert "second time" in str(ours.value) and "second time" in str(theirs.value)
    # a graph that saved nothing (add, sum) runs backward twice in both
    (b, u) = _pair([1.0, 2.0], device, grad=True)
    za, zt = (b + 1).sum(), (u + 1).sum()
    za.backward(), za.backward(), zt.backward(), zt.backward()
    np.testing.assert_array_equal(_np(b.grad), _np(u.grad))


def test_register_hook_and_retain_grad(device: str) -> None:
    (a, t) = _pair([1.0, 2.0, -3.0], device, grad=True)
    seen: dict[str, list[Any]] = {"ac": [], "torch": []}
    outs = []
    for lib, x in (("ac", a), ("torch", t)):
        h = x * 3
        h.register_hook(lambda g, lib=lib: seen[lib].append(_np(g).tolist()))
        h.register_hook(lambda g: g * 2)  # replaces the gradient flowing on
        handle = x.register_hook(lambda g: g + 1)
        h.retain_grad()
        (h * h).sum().backward(retain_graph=True)
        handle.remove()
        (h * h).sum().backward()
        outs.append((x.grad, h.grad))
    assert seen["ac"] == seen["torch"]
    for g, w in zip(outs[0], outs[1], strict=True):
        np.testing.assert_allclose(_np(g), _np(w), rtol=1e-12)
    with pytest.raises(RuntimeError):
        ac.ones(2).register_hook(lambda g: g)


def test_autograd_grad_like_torch(device: str) -> None:
    (a, t) = _pair([0.5, 2.0], device, grad=True)
    (b, u) = _pair([1.5, -1.0], device, grad=True)
    ga = ac.autograd.grad([(a * b).sin().sum(), (a**3).sum()], (a, b), create_graph=True)
    gt = torch.autograd.grad([(t * u).sin().sum(), (t**3).sum()], (t, u), create_graph=True)
    assert isinstance(ga, tuple) and len(ga) == 2
    for g, w in zip(ga, gt, strict=True):
        np.testing.assert_allclose(_np(g), _np(w), rtol=1e-12)
    # second derivatives through create_graph
    (ha,) = ac.autograd.grad(ga[0].sum(), a)
    (ht,) = torch.autograd.grad(gt[0].sum(), t)
    np.testing.assert_allclose(_np(ha), _np(ht), rtol=1e-12)
    from anychip.autograd import grad

    (g1,) = grad((a * 2).sum(), [a], grad_outputs=ac.tensor(3.0, dtype=ac.float64, device=device))
    assert g1.tolist() == [6.0, 6.0]
