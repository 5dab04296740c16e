"""Gradient clipping and parameter-vector helpers (`anychip.nn.utils`), as in PyTorch."""

from __future__ import annotations

import math
from collections.abc import Iterable

from anychip import dtypes
from anychip.errors import AutogradError, ShapeError
from anychip.frontend.creation import cat, stack, tensor
from anychip.frontend.tensor import Tensor, no_grad


def _params(parameters: Tensor | Iterable[Tensor]) -> list[Tensor]:
    return [parameters] if isinstance(parameters, Tensor) else list(parameters)


def clip_grad_norm_(
    parameters: Tensor | Iterable[Tensor],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    """Scale all gradients together so their joint `norm_type` norm is at most max_norm;
    returns the norm before clipping (a 0-d float32 tensor).

    >>> import anychip as ac
    >>> p = ac.nn.Parameter(ac.zeros(2)); p.grad = ac.tensor([3.0, 4.0])
    >>> ac.nn.utils.clip_grad_norm_([p], 1.0).item()
    5.0
    >>> [round(v, 4) for v in p.grad.tolist()]
    [0.6, 0.8]
    """
    grads = [p.grad for p in _params(parameters) if p.grad is not None]
    if not grads:
        return tensor(0.0)
    with no_grad():
        if norm_type == math.inf:
            norms = [g.abs().amax().to(dtypes.float32) for g in grads if g.numel()]
            total = stack(norms).amax() if norms else tensor(0.0)
        else:
            norms = [g.norm(norm_type).to(dtypes.float32) for g in grads]
            total = stack(norms).norm(norm_type)
        total.realize()
        if error_if_nonfinite and not math.isfinite(total.item()):
            raise AutogradError(
                f"clip_grad_norm_: the total norm of order {norm_type} for gradients is "
                "non-finite, so it cannot be clipped; pass error_if_nonfinite=False to skip"
            )
        coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
        for g in grads:
            g._assign(g * coef.to(g.dtype), "mul_")
    return total


def clip_grad_value_(
    parameters: Tensor | Iterable[Tensor], clip_value: float, foreach: bool | None = None
) -> None:
    """Clamp every gradient element into [-clip_value, clip_value] in place."""
    with no_grad():
        for p in _params(parameters):
            if p.grad is not None:
                p.grad._assign(p.grad.clamp(-clip_value, clip_value), "clamp_")


def parameters_to_vector(parameters: Iterable[Tensor]) -> Tensor:
    """All parameters flattened and joined into one 1-d tensor."""
    return cat([p.reshape(-1) for p in parameters])


def vector_to_parameters(vec: Tensor, parameters: Iterable[Tensor]) -> None:
    """Copy consecutive slices of `vec` into the parameters (the inverse of the above)."""
    params = list(parameters)
    total = sum(p.numel() for p in params)
    if vec.ndim != 1 or vec.shape[0] != total:
        raise ShapeError(
            f"vector_to_parameters: expected a 1-d vector of {total} elements, got {vec.shape}"
        )
    start = 0
    with no_grad():
        for p in params:
            n = p.numel()
            p.data = vec.narrow(0, start, n).reshape(p.shape).to(p.dtype)
            start += n


__all__ = [
    "clip_grad_norm_",
    "clip_grad_value_",
    "parameters_to_vector",
    "vector_to_parameters",
]
