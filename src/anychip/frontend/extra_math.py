"""More elementwise math as compositions of primitives: inverse trigonometric and
hyperbolic functions, the remaining PyTorch activations, copysign, logaddexp and bit shifts.

There is no atan primitive: atan is Cephes' rational approximation after range reduction
(about 1 ulp in float64), and asin, acos and atan2 are written with it. Branches are
selected with `where` on clamped inputs, so the branch not taken never feeds an inf or NaN
into a gradient.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from anychip import dtypes
from anychip.errors import DTypeError, describe

if TYPE_CHECKING:
    from anychip.frontend.tensor import Tensor

# Cephes atan: atan(x) = x + x^3 P(x^2)/Q(x^2) on [0, 0.66], after reduction
_ATAN_P = (
    -8.750608600031904122785e-1,
    -1.615753718733365076637e1,
    -7.500855792314704667340e1,
    -1.228866684490136173410e2,
    -6.485021904942025371773e1,
)
_ATAN_Q = (
    2.485846490142306297962e1,
    1.650270098316988542046e2,
    4.328810604912902668951e2,
    4.853903996359136964868e2,
    1.945506571482613964425e2,
)
_T3P8 = 2.41421356237309504880  # tan(3 pi / 8)
_MOREBITS = 6.123233995736765886130e-17  # pi/2 - float64(pi/2)
_BIG = 1e8  # asinh/acosh use log(2x) above this (x*x would overflow float32)


def _poly(z: Tensor, coeffs: tuple[float, ...], monic: bool) -> Tensor:
    """Horner's rule: (1*z^n +) c0 z^(n-1) + ... (monic: a leading 1)."""
    acc: Any = 1.0 if monic else coeffs[0]
    for c in coeffs if monic else coeffs[1:]:
        acc = z * acc + c
    return acc  # type: ignore[no-any-return]


def _c(like: Tensor, value: float) -> Tensor:
    """A constant of like's dtype, shape and device (Python floats default to float32)."""
    from anychip.frontend.tensor import Tensor

    return Tensor._const(value, like.dtype, like.shape, like.device)


def _log1p(y: Tensor) -> Tensor:
    """log(1 + y) accurate for small y: log(u) * y / (u - 1) with u = 1 + y rounded."""
    u = y + 1.0
    d = (u == 1.0)._select(1.0, u - 1.0)  # a safe divisor where u rounds to 1
    return (u == 1.0)._select(y, u.log() * (y / d))


def _with_grad(value: Tensor, *pairs: tuple[Tensor, Tensor]) -> Tensor:
    """`value` (computed from detached inputs) with d value / d x_i = deriv_i for each
    (x_i, deriv_i): value + sum(deriv_i * (x_i - x_i)), the difference zero but tracked.
    A composite's own derivative is short, where autograd through its branches would
    build a graph the size of the forward one several times over."""
    out = value
    for x, deriv in pairs:
        if x.requires_grad:
            zero = x.isfinite()._select(x - x.detach(), 0.0)  # inf - inf would be NaN
            out = out + deriv * zero
    return out


class ExtraMathMixin:
    __slots__ = ()

    # --- inverse trigonometric ------------------------------------------------------
    def atan(self: Tensor) -> Tensor:
        x = self._float()
        return _with_grad(x.detach()._atan_value(), (x, 1.0 / (x.detach() * x.detach() + 1.0)))

    def _atan_value(self: Tensor) -> Tensor:
        # signs and offsets are selected between constants and applied by multiply-add:
        # a `where` choosing between two expressions of r would copy r's whole tree into
        # each branch when the kernel is lowered (and atan2 nests three more)
        x = self
        neg = x < 0
        sgn = neg._select(_c(x, -1.0), _c(x, 1.0))
        ax = x * sgn  # |x|, with slope 1 at 0 (abs would give 0)
        big = ax > _T3P8
        mid = (ax > 0.66) & big.logical_not()
        inv = -1.0 / big._select(ax, 1.0)
        t = big._select(inv, mid._select((ax - 1.0) / (ax + 1.0), ax))
        z = t * t
        r = t + t * (z * _poly(z, _ATAN_P, False) / _poly(z, _ATAN_Q, True))
        quarter = mid._select(_c(x, math.pi / 4 + _MOREBITS / 2), _c(x, 0.0))
        base = big._select(_c(x, math.pi / 2 + _MOREBITS), quarter)
        return (r + base) * sgn

    arctan = atan

    def asin(self: Tensor) -> Tensor:
        x = self._float()
        d = x.detach()
        root = ((1.0 - d) * (1.0 + d)).sqrt()
        return _with_grad((d / root)._atan_value(), (x, 1.0 / root))

    arcsin = asin

    def acos(self: Tensor) -> Tensor:
        x = self._float()
        d = x.detach()
        value = ((1.0 - d) / (1.0 + d)).sqrt()._atan_value() * 2.0
        return _with_grad(value, (x, -1.0 / ((1.0 - d) * (1.0 + d)).sqrt()))

    arccos = acos

    def atan2(self: Tensor, other: Any) -> Tensor:
        """The angle of the point (other, self), in (-pi, pi], as torch.atan2(self, other)."""
        yt, xt = self._operands("atan2", other)
        yt, xt = yt._float(), xt._float()
        y, x = yt.detach(), xt.detach()
        r2 = x * x + y * y
        r2 = (r2 == 0)._select(1.0, r2)
        return _with_grad(y._atan2_value(x), (yt, x / r2), (xt, -y / r2))

    def _atan2_value(self: Tensor, x: Tensor) -> Tensor:
        y = self
        ax, ay = (x < 0)._select(-x, x), (y < 0)._select(-y, y)
        hi = ax.maximum(ay)
        a = (ax.minimum(ay) / (hi == 0)._select(1.0, hi))._atan_value()
        # a -> pi/2 - a (steep), -> pi - a (x < 0), -> -a (y < 0): one multiply-add each
        steep, left = ay > ax, x < 0
        a = a * steep._select(_c(a, -1.0), _c(a, 1.0)) + steep._select(
            _c(a, math.pi / 2), _c(a, 0.0)
        )
        a = a * left._select(_c(a, -1.0), _c(a, 1.0)) + left._select(_c(a, math.pi), _c(a, 0.0))
        return a * (y < 0)._select(_c(a, -1.0), _c(a, 1.0))

    arctan2 = atan2

    # --- hyperbolic -----------------------------------------------------------------
    def sinh(self: Tensor) -> Tensor:
        x = self._float()
        d = x.detach()
        return _with_grad(d._sinh_value(), (x, (d.exp() + (-d).exp()) * 0.5))

    def _sinh_value(self: Tensor) -> Tensor:
        x = self
        s = x.clamp(-0.25, 0.25)  # Taylor series near 0 (exp(x) - exp(-x) cancels there)
        z = s * s
        series = s * (1 + z / 6 * (1 + z / 20 * (1 + z / 42 * (1 + z / 72))))
        return (x.abs() < 0.25)._select(series, (x.exp() - (-x).exp()) * 0.5)

    def cosh(self: Tensor) -> Tensor:
        x = self._float()
        d = x.detach()
        return _with_grad((d.exp() + (-d).exp()) * 0.5, (x, d._sinh_value()))

    def asinh(self: Tensor) -> Tensor:
        x = self._float()
        d = x.detach()
        c = d.clamp(-_BIG, _BIG)
        return _with_grad(
            d._asinh_value(), (x, (d.abs() > _BIG)._select(1.0 / d.abs(), (c * c + 1.0).rsqrt()))
        )

    def _asinh_value(self: Tensor) -> Tensor:
        x = self
        neg = x < 0
        ax = neg._select(-x, x)
        c = ax.clamp(max=_BIG)
        small = _log1p(c + c * c / (1.0 + (c * c + 1.0).sqrt()))
        large = ax.clamp(min=_BIG).log() + math.log(2.0)
        out = (ax > _BIG)._select(large, small)
        return neg._select(-out, out)

    arcsinh = asinh

    def acosh(self: Tensor) -> Tensor:
        xt = self._float()
        x = xt.detach()
        c = x.clamp(max=_BIG) - 1.0
        root = (c * (c + 2.0)).sqrt()
        small = _log1p(c + root)
        large = x.clamp(min=_BIG).log() + math.log(2.0)
        return _with_grad((x > _BIG)._select(large, small), (xt, 1.0 / root))

    arccosh = acosh

    def atanh(self: Tensor) -> Tensor:
        xt = self._float()
        x = xt.detach()
        return _with_grad(_log1p(x * 2.0 / (1.0 - x)) * 0.5, (xt, 1.0 / ((1.0 - x) * (1.0 + x))))

    arctanh = atanh

    # --- activations ----------------------------------------------------------------
    def relu6(self: Tensor) -> Tensor:
        return self.hardtanh(0.0, 6.0)

    def hardsigmoid(self: Tensor) -> Tensor:
        return (self + 3.0).hardtanh(0.0, 6.0) / 6.0

    def hardswish(self: Tensor) -> Tensor:
        return self * (self + 3.0).hardtanh(0.0, 6.0) / 6.0

    def softsign(self: Tensor) -> Tensor:
        return self / (self.abs() + 1.0)

    def logsigmoid(self: Tensor) -> Tensor:
        from anychip.frontend import stable  # F.logsigmoid's stable form, one place

        return stable.logsigmoid(self._float())

    def mish(self: Tensor) -> Tensor:
        return self * self.softplus().tanh()

    def celu(self: Tensor, alpha: float = 1.0) -> Tensor:
        neg = ((self.clamp(max=0.0) / alpha).exp() - 1.0) * alpha
        return self.clamp(min=0.0) + neg

    def selu(self: Tensor) -> Tensor:
        alpha, scale = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
        return (self.clamp(min=0.0) + (self.clamp(max=0.0).exp() - 1.0) * alpha) * scale

    def softmin(self: Tensor, dim: int, dtype: Any = None) -> Tensor:
        return (-self).softmax(dim, dtype)

    # --- sign-aware and two-argument math --------------------------------------------
    def copysign(self: Tensor, other: Any) -> Tensor:
        """|self| with the sign of other (-0.0 counts as negative, as in C and torch)."""
        a, b = self._operands("copysign", other)
        a, b = a._float(), b._float()
        neg = (b < 0) | ((b == 0) & ((1.0 / (b == 0)._select(b, 1.0)) < 0))
        mag = (a < 0)._select(-a, a)
        return neg._select(-mag, mag)

    def logaddexp(self: Tensor, other: Any) -> Tensor:
        """log(exp(self) + exp(other)) without overflow; equal infinities stay infinite."""
        at, bt = self._operands("logaddexp", other)
        at, bt = at._float(), bt._float()
        a, b = at.detach(), bt.detach()
        same = a == b
        hi = a.maximum(b)
        gap = same._select(0.0, -(a - b).abs())  # no inf - inf in the branch not taken
        out = same._select(a + math.log(2.0), hi + _log1p(gap.exp()))
        # d/da = exp(a - out) = sigmoid(a - b): 1/2 on ties (and for equal infinities)
        wa = same._select(0.5, (a - b).sigmoid())
        return _with_grad(out, (at, wa), (bt, 1.0 - wa))

    # --- bit shifts (integers: multiply or floor-divide by 2**k) ---------------------
    def _shift(self: Tensor, other: Any, left: bool, reverse: bool = False) -> Tensor:
        a, b = self._operands("bitwise_shift", other)
        if reverse:
            a, b = b, a
        if a.dtype.kind not in "iu" or b.dtype.kind not in "iu":
            raise DTypeError(f"bitwise shift: integer tensors only, got {describe(a, b)}")
        bits = 8 * a.dtype.itemsize
        k = b.clamp(0, bits - 1)
        from anychip.frontend.tensor import Tensor

        p = Tensor._const(2, a.dtype, a.shape, a.device).pow(k)
        out = a * p if left else a.floor_divide(p)  # floor: arithmetic shift of negatives
        big = b >= bits  # shifting every bit out: 0 (or -1 for negative right shifts)
        fill = (a < 0)._select(-1, 0) if not left and a.dtype.kind == "i" else a * 0
        return big._select(fill, out).to(a.dtype)

    def bitwise_left_shift(self: Tensor, other: Any) -> Tensor:
        return self._shift(other, True)

    def bitwise_right_shift(self: Tensor, other: Any) -> Tensor:
        return self._shift(other, False)

    def __lshift__(self: Tensor, other: Any) -> Tensor:
        return self._shift(other, True)

    def __rshift__(self: Tensor, other: Any) -> Tensor:
        return self._shift(other, False)

    def __rlshift__(self: Tensor, other: Any) -> Tensor:
        return self._shift(other, True, reverse=True)

    def __rrshift__(self: Tensor, other: Any) -> Tensor:
        return self._shift(other, False, reverse=True)

    def __ilshift__(self: Tensor, other: Any) -> Tensor:
        return self._assign(self._shift(other, True), "__ilshift__")

    def __irshift__(self: Tensor, other: Any) -> Tensor:
        return self._assign(self._shift(other, False), "__irshift__")

    # --- dtype views -----------------------------------------------------------------
    def _bitcast(self: Tensor, dtype: Any) -> Tensor:
        """The same bytes read as another dtype (x.view(ac.int32)); the last dimension
        scales by the size ratio. Computed on the host: a value, not a lazy op."""
        from anychip.frontend.tensor import Tensor

        dt = dtypes.to_dtype(dtype, "view")
        if dt is dtypes.bfloat16 or self.dtype is dtypes.bfloat16:
            raise DTypeError(f"view: bfloat16 bit views are not supported ({describe(self)})")
        arr = self.numpy()
        if arr.ndim == 0 and dt.itemsize != self.dtype.itemsize:
            raise DTypeError(
                f"view: a 0-d tensor can only be viewed as a same-size dtype ({describe(self)})"
            )
        if arr.ndim and (arr.shape[-1] * self.dtype.itemsize) % dt.itemsize:
            raise DTypeError(
                f"view: the last dimension's {arr.shape[-1] * self.dtype.itemsize} bytes do "
                f"not divide into {dt.name} elements ({describe(self)})"
            )
        return Tensor(arr.view(dt.np), dtype=dt, device=self.device)
