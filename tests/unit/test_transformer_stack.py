"""nn.Transformer, TransformerEncoder and TransformerDecoder(Layer) against torch's, with
torch's weights loaded by name."""

from typing import Any

import numpy as np
import pytest
import torch

import anychip as ac


def load(dst: Any, src: Any) -> None:
    dst.load_state_dict({k: ac.tensor(v.detach().numpy()) for k, v in src.state_dict().items()})


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_matches_torch_with_masks(norm_first: bool) -> None:
    torch.manual_seed(0)
    kw = {"dim_feedforward": 16, "dropout": 0.0, "batch_first": True, "norm_first": norm_first}
    t = torch.nn.Transformer(8, 2, 2, 2, **kw)
    m = ac.nn.Transformer(8, 2, 2, 2, **kw)
    load(m, t)
    rng = np.random.default_rng(0)
    src, tgt = rng.standard_normal((2, 5, 8)), rng.standard_normal((2, 4, 8))
    pad = np.zeros((2, 5), bool)
    pad[1, 3:] = True
    ts, tt = (torch.tensor(a, dtype=torch.float32, requires_grad=True) for a in (src, tgt))
    ms, mt = (ac.tensor(a, dtype=ac.float32, requires_grad=True) for a in (src, tgt))
    want = t(
        ts,
        tt,
        tgt_mask=torch.nn.Transformer.generate_square_subsequent_mask(4),
        src_key_padding_mask=torch.tensor(pad),
        memory_key_padding_mask=torch.tensor(pad),
    )
    got = m(
        ms,
        mt,
        tgt_mask=ac.nn.Transformer.generate_square_subsequent_mask(4),
        src_key_padding_mask=ac.tensor(pad),
        memory_key_padding_mask=ac.tensor(pad),
    )
    np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), atol=2e-5)
    (want * want).sum().backward()
    (got * got).sum().backward()
    np.testing.assert_allclose(ms.grad.numpy(), ts.grad.numpy(), atol=1e-4)
    np.testing.assert_allclose(mt.grad.numpy(), tt.grad.numpy(), atol=1e-4)
    w = "decoder.layers.1.multihead_attn.in_proj_weight"
    np.testing.assert_allclose(
        dict(m.named_parameters())[w].grad.numpy(),
        dict(t.named_parameters())[w].grad.numpy(),
        atol=1e-4,
    )


def test_encoder_layers_are_independent_copies() -> None:
    layer = ac.nn.TransformerEncoderLayer(8, 2, dim_feedforward=16)
    enc = ac.nn.TransformerEncoder(layer, 3, norm=ac.nn.LayerNorm(8))
    assert len(enc.layers) == 3 and enc.layers[0] is not enc.layers[1]
    a = enc.layers[0].linear1.weight
    b = enc.layers[1].linear1.weight
    assert a is not b and np.array_equal(a.numpy(), b.numpy())
    mask = ac.nn.Transformer.generate_square_subsequent_mask(3).numpy()
    np.testing.assert_array_equal(
        mask, torch.nn.Transformer.generate_square_subsequent_mask(3).numpy()
    )
