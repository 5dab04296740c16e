"""nn: Module bookkeeping, layers and functional ops against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import anychip as ac
import anychip.nn.functional as F
from anychip import nn
from helpers import check, rand


# --- Module bookkeeping ---------------------------------------------------------------
class Block(nn.Module):
    def __init__(self, lib: object) -> None:
        super().__init__()
        self.fc = lib.nn.Linear(3, 4)  # type: ignore[attr-defined]
        self.norm = lib.nn.LayerNorm(4)  # type: ignore[attr-defined]
        self.scale = lib.nn.Parameter(lib.ones(4))  # type: ignore[attr-defined]
        self.register_buffer("steps", lib.zeros(1))  # type: ignore[attr-defined]
        self.register_buffer("cache", lib.zeros(2), persistent=False)  # type: ignore[attr-defined]


class TorchBlock(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 4)
        self.norm = torch.nn.LayerNorm(4)
        self.scale = torch.nn.Parameter(torch.ones(4))
        self.register_buffer("steps", torch.zeros(1))
        self.register_buffer("cache", torch.zeros(2), persistent=False)


def _net(lib: object) -> object:
    n = lib.nn  # type: ignore[attr-defined]
    return n.Sequential(n.Linear(2, 8), n.ReLU(), n.Dropout(0.1), n.Linear(8, 3))


def test_names_match_torch(device: str) -> None:
    ours, theirs = Block(ac), TorchBlock()
    assert [k for k, _ in ours.named_parameters()] == [k for k, _ in theirs.named_parameters()]
    assert [k for k, _ in ours.named_buffers()] == [k for k, _ in theirs.named_buffers()]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [k for k, _ in ours.named_children()] == [k for k, _ in theirs.named_children()]
    assert [k for k, _ in ours.named_modules()] == [k for k, _ in theirs.named_modules()]
    a, t = _net(ac), _net(torch)
    assert list(a.state_dict()) == list(t.state_dict())  # type: ignore[attr-defined]
    assert len(list(a.parameters())) == len(list(t.parameters()))  # type: ignore[attr-defined]


def test_shared_parameters_listed_once(device: str) -> None:
    lin = nn.Linear(2, 2)
    seq = nn.Sequential(lin, lin)
    assert len(list(seq.parameters())) == 2
    assert list(seq.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]


def test_setattr_registration() -> None:
    m = nn.Module()
    m.w = nn.Parameter(ac.zeros(2))
    m.sub = nn.Linear(2, 2)
    m.plain = ac.zeros(3)  # a plain tensor attribute is not a parameter
    assert [k for k, _ in m.named_parameters()] == ["w", "sub.weight", "sub.bias"]
    del m.w
    assert [k for k, _ in m.named_parameters()] == ["sub.weight", "sub.bias"]
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        m.missing
    m.sub.bias = None  # a parameter slot may be cleared
    assert [k for k, _ in m.named_parameters()] == ["sub.weight"]
    with pytest.raises(TypeError, match="cannot assign Tensor as parameter 'weight'"):
        m.sub.weight = ac.zeros(2, 2)


def test_reassigning_a_name_keeps_its_place_as_torch() -> None:
    # parameters, submodules (by attribute or add_module) and buffers keep their order
    for lib in (nn, torch.nn):
        ours = lib is nn
        m = lib.Sequential(lib.Linear(2, 2), lib.ReLU(), lib.Linear(2, 1))
        m.add_module("0", lib.Linear(2, 2))
        m.a = lib.Parameter(ac.zeros(1) if ours else torch.zeros(1))
        m.b = lib.Parameter(ac.zeros(1) if ours else torch.zeros(1))
        m.a = lib.Parameter(ac.ones(1) if ours else torch.ones(1))
        m.register_buffer("s", ac.zeros(1) if ours else torch.zeros(1))
        m.register_buffer("t", ac.zeros(1) if ours else torch.zeros(1))
        m.register_buffer("s", ac.ones(1) if ours else torch.ones(1))
        names = [k for k, _ in m.named_parameters()], [k for k, _ in m.named_buffers()]
        if ours:
            got = names
        else:
            assert got == names
    assert got[0][:2] == ["a", "b"] and got[1] == ["s", "t"]


def test_forward_matches_torch_after_loading_its_weights(device: str) -> None:
    theirs = TorchBlock()
    with torch.no_grad():
        theirs.norm.weight.uniform_(0.5, 1.5)
        theirs.norm.bias.uniform_(-0.5, 0.5)
        theirs.scale.uniform_(0.5, 1.5)
    ours = Block(ac).to(device)
    result = ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    assert result.missing_keys == [] and result.unexpected_keys == []
    x = rand(5, 3, seed=3).astype(np.float32)
    got = ours.norm(ours.fc(ac.tensor(x, device=device))) * ours.scale
    want = theirs.norm(theirs.fc(torch.from_numpy(x))) * theirs.scale
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_load_state_dict_errors() -> None:
    m = nn.Linear(2, 3)
    sd = dict(m.state_dict())
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "bias"'):
        m.load_state_dict({"weight": sd["weight"]})
    with pytest.raises(ac.Error, match=r'Unexpected key\(s\) in state_dict: "extra"'):
        m.load_state_dict({**sd, "extra": ac.zeros(1)})
    with pytest.raises(ValueError, match=r"size mismatch for weight: .*\(3, 3\).*\(3, 2\)"):
        m.load_state_dict({**sd, "weight": ac.zeros(3, 3)})
    with pytest.raises(RuntimeError, match="size mismatch"):  # even when not strict
        m.load_state_dict({"weight": ac.zeros(1)}, strict=False)
    keys = m.load_state_dict({"weight": ac.ones(3, 2), "extra": ac.zeros(1)}, strict=False)
    assert keys.missing_keys == ["bias"] and keys.unexpected_keys == ["extra"]
    assert m.weight.tolist() == [[1.0, 1.0]] * 3


def test_load_state_dict_keeps_parameter_identity() -> None:
    m = nn.Linear(2, 2)
    w = m.weight
    m.load_state_dict({"weight": ac.zeros(2, 2, dtype=ac.float64), "bias": ac.zeros(2)})
    assert m.weight is w and w.dtype is ac.float32 and w.requires_grad
    assert w.tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_train_eval_flags_and_dropout() -> None:
    net = _net(ac)
    assert all(m.training for m in net.modules())  # type: ignore[attr-defined]
    assert net.eval() is net  # type: ignore[attr-defined]
    assert not any(m.training for m in net.modules())  # type: ignore[attr-defined]
    x = ac.randn(4, 2)
    np.testing.assert_array_equal(net(x).numpy(), net(x).numpy())  # type: ignore[operator]
    net.train()  # type: ignore[attr-defined]
    assert net[2].training  # type: ignore[index]


def test_zero_grad_apply_and_to(device: str) -> None:
    net = _net(ac).to(device)  # type: ignore[attr-defined]
    net(ac.randn(3, 2, device=device)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    seen: list[str] = []
    net.apply(lambda m: seen.append(type(m).__name__))
    assert seen == ["Linear", "ReLU", "Dropout", "Linear", "Sequential"]
    params = list(net.parameters())
    net.to(ac.float64)
    assert [p is q for p, q in zip(params, net.parameters(), strict=True)] == [True] * 4
    assert all(p.dtype is ac.float64 and p.requires_grad for p in net.parameters())
    assert net(ac.randn(3, 2, dtype=ac.float64, device=device)).dtype is ac.float64


def test_repr_matches_torch() -> None:
    pairs = [
        (_net(ac), _net(torch)),
        (nn.LayerNorm(4), torch.nn.LayerNorm(4)),
        (nn.RMSNorm([2, 3]), torch.nn.RMSNorm([2, 3])),
        (nn.Embedding(10, 3, padding_idx=0), torch.nn.Embedding(10, 3, padding_idx=0)),
        (nn.EmbeddingBag(10, 3, mode="sum"), torch.nn.EmbeddingBag(10, 3, mode="sum")),
        (nn.GELU(approximate="tanh"), torch.nn.GELU(approximate="tanh")),
        (nn.Softmax(dim=1), torch.nn.Softmax(dim=1)),
        (nn.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2)),
        (nn.Softplus(), torch.nn.Softplus()),
        (nn.Flatten(), torch.nn.Flatten()),
        (nn.Identity(), torch.nn.Identity()),
        (nn.Linear(2, 3, bias=False), torch.nn.Linear(2, 3, bias=False)),
    ]
    for ours, theirs in pairs:
        assert repr(ours) == repr(theirs)


def test_containers() -> None:
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    layers.append(nn.ReLU())
    assert len(layers) == 4 and isinstance(layers[-1], nn.ReLU)
    assert [k for k, _ in layers.named_parameters()][:2] == ["0.weight", "0.bias"]
    del layers[0]
    assert [k for k, _ in layers.named_children()] == ["0", "1", "2"]
    heads = nn.ModuleDict({"a": nn.Linear(2, 1)})
    heads["b"] = nn.Linear(2, 2)
    assert list(heads) == ["a", "b"] and "b" in heads
    assert list(heads.state_dict()) == ["a.weight", "a.bias", "b.weight", "b.bias"]
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert isinstance(seq[1:], nn.Sequential) and len(seq[1:]) == 2
    with pytest.raises(IndexError, match="index 5 is out of range for 3 modules"):
        seq[5]


# --- layers and functional against PyTorch -------------------------------------------
def test_linear_matches_torch(device: str) -> None:
    w, b, x = rand(4, 3, seed=1), rand(4, seed=2), rand(2, 5, 3, seed=3)
    check(F.linear, [x, w, b], device, torch.nn.functional.linear, fd=True)
    check(lambda x, w: F.linear(x, w), [x, w], device, torch.nn.functional.linear)
    with pytest.raises(ac.ShapeError, match="linear: input's last dimension"):
        F.linear(ac.ones(2, 5), ac.ones(4, 3))


@pytest.mark.parametrize("m,n,bias", [(5, 4, True), (1, 4, True), (5, 1, True), (1, 1, False)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_linear_2d_matches_torch_and_the_general_graph(
    device: str, m: int, n: int, bias: bool, dtype: str
) -> None:
    """The 2-d case of `linear`, built primitive by primitive (nn/functional.py), against
    torch with gradients, and node for node the graph of `x @ w.t() + b` (the eager
    cache's structural key: the same kernels and plans)."""
    from anychip.runtime import eager_cache, realize

    w, b, x = rand(n, 3, seed=4), rand(n, seed=5), rand(m, 3, seed=6)
    if bias:
        check(F.linear, [x, w, b], device, torch.nn.functional.linear, fd=True)
    else:
        check(lambda x, w: F.linear(x, w), [x, w], device, torch.nn.functional.linear, fd=True)
    dt = getattr(ac, dtype)
    xs, ws, bs = (ac.tensor(v, dtype=dt, device=device) for v in (x, w, b))
    fast = F.linear(xs, ws, bs if bias else None)
    general = xs @ ws.t() + bs if bias else xs @ ws.t()
    keys = [eager_cache.structure([t.node], realize.buffer_of) for t in (fast, general)]
    assert keys[0] is not None and keys[1] is not None
    assert keys[0][0] == keys[1][0]
    np.testing.assert_allclose(fast.numpy(), general.numpy(), rtol=1e-6)


ACTIVATIONS = {
    "relu": (lambda x: F.relu(x), torch.nn.functional.relu),
    "gelu": (lambda x: F.gelu(x), torch.nn.functional.gelu),
    "gelu_tanh": (
        lambda x: F.gelu(x, approximate="tanh"),
        lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    ),
    "silu": (F.silu, torch.nn.functional.silu),
    "sigmoid": (F.sigmoid, torch.sigmoid),
    "tanh": (F.tanh, torch.tanh),
    "softplus": (
        lambda x: F.softplus(x, beta=2.0, threshold=3.0),
        lambda x: torch.nn.functional.softplus(x, beta=2.0, threshold=3.0),
    ),
    "leaky_relu": (
        lambda x: F.leaky_relu(x, 0.1),
        lambda x: torch.nn.functional.leaky_relu(x, 0.1),
    ),
    "elu": (lambda x: F.elu(x, 0.5), lambda x: torch.nn.functional.elu(x, 0.5)),
    "softmax": (lambda x: F.softmax(x, dim=-1), lambda x: torch.softmax(x, dim=-1)),
    "log_softmax": (lambda x: F.log_softmax(x, 1), lambda x: torch.log_softmax(x, 1)),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_functions(name: str, device: str) -> None:
    ours, theirs = ACTIVATIONS[name]
    check(ours, [rand(3, 4, seed=4, low=-3, high=3)], device, theirs)


MODULES = [
    ("ReLU", ()),
    ("GELU", ()),
    ("SiLU", ()),
    ("Sigmoid", ()),
    ("Tanh", ()),
    ("Softplus", ()),
    ("LeakyReLU", (0.2,)),
    ("ELU", (0.7,)),
    ("Softmax", (1,)),
    ("LogSoftmax", (-1,)),
    ("Identity", ()),
    ("Flatten", ()),
]


@pytest.mark.parametrize("name,args", MODULES, ids=[m[0] for m in MODULES])
def test_activation_modules(name: str, args: tuple, device: str) -> None:
    ours, theirs = getattr(nn, name)(*args), getattr(torch.nn, name)(*args)
    check(lambda x: ours(x), [rand(2, 3, 4, seed=5)], device, lambda x: theirs(x))


def test_softmax_implicit_dim_matches_torch(device: str) -> None:
    for shape in [(5,), (2, 3), (2, 3, 4), (2, 3, 2, 2)]:
        x = rand(*shape, seed=6)
        got = nn.Softmax()(ac.tensor(x, device=device)).numpy()
        with pytest.warns(UserWarning):
            want = torch.nn.Softmax()(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_layer_norm(device: str) -> None:
    x, w, b = rand(2, 3, 4, seed=7), rand(3, 4, seed=8), rand(3, 4, seed=9)
    check(
        lambda x, w, b: F.layer_norm(x, (3, 4), w, b),
        [x, w, b],
        device,
        lambda x, w, b: torch.nn.functional.layer_norm(x, (3, 4), w, b),
        fd=True,
    )
    check(
        lambda x: F.layer_norm(x, 4, eps=1e-2),
        [x],
        device,
        lambda x: torch.nn.functional.layer_norm(x, (4,), eps=1e-2),
    )
    with pytest.raises(ac.ShapeError, match=r"layer_norm: normalized_shape \(3,\)"):
        F.layer_norm(ac.ones(2, 4), (3,))


def test_layer_norm_module(device: str) -> None:
    ours, theirs = (
        nn.LayerNorm(4, eps=1e-3, bias=False).to(device),
        torch.nn.LayerNorm(4, 1e-3, bias=False),
    )
    assert [k for k, _ in ours.named_parameters()] == ["weight"]
    x = rand(3, 4, seed=10).astype(np.float32)
    check(lambda x: ours(x), [x], device, lambda x: theirs(x))


def test_rms_norm(device: str) -> None:
    x, w = rand(2, 5, seed=11).astype(np.float32), rand(5, seed=12).astype(np.float32)
    check(
        lambda x, w: F.rms_norm(x, (5,), w),
        [x, w],
        device,
        lambda x, w: torch.nn.functional.rms_norm(x, (5,), w),
    )
    check(
        lambda x: F.rms_norm(x, 5, eps=0.1),
        [x],
        device,
        lambda x: torch.nn.functional.rms_norm(x, (5,), eps=0.1),
    )
    ours, theirs = nn.RMSNorm(5).to(device), torch.nn.RMSNorm(5)
    check(lambda x: ours(x), [x], device, lambda x: theirs(x))


def test_dropout(device: str) -> None:
    ac.manual_seed(0)
    x = ac.ones(100_000, device=device)
    y = F.dropout(x, 0.3).numpy()
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.01  # std of the share is ~0.0015
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    assert F.dropout(x, 0.3, training=False) is x
    assert float(F.dropout(x, 1.0).sum().item()) == 0.0
    with pytest.raises(ValueError, match="dropout: probability has to be between 0 and 1"):
        F.dropout(x, 1.5)
    g = ac.ones(1000, requires_grad=True, device=device)  # gradient flows through kept ones
    out = F.dropout(g, 0.5)
    out.sum().backward()
    np.testing.assert_allclose(g.grad.numpy(), out.detach().numpy())  # type: ignore[union-attr]


def test_pad_and_normalize(device: str) -> None:
    check(
        lambda x: F.pad(x, (1, 2, 0, 1), value=0.5),
        [rand(2, 3, seed=13)],
        device,
        lambda x: torch.nn.functional.pad(x, (1, 2, 0, 1), value=0.5),
    )
    check(F.normalize, [rand(3, 4, seed=14)], device, torch.nn.functional.normalize)


# --- lookups: these call anychip.frontend.indexing (embedding, embedding_bag, one_hot) ---
def test_embedding_matches_torch(device: str) -> None:
    w = rand(10, 4, seed=15)
    idx = np.array([[1, 0, 9], [3, 3, 2]])
    check(F.embedding, [idx, w], device, lambda i, w: torch.nn.functional.embedding(i, w))
    check(
        lambda i, w: F.embedding(i, w, padding_idx=3),
        [idx, w],
        device,
        lambda i, w: torch.nn.functional.embedding(i, w, padding_idx=3),
    )


def test_embedding_module(device: str) -> None:
    emb = nn.Embedding(6, 3, padding_idx=2).to(device)
    assert emb.weight.numpy()[2].tolist() == [0.0, 0.0, 0.0]
    out = emb(ac.tensor([[2, 5]], device=device))
    assert out.shape == (1, 2, 3)
    np.testing.assert_array_equal(out.numpy()[0, 1], emb.weight.numpy()[5])


def test_embedding_bag_matches_torch(device: str) -> None:
    w = rand(10, 3, seed=16)
    flat, offsets = np.array([1, 2, 4, 5, 4, 3, 2, 9]), np.array([0, 3, 3, 6])
    psw = rand(8, seed=17)
    for mode in ("sum", "mean"):
        check(
            lambda i, w, o, m=mode: F.embedding_bag(i, w, o, mode=m),
            [flat, w, offsets],
            device,
            lambda i, w, o, m=mode: torch.nn.functional.embedding_bag(i, w, o, mode=m),
        )
    check(
        lambda i, w, o, p: F.embedding_bag(i, w, o, mode="sum", per_sample_weights=p),
        [flat, w, offsets, psw],
        device,
        lambda i, w, o, p: torch.nn.functional.embedding_bag(
            i, w, o, mode="sum", per_sample_weights=p
        ),
    )
    bags = np.array([[1, 2], [4, 4]])
    ours, theirs = nn.EmbeddingBag(10, 3, mode="sum"), torch.nn.EmbeddingBag(10, 3, mode="sum")
    ours.load_state_dict({"weight": w.astype(np.float32)})
    theirs.load_state_dict({"weight": torch.from_numpy(w.astype(np.float32))})
    got = ours(ac.tensor(bags, device=device)).numpy()
    np.testing.assert_allclose(got, theirs(torch.from_numpy(bags)).detach().numpy(), rtol=1e-6)


def test_one_hot_matches_torch(device: str) -> None:
    t = np.array([0, 3, 1, 3])
    for n in (-1, 5):
        got = F.one_hot(ac.tensor(t, device=device), n)
        want = torch.nn.functional.one_hot(torch.from_numpy(t), n)
        assert got.dtype is ac.int64
        np.testing.assert_array_equal(got.numpy(), want.numpy())


# --- gradient clipping -----------------------------------------------------------------
@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_grad_norm_matches_torch(norm_type: float, max_norm: float, device: str) -> None:
    grads = [rand(3, 4, seed=20), rand(5, seed=21), rand(2, 2, seed=22)]
    ours = [nn.Parameter(ac.zeros(*g.shape, dtype=ac.float64, device=device)) for g in grads]
    theirs = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for p, t, g in zip(ours, theirs, grads, strict=True):
        p.grad, t.grad = ac.tensor(g, device=device), torch.from_numpy(g.copy())
    got = nn.utils.clip_grad_norm_(ours, max_norm, norm_type)
    want = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    for p, t in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=1e-6)  # type: ignore[union-attr]


def test_clip_grad_value_and_nonfinite(device: str) -> None:
    p = nn.Parameter(ac.zeros(4, device=device))
    p.grad = ac.tensor([-3.0, -0.5, 0.5, 3.0], device=device)
    nn.utils.clip_grad_value_([p], 1.0)
    assert p.grad.tolist() == [-1.0, -0.5, 0.5, 1.0]
    p.grad = ac.tensor([float("inf"), 0.0, 0.0, 0.0], device=device)
    with pytest.raises(RuntimeError, match=r"clip_grad_norm_: the total norm of order 2\.0"):
        nn.utils.clip_grad_norm_(p, 1.0, error_if_nonfinite=True)
    q = nn.Parameter(ac.zeros(2))  # no gradient anywhere: the norm is 0
    assert nn.utils.clip_grad_norm_([q], 1.0).item() == 0.0


def test_parameter_and_module_basics() -> None:
    p = nn.Parameter(ac.tensor([1.0, 2.0]))
    assert isinstance(p, ac.Tensor) and p.requires_grad and p.is_leaf
    assert repr(p).startswith("Parameter containing:\ntensor([1., 2.]")
    assert not nn.Parameter(ac.zeros(1), requires_grad=False).requires_grad
    assert not isinstance(p * 2, nn.Parameter)  # ops on a Parameter give plain tensors
    with pytest.raises(ac.AutogradError, match="only floating point tensors"):
        nn.Parameter(ac.tensor([1, 2]))
    with pytest.raises(NotImplementedError, match='missing "forward"'):
        nn.Module()(ac.zeros(1))
