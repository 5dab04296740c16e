"""`anychip.autograd.Function`: a differentiable operation whose forward and backward the
user writes, as `torch.autograd.Function`.

`apply` runs `forward` without recording, then gives each tensor output a record whose
derivative rule calls the user's `backward`. A Function with several outputs gets one
record per output; each calls `backward` with its own output's gradient and zeros for the
others, and the tape sums the results. That is exact because a backward is linear in the
output gradients; it costs one `backward` call per output that receives a gradient.
"""

from __future__ import annotations

from typing import Any

from anychip.errors import AutogradError, ShapeError
from anychip.frontend.autograd import Ctx
from anychip.frontend.tensor import Tensor, is_grad_enabled, no_grad


class FunctionCtx:
    """The `ctx` a Function's forward and backward share: `save_for_backward`,
    `saved_tensors`, `needs_input_grad`, `mark_non_differentiable`,
    `set_materialize_grads`, and any attribute the user sets."""

    def __init__(self) -> None:
        self._saved: tuple[tuple[Tensor | None, int], ...] = ()
        self.needs_input_grad: tuple[bool, ...] = ()
        self.non_differentiable: set[int] = set()
        self.materialize_grads = True

    def save_for_backward(self, *tensors: Tensor | None) -> None:
        for t in tensors:
            if t is not None and not isinstance(t, Tensor):
                raise AutogradError(
                    f"save_for_backward can only save tensors or None, got {type(t).__name__}"
                )
        self._saved = tuple((t, t._version if t is not None else 0) for t in tensors)

    @property
    def saved_tensors(self) -> tuple[Tensor | None, ...]:
        for i, (t, v) in enumerate(self._saved):
            if t is not None and t._version != v:
                raise AutogradError(
                    f"backward: saved tensor {i} of shape {t.shape} was modified in place "
                    f"after it was saved (version {t._version}, saved at {v}); clone it first"
                )
        return tuple(t for t, _ in self._saved)

    def mark_non_differentiable(self, *tensors: Tensor) -> None:
        self.non_differentiable.update(id(t) for t in tensors)

    def mark_dirty(self, *tensors: Tensor) -> None:
        raise AutogradError(
            "autograd.Function: mark_dirty (in-place forward) is not supported; return a new "
            "tensor from forward instead"
        )

    def set_materialize_grads(self, value: bool) -> None:
        self.materialize_grads = bool(value)


class _Op:
    """What a Function's records show as their op (`grad_fn=<NameBackward>`)."""

    def __init__(self, name: str) -> None:
        self.name = name


class _Record(Ctx):
    """One output's record: its rule calls the Function's backward."""

    __slots__ = ("fn", "fn_ctx", "index", "outs")
    fn: Any  # the Function subclass
    fn_ctx: FunctionCtx
    index: int  # which output this record differentiates
    outs: tuple[Any, ...]  # every output's graph node (None for non-tensor outputs)

    def rule(self) -> Any:
        return self._vjp

    def _vjp(self, g: Tensor, out: Tensor, srcs: tuple[Tensor, ...], arg: Any) -> tuple[Any, ...]:
        grads: list[Tensor | None] = []
        for i, o in enumerate(self.outs):
            if i == self.index:
                grads.append(g)
            elif o is not None and self.fn_ctx.materialize_grads:
                grads.append(Tensor._from_node(o).zeros_like())
            else:
                grads.append(None)
        got = self.fn.backward(self.fn_ctx, *grads)
        got = got if isinstance(got, tuple) else (got,)
        positions: list[int] = arg
        if len(got) < max(positions, default=-1) + 1:
            raise AutogradError(
                f"{self.fn.__name__}.backward returned {len(got)} gradients; forward took "
                f"{max(positions) + 1} inputs"
            )
        cots = []
        for src, pos in zip(srcs, positions):
            c = got[pos]
            if c is not None and not isinstance(c, Tensor):
                raise AutogradError(
                    f"{self.fn.__name__}.backward: gradient {pos} is a {type(c).__name__}, "
                    "expected a Tensor or None"
                )
            if c is not None and c.shape != src.shape:
                raise ShapeError(
                    f"{self.fn.__name__}.backward: gradient {pos} has shape {c.shape}, but "
                    f"input {pos} has shape {src.shape}"
                )
            cots.append(c)
        return tuple(cots)


class Function:
    """Subclass with static `forward(ctx, *args)` (or `forward(*args)` plus
    `setup_context(ctx, inputs, output)`) and `backward(ctx, *grad_outputs)` returning one
    gradient (or None) per forward argument; call it as `MyFn.apply(*args)`.

    >>> import anychip as ac
    >>> class Cube(ac.autograd.Function):
    ...     @staticmethod
    ...     def forward(ctx, x):
    ...         ctx.save_for_backward(x)
    ...         return x ** 3
    ...     @staticmethod
    ...     def backward(ctx, g):
    ...         (x,) = ctx.saved_tensors
    ...         return g * 3 * x ** 2
    >>> x = ac.tensor([1.0, 2.0], requires_grad=True)
    >>> Cube.apply(x).sum().backward()
    >>> x.grad.tolist()
    [3.0, 12.0]
    """

    @staticmethod
    def forward(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("autograd.Function subclasses must define forward")

    @staticmethod
    def backward(ctx: Any, *grad_outputs: Any) -> Any:
        raise NotImplementedError("autograd.Function subclasses must define backward")

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Any:
        ctx = FunctionCtx()
        positions = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
        inputs = tuple(args[i] for i in positions)
        ctx.needs_input_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        separate = "setup_context" in cls.__dict__ or any(
            "setup_context" in vars(k) for k in cls.__mro__[1:] if k is not Function
        )
        with no_grad():
            if separate:
                output = cls.forward(*args, **kwargs)
                cls.setup_context(ctx, args, output)  # type: ignore[attr-defined]
            else:
                output = cls.forward(ctx, *args, **kwargs)
        outs = output if isinstance(output, tuple) else (output,)
        # outputs returned as-is from the inputs become new tensors (their own history)
        outs = tuple(
            Tensor._from_node(o.node)
            if isinstance(o, Tensor) and any(o is i for i in inputs)
            else o
            for o in outs
        )
        record = is_grad_enabled() and any(t.requires_grad for t in inputs)
        if record:
            nodes = tuple(o.node if isinstance(o, Tensor) else None for o in outs)
            op = _Op(cls.__name__)
            for i, o in enumerate(outs):
                if not isinstance(o, Tensor) or id(o) in ctx.non_differentiable:
                    continue
                if o.dtype.kind != "f":
                    continue
                rec = _Record(op, inputs, tuple(t.node for t in inputs), positions, o)  # type: ignore[arg-type]
                rec.fn, rec.fn_ctx, rec.index = cls, ctx, i
                rec.outs = nodes
                o.requires_grad, o._ctx = True, rec
        return outs if isinstance(output, tuple) else outs[0]
