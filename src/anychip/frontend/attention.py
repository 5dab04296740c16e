"""Scaled dot-product attention from its parts: two batched matmuls (GEMMs) around a row
softmax, with causal, boolean and additive masks, dropout and a custom scale.

Written as `softmax(q @ k^T * scale + mask) @ v`, so the compiler fuses the mask, scale
and softmax into one row kernel between the GEMMs and autograd needs no rule of its own.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from anychip import dtypes
from anychip.errors import ArgumentError, DTypeError, ShapeError, describe

if TYPE_CHECKING:
    from anychip.frontend.tensor import Tensor


def causal_mask(n_q: int, n_k: int, device: str) -> Tensor:
    """(n_q, n_k) bool, True where key j may be seen by query i (j <= i, top-left aligned
    as torch's is_causal): made of two aranges, so it fuses into the softmax kernel."""
    from anychip.frontend.creation import arange

    rows = arange(n_q, device=device).reshape(n_q, 1)
    cols = arange(n_k, device=device).reshape(1, n_k)
    return cols <= rows


def attention_scores(
    query: Tensor,
    key: Tensor,
    attn_mask: Tensor | None,
    is_causal: bool,
    scale: float | None,
    op: str,
) -> Tensor:
    """The masked, scaled logits q @ k^T (..., L, S) that softmax turns into weights."""
    if query.ndim < 2 or key.ndim < 2 or query.shape[-1] != key.shape[-1]:
        raise ShapeError(
            f"{op}: query (..., L, E) and key (..., S, E) must share E, got {describe(query, key)}"
        )
    if not query.dtype.is_floating_point or query.dtype is not key.dtype:
        raise DTypeError(f"{op}: query and key must share one float dtype ({describe(query, key)})")
    s = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    scores = (query * s) @ key.transpose(-2, -1)
    n_q, n_k = query.shape[-2], key.shape[-2]
    if is_causal:
        if attn_mask is not None:
            raise ArgumentError(f"{op}: give attn_mask or is_causal=True, not both")
        scores = causal_mask(n_q, n_k, query.device)._select(scores, -math.inf)
    elif attn_mask is not None:
        if attn_mask.dtype is dtypes.bool_:  # True: may attend
            scores = attn_mask._select(scores, -math.inf)
        else:
            scores = scores + attn_mask.to(scores.dtype)
    return scores


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Tensor:
    """softmax(q @ k^T * scale + mask) @ v over (..., L, E), (..., S, E), (..., S, Ev):
    a bool `attn_mask` keeps True entries, a float one is added; `is_causal` masks keys
    after each query; `scale` defaults to 1/sqrt(E). As torch.nn.functional's.

    >>> import anychip as ac
    >>> q = ac.ones(1, 2, 4, 8)
    >>> scaled_dot_product_attention(q, q, q, is_causal=True).shape
    (1, 2, 4, 8)
    """
    if enable_gqa and query.ndim >= 3 and key.shape[-3] != query.shape[-3]:
        groups = query.shape[-3] // key.shape[-3]
        key = key.repeat_interleave(groups, -3)  # type: ignore[attr-defined]
        value = value.repeat_interleave(groups, -3)  # type: ignore[attr-defined]
    if value.shape[-2] != key.shape[-2]:
        raise ShapeError(
            "scaled_dot_product_attention: key and value need the same sequence length, "
            f"got {describe(key, value)}"
        )
    scores = attention_scores(
        query, key, attn_mask, is_causal, scale, "scaled_dot_product_attention"
    )
    weights = scores.softmax(-1)
    if dropout_p > 0.0:
        from anychip.frontend.random import rand

        if dropout_p >= 1.0:
            weights = weights * 0
        else:
            keep = rand(weights.shape, dtype=dtypes.float32, device=weights.device) >= dropout_p
            weights = keep._select(weights * (1.0 / (1.0 - dropout_p)), 0.0)
    return weights @ value.to(weights.dtype)
