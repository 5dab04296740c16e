"""Scaled dot-product attention from its parts: two batched matmuls (GEMMs) around a row
softmax, with causal, boolean and additive masks, dropout and a custom scale.

Written as `softmax(q @ k^T * scale + mask) @ v`: the compiler fuses the mask, scale and
softmax into one row kernel between the GEMMs. The softmax's gradient is given directly
(`softmax_weights`: one row kernel that reuses the weights), and causal attention runs in
blocks of query rows, each against only the keys it can see (`CAUSAL_BLOCK`), so the GEMMs
and the softmax skip the masked upper triangle (about half the work at 512 tokens).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from anychip import dtypes
from anychip.errors import ArgumentError, DTypeError, ShapeError, describe

if TYPE_CHECKING:
    from anychip.frontend.tensor import Tensor

# causal attention: query rows per block; a block [i0, i1) is scored against keys [0, i1)
# only. Sequences shorter than two blocks run as one (L, S) block.
CAUSAL_BLOCK = 128

Mask = Callable[["Tensor"], "Tensor"]


def causal_mask(n_q: int, n_k: int, device: str, q0: int = 0) -> Tensor:
    """(n_q, n_k) bool, True where key j may be seen by query q0 + i (j <= q0 + i, top-left
    aligned as torch's is_causal): made of two aranges, so it fuses into the softmax kernel."""
    from anychip.frontend.creation import arange

    rows = arange(q0, q0 + n_q, device=device).reshape(n_q, 1)
    cols = arange(n_k, device=device).reshape(1, n_k)
    return cols <= rows


def _check(query: Tensor, key: Tensor, scale: float | None, op: str) -> float:
    """The shape and dtype rules of q @ k^T; returns the scale (default 1/sqrt(E))."""
    if query.ndim < 2 or key.ndim < 2 or query.shape[-1] != key.shape[-1]:
        raise ShapeError(
            f"{op}: query (..., L, E) and key (..., S, E) must share E, got {describe(query, key)}"
        )
    if not query.dtype.is_floating_point or query.dtype is not key.dtype:
        raise DTypeError(f"{op}: query and key must share one float dtype ({describe(query, key)})")
    return 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)


def _masker(attn_mask: Tensor | None, is_causal: bool, n_q: int, n_k: int, op: str) -> Mask:
    """The function that masks raw scores (..., n_q, n_k): -inf where a key may not be seen
    (causal, or a bool mask's False), plus a float mask."""
    if is_causal:
        if attn_mask is not None:
            raise ArgumentError(f"{op}: give attn_mask or is_causal=True, not both")
        return lambda s: causal_mask(n_q, n_k, s.device)._select(s, -math.inf)
    if attn_mask is None:
        return lambda s: s
    mask = attn_mask
    if mask.dtype is dtypes.bool_:  # True: may attend
        return lambda s: mask._select(s, -math.inf)
    return lambda s: s + mask.to(s.dtype)


def softmax_weights(raw: Tensor, mask: Mask, scale: float = 1.0) -> Tensor:
    """softmax(mask(raw * scale)) over the last axis, raw (..., L, S) finite scores.

    Its gradient is written directly, d raw = scale P (g - sum(g P)): one row kernel reading
    the weights P the forward stored (for the next GEMM anyway) and the incoming g, where
    the composite softmax's derivative rules recompute exp and store the row sums apart.
    The forward is P + (raw - raw): exactly P, with an edge back to raw whose gradient a
    hook replaces by the formula above (raw finite: the mask's -inf stays inside P)."""
    from anychip.frontend.hooks import register_hook
    from anychip.frontend.tensor import Tensor, is_grad_enabled

    if not (raw.requires_grad and is_grad_enabled()):
        return mask(raw * scale).softmax(-1)
    fixed = raw.detach()
    link = raw - fixed  # zeros; autograd reaches raw through it
    weights = mask(fixed * scale).softmax(-1) + link
    kept = weights.node  # the node, not the tensor: no cycle back to link's record

    def grad(g: Tensor) -> Tensor:
        if is_grad_enabled():  # create_graph: differentiate the composite (second order)
            from anychip.frontend.autograd import grad as autograd_grad

            (out,) = autograd_grad(mask(raw * scale).softmax(-1), raw, g, create_graph=True)
            return out  # type: ignore[no-any-return]
        p = Tensor._from_node(kept)
        return p * (g - (g * p).sum(-1, keepdim=True)) * scale

    register_hook(link, grad)
    return weights


def _dropout(weights: Tensor, dropout_p: float) -> Tensor:
    if dropout_p <= 0.0:
        return weights
    if dropout_p >= 1.0:
        return weights * 0
    from anychip.frontend.random import rand

    keep = rand(weights.shape, dtype=dtypes.float32, device=weights.device) >= dropout_p
    return keep._select(weights * (1.0 / (1.0 - dropout_p)), 0.0)


def _prescaled(q: Tensor, scale: float) -> tuple[Tensor, float]:
    """(q, scale) to score with: halves scale q before the GEMM, as before, since their
    unscaled q k^T can overflow (float16 stops at 65504) where the scaled one does not."""
    if q.dtype in (dtypes.float16, dtypes.bfloat16) and scale != 1.0:
        return q * scale, 1.0
    return q, scale


def _scores(q: Tensor, k: Tensor) -> Tensor:
    """q @ k^T (..., L, S) as a sum over E of q (..., L, 1, E) times k (..., 1, S, E): the
    same GEMM as the matmul, but k's gradient comes out (..., S, E) as k is laid out, where
    the matmul's (of k^T) would be (..., E, S), transposed again by an extra kernel."""
    from anychip.frontend.linalg import _batch_shape, contract

    batch = _batch_shape(q, k, q.shape[:-2], k.shape[:-2])
    full = (*batch, q.shape[-2], k.shape[-2], q.shape[-1])
    return contract(q.unsqueeze(-2)._broadcast(full), k.unsqueeze(-3)._broadcast(full), -1)


def attention_weights(
    query: Tensor,
    key: Tensor,
    attn_mask: Tensor | None,
    is_causal: bool,
    scale: float | None,
    op: str,
) -> Tensor:
    """softmax(q @ k^T * scale + mask) (..., L, S), the weights that multiply v. The
    softmax's gradient is given directly (`softmax_weights`), unless a float mask needs a
    gradient of its own (then the composite softmax's rules give both)."""
    q, s = _prescaled(query, _check(query, key, scale, op))
    mask = _masker(attn_mask, is_causal, query.shape[-2], key.shape[-2], op)
    raw = _scores(q, key)
    if attn_mask is not None and attn_mask.requires_grad:
        return mask(raw * s).softmax(-1)
    return softmax_weights(raw, mask, s)


def _attend(q: Tensor, k: Tensor, v: Tensor, mask: Mask, scale: float, dropout_p: float) -> Tensor:
    """softmax(mask(q @ k^T * scale)) @ v: the scale is applied inside the softmax's row
    kernel (scaling q first would be a kernel of its own, and another for q's gradient)."""
    weights = _dropout(softmax_weights(_scores(q, k), mask, scale), dropout_p)
    return weights @ v.to(weights.dtype)


def _causal_blocks(q: Tensor, k: Tensor, v: Tensor, scale: float, dropout_p: float) -> Tensor:
    """Causal attention by blocks of CAUSAL_BLOCK query rows: rows [i0, i1) against keys
    [0, min(i1, S)), the causal mask only where a block meets the diagonal; the blocks'
    outputs are joined along L."""
    from anychip.frontend.creation import cat

    n_q, n_k = q.shape[-2], k.shape[-2]
    outs = []
    for i0 in range(0, n_q, CAUSAL_BLOCK):
        i1 = min(i0 + CAUSAL_BLOCK, n_q)
        end = min(i1, n_k)  # keys at or after i1 are masked for every row of the block
        qb = q._shrink([(0, n) for n in q.shape[:-2]] + [(i0, i1), (0, q.shape[-1])])
        kb = k._shrink([(0, n) for n in k.shape[:-2]] + [(0, end), (0, k.shape[-1])])
        vb = v._shrink([(0, n) for n in v.shape[:-2]] + [(0, end), (0, v.shape[-1])])

        def mask(s: Tensor, i0: int = i0, i1: int = i1, end: int = end) -> Tensor:
            if end <= i0 + 1:  # every key of the block is at or before its first row
                return s
            return causal_mask(i1 - i0, end, s.device, i0)._select(s, -math.inf)

        outs.append(_attend(qb, kb, vb, mask, scale, dropout_p))
    return cat(outs, -2)


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
    op = "scaled_dot_product_attention"
    if enable_gqa and query.ndim >= 3 and key.shape[-3] != query.shape[-3]:
        groups = query.shape[-3] // key.shape[-3]
        key = key.repeat_interleave(groups, -3)  # type: ignore[attr-defined]
        value = value.repeat_interleave(groups, -3)  # type: ignore[attr-defined]
    if value.shape[-2] != key.shape[-2]:
        raise ShapeError(
            f"{op}: key and value need the same sequence length, got {describe(key, value)}"
        )
    n_q, n_k = query.shape[-2], key.shape[-2]
    if is_causal and n_q >= 2 * CAUSAL_BLOCK and n_k > CAUSAL_BLOCK:
        q, s = _prescaled(query, _check(query, key, scale, op))
        _masker(attn_mask, is_causal, n_q, n_k, op)  # its argument check
        return _causal_blocks(q, key, value, s, dropout_p)
    weights = attention_weights(query, key, attn_mask, is_causal, scale, op)
    weights = _dropout(weights, dropout_p)
    return weights @ value.to(weights.dtype)
