"""scaled_dot_product_attention, nn.MultiheadAttention and nn.TransformerEncoderLayer
against PyTorch: forward values and gradients, on every device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import anychip as ac
import anychip.nn.functional as F
from anychip.frontend import attention
from anychip.ir.ops import Node, Ops
from helpers import check, rand

TF = torch.nn.functional


@pytest.mark.parametrize(
    ("kw", "lq", "lk"),
    [
        ({}, 5, 5),
        ({"is_causal": True}, 6, 6),
        ({"is_causal": True}, 4, 6),
        ({"scale": 0.3}, 5, 3),
    ],
)
def test_sdpa_matches_torch(device: str, kw: dict, lq: int, lk: int) -> None:
    check(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **kw),
        [rand(2, 3, lq, 4), rand(2, 3, lk, 4, seed=1), rand(2, 3, lk, 5, seed=2)],
        device,
        torch_fn=lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, **kw),
    )


@pytest.mark.parametrize(("lq", "lk"), [(7, 7), (5, 8), (9, 3), (4, 4)])
def test_sdpa_causal_blocks_match_torch(
    device: str, lq: int, lk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # blocks of 2 query rows: a partial last block, keys past L (never seen), queries past
    # S (every key seen: no mask), and exactly two blocks
    monkeypatch.setattr(attention, "CAUSAL_BLOCK", 2)
    check(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        [rand(2, 3, lq, 4), rand(2, 3, lk, 4, seed=1), rand(2, 3, lk, 5, seed=2)],
        device,
        torch_fn=lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True),
    )


def test_sdpa_causal_blocks_skip_the_masked_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    # each block's scores are (rows, keys up to its last row): the upper blocks are skipped
    monkeypatch.setattr(attention, "CAUSAL_BLOCK", 2)
    q = ac.ones(1, 6, 4, device="ref")
    out = F.scaled_dot_product_attention(q, q, q, is_causal=True)
    sizes = {n.shape[-2:] for n in _walk(out.node) if n.op is Ops.EXP}
    assert sizes == {(2, 2), (2, 4), (2, 6)}


def _walk(root: Node) -> list[Node]:
    out, seen, todo = [], set(), [root]
    while todo:
        n = todo.pop()
        if id(n) not in seen:
            seen.add(id(n))
            out.append(n)
            todo.extend(n.srcs)
    return out


def _torch_math_sdpa(q, k, v, mask):  # type: ignore[no-untyped-def]
    w = (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5 + mask).softmax(-1)
    return w @ v


def test_sdpa_second_derivatives_match_torch(device: str) -> None:
    # create_graph: the gradient is differentiated again (the composite softmax's rules)
    arrs = [rand(1, 2, 5, 4, seed=i).astype(np.float32) for i in range(3)]
    add = rand(5, 5, seed=7).astype(np.float32)
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in arrs)
    aq, ak, av = (ac.tensor(a, device=device, requires_grad=True) for a in arrs)
    tout = _torch_math_sdpa(tq, tk, tv, torch.tensor(add))
    aout = F.scaled_dot_product_attention(aq, ak, av, attn_mask=ac.tensor(add, device=device))
    (tg,) = torch.autograd.grad(tout.square().sum(), tq, create_graph=True)
    (ag,) = ac.autograd.grad(aout.square().sum(), aq, create_graph=True)
    np.testing.assert_allclose(ag.numpy(), tg.detach().numpy(), atol=1e-4, rtol=1e-4)
    (tgk,) = torch.autograd.grad(tg.square().sum(), tk)
    (agk,) = ac.autograd.grad(ag.square().sum(), ak)
    np.testing.assert_allclose(agk.numpy(), tgk.numpy(), atol=1e-4, rtol=1e-4)


def test_sdpa_gradient_to_a_float_mask(device: str) -> None:
    add = rand(5, 6, seed=4)
    check(
        lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
        [rand(2, 3, 5, 4), rand(2, 3, 6, 4, seed=1), rand(2, 3, 6, 4, seed=2), add],
        device,
        torch_fn=lambda q, k, v, m: TF.scaled_dot_product_attention(q, k, v, attn_mask=m),
    )


def test_sdpa_masks_match_torch(device: str) -> None:
    keep = np.random.default_rng(3).random((5, 6)) > 0.3
    keep[:, 0] = True  # every query sees a key (a fully masked row is NaN in both)
    add = rand(2, 1, 5, 6, seed=4)
    for mask_np in (keep, add):
        check(
            lambda q, k, v, m=mask_np: F.scaled_dot_product_attention(
                q, k, v, attn_mask=ac.tensor(m, device=device)
            ),
            [rand(2, 3, 5, 4), rand(2, 3, 6, 4, seed=1), rand(2, 3, 6, 4, seed=2)],
            device,
            torch_fn=lambda q, k, v, m=mask_np: TF.scaled_dot_product_attention(
                q, k, v, attn_mask=torch.tensor(m)
            ),
        )


def test_sdpa_dropout_keeps_expectation(device: str) -> None:
    # dropout zeroes weights with probability p and rescales: the mean output is unchanged
    q = ac.zeros(1, 1, 2048, 2, device=device)  # uniform weights 1/8 over 8 keys
    k = ac.zeros(1, 1, 8, 2, device=device)
    v = ac.ones(1, 1, 8, 3, device=device)
    ac.manual_seed(0)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.5).numpy()
    assert abs(out.mean() - 1.0) < 0.05
    assert out.min() < 0.9  # something was dropped


def test_sdpa_causal_blocks_dropout_keeps_expectation(
    device: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attention, "CAUSAL_BLOCK", 8)
    q = ac.zeros(16, 4, 64, 2, device=device)  # row i: weights 1/(i+1) over keys 0..i
    v = ac.ones(16, 4, 64, 3, device=device)
    ac.manual_seed(0)
    out = F.scaled_dot_product_attention(q, q, v, dropout_p=0.5, is_causal=True).numpy()
    assert abs(out.mean() - 1.0) < 0.05
    assert out.min() < 0.9


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_float16_scales_before_the_product(
    device: str, causal: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # q . k = 64 * 40^2 overflows float16, q . k / 8 does not: torch's result is finite
    monkeypatch.setattr(attention, "CAUSAL_BLOCK", 4)
    x = np.full((1, 1, 12, 64), 40.0, np.float32)
    a = ac.tensor(x, device=device).to(ac.float16)
    t = torch.tensor(x).half()
    out = F.scaled_dot_product_attention(a, a, a, is_causal=causal).float().numpy()
    ref = TF.scaled_dot_product_attention(t, t, t, is_causal=causal).float().numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-3)


def _copy(tm: torch.nn.Module, am: ac.nn.Module) -> None:
    am.load_state_dict({k: ac.tensor(v.detach().numpy()) for k, v in tm.state_dict().items()})


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_matches_torch(device: str, batch_first: bool) -> None:
    torch.manual_seed(0)
    tm = torch.nn.MultiheadAttention(8, 2, batch_first=batch_first)
    am = ac.nn.MultiheadAttention(8, 2, batch_first=batch_first).to(device)
    _copy(tm, am)
    shape_q = (3, 5, 8) if batch_first else (5, 3, 8)
    shape_k = (3, 6, 8) if batch_first else (6, 3, 8)
    q, k = rand(*shape_q).astype(np.float32), rand(*shape_k, seed=1).astype(np.float32)
    pad = np.zeros((3, 6), dtype=np.float32)  # additive, like attn_mask (torch warns on mixes)
    pad[1, 4:] = -np.inf
    amask = rand(5, 6, seed=5).astype(np.float32)
    tq, tk = torch.tensor(q, requires_grad=True), torch.tensor(k, requires_grad=True)
    aq, ak = (
        ac.tensor(q, device=device, requires_grad=True),
        ac.tensor(k, device=device, requires_grad=True),
    )
    tout, tw = tm(tq, tk, tk, key_padding_mask=torch.tensor(pad), attn_mask=torch.tensor(amask))
    aout, aw = am(
        aq,
        ak,
        ak,
        key_padding_mask=ac.tensor(pad, device=device),
        attn_mask=ac.tensor(amask, device=device),
    )
    np.testing.assert_allclose(aout.numpy(), tout.detach().numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(aw.numpy(), tw.detach().numpy(), atol=1e-5, rtol=1e-5)
    tout.square().sum().backward()
    aout.square().sum().backward()
    np.testing.assert_allclose(aq.grad.numpy(), tq.grad.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(ak.grad.numpy(), tk.grad.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(
        am.in_proj_weight.grad.numpy(), tm.in_proj_weight.grad.numpy(), atol=1e-4, rtol=1e-4
    )


def test_multihead_attention_bool_mask_and_unbatched(device: str) -> None:
    torch.manual_seed(1)
    tm = torch.nn.MultiheadAttention(4, 1)
    am = ac.nn.MultiheadAttention(4, 1).to(device)
    _copy(tm, am)
    x = rand(5, 4).astype(np.float32)
    banned = np.triu(np.ones((5, 5), dtype=bool), 1)  # MHA: True = may not attend
    tout, tw = tm(*(torch.tensor(x),) * 3, attn_mask=torch.tensor(banned))
    aout, aw = am(*(ac.tensor(x, device=device),) * 3, attn_mask=ac.tensor(banned, device=device))
    np.testing.assert_allclose(aout.numpy(), tout.detach().numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(aw.numpy(), tw.detach().numpy(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder_layer_matches_torch(device: str, norm_first: bool) -> None:
    torch.manual_seed(2)
    kw = {"dim_feedforward": 16, "dropout": 0.0, "batch_first": True, "norm_first": norm_first}
    tm = torch.nn.TransformerEncoderLayer(8, 2, activation="gelu", **kw)
    am = ac.nn.TransformerEncoderLayer(8, 2, activation="gelu", **kw).to(device)
    _copy(tm, am)
    tm.eval()  # torch's fast path is only taken in eval with no grad; we stay in math mode
    am.eval()
    x = rand(2, 5, 8).astype(np.float32)
    tx, ax = torch.tensor(x, requires_grad=True), ac.tensor(x, device=device, requires_grad=True)
    ty = tm(tx, is_causal=True, src_mask=torch.nn.Transformer.generate_square_subsequent_mask(5))
    ay = am(ax, is_causal=True)
    np.testing.assert_allclose(ay.numpy(), ty.detach().numpy(), atol=1e-5, rtol=1e-5)
    ty.square().sum().backward()
    ay.square().sum().backward()
    np.testing.assert_allclose(ax.grad.numpy(), tx.grad.numpy(), atol=1e-4, rtol=1e-4)


def test_attention_errors() -> None:
    with pytest.raises(ac.ShapeError, match="scaled_dot_product_attention: query"):
        F.scaled_dot_product_attention(ac.ones(2, 3, 4), ac.ones(2, 3, 5), ac.ones(2, 3, 5))
    with pytest.raises(ac.ArgumentError, match="embed_dim 6 must be divisible by num_heads 4"):
        ac.nn.MultiheadAttention(6, 4)
