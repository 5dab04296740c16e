"""`anychip.nn.functional`: the stateless functions behind nn's layers, as in PyTorch.

Layers, activations, normalisation and dropout here; the losses live in `nn/losses.py`
and are re-exported, so `F.cross_entropy` works as in PyTorch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from anychip import dtypes
from anychip.errors import ArgumentError, DTypeError, ShapeError, describe
from anychip.frontend.tensor import Tensor
from anychip.ir.ops import Ops
from anychip.nn.losses import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    huber_loss,
    l1_loss,
    mse_loss,
    nll_loss,
    smooth_l1_loss,
)


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """input @ weight.T + bias: (..., in) x (out, in) -> (..., out).

    >>> import anychip as ac
    >>> ac.nn.functional.linear(ac.ones(2, 3), ac.ones(4, 3)).shape
    (2, 4)
    """
    if _plain_2d(input, weight, bias):
        return _linear_2d(input, weight, bias)
    if weight.ndim not in (1, 2) or input.ndim == 0 or input.shape[-1] != weight.shape[-1]:
        raise ShapeError(
            f"linear: input's last dimension must match weight's in_features: "
            f"{describe(input, weight)} (weight is (out_features, in_features))"
        )
    # weight's transpose as a plain PERMUTE, not a view (`.t()`): nothing outside sees it
    out = input @ (weight._prim(Ops.PERMUTE, arg=(1, 0)) if weight.ndim == 2 else weight)
    return out + bias if bias is not None else out


_PLAIN = (dtypes.float32, dtypes.float64)


def _plain_2d(x: Tensor, w: Tensor, b: Tensor | None) -> bool:
    """Whether `linear(x, w, b)` is the common case: a (batch, in) input, an (out, in)
    weight and an (out,) bias of one float32/float64 dtype on one device."""
    xn, wn = x.node, w.node
    if len(xn.shape) != 2 or len(wn.shape) != 2 or xn.shape[1] != wn.shape[1]:
        return False
    if xn.dtype is not wn.dtype or xn.dtype not in _PLAIN or xn.device != wn.device:
        return False
    if b is None:
        return True
    bn = b.node
    return bn.shape == (wn.shape[0],) and bn.dtype is xn.dtype and bn.device == xn.device


def _linear_2d(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """The common case of `linear` built primitive by primitive: the graph `x @ w.T + b`
    makes through matmul's and add's broadcasting (the same nodes, so the same kernels
    and cached plans), without their checks and dispatch, which cost about as much as
    the primitives (a training step's linear layers pass here every step)."""
    (m, k), n = x.node.shape, w.node.shape[0]
    full = (m, k, n)
    a = x._prim(Ops.RESHAPE, arg=(m, k, 1))
    if n != 1:
        a = a._prim(Ops.EXPAND, arg=full)
    wt = w._prim(Ops.PERMUTE, arg=(1, 0))._prim(Ops.RESHAPE, arg=(1, k, n))
    if m != 1:
        wt = wt._prim(Ops.EXPAND, arg=full)
    out = a._prim(Ops.MUL, wt)._prim(Ops.SUM, arg=(1,))._prim(Ops.RESHAPE, arg=(m, n))
    if b is None:
        return out
    row = b._prim(Ops.RESHAPE, arg=(1, n))
    if m != 1:
        row = row._prim(Ops.EXPAND, arg=(m, n))
    return out._prim(Ops.ADD, row)


# --- activations -------------------------------------------------------------------
def relu(input: Tensor, inplace: bool = False) -> Tensor:
    return input.relu()


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    return input.gelu(approximate=approximate)


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    return input.silu()


def sigmoid(input: Tensor) -> Tensor:
    return input.sigmoid()


def tanh(input: Tensor) -> Tensor:
    return input.tanh()


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    return input.softplus(beta, threshold)


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    return input.leaky_relu(negative_slope)


def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    return input.elu(alpha)


def softmax(input: Tensor, dim: int | None = None, dtype: Any = None) -> Tensor:
    """exp(x) / sum(exp(x)) along `dim` (None: PyTorch's legacy choice of dim)."""
    return input.softmax(_softmax_dim(input, dim), dtype=dtype)


def log_softmax(input: Tensor, dim: int | None = None, dtype: Any = None) -> Tensor:
    return input.log_softmax(_softmax_dim(input, dim), dtype=dtype)


def _softmax_dim(input: Tensor, dim: int | None) -> int:
    # PyTorch's implicit dim: 0 for 0-, 1- and 3-d inputs, else 1
    if dim is not None:
        return dim
    return 0 if input.ndim in (0, 1, 3) else 1


# --- regularisation and normalisation -----------------------------------------------
def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p) (training only).

    >>> import anychip as ac
    >>> x = ac.ones(4)
    >>> ac.nn.functional.dropout(x, 0.5, training=False) is x
    True
    """
    if not 0.0 <= p <= 1.0:
        raise ArgumentError(f"dropout: probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0
    from anychip.frontend.random import rand

    keep = rand(input.shape, dtype=dtypes.float32, device=input.device) >= p
    return keep._select(input * (1.0 / (1.0 - p)), 0.0)


def _norm_dims(input: Tensor, normalized_shape: Any, op: str) -> tuple[int, ...]:
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(shape)
    if k == 0 or k > input.ndim or tuple(input.shape[input.ndim - k :]) != shape:
        raise ShapeError(
            f"{op}: normalized_shape {shape} does not match the trailing dimensions of the "
            f"input: {describe(input)}"
        )
    return tuple(range(input.ndim - k, input.ndim))


def layer_norm(
    input: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias over the trailing `normalized_shape`.

    >>> import anychip as ac
    >>> y = ac.nn.functional.layer_norm(ac.tensor([[1.0, 3.0]]), (2,))
    >>> [round(v, 3) for v in y.tolist()[0]]
    [-1.0, 1.0]
    """
    dims = _norm_dims(input, normalized_shape, "layer_norm")
    mean = input.mean(dims, keepdim=True)
    centred = input - mean
    var = (centred * centred).mean(dims, keepdim=True)  # biased, as PyTorch
    out = centred * (var + eps).rsqrt()
    if weight is not None:
        out = out * weight
    return out + bias if bias is not None else out


def _finfo_eps(dt: dtypes.DType) -> float:
    if dt is dtypes.bfloat16:
        return 2.0**-7
    return float(np.finfo(dt.np).eps) if dt.is_floating_point else float(np.finfo(np.float32).eps)


def rms_norm(
    input: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    eps: float | None = None,
) -> Tensor:
    """x / sqrt(mean(x^2) + eps) * weight over the trailing `normalized_shape`; eps None
    is the machine epsilon of the input's dtype, as in PyTorch."""
    dims = _norm_dims(input, normalized_shape, "rms_norm")
    e = _finfo_eps(input.dtype) if eps is None else eps
    out = input * ((input * input).mean(dims, keepdim=True) + e).rsqrt()
    return out * weight if weight is not None else out


def normalize(input: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12) -> Tensor:
    """input / max(||input||_p, eps) along `dim` (p=0: the count of nonzeros)."""
    if p == 0:  # a constant to autograd, as torch's norm(p=0)
        count = (input != 0).sum(dim, keepdim=True).to(input.dtype)
        return input / count.clamp(min=eps)
    return input / input.norm(p, dim, keepdim=True).clamp(min=eps)


# --- lookups (the indexing frontend does the work) -----------------------------------
def embedding(
    input: Tensor,
    weight: Tensor,
    padding_idx: int | None = None,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
) -> Tensor:
    """Rows of `weight` (num_embeddings, dim) picked by integer `input`: (*) -> (*, dim);
    the row at padding_idx gets no gradient; `sparse`: weight's gradient is row-sparse."""
    from anychip.frontend import indexing

    _unsupported("embedding", max_norm=max_norm, scale_grad_by_freq=scale_grad_by_freq)
    return indexing.embedding(input, weight, padding_idx=padding_idx, sparse=sparse)  # type: ignore[attr-defined, no-any-return]


def embedding_bag(
    input: Tensor,
    weight: Tensor,
    offsets: Tensor | None = None,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    mode: str = "mean",
    sparse: bool = False,
    per_sample_weights: Tensor | None = None,
    include_last_offset: bool = False,
    padding_idx: int | None = None,
) -> Tensor:
    """Sum, mean or max of the embedding rows in each bag: 2-d `input` (B, L) is B bags
    of L, or 1-d `input` split into bags at `offsets`; -> (B, dim)."""
    from anychip.frontend import indexing

    _unsupported("embedding_bag", max_norm=max_norm, scale_grad_by_freq=scale_grad_by_freq)
    return indexing.embedding_bag(  # type: ignore[attr-defined, no-any-return]
        input,
        weight,
        offsets=offsets,
        mode=mode,
        per_sample_weights=per_sample_weights,
        include_last_offset=include_last_offset,
        padding_idx=padding_idx,
        sparse=sparse,
    )


def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """int64 (*) -> int64 (*, num_classes) with a 1 at each value (-1: max value + 1)."""
    from anychip.frontend import indexing

    return indexing.one_hot(tensor, num_classes)  # type: ignore[attr-defined, no-any-return]


def _unsupported(op: str, **options: Any) -> None:
    for name, value in options.items():
        if value not in (None, False):
            raise DTypeError(f"{op}: option {name}={value!r} is not supported")


def pad(input: Tensor, pad: Sequence[int], mode: str = "constant", value: float = 0.0) -> Tensor:
    """Pad with (left, right) pairs from the last dimension backwards.

    >>> import anychip as ac
    >>> ac.nn.functional.pad(ac.ones(2), (1, 2)).tolist()
    [0.0, 1.0, 1.0, 0.0, 0.0]
    """
    return input.pad(pad, mode, value)


def cosine_similarity(x1: Tensor, x2: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """sum(x1 * x2) / (max(||x1||, eps) * max(||x2||, eps)) along `dim`."""
    n1 = x1.norm(2, dim).clamp(min=eps)
    n2 = x2.norm(2, dim).clamp(min=eps)
    return (x1 * x2).sum(dim) / (n1 * n2)


__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cosine_similarity",
    "cross_entropy",
    "dropout",
    "elu",
    "embedding",
    "embedding_bag",
    "gelu",
    "huber_loss",
    "l1_loss",
    "layer_norm",
    "leaky_relu",
    "linear",
    "log_softmax",
    "mse_loss",
    "nll_loss",
    "normalize",
    "one_hot",
    "pad",
    "relu",
    "rms_norm",
    "sigmoid",
    "silu",
    "smooth_l1_loss",
    "softmax",
    "softplus",
    "tanh",
]


# PyTorch habits (issue 10): normalisation with running statistics lives in nn/norm.py
from anychip.nn.norm import batch_norm, group_norm  # noqa: E402

__all__ += ["batch_norm", "group_norm"]


def logsigmoid(input: Tensor) -> Tensor:
    """log(sigmoid(x)), finite with a finite gradient for every finite x (stable.py).

    >>> import anychip as ac
    >>> ac.nn.functional.logsigmoid(ac.tensor([-1000.0, 0.0])).tolist()[0]
    -1000.0
    """
    from anychip.frontend import stable

    return stable.logsigmoid(input._float())


__all__ += ["logsigmoid"]

# --- convolution, pooling, attention and the other torch ops (issue 10) -------------------
from anychip.frontend.conv import (  # noqa: E402
    conv1d,
    conv2d,
    conv3d,
    conv_transpose1d,
    conv_transpose2d,
    conv_transpose3d,
)

__all__ += [
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
]

from anychip.frontend.pool import (  # noqa: E402
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    adaptive_avg_pool3d,
    adaptive_max_pool1d,
    adaptive_max_pool2d,
    avg_pool1d,
    avg_pool2d,
    avg_pool3d,
    max_pool1d,
    max_pool2d,
    max_pool3d,
    max_unpool1d,
    max_unpool2d,
)
from anychip.frontend.resize import interpolate  # noqa: E402

__all__ += [
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "interpolate",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "max_unpool1d",
    "max_unpool2d",
]

from anychip.frontend.attention import scaled_dot_product_attention  # noqa: E402

__all__ += ["scaled_dot_product_attention"]

from anychip.nn.activation_extra import (  # noqa: E402
    celu,
    fold,
    hardsigmoid,
    hardswish,
    hardtanh,
    mish,
    relu6,
    selu,
    softmin,
    softsign,
    unfold,
)

__all__ += [
    "celu",
    "fold",
    "hardsigmoid",
    "hardswish",
    "hardtanh",
    "mish",
    "relu6",
    "selu",
    "softmin",
    "softsign",
    "unfold",
]
