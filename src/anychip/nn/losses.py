"""Loss functions (`F.cross_entropy`, ...) and their Module forms (`nn.CrossEntropyLoss`).

Class-index losses pick each target's log-probability with the GATHER primitive, so no
one-hot matrix is built; `reduction` is 'mean', 'sum' or 'none' as in PyTorch.
"""

from __future__ import annotations

from anychip import dtypes
from anychip.errors import ArgumentError, DTypeError, IndexOutOfRange, ShapeError, describe
from anychip.frontend import stable
from anychip.frontend.tensor import Tensor, to_tensor
from anychip.ir.ops import Ops
from anychip.nn.module import Module

REDUCTIONS = ("mean", "sum", "none")


def _reduce(loss: Tensor, reduction: str, op: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ArgumentError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _check_reduction(reduction: str, op: str) -> None:
    if reduction not in REDUCTIONS:
        raise ArgumentError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """(input - target)^2, reduced.

    >>> import anychip as ac
    >>> ac.nn.functional.mse_loss(ac.tensor([1.0, 3.0]), ac.tensor([0.0, 0.0])).item()
    5.0
    """
    _check_reduction(reduction, "mse_loss")
    d = input - to_tensor(target, like=input)
    return _reduce(d * d, reduction, "mse_loss")


def l1_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """|input - target|, reduced."""
    _check_reduction(reduction, "l1_loss")
    return _reduce((input - to_tensor(target, like=input)).abs(), reduction, "l1_loss")


def _gather(x: Tensor, idx: Tensor, dim: int) -> Tensor:
    """out[..i..] = x[..idx[..i..]..] along `dim` (idx int64, same rank as x)."""
    return x._prim(Ops.GATHER, idx, arg=dim)


def _class_targets(logp: Tensor, target: Tensor, ignore_index: int, op: str) -> Tensor:
    """Check integer class targets against logp (N, C, d...) and return them as int64."""
    cd = 1 if logp.ndim >= 2 else 0
    want = logp.shape[:cd] + logp.shape[cd + 1 :]
    if target.shape != want:
        raise ShapeError(
            f"{op}: expected target of shape {want} for input of shape {logp.shape}: "
            f"{describe(logp, target)}"
        )
    if target.dtype.kind not in "iu":
        raise DTypeError(
            f"{op}: class-index targets must be integers, got {describe(target)}; pass "
            "class probabilities as a float tensor of the input's shape"
        )
    t = target.to(dtypes.int64)
    n_classes = logp.shape[cd]
    if t.numel():
        bad = (t != ignore_index) & ((t < 0) | (t >= n_classes))
        if bad.any().item():
            lo, hi = t.amin().item(), t.amax().item()
            raise IndexOutOfRange(
                f"{op}: target values span [{lo}, {hi}], out of bounds for {n_classes} "
                f"classes (ignore_index={ignore_index}); {describe(logp, target)}"
            )
    return t


def _picked(
    logp: Tensor, t: Tensor, weight: Tensor | None, ignore_index: int
) -> tuple[Tensor, Tensor]:
    """(-logp at each target, the target's class weight, 0 where ignored): both (N, d...)."""
    cd = 1 if logp.ndim >= 2 else 0
    ignored = t == ignore_index
    safe = ignored._select(0, t)  # any valid class where ignored; its weight is zeroed
    nll = -_gather(logp, safe.unsqueeze(cd), cd).squeeze(cd)
    if weight is not None:
        w = _gather(weight.to(logp.dtype), safe.reshape(-1), 0).reshape(safe.shape)
        w = ignored._select(0.0, w)
    else:
        w = ignored._select(0.0, 1.0).to(logp.dtype)
    return nll, w


def _check_weight(weight: Tensor | None, n_classes: int, op: str) -> None:
    if weight is not None and weight.shape != (n_classes,):
        raise ShapeError(
            f"{op}: weight must be a 1-d tensor with one entry per class ({n_classes}), "
            f"got {describe(weight)}"
        )


def nll_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """-weight[t] * input[n, t] for log-probabilities `input` (N, C, d...) and class
    indices `target` (N, d...); 'mean' divides by the sum of the targets' weights."""
    _check_reduction(reduction, "nll_loss")
    if input.ndim == 0:
        raise ShapeError(f"nll_loss: input must have a class dimension, got {describe(input)}")
    _check_weight(weight, input.shape[1 if input.ndim >= 2 else 0], "nll_loss")
    t = _class_targets(input, target, ignore_index, "nll_loss")
    nll, w = _picked(input, t, weight, ignore_index)
    loss = nll * w
    if reduction == "mean":
        return loss.sum() / w.sum()
    return _reduce(loss, reduction, "nll_loss")


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Cross entropy of logits `input` (N, C, d...) or (C,) against class indices
    (N, d...) or class probabilities (input's shape), with PyTorch's weight, ignore_index
    and label_smoothing semantics.

    >>> import anychip as ac
    >>> x = ac.tensor([[2.0, 0.0], [0.0, 2.0]])
    >>> round(ac.nn.functional.cross_entropy(x, ac.tensor([0, 1])).item(), 4)
    0.1269
    """
    _check_reduction(reduction, "cross_entropy")
    if input.ndim == 0:
        raise ShapeError(f"cross_entropy: input must have a class dimension: {describe(input)}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ArgumentError(
            f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}"
        )
    cd = 1 if input.ndim >= 2 else 0
    n_classes = input.shape[cd]
    _check_weight(weight, n_classes, "cross_entropy")
    logp = input.log_softmax(cd)
    # weight broadcast along the class dimension: (C, 1, ...) for (N, C, d...)
    wb = None
    if weight is not None:
        wb = weight.to(logp.dtype).reshape((n_classes,) + (1,) * (logp.ndim - cd - 1))
    if target.dtype.is_floating_point:
        return _soft_cross_entropy(logp, target, wb, reduction, label_smoothing)
    t = _class_targets(logp, target, ignore_index, "cross_entropy")
    nll, w = _picked(logp, t, weight, ignore_index)
    loss = nll * w
    if label_smoothing > 0:
        # every class at weight eps / C: -(sum_c w_c logp_c), zero where ignored
        smooth = -(logp * wb if wb is not None else logp).sum(cd)
        smooth = (t == ignore_index)._select(0.0, smooth)
        loss = loss * (1 - label_smoothing) + smooth * (label_smoothing / n_classes)
    if reduction == "mean":
        return loss.sum() / w.sum()
    return _reduce(loss, reduction, "cross_entropy")


def _soft_cross_entropy(
    logp: Tensor, target: Tensor, wb: Tensor | None, reduction: str, smoothing: float
) -> Tensor:
    cd = 1 if logp.ndim >= 2 else 0
    if target.shape != logp.shape:
        raise ShapeError(
            f"cross_entropy: class-probability targets must have the input's shape: "
            f"{describe(logp, target)}"
        )
    n_classes = logp.shape[cd]
    p = target.to(logp.dtype)
    if smoothing > 0:
        p = p * (1 - smoothing) + smoothing / n_classes
    terms = logp * p
    loss = -(terms * wb if wb is not None else terms).sum(cd)  # (N, d...)
    if reduction == "mean":
        # PyTorch divides by the number of samples, not by the weights
        return loss.sum() / (logp.numel() // n_classes if n_classes else 0)
    return _reduce(loss, reduction, "cross_entropy")


def binary_cross_entropy(
    input: Tensor, target: Tensor, weight: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    """-w [y log(x) + (1 - y) log(1 - x)] for probabilities x, each log clamped at -100
    as in PyTorch (so x = 0 or 1 gives a finite loss)."""
    _check_reduction(reduction, "binary_cross_entropy")
    target = to_tensor(target, like=input)
    if target.shape != input.shape:
        raise ShapeError(
            "binary_cross_entropy: target size must be the same as input size: "
            f"{describe(input, target)}"
        )
    y = target.to(input.dtype)
    loss = -(y * input.log().clamp(min=-100) + (1 - y) * (1 - input).log().clamp(min=-100))
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "binary_cross_entropy")


def huber_loss(
    input: Tensor, target: Tensor, reduction: str = "mean", delta: float = 1.0
) -> Tensor:
    """0.5 d^2 where |d| < delta, else delta (|d| - delta / 2), with d = input - target."""
    _check_reduction(reduction, "huber_loss")
    d = (input - to_tensor(target, like=input)).abs()
    loss = (d < delta)._select(d * d * 0.5, (d - 0.5 * delta) * delta)
    return _reduce(loss, reduction, "huber_loss")


def smooth_l1_loss(
    input: Tensor, target: Tensor, reduction: str = "mean", beta: float = 1.0
) -> Tensor:
    """0.5 d^2 / beta where |d| < beta, else |d| - beta / 2 (huber_loss / beta)."""
    _check_reduction(reduction, "smooth_l1_loss")
    d = (input - to_tensor(target, like=input)).abs()
    if beta == 0:
        return _reduce(d, reduction, "smooth_l1_loss")
    loss = (d < beta)._select(d * d * (0.5 / beta), d - 0.5 * beta)
    return _reduce(loss, reduction, "smooth_l1_loss")


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
) -> Tensor:
    """-w [pos_weight * y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))], computed stably
    as w [(1 - y) x + (1 + (pos_weight - 1) y) softplus(-x)].

    >>> import anychip as ac
    >>> f = ac.nn.functional.binary_cross_entropy_with_logits
    >>> round(f(ac.tensor([0.0]), ac.tensor([1.0])).item(), 4)
    0.6931
    """
    _check_reduction(reduction, "binary_cross_entropy_with_logits")
    target = to_tensor(target, like=input)
    if target.shape != input.shape:
        raise ShapeError(
            "binary_cross_entropy_with_logits: target size must be the same as input size: "
            f"{describe(input, target)}"
        )
    x, y = input, target.to(input.dtype)
    softplus_neg = stable.softplus_exact(-x)  # log(1 + exp(-x)), stable
    if pos_weight is not None:
        loss = (1 - y) * x + (1 + (pos_weight - 1) * y) * softplus_neg
    else:
        loss = (1 - y) * x + softplus_neg
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "binary_cross_entropy_with_logits")


# --- Module forms --------------------------------------------------------------------
class _Loss(Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        _check_reduction(reduction, type(self).__name__)
        self.reduction = reduction

    def extra_repr(self) -> str:
        return "" if self.reduction == "mean" else f"reduction={self.reduction!r}"


class MSELoss(_Loss):
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return mse_loss(input, target, self.reduction)


class L1Loss(_Loss):
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return l1_loss(input, target, self.reduction)


class HuberLoss(_Loss):
    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__(reduction)
        self.delta = delta

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return huber_loss(input, target, self.reduction, self.delta)


class SmoothL1Loss(_Loss):
    def __init__(self, reduction: str = "mean", beta: float = 1.0) -> None:
        super().__init__(reduction)
        self.beta = beta

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return smooth_l1_loss(input, target, self.reduction, self.beta)


class BCELoss(_Loss):
    def __init__(self, weight: Tensor | None = None, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.register_buffer("weight", weight)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy(input, target, self.weight, self.reduction)


class NLLLoss(_Loss):
    def __init__(
        self, weight: Tensor | None = None, ignore_index: int = -100, reduction: str = "mean"
    ) -> None:
        super().__init__(reduction)
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return nll_loss(input, target, self.weight, self.ignore_index, self.reduction)


class CrossEntropyLoss(_Loss):
    """Module form of `cross_entropy`.

    >>> import anychip as ac
    >>> loss = ac.nn.CrossEntropyLoss()(ac.zeros(2, 4), ac.tensor([0, 3]))
    >>> round(loss.item(), 4)
    1.3863
    """

    def __init__(
        self,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(reduction)
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return cross_entropy(
            input, target, self.weight, self.ignore_index, self.reduction, self.label_smoothing
        )


class BCEWithLogitsLoss(_Loss):
    def __init__(
        self,
        weight: Tensor | None = None,
        reduction: str = "mean",
        pos_weight: Tensor | None = None,
    ) -> None:
        super().__init__(reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy_with_logits(
            input, target, self.weight, self.reduction, self.pos_weight
        )
