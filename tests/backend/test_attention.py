"""scaled_dot_product_attention, nn.MultiheadAttention and nn.TransformerEncoderLayer
against PyTorch: forward values and gradients, on every device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import anychip as ac
import anychip.nn.functional as F
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
