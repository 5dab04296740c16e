"""Attention layers: MultiheadAttention and TransformerEncoderLayer (PyTorch's parameter
names and argument conventions) on `scaled_dot_product_attention`'s parts."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from anychip import dtypes
from anychip.errors import ArgumentError, ShapeError, describe
from anychip.frontend.attention import attention_weights
from anychip.frontend.tensor import Tensor
from anychip.nn import functional as F, init
from anychip.nn.layers import Dropout, LayerNorm, Linear, _empty
from anychip.nn.module import Module, Parameter


def _as_additive(mask: Tensor, dtype: dtypes.DType) -> Tensor:
    """MHA masks: bool True means 'do not attend' (the opposite of SDPA's); floats add."""
    if mask.dtype is dtypes.bool_:
        zeros = Tensor._const(0.0, dtype, mask.shape, mask.device)
        return mask._select(-math.inf, zeros)
    return mask.to(dtype)


class MultiheadAttention(Module):
    """Multi-head attention: project q, k, v with `in_proj_weight` (3E, E), attend per
    head, project back with `out_proj`. Inputs (L, N, E), or (N, L, E) with batch_first.
    Returns (output, weights averaged over heads or None).

    >>> import anychip as ac
    >>> mha = ac.nn.MultiheadAttention(8, 2, batch_first=True)
    >>> x = ac.ones(3, 5, 8)
    >>> out, w = mha(x, x, x)
    >>> out.shape, w.shape
    ((3, 5, 8), (3, 5, 5))
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ArgumentError(
                f"MultiheadAttention: embed_dim {embed_dim} must be divisible by num_heads "
                f"{num_heads}"
            )
        if add_bias_kv or add_zero_attn or kdim not in (None, embed_dim):
            raise ArgumentError(
                "MultiheadAttention: add_bias_kv, add_zero_attn and kdim/vdim other than "
                "embed_dim are not supported"
            )
        if vdim not in (None, embed_dim):
            raise ArgumentError("MultiheadAttention: vdim other than embed_dim is not supported")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.head_dim, self.batch_first = embed_dim // num_heads, batch_first
        self.in_proj_weight = Parameter(_empty((3 * embed_dim, embed_dim), device, dtype))
        if bias:
            self.in_proj_bias: Parameter | None = Parameter(_empty((3 * embed_dim,), device, dtype))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, device=device, dtype=dtype)
        init.xavier_uniform_(self.in_proj_weight)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
        if self.out_proj.bias is not None:
            init.zeros_(self.out_proj.bias)

    def _heads(self, x: Tensor, n: int) -> Tensor:
        """(n, T, E) -> (n, H, T, head_dim)."""
        return x.reshape(n, x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        unbatched = query.ndim == 2
        if unbatched:  # (L, E) -> (1, L, E)
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:  # (L, N, E) -> (N, L, E)
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        if query.ndim != 3 or query.shape[-1] != self.embed_dim:
            raise ShapeError(
                f"MultiheadAttention: expected inputs with last dimension {self.embed_dim}, "
                f"got {describe(query, key, value)}"
            )
        n, length, src = query.shape[0], query.shape[1], key.shape[1]
        w, b = (
            self.in_proj_weight.chunk(3),
            (self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None,) * 3),
        )
        q, k, v = (
            self._heads(F.linear(t, wi, bi), n)
            for t, wi, bi in zip((query, key, value), w, b, strict=True)
        )
        mask = self._mask(attn_mask, key_padding_mask, n, length, src, q.dtype)
        weights = attention_weights(q, k, mask, is_causal and mask is None, None, "attention")
        attn = F.dropout(weights, self.dropout, self.training)
        out = (attn @ v).transpose(1, 2).reshape(n, length, self.embed_dim)
        out = self.out_proj(out)
        if unbatched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        avg = weights.mean(1) if average_attn_weights else weights
        return out, avg.squeeze(0) if unbatched else avg

    def _mask(
        self,
        attn_mask: Tensor | None,
        key_padding_mask: Tensor | None,
        n: int,
        length: int,
        src: int,
        dtype: dtypes.DType,
    ) -> Tensor | None:
        """One additive (n, H, L, S) mask from attn_mask (L, S) or (n*H, L, S) and
        key_padding_mask (n, S)."""
        out: Tensor | None = None
        if attn_mask is not None:
            m = _as_additive(attn_mask, dtype)
            if m.ndim == 3:
                m = m.reshape(n, self.num_heads, length, src)
            out = m
        if key_padding_mask is not None:
            kp = _as_additive(key_padding_mask, dtype).reshape(n, 1, 1, src)
            out = kp if out is None else out + kp
        return out


def _activation(act: str | Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    if callable(act):
        return act
    if act == "relu":
        return F.relu
    if act == "gelu":
        return F.gelu
    raise ArgumentError(f"TransformerEncoderLayer: activation should be relu/gelu, not {act!r}")


class TransformerEncoderLayer(Module):
    """Self-attention then a feed-forward block, each with a residual and LayerNorm
    (after, or before with norm_first), as torch.nn.TransformerEncoderLayer.

    >>> import anychip as ac
    >>> layer = ac.nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True)
    >>> layer(ac.ones(2, 5, 16)).shape
    (2, 5, 16)
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str | Callable[[Tensor], Tensor] = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.self_attn = MultiheadAttention(
            d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, **kw
        )
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **kw)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **kw)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.dropout1, self.dropout2 = Dropout(dropout), Dropout(dropout)
        self.activation = _activation(activation)

    def _sa(self, x: Tensor, mask: Tensor | None, pad: Tensor | None, causal: bool) -> Tensor:
        out, _ = self.self_attn(
            x, x, x, attn_mask=mask, key_padding_mask=pad, need_weights=False, is_causal=causal
        )
        dropped: Tensor = self.dropout1(out)
        return dropped

    def _ff(self, x: Tensor) -> Tensor:
        out: Tensor = self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))
        return out

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        x = src
        if self.norm_first:
            x = x + self._sa(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._ff(self.norm2(x))
        x = self.norm1(x + self._sa(x, src_mask, src_key_padding_mask, is_causal))
        out: Tensor = self.norm2(x + self._ff(x))
        return out
