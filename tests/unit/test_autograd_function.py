"""anychip.autograd.Function against torch.autograd.Function written the same way."""

from typing import Any

import numpy as np
import pytest
import torch

import anychip as ac


def make(lib: Any) -> tuple[Any, Any, Any]:
    class ScaledCube(lib.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any, k: float) -> Any:
            ctx.save_for_backward(x)
            ctx.k = k
            return x**3 * k

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            (x,) = ctx.saved_tensors
            return g * 3 * x**2 * ctx.k, None

    class SumDiff(lib.autograd.Function):  # two outputs, two tensor inputs
        @staticmethod
        def forward(a: Any, b: Any) -> Any:
            return a + b, a * b

        @staticmethod
        def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
            ctx.save_for_backward(*inputs)

        @staticmethod
        def backward(ctx: Any, gs: Any, gp: Any) -> Any:
            a, b = ctx.saved_tensors
            return gs + gp * b, gs + gp * a

    class Square(lib.autograd.Function):  # a backward that is itself differentiable
        @staticmethod
        def forward(ctx: Any, x: Any) -> Any:
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            (x,) = ctx.saved_tensors
            return 2 * x * g

    return ScaledCube, SumDiff, Square


def grads(lib: Any) -> list[np.ndarray]:
    cube, sumdiff, square = make(lib)
    a = lib.tensor([0.5, -1.0, 2.0], requires_grad=True)
    b = lib.tensor([1.5, 2.0, -0.25], requires_grad=True)
    s, p = sumdiff.apply(a, b)
    loss = (cube.apply(s, 0.5) * p).sum() + (s * s).sum()
    loss.backward()
    x = lib.tensor([1.0, -3.0], requires_grad=True)
    (g,) = lib.autograd.grad(square.apply(x).sum(), x, create_graph=True)
    (g2,) = lib.autograd.grad((g * g).sum(), x)
    return [a.grad.detach().numpy(), b.grad.detach().numpy(), g2.detach().numpy()]


def test_matches_torch_functions_with_several_outputs_and_double_backward() -> None:
    for got, want in zip(grads(ac), grads(torch)):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_needs_input_grad_and_non_tensor_arguments() -> None:
    seen = []

    class Probe(ac.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any, y: Any, n: int) -> Any:
            seen.append(ctx.needs_input_grad)
            return x * y * n

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            return g, None, None

    x = ac.ones(2, requires_grad=True)
    out = Probe.apply(x, ac.ones(2), 3)
    assert seen == [(True, False, False)]
    assert out.requires_grad and "ProbeBackward" in repr(out)
    out.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0]
    with ac.no_grad():
        assert not Probe.apply(x, ac.ones(2), 3).requires_grad


def test_unmaterialized_grads_and_non_differentiable_outputs() -> None:
    got = []

    class Two(ac.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any) -> Any:
            ctx.set_materialize_grads(False)
            idx = x.argmax()
            ctx.mark_non_differentiable(idx)
            return x * 2, x * 3, idx

        @staticmethod
        def backward(ctx: Any, g2: Any, g3: Any, gi: Any) -> Any:
            got.append((g2 is None, g3 is None))
            return (g2 * 2 if g2 is not None else 0) + (g3 * 3 if g3 is not None else 0)

    x = ac.tensor([1.0, 4.0], requires_grad=True)
    a, _, idx = Two.apply(x)
    assert not idx.requires_grad
    a.sum().backward()
    assert got == [(False, True)] and x.grad.tolist() == [2.0, 2.0]


def test_wrong_gradients_are_typed_errors() -> None:
    class Bad(ac.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any) -> Any:
            return x.sum()

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            return g.reshape(1)  # wrong shape

    x = ac.ones(3, requires_grad=True)
    with pytest.raises(ac.errors.ShapeError, match=r"gradient 0 has shape \(1,\)"):
        Bad.apply(x).backward()

    class Modified(ac.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any) -> Any:
            ctx.save_for_backward(x)
            return x * 2

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            (x,) = ctx.saved_tensors
            return g * x

    y = ac.ones(3, requires_grad=True).clone()
    out = Modified.apply(y)
    y.add_(1)
    with pytest.raises(ac.errors.AutogradError, match="modified in place"):
        out.sum().backward()


def test_gradcheck_passes_correct_and_catches_wrong_functions() -> None:
    x = ac.tensor([0.3, -1.2, 2.0], dtype=ac.float64, requires_grad=True)
    y = ac.tensor([[0.5], [1.5]], dtype=ac.float64, requires_grad=True)
    assert ac.autograd.gradcheck(lambda a, b: (a * b).tanh(), (x, y))
    assert ac.autograd.gradgradcheck(lambda a: (a**3).sin(), (x,))

    class Wrong(ac.autograd.Function):
        @staticmethod
        def forward(ctx: Any, a: Any) -> Any:
            ctx.save_for_backward(a)
            return a * a

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            (a,) = ctx.saved_tensors
            return g * a  # missing the factor 2

    assert not ac.autograd.gradcheck(Wrong.apply, (x,), raise_exception=False)
    with pytest.raises(
        RuntimeError, match="Jacobian mismatch for output 0 with respect to input 0"
    ):
        ac.autograd.gradcheck(Wrong.apply, (x,))
    # torch agrees on both verdicts
    tx = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: (a**3).sin(), (tx,))


def test_set_grad_enabled_as_call_context_and_decorator() -> None:
    x = ac.ones(2, requires_grad=True)
    with ac.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert ac.is_grad_enabled()
    ac.set_grad_enabled(False)
    assert not ac.is_grad_enabled()
    ac.set_grad_enabled(True)

    @ac.autograd.set_grad_enabled(False)
    def f(t: Any) -> Any:
        return t * 2

    assert ac.is_grad_enabled() and not f(x).requires_grad and (x * 2).requires_grad
    with ac.no_grad(), ac.set_grad_enabled(True):
        assert (x * 2).requires_grad
