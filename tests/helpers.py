"""One helper that checks an op against PyTorch (forward and gradients) and against
float64 finite differences. Every op test in tests/ goes through `check`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

import anychip as ac

# tolerances by the dtype the op computes in
TOL = {
    "float64": (1e-9, 1e-9),
    "float32": (2e-5, 2e-5),
    "float16": (2e-3, 2e-3),
    "bfloat16": (1.6e-2, 1.6e-2),
}


def _tol(dtype: str, atol: float | None, rtol: float | None) -> tuple[float, float]:
    a, r = TOL.get(dtype, (0.0, 0.0))
    return (a if atol is None else atol), (r if rtol is None else rtol)


def to_torch(a: np.ndarray, dtype: str | None = None, grad: bool = False) -> torch.Tensor:
    t = torch.from_numpy(np.array(a, copy=True))
    if dtype is not None:
        t = t.to(getattr(torch, dtype))
    return t.requires_grad_(grad)


def to_ac(a: np.ndarray, device: str, dtype: str | None = None, grad: bool = False) -> ac.Tensor:
    t = ac.tensor(a, device=device)
    if dtype is not None:
        t = t.to(getattr(ac, dtype))
    return t.requires_grad_(grad) if grad else t


def as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.numpy()
    return np.asarray(x.numpy() if isinstance(x, ac.Tensor) else x)


def assert_close(got: Any, want: Any, atol: float, rtol: float, what: str) -> None:
    g, w = as_numpy(got), as_numpy(want)
    assert g.shape == w.shape, f"{what}: shape {g.shape} != torch's {w.shape}"
    if w.dtype.kind in "biu":
        np.testing.assert_array_equal(g, w, err_msg=what)
    else:
        np.testing.assert_allclose(
            g.astype(np.float64),
            w.astype(np.float64),
            atol=atol,
            rtol=rtol,
            err_msg=what,
            equal_nan=True,
        )


def _outputs(x: Any) -> list[Any]:
    return list(x) if isinstance(x, (tuple, list)) else [x]


def check(
    fn: Callable[..., Any],
    arrays: Sequence[np.ndarray],
    device: str = "ref",
    torch_fn: Callable[..., Any] | None = None,
    dtype: str | None = None,
    grad: bool = True,
    atol: float | None = None,
    rtol: float | None = None,
    fd: bool = False,
) -> None:
    """Run `fn` on anychip tensors and `torch_fn` (default: `fn`) on torch tensors built from
    the same `arrays`; compare outputs, then gradients for a random cotangent.

    Float arrays are cast to `dtype` if given. `fn` receives tensors and must only use API
    shared by both libraries (or pass a separate `torch_fn`). With `fd=True` the gradients
    are also checked against float64 central finite differences.
    """
    torch_fn = torch_fn or fn
    floats = [a.dtype.kind == "f" for a in arrays]
    dts = [dtype if f else None for f in floats]
    want_grad = [grad and f for f in floats]
    tin = [to_torch(a, d, g) for a, d, g in zip(arrays, dts, want_grad)]
    ain = [to_ac(a, device, d, g) for a, d, g in zip(arrays, dts, want_grad)]
    tout, aout = _outputs(torch_fn(*tin)), _outputs(fn(*ain))
    assert len(tout) == len(aout), "different number of outputs"
    out_dtype = dtype or next((str(o.dtype).split(".")[-1] for o in tout), "float32")
    at, rt = _tol(out_dtype, atol, rtol)
    for i, (a, t) in enumerate(zip(aout, tout)):
        assert str(a.dtype.name) == str(t.dtype).split(".")[-1], (
            f"output {i}: dtype {a.dtype.name} != torch's {t.dtype}"
        )
        assert_close(a, t, at, rt, f"output {i}")
    diff = [(a, t) for a, t in zip(aout, tout) if t.requires_grad and t.dtype.is_floating_point]
    if not diff or not any(want_grad):
        return
    rng = np.random.default_rng(1)
    cots = [rng.standard_normal(t.shape) for _, t in diff]
    tgrads = torch.autograd.grad(
        [t for _, t in diff],
        [t for t, g in zip(tin, want_grad) if g],
        [to_torch(c, str(t.dtype).split(".")[-1]) for c, (_, t) in zip(cots, diff)],
        allow_unused=True,
    )
    loss = None
    for (a, _), c in zip(diff, cots):
        term = (a * to_ac(c, device, a.dtype.name)).sum()
        loss = term if loss is None else loss + term
    assert loss is not None
    if loss.requires_grad:
        loss.backward()
    grads_in = [a for a, g in zip(ain, want_grad) if g]
    for i, (a, tg) in enumerate(zip(grads_in, tgrads)):
        if tg is None or a.grad is None:
            other = a.grad if tg is None else tg
            assert other is None or np.all(as_numpy(other) == 0), f"grad {i}: only one is zero"
            continue
        assert a.grad is not None, f"grad {i}: anychip computed no gradient"
        assert_close(a.grad, tg, at * 10, rt * 10, f"grad of input {i}")
    if fd:
        finite_differences(fn, arrays, device)


def finite_differences(
    fn: Callable[..., Any],
    arrays: Sequence[np.ndarray],
    device: str,
    eps: float = 1e-6,
    tol: float = 1e-5,
) -> None:
    """Directional derivative of sum(w * fn(x)) along a random u, by central differences in
    float64, against the autograd gradient."""
    rng = np.random.default_rng(2)
    xs = [a.astype(np.float64) if a.dtype.kind == "f" else a for a in arrays]
    outs = _outputs(fn(*[to_ac(x, device) for x in xs]))
    ws = [rng.standard_normal(o.shape) for o in outs if o.dtype.is_floating_point]
    dirs = [rng.standard_normal(x.shape) if x.dtype.kind == "f" else None for x in xs]

    def scalar(vals: list[np.ndarray], grad: bool) -> ac.Tensor:
        ins = [to_ac(v, device, grad=grad and v.dtype.kind == "f") for v in vals]
        outs = [o for o in _outputs(fn(*ins)) if o.dtype.is_floating_point]
        total: ac.Tensor | None = None
        for o, w in zip(outs, ws):
            t = (o * to_ac(w, device)).sum()
            total = t if total is None else total + t
        scalar.ins = ins  # type: ignore[attr-defined]
        assert total is not None
        return total

    s = scalar(xs, True)
    s.backward()
    analytic = sum(
        float((i.grad.numpy() * d).sum())
        for i, d in zip(scalar.ins, dirs)  # type: ignore[attr-defined]
        if d is not None and i.grad is not None
    )
    plus = [x + eps * d if d is not None else x for x, d in zip(xs, dirs)]
    minus = [x - eps * d if d is not None else x for x, d in zip(xs, dirs)]
    numeric = (scalar(plus, False).item() - scalar(minus, False).item()) / (2 * eps)
    assert abs(numeric - analytic) <= tol * max(1.0, abs(numeric)), (
        f"finite differences {numeric} vs autograd {analytic}"
    )


def rand(*shape: int, seed: int = 0, low: float = -2.0, high: float = 2.0) -> np.ndarray:
    return np.asarray(np.random.default_rng(seed).uniform(low, high, shape))
