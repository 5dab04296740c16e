"""Free functions in PyTorch's style (`anychip.exp(x)`, `anychip.where(c, a, b)`, ...).

Each forwards to the Tensor method of the same name.
"""

from __future__ import annotations

from typing import Any

from anychip.frontend.indexing import embedding, embedding_bag, one_hot
from anychip.frontend.linalg import einsum
from anychip.frontend.tensor import Tensor, to_tensor

_METHODS = [
    "abs",
    "neg",
    "exp",
    "exp2",
    "expm1",
    "log",
    "log2",
    "log10",
    "log1p",
    "sqrt",
    "rsqrt",
    "sin",
    "cos",
    "tan",
    "tanh",
    "sigmoid",
    "relu",
    "gelu",
    "silu",
    "softplus",
    "erf",
    "sign",
    "floor",
    "ceil",
    "round",
    "trunc",
    "isnan",
    "isinf",
    "isfinite",
    "reciprocal",
    "square",
    "clamp",
    "clip",
    "maximum",
    "minimum",
    "pow",
    "add",
    "sub",
    "mul",
    "div",
    "remainder",
    "fmod",
    "floor_divide",
    "logical_not",
    "logical_and",
    "logical_or",
    "logical_xor",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "sum",
    "mean",
    "var",
    "std",
    "max",
    "min",
    "amax",
    "amin",
    "argmax",
    "argmin",
    "prod",
    "logsumexp",
    "softmax",
    "log_softmax",
    "cumsum",
    "all",
    "any",
    "norm",
    "count_nonzero",
    "reshape",
    "flatten",
    "unflatten",
    "squeeze",
    "unsqueeze",
    "permute",
    "transpose",
    "swapaxes",
    "t",
    "broadcast_to",
    "flip",
    "roll",
    "narrow",
    "split",
    "tensor_split",
    "chunk",
    "unbind",
    "tile",
    "gather",
    "take_along_dim",
    "index_select",
    "scatter_add",
    "index_add",
    "masked_fill",
    "masked_select",
    "nonzero",
    "argsort",
    "sort",
    "topk",
    "matmul",
    "mm",
    "bmm",
    "dot",
]


def _forward(name: str) -> Any:
    def fn(input: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(to_tensor(input), name)(*args, **kwargs)

    fn.__name__ = name
    fn.__doc__ = f"`anychip.{name}(x, ...)` is `x.{name}(...)`."
    return fn


for _name in _METHODS:
    globals()[_name] = _forward(_name)


def where(condition: Tensor, input: Any, other: Any) -> Tensor:
    """Elements of `input` where `condition` holds, else of `other` (broadcasting)."""
    return condition._select(input, other)


def is_tensor(x: Any) -> bool:
    return isinstance(x, Tensor)


# issue 10: more torch free functions, each `x.name(...)` (meshgrid builds grids)
_EXTRA = [
    *("atan", "asin", "acos", "atan2", "arctan", "arcsin", "arccos", "arctan2"),
    *("sinh", "cosh", "asinh", "acosh", "atanh", "copysign", "logaddexp"),
    *("bitwise_left_shift", "bitwise_right_shift", "cumprod", "cummax", "cummin"),
    *("logcumsumexp", "scatter", "scatter_reduce", "tril", "triu", "diag", "diagonal"),
    *("repeat_interleave", "movedim", "moveaxis", "std_mean", "var_mean"),
]
for _name in _EXTRA:
    globals()[_name] = _forward(_name)

from anychip.frontend.extra_ops import meshgrid  # noqa: E402

__all__ = [
    *_METHODS,
    *_EXTRA,
    "meshgrid",
    "where",
    "is_tensor",
    "one_hot",
    "embedding",
    "embedding_bag",
    "einsum",
]
