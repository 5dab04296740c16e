"""Views alias their base, as in PyTorch: in-place ops through slices, select, view/reshape,
t/transpose/permute, narrow, unbind, unsqueeze, iteration and chains of them write
through; copies (reshape of a transposed view, contiguous, flip, repeat, advanced
indexing) do not; expanded views refuse all but fills. Every case runs the same code on
PyTorch and compares the base (and every other view of it) afterwards."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import anychip as ac

X = np.arange(12, dtype=np.float32).reshape(3, 4) - 4.5
Y = np.arange(24, dtype=np.float32).reshape(2, 3, 4) * 0.5


def _lib(x: Any) -> Any:
    return torch if isinstance(x, torch.Tensor) else ac


def _rows(x: Any) -> None:
    for row in x:
        row.add_(1)


def _unbind(x: Any) -> None:
    a, b, c = x.unbind(0)
    b.fill_(0)
    c.mul_(a)
    x.unbind(1)[3].sub_(2)


# each case changes x (3, 4) in place through a view; x must end up as PyTorch's does
WRITES: dict[str, Callable[[Any], Any]] = {
    "int_fill": lambda x: x[0].fill_(1),
    "column_add": lambda x: x[:, 1].add_(1),
    "view_flat_fill": lambda x: x.view(-1).fill_(2),
    "t_add": lambda x: x.t().add_(3),
    "narrow_copy": lambda x: x.narrow(1, 0, 2).copy_(_lib(x).ones(3, 2) * 7),
    "iterate_rows": _rows,
    "unsqueeze_add": lambda x: x.unsqueeze(0).add_(1),
    "select": lambda x: x.select(1, 2).mul_(-1),
    "reshape_view": lambda x: x.reshape(2, 6).mul_(2),
    "transpose_sub": lambda x: x.transpose(0, 1)[1:3].sub_(1),
    "permute_3d": lambda x: x.view(3, 2, 2).permute(2, 0, 1)[1].fill_(5),
    "unbind": _unbind,
    "split": lambda x: x.split(1, 1)[2].add_(5),
    "chunk": lambda x: x.chunk(2, 0)[1].zero_(),
    "step_slice": lambda x: x[::2, 1::2].fill_(0),
    "negative_index": lambda x: x[-1, -2:].add_(10),
    "ellipsis_none": lambda x: x[..., None, 1:3].mul_(4),
    "chain": lambda x: x[1:].t()[::2].t().sub_(3),
    "chain_of_views": lambda x: x.view(2, 6)[1].view(3, 2)[1:].fill_(7),
    "reshape_chain_copy_then_view": lambda x: x[1:].t()[::2].reshape(-1).sub_(3),
    "view_of_select": lambda x: x[2].view(2, 2).t()[0].fill_(8),
    "squeeze": lambda x: x[1:2].squeeze(0).add_(1),
    "flatten_unflatten": lambda x: x.flatten().unflatten(0, (2, 6))[1].mul_(3),
    "setitem_on_view": lambda x: x[0].__setitem__(slice(1, 3), 9.0),
    "expand_no_overlap": lambda x: x.unsqueeze(0).expand(1, 3, 4).add_(1),
    "expand_fill": lambda x: x[1:2].expand(5, 4).fill_(6),
    "expand_then_slice_fill": lambda x: x[:, :1].expand(3, 4)[:, 1:3].fill_(-1),
    "iadd_on_view": lambda x: x[1].__iadd__(100),
    "T_and_mT": lambda x: x.T.mT.T.add_(1),
    "detach": lambda x: x.detach()[0].zero_(),
    "detach_of_view_twice": lambda x: x[1:].detach().detach().t()[0].fill_(3),
    "data": lambda x: x.data.mul_(2),
}


@pytest.mark.parametrize("name", sorted(WRITES))
def test_inplace_writes_through_views(name: str, device: str) -> None:
    a = ac.tensor(X, device=device)
    t = torch.tensor(X)
    other_a, other_t = a[:, 1:3], t[:, 1:3]  # a second live view sees every change too
    WRITES[name](a)
    WRITES[name](t)
    np.testing.assert_array_equal(a.numpy(), t.numpy())
    np.testing.assert_array_equal(other_a.numpy(), other_t.numpy())


# each returns a tensor that PyTorch makes as a copy: changing it leaves x alone
COPIES: dict[str, Callable[[Any], Any]] = {
    "reshape_of_transposed": lambda x: x.t().reshape(12),
    "contiguous_of_transposed": lambda x: x.t().contiguous(),
    "flip": lambda x: x.flip(0),
    "flip_none": lambda x: x.flip(()),
    "repeat": lambda x: x.repeat(1, 1),
    "roll_zero": lambda x: x.roll(0, 1),
    "advanced_index": lambda x: x[[0, 2]],
    "mask_index": lambda x: x[x > 0],
    "clone": lambda x: x.clone(),
    "cat_one": lambda x: _lib(x).cat([x]),
    "stack_one": lambda x: _lib(x).stack([x]),
    "pad_zero": lambda x: (
        torch.nn.functional.pad(x, (0, 0)) if isinstance(x, torch.Tensor) else x.pad((0, 0))
    ),
}


@pytest.mark.parametrize("name", sorted(COPIES))
def test_copies_do_not_write_through(name: str, device: str) -> None:
    a = ac.tensor(X, device=device)
    t = torch.tensor(X)
    ca, ct = COPIES[name](a), COPIES[name](t)
    ca.add_(1)
    ct.add_(1)
    np.testing.assert_array_equal(a.numpy(), X)
    np.testing.assert_array_equal(ca.numpy(), ct.numpy())


def test_reads_of_views_follow_the_base(device: str) -> None:
    a, t = ac.tensor(Y, device=device), torch.tensor(Y)
    va = [a[1], a[:, 2], a.permute(2, 0, 1), a.view(6, 4)[1:4], a.detach()]
    vt = [t[1], t[:, 2], t.permute(2, 0, 1), t.view(6, 4)[1:4], t.detach()]
    for x in (a, t):
        x.mul_(2)
        x[0, 1].fill_(-1)
    for v, w in zip(va, vt):
        np.testing.assert_array_equal(v.numpy(), w.numpy())
    assert [v._version for v in va] == [v._version for v in vt]


def test_expanded_views_refuse_writes_as_torch() -> None:
    for op in (lambda e: e.add_(1), lambda e: e.mul_(2), lambda e: e.copy_(e * 0)):
        a, t = ac.zeros(2, 3), torch.zeros(2, 3)
        with pytest.raises(RuntimeError):
            op(t[0].expand(2, 3))
        with pytest.raises(ac.InPlaceError, match=r"expanded view.*\(2, 3\)") as e:
            op(a[0].expand(2, 3))
        assert isinstance(e.value, RuntimeError)
        assert a.tolist() == [[0.0] * 3] * 2


def test_view_of_non_contiguous_layout_errors_as_torch() -> None:
    with pytest.raises(RuntimeError):
        torch.zeros(2, 3).t().view(6)
    with pytest.raises(ac.ShapeError, match=r"view: shape \(6,\).*reshape"):
        ac.zeros(2, 3).t().view(6)
    # views that keep each contiguous run whole are fine in both
    assert ac.zeros(2, 3, 4).permute(1, 0, 2).view(3, 2, 2, 2).shape == (3, 2, 2, 2)
    assert torch.zeros(2, 3, 4).permute(1, 0, 2).view(3, 2, 2, 2).shape == (3, 2, 2, 2)


def test_contiguity_matches_torch() -> None:
    cases: list[Callable[[Any], Any]] = [
        lambda x: x,
        lambda x: x.t(),
        lambda x: x[1],
        lambda x: x[:, 1],
        lambda x: x[1:],
        lambda x: x[:, ::2],
        lambda x: x.t().t(),
        lambda x: x.unsqueeze(1),
        lambda x: x[0:1].expand(3, 4),
    ]
    for f in cases:
        view = f(ac.zeros(3, 4))
        assert (view.contiguous() is view) == f(torch.zeros(3, 4)).is_contiguous()


def test_weight_ema_through_data_and_detach(device: str) -> None:
    got, want = [], []
    for lib, out in ((ac, got), (torch, want)):
        p = lib.tensor(X) if lib is torch else lib.tensor(X, device=device)
        p.requires_grad_(True)
        q = p.detach() * 0 + 1
        ema = lib.zeros(3, 4) if lib is torch else lib.zeros(3, 4, device=device)
        for _ in range(3):
            ema.data.mul_(0.9).add_(p.data, alpha=0.1)  # EMA habits write through .data
            p.detach().sub_(q)
        out += [ema.numpy(), p.detach().numpy()]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6)


def test_data_assignment_gives_new_storage() -> None:
    for lib in (ac, torch):
        x = lib.zeros(3)
        v = x[:2]
        x.data = lib.ones(3)
        v.fill_(5)  # v keeps the old storage: x is unchanged, as in PyTorch
        assert x.tolist() == [1.0, 1.0, 1.0] and v.tolist() == [5.0, 5.0]


def test_views_see_a_jitted_update(device: str) -> None:
    p = ac.zeros(2, 3, device=device)
    row = p[1]

    @ac.jit
    def step(p: ac.Tensor) -> None:
        p.add_(1)

    for _ in range(3):  # the first call captures, the others replay
        step(p)
    assert p.tolist() == [[3.0] * 3] * 2 and row.tolist() == [3.0] * 3


def test_stride_and_is_contiguous_follow_views_as_torch(device: str) -> None:
    import torch

    cases = [
        lambda x: x,
        lambda x: x.t(),
        lambda x: x[:, 1:3],
        lambda x: x[::2],
        lambda x: x.unsqueeze(0).expand(2, 4, 6),
        lambda x: x.permute(1, 0)[1],
    ]
    for f in cases:
        a = f(ac.zeros(4, 6, device=device))
        t = f(torch.zeros(4, 6))
        assert a.stride() == t.stride()
        assert a.is_contiguous() == t.is_contiguous()
