"""Views and in-place updates: tensors that alias part of another tensor's value.

A view (what `x[0]`, `x.t()`, `x.view(-1)`, `x.narrow(...)`, `x.unbind()`, `x.detach()`
return, as in PyTorch) records its base, the tensor owning the value, and the movement
primitives from the base to the view. `assign` is the one door for in-place updates: on a
view it puts the new value back into the base through the inverse movements (PAD for
SHRINK, the inverse PERMUTE, RESHAPE back) and a WHERE over the written region, gives the
base that value, and every live view of the base re-derives its own. A base and its views
share one version counter; strides (in elements of the base's contiguous layout) decide,
as in PyTorch, whether a reshape can be a view and whether a view overlaps itself.
"""

from __future__ import annotations

import functools
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from anychip import dtypes
from anychip.errors import AutogradError, DTypeError, InPlaceError, ShapeError, describe
from anychip.frontend.autograd import Version, accept_reads
from anychip.ir.ops import Node, Ops

if TYPE_CHECKING:
    from anychip.frontend.tensor import Tensor

Shape = tuple[int, ...]
Step = tuple[Ops, Any, Shape]  # a movement primitive, its arg, and the shape it reads
_VIEW_OPS = (Ops.RESHAPE, Ops.PERMUTE, Ops.SHRINK, Ops.PAD, Ops.EXPAND)
_FILLS = ("fill_", "zero_")  # may write an overlapping (expanded) view, as in PyTorch


class View:
    """How a view derives from its base: `steps` from the base's value to the view's."""

    __slots__ = ("_strides", "base", "detached", "steps", "tracked")

    def __init__(
        self, base: Tensor, steps: tuple[Step, ...], tracked: bool, detached: bool
    ) -> None:
        self.base, self.steps = base, steps
        self.tracked = tracked  # made while autograd recorded (else PyTorch's no_grad view)
        self.detached = detached  # made by detach()/.data: changes bypass autograd
        self._strides: Shape | None = None

    @property
    def strides(self) -> Shape:
        """PyTorch's strides of the view, in elements of the base's row-major layout
        (worked out when first asked: most views never are)."""
        if self._strides is None:
            strides = contiguous_strides(self.base.shape)
            for step in self.steps:
                nxt = _step_strides(strides, step, _out_shape(step))
                assert nxt is not None, f"view: {step} cannot be a view"
                strides = nxt
            self._strides = strides
        return self._strides


# --- strides ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4096)
def contiguous_strides(shape: Shape) -> Shape:
    out, acc = [], 1
    for n in reversed(shape):
        out.append(acc)
        acc *= max(n, 1)
    return tuple(reversed(out))


def strides_of(t: Tensor) -> Shape:
    return t._view.strides if t._view is not None else contiguous_strides(t.shape)


def is_contiguous(t: Tensor) -> bool:
    want = contiguous_strides(t.shape)
    return all(n <= 1 or a == b for n, a, b in zip(t.shape, strides_of(t), want))


def reshape_strides(shape: Shape, strides: Shape, new: Shape) -> Shape | None:
    """Strides of `new` as a view of (shape, strides), or None where it cannot be one: each
    run of old dims that is contiguous in memory must be split or merged on its own."""
    if not shape or 0 in shape:
        return contiguous_strides(new)
    out = [0] * len(new)
    j = len(new) - 1
    run_stride = strides[-1]
    old_n = new_n = 1
    for i in range(len(shape) - 1, -1, -1):
        old_n *= shape[i]
        if i == 0 or (shape[i - 1] != 1 and strides[i - 1] != old_n * run_stride):
            # dims i.. form one contiguous run: new dims must tile it exactly
            while j >= 0 and (new_n < old_n or new[j] == 1):
                out[j] = new_n * run_stride
                new_n *= new[j]
                j -= 1
            if new_n != old_n:
                return None
            if i > 0:
                run_stride, old_n, new_n = strides[i - 1], 1, 1
    return tuple(out) if j == -1 else None


def _step_strides(strides: Shape, step: Step, out_shape: Shape) -> Shape | None:
    op, arg, shape = step
    if op is Ops.RESHAPE:
        return reshape_strides(shape, strides, out_shape)
    if op is Ops.PERMUTE:
        return tuple([strides[i] for i in arg])
    if op is Ops.EXPAND:
        return tuple(0 if a != b else s for a, b, s in zip(shape, arg, strides))
    # SHRINK keeps strides; PAD appears only inside strided slicing (x[::2]), which cuts
    # the padding away again, so the padded dim reads on as if the base went on
    return strides


# --- making views -------------------------------------------------------------------------
def _chain(src: Node, out: Node) -> tuple[Step, ...] | None:
    """The movement steps from src to out (out built from src by movement ops only)."""
    steps: list[Step] = []
    n = out
    while n is not src:
        if n.op not in _VIEW_OPS:
            return None
        steps.append((n.op, n.arg, n.srcs[0].shape))
        n = n.srcs[0]
    return tuple(reversed(steps))


def make_view(src: Tensor, out: Tensor, detached: bool = False) -> Tensor:
    """Make `out`, just built from `src` by movement primitives, a view of src's base."""
    steps = _chain(src.node, out.node)
    assert steps is not None, f"make_view: {out.node} is not a movement of {src.node}"
    return _attach(src, out, steps, detached)


def view_op(src: Tensor, op: Ops, arg: Any) -> Tensor:
    """src._prim(op, arg) as a view of src (one step: the common case, kept cheap)."""
    return _attach(src, src._prim(op, arg=arg), ((op, arg, src.shape),), False)


def _attach(src: Tensor, out: Tensor, steps: tuple[Step, ...], detached: bool) -> Tensor:
    prev = src._view
    if prev is None or prev.detached:  # a detached alias is the base of its own views
        base, tracked = src, True
    else:
        base, tracked = prev.base, prev.tracked
        steps = prev.steps + steps
    # a view made while autograd did not record from a source that needs it is a
    # no_grad view (PyTorch refuses to change those in place while recording)
    tracked = tracked and (out.requires_grad or not src.requires_grad)
    out._view = View(base, steps, tracked, detached)
    out._vc = base._vc
    refs = base._views
    if refs is None:
        base._views = [weakref.ref(out)]
        return out
    n = len(refs)
    if n >= 16 and n & (n - 1) == 0:  # amortised pruning of dead views
        refs[:] = [r for r in refs if r() is not None]
    refs.append(weakref.ref(out))
    return out


def _out_shape(step: Step) -> Shape:
    op, arg, shape = step
    if op is Ops.RESHAPE or op is Ops.EXPAND:
        return tuple(arg)
    if op is Ops.PERMUTE:
        return tuple(shape[i] for i in arg)
    if op is Ops.SHRINK:
        return tuple(b - a for a, b in arg)
    return tuple(n + lo + hi for n, (lo, hi) in zip(shape, arg))


def alias(t: Tensor) -> Tensor:
    """A view of all of t (what `x.view(x.shape)`, `x.permute(identity)` return)."""
    return view_op(t, Ops.RESHAPE, t.shape)


def fresh(t: Tensor) -> Tensor:
    """t's value as a tensor of its own (a new node, not a view): for ops that copy in
    PyTorch but are a no-op or a movement here (`flip(())`, `roll(0)`, `contiguous()`)."""
    return t._prim(Ops.RESHAPE, arg=t.shape)


def own(t: Tensor) -> Tensor:
    """Make a result just built by movement ops from another tensor its own tensor, where
    PyTorch's op copies (repeat, roll): later in-place changes do not write through."""
    if t._view is not None:
        t._view = None
        t._vc = Version()
    return t


def reshape(t: Tensor, new: Shape, op: str) -> Tensor:
    """`reshape` (a view where strides allow, else a copy) and `view` (a view or an error)."""
    if t._view is not None and reshape_strides(t.shape, t._view.strides, new) is None:
        if op == "view":
            raise ShapeError(
                f"view: shape {new} is not compatible with the input's size and strides "
                f"{strides_of(t)} (a dimension spans two non-contiguous parts); use "
                f".reshape(...) instead ({describe(t)})"
            )
        return t._prim(Ops.RESHAPE, arg=new)
    return view_op(t, Ops.RESHAPE, new)


# --- in place -----------------------------------------------------------------------------
def assign(t: Tensor, value: Tensor, op: str) -> Tensor:
    """t takes value's value in place (cast to t's dtype), PyTorch-style; a view writes
    through to its base, and every view of the base sees the change."""

    info = t._view
    grad = _tensor.is_grad_enabled()
    if grad and t.requires_grad and t.is_leaf and info is None:
        raise AutogradError(
            f"{op}: a leaf tensor that requires grad cannot be changed "
            "in place; wrap the update in anychip.no_grad()"
        )
    value = _checked(t, value, op)
    if info is None or info.detached:  # a base, or an alias with an autograd of its own
        for hook in _tensor._ASSIGN_HOOKS:  # jit hook
            hook(t if info is None else info.base)
        accept_reads(value, t._vc)
        _set(t, value)
        return t
    base = info.base
    if grad and not info.detached and base.requires_grad:
        if base.is_leaf:
            raise AutogradError(
                f"{op}: a view of a leaf tensor that requires grad cannot be changed in "
                f"place ({describe(t)}); wrap the update in anychip.no_grad()"
            )
        if not info.tracked:
            raise AutogradError(
                f"{op}: a view made under no_grad cannot be changed in place with "
                "autograd recording; make the view and the change both inside or both "
                "outside no_grad"
            )
    for hook in _tensor._ASSIGN_HOOKS:  # the base is what changes
        hook(base)
    new = _placed(t, value, op)
    accept_reads(new, t._vc)
    _set(base, new)
    return t


def _checked(t: Tensor, value: Tensor, op: str) -> Tensor:
    if value.shape != t.shape:
        raise ShapeError(
            f"{op}: a result of shape {value.shape} cannot be written in place "
            f"into the tensor ({describe(t, value)})"
        )
    if value.dtype is not t.dtype:
        if dtypes.promote_types(value.dtype, t.dtype) is not t.dtype:
            raise DTypeError(
                f"{op}: result type {value.dtype.name} can't be cast to the "
                f"in-place output type {t.dtype.name} ({describe(t, value)})"
            )
        value = value.to(t.dtype)
    return value


def _set(t: Tensor, value: Tensor) -> None:
    """Base tensor t takes value (same shape and dtype): autograd history, version, views."""

    if value.requires_grad:
        t.requires_grad, t._ctx = True, value._ctx
    elif _tensor.is_grad_enabled() and t.requires_grad:
        # overwritten by a constant: t keeps requiring grad, its old value gets none
        off = _tensor.Tensor._const(False, dtypes.bool_, t.shape, t.device)
        w = off._select(t, value)
        t._ctx = w._ctx
    t.node = value.node
    t._vc.bump()
    t._seq = t._vc.seq
    refresh(t)
    _push(t)


def _push(t: Tensor) -> None:
    """A detached alias (`detach()`, `.data`) changed: its base takes the same values,
    outside autograd (the base's history stays as it was, as in PyTorch)."""

    info = t._view
    while info is not None and info.detached:
        base = info.base
        with _tensor.no_grad():
            base.node = _placed(t, t, "copy_").node
        refresh(base, skip=t)
        t, info = base, base._view


def _placed(t: Tensor, value: Tensor, op: str) -> Tensor:
    """The base's value with view t's elements replaced by value: the view's steps undone
    on value (and on a mask of the written elements), then a WHERE over the base."""
    from anychip.frontend.tensor import Tensor

    info = t._view
    assert info is not None
    base = info.base
    overlap = any(s == 0 and n > 1 for s, n in zip(info.strides, t.shape))
    if overlap and not (op in _FILLS and value.node.op is Ops.CONST):
        raise InPlaceError(
            f"{op}: more than one element of the written tensor refers to the same element "
            f"of its base (an expanded view, {describe(t)}, strides {info.strides}); "
            "clone() it before writing"
        )
    v: Tensor | None = None if overlap else value  # an overlapping view is only filled
    m: Tensor | None = None  # None: every element is written

    def mask(shape: Shape) -> Tensor:
        return Tensor._const(True, dtypes.bool_, shape, t.device)

    for op_, arg, shape in reversed(info.steps):
        if op_ is Ops.RESHAPE:
            v, m = (x._prim(Ops.RESHAPE, arg=shape) if x is not None else None for x in (v, m))
        elif op_ is Ops.PERMUTE:
            inv = tuple(int(i) for i in np.argsort(arg))
            v, m = (x._prim(Ops.PERMUTE, arg=inv) if x is not None else None for x in (v, m))
        elif op_ is Ops.SHRINK:
            pads = [(a, n - b) for (a, b), n in zip(arg, shape)]
            m = (m if m is not None else mask(_out_shape((op_, arg, shape))))._pad_zero(pads)
            v = v._pad_zero(pads) if v is not None else None
        elif op_ is Ops.PAD:
            box = [(lo, lo + n) for (lo, _), n in zip(arg, shape)]
            v, m = (x._shrink(box) if x is not None else None for x in (v, m))
        else:  # EXPAND: a base element is written if any of its copies is
            axes = tuple(i for i, (a, b) in enumerate(zip(shape, arg)) if a != b)
            if axes and v is not None:  # one copy of each is written: take it
                assert m is not None
                red = Ops.RMAX if v.dtype is dtypes.bool_ else Ops.SUM
                v = m._select(v, False if red is Ops.RMAX else 0)._prim(red, arg=axes)
            if axes and m is not None:
                m = m._prim(Ops.RMAX, arg=axes)
    if v is None:
        v = Tensor._const(value.node.arg, base.dtype, base.shape, base.device)
    return v if m is None else m._select(v, base)


def refresh(base: Tensor, skip: Tensor | None = None) -> None:
    """Every live view of base re-derives its value (and autograd history) from base's;
    a detached alias keeps its own history, and passes its new value on to its views."""

    refs = base._views
    if not refs:
        return
    live = []
    for r in refs:
        v = r()
        info = v._view if v is not None else None
        if v is None or info is None or info.base is not base:
            continue
        live.append(r)
        if v is skip:
            continue
        x = base if not info.detached else _tensor.Tensor._from_node(base.node)
        with _tensor._grad_mode(base.requires_grad and info.tracked and not info.detached):
            for op, arg, _ in info.steps:
                x = x._prim(op, arg=arg)
        v.node = x.node
        if info.detached:
            refresh(v)
        else:
            v.requires_grad, v._ctx = x.requires_grad, x._ctx
    base._views = live


def rebind(t: Tensor, node: Node) -> None:
    """`t.data = value`: t holds a new value of its own, as PyTorch's t gets new storage;
    views made of t before keep the old one (they stop being views)."""
    for r in t._views or ():
        v = r()
        if v is not None and v._view is not None and v._view.base is t:
            v._view = None
            v._vc = Version()
    t._views = None
    if t._view is not None:
        t._view = None
        t._vc = Version()
    t.node = node
    t._vc.bump()


# imported last: anychip.frontend.tensor imports this module (directly or not), so the
# module object may be half made here; the functions above read `_tensor.X` when called,
# where a local import would cost about a microsecond a call (hundreds per training step)
from anychip.frontend import tensor as _tensor  # noqa: E402
