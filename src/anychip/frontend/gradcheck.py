"""`gradcheck` and `gradgradcheck`, as in `torch.autograd`: a function's autograd
derivatives against central finite differences, in float64.

The analytical Jacobian is read one output element at a time (a backward pass with a
one-hot output gradient), the numerical one one input element at a time; both are dense,
so these are for small test inputs, as torch's are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from anychip.errors import AutogradError
from anychip.frontend.autograd import grad
from anychip.frontend.tensor import Tensor


class GradcheckError(AutogradError):
    """The analytical and numerical derivatives differ (a RuntimeError, as torch's)."""


def _outputs(func: Callable[..., Any], args: Sequence[Any]) -> list[Tensor]:
    out = func(*args)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    return [o for o in outs if isinstance(o, Tensor) and o.dtype.kind == "f"]


def _numerical(func: Callable[..., Any], args: list[Any], i: int, eps: float) -> list[np.ndarray]:
    """d(output elements)/d(args[i] elements) by central differences: one (out, in)
    matrix per output."""
    x = args[i]
    base = x.detach().numpy().astype(np.float64)
    cols: list[list[np.ndarray]] = []
    for k in range(base.size):
        values = []
        for step in (eps, -eps):
            moved = base.copy().reshape(-1)
            moved[k] += step
            args[i] = Tensor(moved.reshape(base.shape), dtype=x.dtype, device=x.device)
            # with autograd on: a func that differentiates inside (gradgradcheck) needs it
            args[i].requires_grad_(True)
            outs = _outputs(func, args)
            values.append([o.detach().numpy().astype(np.float64).reshape(-1) for o in outs])
        cols.append([(p - m) / (2 * eps) for p, m in zip(*values)])
    args[i] = x
    n_out = len(cols[0]) if cols else len(_outputs(func, args))
    return [np.stack([c[j] for c in cols], 1) if cols else np.zeros((0, 0)) for j in range(n_out)]


def _analytical(func: Callable[..., Any], args: list[Any], i: int) -> list[np.ndarray]:
    x = args[i]
    outs = _outputs(func, args)
    mats = []
    for o in outs:
        rows = []
        for k in range(o.numel()):
            onehot = np.zeros(o.numel())
            onehot[k] = 1
            go = Tensor(onehot.reshape(o.shape), dtype=o.dtype, device=o.device)
            (g,) = (
                grad(o, x, go, retain_graph=True, allow_unused=True) if o.requires_grad else (None,)
            )
            rows.append(
                np.zeros(x.numel()) if g is None else g.numpy().astype(np.float64).reshape(-1)
            )
        mats.append(np.stack(rows) if rows else np.zeros((0, x.numel())))
    return mats


def gradcheck(
    func: Callable[..., Any],
    inputs: Any,
    *,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
    **_ignored: Any,
) -> bool:
    """True when autograd's Jacobian of `func` at `inputs` matches finite differences for
    every input that requires grad (use float64 inputs, as torch asks); otherwise raises
    GradcheckError naming the input, output and worst element (or returns False).

    >>> import anychip as ac
    >>> x = ac.tensor([0.3, -1.2], dtype=ac.float64, requires_grad=True)
    >>> ac.autograd.gradcheck(lambda t: (t.sin() * t).sum(), (x,))
    True
    """
    args = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    for i, x in enumerate(args):
        if not (isinstance(x, Tensor) and x.requires_grad):
            continue
        numeric = _numerical(func, args, i, eps)
        analytic = _analytical(func, args, i)
        for j, (a, n) in enumerate(zip(analytic, numeric)):
            if a.shape == n.shape and np.allclose(a, n, rtol=rtol, atol=atol):
                continue
            if not raise_exception:
                return False
            worst = np.unravel_index(np.argmax(np.abs(a - n)), a.shape) if a.size else ()
            raise GradcheckError(
                f"gradcheck: Jacobian mismatch for output {j} with respect to input {i} "
                f"(shape {tuple(x.shape)}, dtype {x.dtype.name}): at (out, in) = {worst} "
                f"analytical {a[worst] if a.size else a} vs numerical {n[worst] if n.size else n}"
            )
    return True


def gradgradcheck(
    func: Callable[..., Any],
    inputs: Any,
    grad_outputs: Any = None,
    *,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
    **_ignored: Any,
) -> bool:
    """gradcheck of the first derivatives (taken with create_graph=True) with respect to
    the inputs and the output gradients: second derivatives against finite differences."""
    args = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    diff = [i for i, x in enumerate(args) if isinstance(x, Tensor) and x.requires_grad]
    outs = _outputs(func, args)
    if grad_outputs is None:
        rng = np.random.default_rng(0)
        grad_outputs = [
            Tensor(rng.standard_normal(o.shape), dtype=o.dtype, device=o.device) for o in outs
        ]
    gos = [grad_outputs] if isinstance(grad_outputs, Tensor) else list(grad_outputs)
    gos = [g.detach().requires_grad_(True) for g in gos]
    n = len(args)

    def first(*flat: Any) -> tuple[Tensor, ...]:
        res = _outputs(func, list(flat[:n]))
        got = grad(
            res, [flat[i] for i in diff], list(flat[n:]), create_graph=True, allow_unused=True
        )
        return tuple(g for g in got if g is not None)

    return gradcheck(
        first, [*args, *gos], eps=eps, atol=atol, rtol=rtol, raise_exception=raise_exception
    )
