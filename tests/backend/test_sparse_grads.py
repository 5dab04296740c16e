"""Row-sparse gradients of embedding tables (`sparse=True`) against torch's: indices,
values and dense value after coalesce, accumulation over backward calls, a dense use of
the same table, nn modules, and a jitted step that replays on batches of other ids."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import anychip as ac
from anychip.frontend.sparse import SparseTensor, sparse_coo_tensor

F = ac.nn.functional
I64 = np.int64
TOL = {"rtol": 1e-5, "atol": 1e-6}


def _tables(device: str, rows: int = 10, dim: int = 3) -> tuple[ac.Tensor, torch.Tensor]:
    w0 = np.random.default_rng(0).standard_normal((rows, dim)).astype(np.float32)
    return ac.tensor(w0, device=device, requires_grad=True), torch.tensor(w0, requires_grad=True)


def _same_grad(g: Any, tg: torch.Tensor) -> None:
    assert g.is_sparse and tg.is_sparse
    assert g.shape == tuple(tg.shape)
    c, tc = g.coalesce(), tg.coalesce()
    assert c.is_coalesced()
    np.testing.assert_array_equal(c._indices().numpy(), tc._indices().numpy())
    assert c._indices().dtype == ac.int64 and c._indices().shape == tuple(tc._indices().shape)
    np.testing.assert_allclose(c._values().numpy(), tc._values().numpy(), **TOL)
    np.testing.assert_allclose(g.to_dense().numpy(), tg.to_dense().numpy(), **TOL)


@pytest.mark.parametrize("mode", ["sum", "mean"])
@pytest.mark.parametrize("last", [False, True], ids=["offsets", "last_offset"])
def test_bag_offsets(device: str, mode: str, last: bool) -> None:
    ids = np.array([3, 1, 3, 7, 1, 1, 0, 9], I64)
    offs = np.array([0, 2, 5, 8] if last else [0, 2, 5], I64)
    w, tw = _tables(device)
    kw: dict[str, Any] = {"mode": mode, "include_last_offset": last, "sparse": True}
    out = F.embedding_bag(ac.tensor(ids, device=device), w, ac.tensor(offs, device=device), **kw)
    tout = TF.embedding_bag(torch.tensor(ids), tw, torch.tensor(offs), **kw)
    gy = np.random.default_rng(1).standard_normal(tuple(tout.shape)).astype(np.float32)
    (out * ac.tensor(gy, device=device)).sum().backward()
    (tout * torch.tensor(gy)).sum().backward()
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), **TOL)
    _same_grad(w.grad, tw.grad)


def test_bag_2d_weighted_and_padding(device: str) -> None:
    ids = np.array([[2, 5, 2], [5, 0, 4]], I64)
    psw = np.array([[0.5, 2.0, -1.0], [1.0, 3.0, 0.25]], np.float32)
    w, tw = _tables(device)
    out = F.embedding_bag(
        ac.tensor(ids, device=device), w, mode="sum", sparse=True,
        per_sample_weights=ac.tensor(psw, device=device), padding_idx=4,
    )  # fmt: skip
    tout = TF.embedding_bag(
        torch.tensor(ids), tw, mode="sum", sparse=True,
        per_sample_weights=torch.tensor(psw), padding_idx=4,
    )  # fmt: skip
    out.pow(2).sum().backward()
    tout.pow(2).sum().backward()
    _same_grad(w.grad, tw.grad)


def test_embedding_accumulates_and_adds_dense(device: str) -> None:
    w, tw = _tables(device)
    for ids in ([[2, 3], [3, 3]], [9, 2, 0]):
        F.embedding(ac.tensor(ids, device=device), w, sparse=True).tanh().sum().backward()
        TF.embedding(torch.tensor(ids), tw, sparse=True).tanh().sum().backward()
    assert not w.grad.is_coalesced()  # concatenated, as torch's sum of sparse gradients
    _same_grad(w.grad, tw.grad)
    with pytest.raises(ac.errors.ArgumentError, match="uncoalesced"):
        w.grad.indices()
    (w * 2).sum().backward()  # a dense use of the same table: the sum is dense
    (tw * 2).sum().backward()
    assert not w.grad.is_sparse and not tw.grad.is_sparse
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), **TOL)


def test_dense_then_sparse_in_one_graph(device: str) -> None:
    w, tw = _tables(device)
    ids = [1, 1, 4]
    loss = (w * w).sum() + F.embedding(ac.tensor(ids, device=device), w, sparse=True).sum()
    tloss = (tw * tw).sum() + TF.embedding(torch.tensor(ids), tw, sparse=True).sum()
    loss.backward()
    tloss.backward()
    assert not w.grad.is_sparse
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.to_dense().numpy(), **TOL)


@pytest.mark.parametrize("kind", ["bag", "embedding"])
def test_modules(device: str, kind: str) -> None:
    ac.manual_seed(0)
    if kind == "bag":
        m = ac.nn.EmbeddingBag(12, 4, mode="sum", sparse=True).to(device)
        tm = torch.nn.EmbeddingBag(12, 4, mode="sum", sparse=True)
    else:
        m = ac.nn.Embedding(12, 4, sparse=True).to(device)
        tm = torch.nn.Embedding(12, 4, sparse=True)
    with torch.no_grad():
        tm.weight.copy_(torch.from_numpy(m.weight.numpy()))
    ids = np.array([[0, 11, 0], [5, 5, 5]], I64)
    m(ac.tensor(ids, device=device)).sum().backward()
    tm(torch.tensor(ids)).sum().backward()
    _same_grad(m.weight.grad, tm.weight.grad)


def test_sparse_tensor_api(device: str) -> None:
    g = sparse_coo_tensor([[3, 0, 3]], [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], (4, 2))
    tg = torch.sparse_coo_tensor(
        [[3, 0, 3]], [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], (4, 2), check_invariants=True
    )
    assert isinstance(g, SparseTensor) and isinstance(g, ac.Tensor)
    assert g._nnz() == 3 and g.sparse_dim() == 1 and g.dense_dim() == 1
    _same_grad(g, tg)
    np.testing.assert_allclose((g * 2 + g).coalesce().to_dense().numpy(), 3 * tg.to_dense())
    np.testing.assert_allclose((-g).numpy(), -tg.to_dense().numpy())
    assert not ac.ones(2).is_sparse
    assert "sparse_coo" in repr(g)
    # metadata reads the parts: the dense value is not built for it
    h = sparse_coo_tensor([[1]], [[1.0, 2.0]], (4, 2))
    assert (h.shape, h.ndim, h.dtype, h.device) == ((4, 2), 2, ac.float32, g.device)
    assert h._dense is None


def test_jit_step_replays_on_new_ids(device: str) -> None:
    """The unique ids are a recorded host step: a jitted step replays on every batch and
    the table moves as in eager mode, exactly where the batch's rows are."""
    rows, dim = 50, 4
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal((rows, dim)).astype(np.float32)
    batches = [rng.integers(0, rows, 16) for _ in range(5)]
    batches[2][:] = 7  # one batch of one id: 15 padding slots

    ran = [0]

    def run(jit: bool) -> tuple[np.ndarray, ac.jit[Any] | None]:
        bag = ac.nn.EmbeddingBag(rows, dim, mode="sum", sparse=True, _weight=ac.tensor(w0))
        bag = bag.to(device)
        opt = ac.optim.SGD(bag.parameters(), lr=0.1)

        def step(bag: Any, opt: Any, ids: Any, offs: Any) -> Any:
            ran[0] += 1
            opt.zero_grad()
            loss = (bag(ids, offs) ** 2).sum()
            loss.backward()
            opt.step()
            return loss

        fn = ac.jit(step) if jit else step
        offs = ac.tensor(np.arange(0, 16, 4), device=device)
        for b in batches:
            fn(bag, opt, ac.tensor(b, device=device), offs)
        return bag.weight.numpy(), fn if jit else None

    eager, _ = run(False)
    ran[0] = 0
    jitted, fn = run(True)
    assert ran[0] == 2  # the first call (no gradients yet) and the capture; then replays
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-6)
    assert fn is not None and len(fn.captures) == 1  # one signature, replayed
    untouched = np.setdiff1d(np.arange(rows), np.concatenate(batches))
    np.testing.assert_array_equal(eager[untouched], w0[untouched])


def test_jit_replays_when_the_previous_gradient_had_another_size(device: str) -> None:
    """The previous step's gradient has the previous batch's slot count; a step that starts
    with zero_grad never reads it, so one capture per batch shape serves every order."""
    rows, dim = 40, 3
    rng = np.random.default_rng(4)
    w0 = rng.standard_normal((rows, dim)).astype(np.float32)
    sizes = [4, 8, 16, 4, 16, 8, 4, 8]  # ids per batch: every order of three shapes
    batches = [rng.integers(0, rows, (n, 2)) for n in sizes]
    ran = [0]

    def run(jit: bool) -> np.ndarray:
        emb = ac.nn.Embedding(rows, dim, sparse=True, _weight=ac.tensor(w0)).to(device)
        opt = ac.optim.Adagrad(emb.parameters(), lr=0.1)

        def step(emb: Any, opt: Any, ids: Any) -> Any:
            ran[0] += 1
            opt.zero_grad()
            loss = emb(ids).sin().sum()
            loss.backward()
            opt.step()
            return loss

        fn = ac.jit(step) if jit else step
        for b in batches:
            fn(emb, opt, ac.tensor(b, device=device))
        return emb.weight.numpy()

    eager = run(False)
    ran[0] = 0
    np.testing.assert_allclose(run(True), eager, rtol=1e-6, atol=1e-6)
    assert ran[0] == 4  # the first call, then one capture per shape (4, 8, 16)


def test_clip_grad_norm_scales_sparse_gradients(device: str) -> None:
    """torch refuses clip_grad_norm_ on sparse gradients: the reference is its dense twin."""
    w, tw = _tables(device)
    for ids in ([[2, 3], [3, 3]], [9, 2, 0]):  # uncoalesced: the norm sums duplicates first
        F.embedding(ac.tensor(ids, device=device), w, sparse=True).sum().backward()
        TF.embedding(torch.tensor(ids), tw).sum().backward()
    got = ac.nn.utils.clip_grad_norm_([w], 1.5)
    want = torch.nn.utils.clip_grad_norm_([tw], 1.5)
    np.testing.assert_allclose(got.item(), want.item(), rtol=1e-5)
    assert w.grad.is_sparse
    np.testing.assert_allclose(w.grad.to_dense().numpy(), tw.grad.numpy(), **TOL)
    with pytest.raises(ac.errors.InPlaceError, match="sparse"):
        w.grad.add_(1.0)
