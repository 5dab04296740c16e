"""Elementwise ops: arithmetic, comparisons, math functions and activations.

Binary ops broadcast (numpy rules) and promote dtypes (PyTorch rules) first, then apply
one primitive; composite functions (sigmoid, gelu, ...) are written with primitives.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from anychip import dtypes
from anychip.dtypes import DType
from anychip.errors import (
    DivisionByZeroError,
    DTypeError,
    DTypeNotImplemented,
    ShapeError,
    describe,
)
from anychip.frontend import views
from anychip.ir.ops import Node, Ops

if TYPE_CHECKING:
    from anychip.frontend.tensor import Tensor

Scalar = int | float | bool


def broadcast_shapes(op: str, *tensors: Any) -> tuple[int, ...]:
    """numpy's broadcast of the shapes of `tensors` (scalars count as 0-d)."""
    one: tuple[int, ...] = ()  # the common case first: one shape, and scalars
    for t in tensors:
        s = getattr(t, "shape", ())
        if s and s != one:
            if one:
                break
            one = s
    else:
        return tuple(one)
    shapes = [tuple(getattr(t, "shape", ())) for t in tensors]
    ndim = max(len(s) for s in shapes)
    out = []
    for i in range(ndim):
        dims = {s[len(s) - ndim + i] for s in shapes if len(s) - ndim + i >= 0} - {1}
        if len(dims) > 1:
            ts = [t for t in tensors if hasattr(t, "shape")]
            raise ShapeError(f"{op}: shapes cannot be broadcast together: {describe(*ts)}")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def _is_tensor(x: Any) -> bool:
    return isinstance(x, _tensor.Tensor)


def _nonzero_divisor(x: Tensor, divisor: Any, op: str) -> None:
    """Integer division or remainder by a scalar 0 raises, as in torch. (A tensor divisor's
    zeros give 0 on every device: checking them would read the data back each time.)"""
    zero = type(divisor) in (int, bool) and divisor == 0
    if zero and not dtypes.result_type(x, divisor).is_floating_point:
        raise DivisionByZeroError(
            f"{op}: integer division by zero ({describe(x)} by the scalar 0); "
            "torch raises ZeroDivisionError here too"
        )


class ElementwiseMixin:
    __slots__ = ()

    # --- plumbing -------------------------------------------------------------------
    def _operands(self: Tensor, op: str, *others: Any, dtype: DType | None = None) -> list[Tensor]:
        """self and others broadcast to one shape and promoted to one dtype."""

        vals: list[Any] = [self, *others]
        for i, v in enumerate(vals):
            if not _is_tensor(v) and not isinstance(v, (int, float, bool)):
                try:
                    vals[i] = _tensor.to_tensor(v, like=self)
                except Exception:
                    raise DTypeError(
                        f"{op}: unsupported operand of type {type(v).__name__}"
                        f" with a tensor of {describe(self)}"
                    ) from None
        dt = dtype or dtypes.result_type(*vals)
        shape = broadcast_shapes(op, *vals)
        out = []
        for v in vals:
            if isinstance(v, _tensor.Tensor):
                out.append(v.to(dt)._broadcast(shape))
            else:
                out.append(_tensor.Tensor._const(v, dt, shape, self.device))
        return out

    def _binary(
        self: Tensor,
        op: Ops,
        other: Any,
        reverse: bool = False,
        dtype: DType | None = None,
        name: str | None = None,
    ) -> Tensor:
        """op(self, other) after broadcasting and promotion; `name` is the user-facing op
        name for error messages (default: the primitive's)."""
        on, mine = getattr(other, "node", None), self.node
        if dtype is None and type(on) is Node and on.shape == mine.shape and on.dtype is mine.dtype:
            a, b = self, other  # fast path (cheap dispatch): nothing to broadcast or promote
        elif dtype is None and type(other) in (float, int) and self.dtype.is_floating_point:
            # x * 0.9 (optimizers, losses): a Python number never promotes a float tensor
            a, b = self, _tensor.Tensor._const(other, self.dtype, self.shape, self.device)
        elif dtype is None and type(on) is Node and on.shape == () and on.dtype is mine.dtype:
            # x * lr (a 0-d tensor of x's dtype: optimizers' rates, a loss scale): the
            # broadcast `_operands` makes, without its promotion and shape checks
            a, b = self, other._prim(Ops.RESHAPE, arg=(1,) * len(mine.shape))
            if mine.shape != b.node.shape:
                b = b._prim(Ops.EXPAND, arg=mine.shape)
        else:
            a, b = self._operands(name or op.name.lower(), other, dtype=dtype)
        return b._prim(op, a) if reverse else a._prim(op, b)

    def _float(self: Tensor) -> Tensor:
        """self in a floating dtype (integers and bools go to the default float)."""
        return self if self.dtype.is_floating_point else self.to(dtypes.default_float)

    def _select(self: Tensor, a: Any, b: Any) -> Tensor:
        """where(self, a, b) with self a boolean condition."""

        if self.dtype is not dtypes.bool_:
            raise DTypeError(f"where: the condition must be a bool tensor, got {describe(self)}")
        shape = self.shape
        # fast paths (activations, gradients of where): a tensor of the condition's shape
        # with another of its shape and dtype, or with a number that keeps its float dtype
        if isinstance(a, _tensor.Tensor) and a.shape == shape:
            if isinstance(b, _tensor.Tensor) and b.shape == shape and b.dtype is a.dtype:
                return self._prim(Ops.WHERE, a, b)
            if type(b) in (int, float) and a.dtype.is_floating_point:
                return self._prim(Ops.WHERE, a, _tensor.Tensor._const(b, a.dtype, shape, a.device))
        elif isinstance(b, _tensor.Tensor) and b.shape == shape and type(a) in (int, float):  # noqa: SIM102
            if b.dtype.is_floating_point:
                return self._prim(Ops.WHERE, _tensor.Tensor._const(a, b.dtype, shape, b.device), b)
        dt = dtypes.result_type(a, b)
        shape = broadcast_shapes("where", self, a, b)

        def operand(v: Any) -> Tensor:
            if isinstance(v, _tensor.Tensor):
                return v.to(dt)._broadcast(shape)
            return _tensor.Tensor._const(v, dt, shape, self.device)

        return self._broadcast(shape)._prim(Ops.WHERE, operand(a), operand(b))

    # --- arithmetic -----------------------------------------------------------------
    def add(self: Tensor, other: Any, alpha: Scalar = 1) -> Tensor:
        return self._binary(Ops.ADD, other if alpha == 1 else other * alpha)

    def sub(self: Tensor, other: Any, alpha: Scalar = 1) -> Tensor:
        if self.dtype is dtypes.bool_:
            raise DTypeError(
                "sub: subtraction of bool tensors is not supported; use ^ or logical_xor "
                f"({describe(self)})"
            )
        return self._binary(Ops.ADD, -(other if alpha == 1 else other * alpha), name="sub")

    def mul(self: Tensor, other: Any) -> Tensor:
        return self._binary(Ops.MUL, other)

    def div(self: Tensor, other: Any, rounding_mode: str | None = None) -> Tensor:
        if rounding_mode is None and self.dtype.is_floating_point:
            return self._binary(Ops.DIV, other, name="div")  # promotes to a float dtype
        if rounding_mode is None:
            dt = dtypes.result_type(self, other)
            a, b = self._operands(
                "div", other, dtype=dt if dt.is_floating_point else dtypes.default_float
            )
            return a._prim(Ops.DIV, b)
        if rounding_mode == "trunc":
            _nonzero_divisor(self, other, "div")
            a, b = self._operands("div", other)
            q = a._prim(Ops.DIV, b)
            return q.trunc() if q.dtype.is_floating_point else q
        if rounding_mode == "floor":
            return self.floor_divide(other)
        raise DTypeError(
            f"div: rounding_mode must be None, 'trunc' or 'floor', got {rounding_mode!r} "
            f"({describe(self)})"
        )

    def floor_divide(self: Tensor, other: Any) -> Tensor:
        _nonzero_divisor(self, other, "floor_divide")
        a, b = self._operands("floor_divide", other)
        if a.dtype.is_floating_point:
            return a._prim(Ops.DIV, b).floor()
        q = a._prim(Ops.DIV, b)  # truncated; step down where the signs differ and it's inexact
        fix = (a._prim(Ops.MOD, b) != 0) & ((a < 0) ^ (b < 0))
        return q - fix.to(q.dtype)

    def remainder(self: Tensor, other: Any) -> Tensor:
        """Python's %: the result has the sign of the divisor."""
        _nonzero_divisor(self, other, "remainder")
        a, b = self._operands("remainder", other)
        r = a._prim(Ops.MOD, b)
        return ((r != 0) & ((r < 0) ^ (b < 0)))._select(r + b, r)

    def fmod(self: Tensor, other: Any) -> Tensor:
        _nonzero_divisor(self, other, "fmod")
        return self._binary(Ops.MOD, other, name="fmod")

    def pow(self: Tensor, exponent: Any) -> Tensor:
        if type(exponent) is int and exponent < 0 and not self.dtype.is_floating_point:
            raise DTypeError(  # as torch: the result would not be an integer
                f"pow: integers to negative integer powers are not allowed "
                f"(exponent {exponent}, {describe(self)})"
            )
        if (
            isinstance(exponent, (int, float))
            and not isinstance(exponent, bool)
            and self.dtype.is_floating_point
        ):
            if exponent == 2:
                return self * self
            if exponent == 1:
                return self * 1
            if exponent == 0.5:
                return self.sqrt()
        return self._binary(Ops.POW, exponent)

    def neg(self: Tensor) -> Tensor:
        if self.dtype is dtypes.bool_:
            raise DTypeError(
                f"neg: negation of a bool tensor is not supported; use ~ ({describe(self)})"
            )
        return self._prim(Ops.NEG)

    def __add__(self: Tensor, o: Any) -> Tensor:
        return self._binary(Ops.ADD, o)  # add(o) without its alpha: one call less per +

    def __radd__(self: Tensor, o: Any) -> Tensor:
        return self._binary(Ops.ADD, o, True)

    def __sub__(self: Tensor, o: Any) -> Tensor:
        return self.sub(o)

    def __rsub__(self: Tensor, o: Any) -> Tensor:
        return (-self).add(o)

    def __mul__(self: Tensor, o: Any) -> Tensor:
        return self._binary(Ops.MUL, o)

    def __rmul__(self: Tensor, o: Any) -> Tensor:
        return self._binary(Ops.MUL, o, True)

    def __truediv__(self: Tensor, o: Any) -> Tensor:
        return self.div(o)

    def __floordiv__(self: Tensor, o: Any) -> Tensor:
        return self.floor_divide(o)

    def __mod__(self: Tensor, o: Any) -> Tensor:
        return self.remainder(o)

    def __pow__(self: Tensor, o: Any) -> Tensor:
        return self.pow(o)

    def __neg__(self: Tensor) -> Tensor:
        return self.neg()

    def __pos__(self: Tensor) -> Tensor:
        return views.fresh(self)  # a copy, as torch: a new node

    def __abs__(self: Tensor) -> Tensor:
        return self.abs()

    def __rtruediv__(self: Tensor, o: Any) -> Tensor:
        a, b = self._operands(
            "div",
            o,
            dtype=dtypes.result_type(self, o)
            if dtypes.result_type(self, o).is_floating_point
            else dtypes.default_float,
        )
        return b._prim(Ops.DIV, a)

    def __rfloordiv__(self: Tensor, o: Any) -> Tensor:
        return self._operands("floor_divide", o)[1].floor_divide(self)

    def __rmod__(self: Tensor, o: Any) -> Tensor:
        return self._operands("remainder", o)[1].remainder(self)

    def __rpow__(self: Tensor, o: Any) -> Tensor:
        return self._binary(Ops.POW, o, True)

    # in place: the same op, then self takes the result (see Tensor._assign)
    def __iadd__(self: Tensor, o: Any) -> Tensor:
        return self._assign(self + o, "add_")

    def __isub__(self: Tensor, o: Any) -> Tensor:
        return self._assign(self - o, "sub_")

    def __imul__(self: Tensor, o: Any) -> Tensor:
        return self._assign(self * o, "mul_")

    def __itruediv__(self: Tensor, o: Any) -> Tensor:
        return self._assign(self / o, "div_")

    def __ifloordiv__(self: Tensor, o: Any) -> Tensor:
        return self._assign(self // o, "div_")

    def __imod__(self: Tensor, o: Any) -> Tensor:
        return self._assign(self % o, "remainder_")

    def __ipow__(self: Tensor, o: Any) -> Tensor:
        return self._assign(self**o, "pow_")

    def __iand__(self: Tensor, o: Any) -> Tensor:
        return self._assign(self & o, "and_")

    def __ior__(self: Tensor, o: Any) -> Tensor:
        return self._assign(self | o, "or_")

    def __ixor__(self: Tensor, o: Any) -> Tensor:
        return self._assign(self ^ o, "xor_")

    def add_(self: Tensor, o: Any, alpha: Scalar = 1) -> Tensor:
        return self._assign(self.add(o, alpha=alpha), "add_")

    def sub_(self: Tensor, o: Any, alpha: Scalar = 1) -> Tensor:
        return self._assign(self.sub(o, alpha=alpha), "sub_")

    def mul_(self: Tensor, o: Any) -> Tensor:
        return self._assign(self * o, "mul_")

    def div_(self: Tensor, o: Any) -> Tensor:
        return self._assign(self / o, "div_")

    def clamp_(self: Tensor, min: Any = None, max: Any = None) -> Tensor:
        return self._assign(self.clamp(min, max), "clamp_")

    def zero_(self: Tensor) -> Tensor:
        return self._assign(self.zeros_like(), "zero_")

    def fill_(self: Tensor, value: Any) -> Tensor:
        from anychip.frontend.tensor import Tensor

        return self._assign(Tensor._const(value, self.dtype, self.shape, self.device), "fill_")

    def copy_(self: Tensor, src: Any) -> Tensor:
        from anychip.frontend.tensor import to_tensor

        src = to_tensor(src, like=self)
        return self._assign(
            src.to(self.device, self.dtype)._broadcast(self.shape, "copy_"), "copy_"
        )

    # --- comparisons and logic --------------------------------------------------------
    def __lt__(self: Tensor, o: Any) -> Tensor:
        return self._binary(Ops.CMPLT, o, name="lt")  # type: ignore[override]

    def __gt__(self: Tensor, o: Any) -> Tensor:
        return self._binary(Ops.CMPLT, o, True, name="gt")  # type: ignore[override]

    def __le__(self: Tensor, o: Any) -> Tensor:
        return (self < o) | (self == o)  # type: ignore[override]

    def __ge__(self: Tensor, o: Any) -> Tensor:
        return (self > o) | (self == o)  # type: ignore[override]

    def __eq__(self: Tensor, o: Any) -> Tensor:
        return self._binary(Ops.CMPEQ, o, name="eq")  # type: ignore[override]

    def __ne__(self: Tensor, o: Any) -> Tensor:
        return (self == o)._prim(Ops.NOT)  # type: ignore[override]

    def lt(self: Tensor, o: Any) -> Tensor:
        return self < o

    def gt(self: Tensor, o: Any) -> Tensor:
        return self > o

    def le(self: Tensor, o: Any) -> Tensor:
        return self <= o

    def ge(self: Tensor, o: Any) -> Tensor:
        return self >= o

    def eq(self: Tensor, o: Any) -> Tensor:
        return self == o

    def ne(self: Tensor, o: Any) -> Tensor:
        return self != o

    def _bitwise(self: Tensor, op: Ops, o: Any, name: str, reverse: bool = False) -> Tensor:
        dt = dtypes.result_type(self, o)
        if dt.is_floating_point:
            ts = [self, o] if _is_tensor(o) else [self]
            raise DTypeNotImplemented(
                f"{name}: bitwise ops need integer or bool tensors, got {describe(*ts)}"
            )
        return self._binary(op, o, reverse, name=name)

    def __and__(self: Tensor, o: Any) -> Tensor:
        return self._bitwise(Ops.AND, o, "and")

    def __or__(self: Tensor, o: Any) -> Tensor:
        return self._bitwise(Ops.OR, o, "or")

    def __xor__(self: Tensor, o: Any) -> Tensor:
        return self._bitwise(Ops.XOR, o, "xor")

    def __rand__(self: Tensor, o: Any) -> Tensor:
        return self._bitwise(Ops.AND, o, "and", True)

    def __ror__(self: Tensor, o: Any) -> Tensor:
        return self._bitwise(Ops.OR, o, "or", True)

    def __rxor__(self: Tensor, o: Any) -> Tensor:
        return self._bitwise(Ops.XOR, o, "xor", True)

    def __invert__(self: Tensor) -> Tensor:
        if self.dtype.is_floating_point:
            raise DTypeError(f"bitwise_not: needs an integer or bool tensor, got {describe(self)}")
        return self._prim(Ops.NOT)

    def logical_not(self: Tensor) -> Tensor:
        return ~self.bool()

    def logical_and(self: Tensor, o: Any) -> Tensor:
        return self.bool() & self._as_bool(o)

    def logical_or(self: Tensor, o: Any) -> Tensor:
        return self.bool() | self._as_bool(o)

    def logical_xor(self: Tensor, o: Any) -> Tensor:
        return self.bool() ^ self._as_bool(o)

    def _as_bool(self: Tensor, o: Any) -> Any:
        return o.bool() if _is_tensor(o) else bool(o)

    def isnan(self: Tensor) -> Tensor:
        return self != self

    def isinf(self: Tensor) -> Tensor:
        return self.abs() == math.inf

    def isfinite(self: Tensor) -> Tensor:
        return (self - self) == 0

    def maximum(self: Tensor, o: Any) -> Tensor:
        return self._binary(Ops.MAX, o, name="maximum")

    def minimum(self: Tensor, o: Any) -> Tensor:
        return self._binary(Ops.MIN, o, name="minimum")

    def where(self: Tensor, condition: Any, other: Any) -> Tensor:
        """PyTorch's `x.where(condition, other)`: x where condition holds, else other."""
        return condition._select(self, other)

    def clamp(self: Tensor, min: Any = None, max: Any = None) -> Tensor:
        if min is None and max is None:
            raise DTypeError(f"clamp: at least one of min and max must be given ({describe(self)})")
        out = self
        if min is not None:
            out = (out < min)._select(min, out)
        if max is not None:
            out = (out > max)._select(max, out)
        return out

    clip = clamp

    # --- math -----------------------------------------------------------------------
    def abs(self: Tensor) -> Tensor:
        if self.dtype.kind in "bu":
            return self
        if self.dtype.is_floating_point:  # + 0.0 turns max(0.0, -0.0) = -0.0 into +0.0
            return self.maximum(-self) + 0.0
        return self.maximum(-self)

    def sign(self: Tensor) -> Tensor:
        if self.dtype is dtypes.bool_:
            return self.clone()
        s = (self > 0).to(self.dtype) - (self < 0).to(self.dtype)
        if self.requires_grad:  # a zero gradient, as torch: where(True, s, self)
            from anychip.frontend.tensor import Tensor

            always = Tensor._const(True, dtypes.bool_, self.shape, self.device)
            return always._select(s, self)
        return s

    def sqrt(self: Tensor) -> Tensor:
        return self._float()._prim(Ops.SQRT)

    def rsqrt(self: Tensor) -> Tensor:
        return 1 / self.sqrt()

    def exp(self: Tensor) -> Tensor:
        return self._float()._prim(Ops.EXP)

    def exp2(self: Tensor) -> Tensor:
        return (self._float() * math.log(2)).exp()

    def expm1(self: Tensor) -> Tensor:
        return self.exp() - 1

    def log(self: Tensor) -> Tensor:
        return self._float()._prim(Ops.LOG)

    def log2(self: Tensor) -> Tensor:
        return self.log() * (1 / math.log(2))

    def log10(self: Tensor) -> Tensor:
        return self.log() * (1 / math.log(10))

    def log1p(self: Tensor) -> Tensor:
        return (self + 1).log()

    def sin(self: Tensor) -> Tensor:
        return self._float()._prim(Ops.SIN)

    def cos(self: Tensor) -> Tensor:
        # 1 - 2 sin(x/2)^2 in float64: x/2 is exact, so it holds for every x, where
        # sin(x + pi/2) loses pi/2 to x's rounding once |x| is large (cos(1e20) came out
        # 0.657, not 0.754); its error is absolute, ~1e-16, far below float32's ulp even
        # near cos's zeros (cos(1.5707964) = -4.4e-8)
        x = self._float()
        s = (x.to(dtypes.float64) * 0.5).sin()
        out = 1.0 - 2.0 * s * s
        return out if x.dtype is dtypes.float64 else out.to(x.dtype)

    def tan(self: Tensor) -> Tensor:
        return self.sin() / self.cos()

    def erf(self: Tensor) -> Tensor:
        return self._float()._prim(Ops.ERF)

    def reciprocal(self: Tensor) -> Tensor:
        return 1 / self

    def square(self: Tensor) -> Tensor:
        return self.pow(2)

    def floor(self: Tensor) -> Tensor:
        return self._prim(Ops.FLOOR) if self.dtype.is_floating_point else self

    def ceil(self: Tensor) -> Tensor:
        return -((-self).floor()) if self.dtype.is_floating_point else self

    def trunc(self: Tensor) -> Tensor:
        return (self < 0)._select(self.ceil(), self.floor())

    def round(self: Tensor, decimals: int = 0) -> Tensor:
        """Round half to even, as PyTorch does."""
        if not self.dtype.is_floating_point:
            return self
        if decimals:
            scale = 10.0**decimals
            return (self * scale).round() / scale
        r = (self + 0.5).floor()
        tie = (r - self) == 0.5
        odd = (r * 0.5).floor() * 2 != r
        return (tie & odd)._select(r - 1, r)

    def sigmoid(self: Tensor) -> Tensor:
        from anychip.frontend import stable  # finite gradients at +-1000 (stable.py)

        return stable.sigmoid(self._float())

    def tanh(self: Tensor) -> Tensor:
        # (1 - e) / (1 + e) with e = exp(-2|x|) cancels as |x| -> 0 (tanh(1e-6) came out 7%
        # off as 2 sigmoid(2x) - 1): below 1/8 an odd Taylor polynomial, exact to 1e-12
        x = self._float()
        a = x.abs()
        e = (a * -2).exp()
        big = (1 - e) / (1 + e)
        xs = (a < 0.125)._select(x, 0)  # the polynomial of a huge x overflows (NaN grads)
        x2 = xs * xs
        poly = xs * (1 + x2 * (-1 / 3 + x2 * (2 / 15 + x2 * (-17 / 315 + x2 * (62 / 2835)))))
        return (a < 0.125)._select(poly, (x < 0)._select(-big, big))

    def relu(self: Tensor) -> Tensor:
        return (self <= 0)._select(0, self)

    def leaky_relu(self: Tensor, negative_slope: float = 0.01) -> Tensor:
        return (self < 0)._select(self * negative_slope, self)

    def elu(self: Tensor, alpha: float = 1.0) -> Tensor:
        neg = (self > 0)._select(0, self)  # exp of the unused positive branch could overflow
        return (self > 0)._select(self, (neg.exp() - 1) * alpha)

    def gelu(self: Tensor, approximate: str = "none") -> Tensor:
        x = self._float()
        if approximate == "tanh":
            inner = (x + x * x * x * 0.044715) * math.sqrt(2 / math.pi)
            return x * 0.5 * (1 + inner.tanh())
        if approximate != "none":
            raise DTypeError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
        return x * 0.5 * (1 + (x * (1 / math.sqrt(2))).erf())

    def silu(self: Tensor) -> Tensor:
        return self * self.sigmoid()

    def softplus(self: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
        from anychip.frontend import stable

        return stable.softplus(self._float(), beta, threshold)

    def hardtanh(self: Tensor, min_val: float = -1.0, max_val: float = 1.0) -> Tensor:
        return self.clamp(min_val, max_val)

    def lerp(self: Tensor, end: Any, weight: Any) -> Tensor:
        return self + (end - self) * weight


# imported last: anychip.frontend.tensor imports this module (directly or not), so the
# module object may be half made here; the functions above read `_tensor.X` when called,
# where a local import would cost about a microsecond a call (hundreds per training step)
from anychip.frontend import tensor as _tensor  # noqa: E402
