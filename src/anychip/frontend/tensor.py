"""The Tensor: a lazy value on a device, with PyTorch's API and reverse-mode autograd.

Every op builds primitive graph nodes (`ir.ops.Node`) through `Tensor._prim`, which also
records the autograd tape; values are computed only at `.numpy()`, `.item()`, printing or
`.realize()`. The ops themselves live in the mixins this class inherits from.
"""

from __future__ import annotations

import builtins
import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from anychip import dtypes
from anychip.dtypes import DType
from anychip.errors import (
    ArgumentError,
    AutogradError,
    DeviceError,
    DTypeError,
    IndexOutOfRange,
    ShapeError,
    describe,
)
from anychip.frontend import views
from anychip.frontend.autograd import SEQ, Ctx, Version
from anychip.frontend.copying import CopyMixin
from anychip.frontend.elementwise import ElementwiseMixin
from anychip.frontend.extra_math import ExtraMathMixin
from anychip.frontend.extra_ops import ExtraOpsMixin
from anychip.frontend.habits import HabitsMixin
from anychip.frontend.indexing import IndexingMixin
from anychip.frontend.linalg import LinalgMixin
from anychip.frontend.movement import MovementMixin
from anychip.frontend.reduce import ReduceMixin
from anychip.ir.ops import Node, Ops
from anychip.ir.primitives import RULES
from anychip.runtime import device as devmod, realize as rt

_state = threading.local()
_new_tensor = object.__new__  # Tensor made without __init__ (`_from_node`, `_prim`)
_SEQ = SEQ  # creation order of tensors (the jit tells its own tensors by it)
# jit hook: called with each tensor updated in place (anychip.jit rejects non-arguments)
_ASSIGN_HOOKS: list[Callable[[Tensor], None]] = []


def is_grad_enabled() -> bool:
    return getattr(_state, "grad", True)


@contextlib.contextmanager
def _grad_mode(enabled: bool) -> Iterator[None]:
    prev = is_grad_enabled()
    _state.grad = enabled
    try:
        yield
    finally:
        _state.grad = prev


class no_grad(contextlib.ContextDecorator):
    """Context manager (and decorator) that stops recording autograd.

    >>> import anychip as ac
    >>> with ac.no_grad():
    ...     y = ac.ones(2, requires_grad=True) * 2
    >>> y.requires_grad
    False
    """

    def __enter__(self) -> None:
        self._prev = is_grad_enabled()
        _state.grad = False

    def __exit__(self, *exc: Any) -> None:
        _state.grad = self._prev


class enable_grad(no_grad):
    def __enter__(self) -> None:
        self._prev = is_grad_enabled()
        _state.grad = True


class set_grad_enabled(no_grad):
    """`torch.set_grad_enabled(mode)`: sets recording on or off at once (a plain call), and
    as a context manager or decorator restores the previous mode on exit.

    >>> import anychip as ac
    >>> with ac.set_grad_enabled(False):
    ...     ac.is_grad_enabled()
    False
    """

    def __init__(self, mode: bool) -> None:
        self._prev = is_grad_enabled()
        self.mode = bool(mode)
        self._fresh = True  # the first `with` restores the mode from before construction
        _state.grad = self.mode

    def __enter__(self) -> None:
        if not self._fresh:
            self._prev = is_grad_enabled()
        self._fresh = False
        _state.grad = self.mode

    def __call__(self, fn: Any) -> Any:  # as a decorator: the mode applies inside fn only
        _state.grad = self._prev
        self._fresh = False
        return super().__call__(fn)


def _to_host_array(data: Any, dtype: DType | None) -> tuple[np.ndarray, DType]:
    """Python data -> (numpy array in the dtype's compute form, dtype)."""
    if isinstance(data, (np.ndarray, np.generic)):  # numpy arrays and scalars keep their dtype
        arr = np.asarray(data)
        dt = dtype or dtypes.from_numpy(arr.dtype)
    else:
        try:
            arr = np.array(data)
        except ValueError as e:  # ragged nested sequences
            raise ShapeError(
                f"tensor: cannot make a tensor from {type(data).__name__}: {e}"
            ) from None
        if arr.dtype == object or arr.dtype.kind in "USV":
            raise DTypeError(
                f"tensor: cannot make a tensor from {type(data).__name__} "
                f"holding {arr.dtype} values"
            )
        if dtype is not None:
            dt = dtype
        elif arr.dtype.kind == "f":
            dt = dtypes.default_float
        elif arr.dtype.kind in "iu":
            dt = dtypes.default_int
        else:
            dt = dtypes.from_numpy(arr.dtype)
        if arr.dtype.kind in "iu" and dt.kind in "iu" and arr.size:
            check_int_range(arr, dt, "tensor")
    return arr, dt


def check_int_range(arr: np.ndarray, dt: DType, op: str) -> None:
    """Python ints that dt cannot hold raise (torch's 'without overflow' RuntimeError, or
    its ValueError for the default int64) instead of wrapping: `tensor([2**64 - 1])` is not
    -1. As in torch, negative values still wrap into uint8/uint32 (-1 -> 255)."""
    info = np.iinfo(dt.np)
    lo, hi = int(arr.min()), int(arr.max())
    low = info.min if dt.kind == "i" or dt.itemsize == 8 else -(2**63)
    if lo < low or hi > info.max:
        bad = hi if hi > info.max else lo
        hint = (
            "; pass dtype=anychip.uint64" if dt is dtypes.int64 and lo >= 0 and hi < 2**64 else ""
        )
        raise ArgumentError(
            f"{op}: value {bad} cannot be converted to {dt.name} without overflow "
            f"(range [{info.min}, {info.max}]){hint}"
        )


def _wrap_int(value: int, dt: DType) -> int:
    """A Python int in dt's range, wrapped two's-complement as PyTorch does when it mixes a
    scalar into an integer tensor (uint8 tensor + (-2) adds 254)."""
    bits = 8 * dt.itemsize
    v = value % (1 << bits)
    return v - (1 << bits) if dt.kind == "i" and v >= 1 << (bits - 1) else v


def _storage(arr: np.ndarray, dt: DType) -> np.ndarray:
    if dt is dtypes.bfloat16:
        return dtypes.f32_to_bf16(arr.astype(np.float32))
    return arr.astype(dt.np, copy=False)


class Tensor(
    ElementwiseMixin,
    ReduceMixin,
    MovementMixin,
    IndexingMixin,
    LinalgMixin,
    ExtraMathMixin,  # issue 10: more math and activations
    ExtraOpsMixin,  # issue 10: scans, scatter, triangles, unfold, ...
    HabitsMixin,  # issue 10: PyTorch habits (new_*, in-place methods, strides, ...)
    CopyMixin,  # copy.deepcopy and pickle
):
    """An n-dimensional array on a device.

    >>> import anychip as ac
    >>> x = ac.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    >>> (x * x).sum().backward()
    >>> x.grad.tolist()
    [[2.0, 4.0], [6.0, 8.0]]
    """

    __slots__ = (
        "__weakref__",
        "_ctx",
        "_seq",
        "_ver",
        "_view",
        "_views",
        "grad",
        "node",
        "requires_grad",
    )
    __array_priority__ = 1000  # numpy defers `ndarray + Tensor` to Tensor.__radd__
    is_sparse = False  # frontend/sparse.py's SparseTensor (row-sparse gradients) says True

    def __init__(
        self, data: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False
    ) -> None:
        dt = dtypes.to_dtype(dtype, "tensor") if dtype is not None else None
        if isinstance(data, Tensor):
            src = data.detach()
            src = src.to(device) if device is not None else src
            self._init(src.to(dt) if dt is not None else src)
        else:
            arr, dt = _to_host_array(data, dt)
            dev = devmod.canonical(device, "tensor", f"shape {arr.shape}, dtype {dt.name}")
            with np.errstate(all="ignore"):
                buf = rt.from_host(dev, _storage(arr, dt), dt)
            self._init_node(Node(Ops.BUFFER, dt, tuple(arr.shape), dev, (), buf))
        if requires_grad:
            self.requires_grad_(True)

    def _init(self, other: Tensor) -> None:
        self._init_node(other.node)

    def _init_node(self, node: Node) -> None:
        self.node = node
        self.requires_grad = False
        self.grad: Tensor | None = None
        self._ctx: Ctx | None = None
        self._ver: Version | None = None  # see `_vc`
        self._view: views.View | None = None  # how this view derives from its base
        self._views: list[weakref.ref[Tensor]] | None = None  # views of this base
        self._seq = next(_SEQ)

    @classmethod
    def _from_node(cls, node: Node) -> Tensor:
        # every op's result is made here (~500 per training step): `_init_node` inlined
        t = cls.__new__(cls)
        t.node = node
        t.requires_grad = False
        t.grad = t._ctx = t._ver = t._view = t._views = None
        t._seq = next(_SEQ)
        return t

    @property
    def _vc(self) -> Version:
        """The version counter, shared with views (views.py). Made when first needed: most
        tensors are temporaries that no autograd record reads and nothing changes in place
        (no record can have read a tensor before its counter exists: records make it)."""
        vc = self._ver
        if vc is None:
            vc = self._ver = Version()
        return vc

    @_vc.setter
    def _vc(self, vc: Version) -> None:
        self._ver = vc

    @classmethod
    def _const(cls, value: Any, dtype: DType, shape: tuple[int, ...], device: str) -> Tensor:
        if dtype.kind in "iu" and isinstance(value, float) and not np.isfinite(value):
            raise DTypeError(f"full: cannot fill an {dtype.name} tensor with {value}")
        if dtype.kind == "b":
            value = bool(value)
        elif dtype.kind in "iu":
            value = _wrap_int(int(value), dtype)
        else:
            value = float(value)
        return cls._from_node(Node(Ops.CONST, dtype, tuple(shape), device, (), value))

    # --- the one door to the graph --------------------------------------------------
    def _prim(self, op: Ops, *others: Tensor, arg: Any = None) -> Tensor:
        """Apply primitive `op` to (self, *others), recording autograd if needed."""
        # the door every op's result passes (~250 per training step): plain loops, no
        # generators, the sources' nodes collected once and handed to the record, the
        # result made as `_from_node` makes it (inlined: a frame less per op)
        node = self.node
        dev = node.device
        if others:
            srcs = (self, *others)
            nodes = (node, others[0].node) if len(others) == 1 else tuple([s.node for s in srcs])
            for n in nodes:
                if n.device != dev:
                    raise DeviceError(
                        f"{op.name.lower()}: tensors on different devices "
                        f"({describe(*srcs)}); move one with .to()"
                    )
        else:
            srcs, nodes = (self,), (node,)
        rule = RULES[op]
        shape, dtype = rule.infer(nodes, arg)
        out = _new_tensor(Tensor)
        out.node = Node(op, dtype, shape, arg if op is Ops.COPY else dev, nodes, arg)
        out.grad = out._ver = out._view = out._views = None
        out._seq = next(_SEQ)
        # only floating results carry gradients (x.long() is a constant to autograd);
        # is_grad_enabled() inlined
        if rule.vjp is not None and dtype.kind == "f" and getattr(_state, "grad", True):
            for s in srcs:
                if s.requires_grad:
                    out.requires_grad = True
                    out._ctx = Ctx(op, srcs, nodes, arg, out)
                    return out
        out.requires_grad = False
        out._ctx = None
        return out

    def _reduce(self, op: Ops, axes: tuple[int, ...]) -> Tensor:
        return self._prim(op, arg=tuple(sorted(axes)))

    def _cumsum(self, axis: int) -> Tensor:
        return self._prim(Ops.CUMSUM, arg=axis)

    # --- properties -----------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.node.shape

    @property
    def dtype(self) -> DType:
        return self.node.dtype

    @property
    def device(self) -> str:
        return self.node.device

    @property
    def ndim(self) -> int:
        return len(self.node.shape)

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    @property
    def data(self) -> Tensor:
        return self.detach()

    @data.setter
    def data(self, value: Tensor) -> None:
        for hook in _ASSIGN_HOOKS:  # jit hook
            hook(self)
        views.rebind(self, value.node)

    @property
    def _version(self) -> builtins.int:
        """How many times this tensor (or its base, or a view of it) changed in place."""
        return self._vc.n

    def size(self, dim: int | None = None) -> Any:
        from anychip.frontend.habits import Size

        return Size(self.shape) if dim is None else self.shape[self._axis(dim, "size")]

    def dim(self) -> int:
        return self.ndim

    def numel(self) -> int:
        return self.node.numel

    def element_size(self) -> int:
        return self.dtype.itemsize

    def __len__(self) -> int:
        if not self.shape:
            raise DTypeError(f"len: len() of a 0-d tensor ({describe(self)})")
        return self.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        return (self[i] for i in range(len(self)))

    # --- realisation and host access ------------------------------------------------
    def realize(self) -> Tensor:
        """Compute this tensor's value now (ops are otherwise lazy); returns self."""
        (buf,) = rt.realize([self.node])
        if self.node.op is not Ops.BUFFER:
            self.node = Node(Ops.BUFFER, self.dtype, self.shape, self.device, (), buf)
        return self

    def numpy(self) -> np.ndarray:
        """A host copy as a numpy array (bfloat16 comes back as float32)."""
        self.realize()
        flat = rt.to_host(self.node.arg)
        if self.dtype is dtypes.bfloat16:
            flat = dtypes.bf16_to_f32(flat)
        return flat.reshape(self.shape)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self.numpy()
        return arr.astype(dtype) if dtype is not None else arr

    def item(self) -> Any:
        if self.numel() != 1:
            raise DTypeError(
                f"item: a tensor with {self.numel()} elements cannot be "
                f"converted to a Python scalar ({describe(self)})"
            )
        return self.numpy().reshape(()).item()

    def tolist(self) -> Any:
        return self.numpy().tolist()

    def __bool__(self) -> bool:
        if self.numel() != 1:
            raise DTypeError(
                f"bool: the truth value of a tensor with {self.numel()} elements is "
                f"ambiguous ({describe(self)}); use .any() or .all()"
            )
        return bool(self.item())

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self.dtype.kind not in "iu" or self.numel() != 1:
            raise DTypeError(
                "index: only integer tensors of a single element can be used as an "
                f"index, got {describe(self)}"
            )
        return int(self.item())

    def __repr__(self) -> str:
        arr = self.numpy()
        body = np.array2string(arr, separator=", ", prefix="tensor(", precision=4)
        extras = []
        if self.dtype not in (dtypes.float32, dtypes.int64, dtypes.bool_):
            extras.append(f"dtype={self.dtype!r}")
        extras.append(f"device='{self.device}'")
        if self._ctx is not None:
            extras.append(f"grad_fn=<{self._ctx.op.name.title()}Backward>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return f"tensor({body}{''.join(', ' + e for e in extras)})"

    def __hash__(self) -> int:
        return id(self)

    # --- device and dtype conversion ------------------------------------------------
    def to(self, *args: Any, **kwargs: Any) -> Tensor:
        """`.to(device)`, `.to(dtype)`, `.to(device, dtype)` or `.to(other_tensor)`."""
        if len(args) == 1 and args[0] is self.node.dtype and not kwargs:
            return self  # x.to(x.dtype): the commonest call (ops promoting their operands)
        dev, dt = kwargs.get("device"), kwargs.get("dtype")
        for a in args:
            if isinstance(a, Tensor):
                dev, dt = a.device, a.dtype
            elif (
                isinstance(a, DType)
                or (isinstance(a, str) and a in dtypes.BY_NAME)
                or isinstance(a, type)
            ):
                dt = a
            else:
                dev = a
        out: Tensor = self
        if dt is not None and dtypes.to_dtype(dt, "to") is not self.dtype:
            out = out._prim(Ops.CAST, arg=dtypes.to_dtype(dt, "to"))
        if dev is not None and dev != self.device:  # self's own device needs no check
            name = devmod.canonical(dev, "to", describe(self))
            out = out._prim(Ops.COPY, arg=name) if name != self.device else out
        return out

    def type(self, dtype: Any) -> Tensor:
        return self.to(dtypes.to_dtype(dtype, "type"))

    def float(self) -> Tensor:
        return self.to(dtypes.float32)

    def double(self) -> Tensor:
        return self.to(dtypes.float64)

    def half(self) -> Tensor:
        return self.to(dtypes.float16)

    def bfloat16(self) -> Tensor:
        return self.to(dtypes.bfloat16)

    def long(self) -> Tensor:
        return self.to(dtypes.int64)

    def int(self) -> Tensor:
        return self.to(dtypes.int32)

    def bool(self) -> Tensor:
        return self.to(dtypes.bool_)

    def contiguous(self) -> Tensor:
        """self if its elements are in row-major order in its base, else a copy (as in
        PyTorch: a transposed or sliced view's copy no longer writes through)."""
        return self if views.is_contiguous(self) else views.fresh(self)

    def clone(self) -> Tensor:
        return (
            self._prim(Ops.ADD, self.zeros_like())
            if self.requires_grad
            else Tensor._from_node(self.node)
        )

    def detach(self) -> Tensor:
        """A view of self outside autograd: in-place changes to it change self too (as in
        PyTorch) without being recorded."""
        return views.make_view(self, Tensor._from_node(self.node), detached=True)

    def _detached(self) -> Tensor:
        """self's current value outside autograd, for code that only reads it (an
        optimizer's update): no view to keep in step when self later changes in place."""
        return Tensor._from_node(self.node)

    def zeros_like(self) -> Tensor:
        return Tensor._const(0, self.dtype, self.shape, self.device)

    # --- autograd -------------------------------------------------------------------
    def requires_grad_(self, requires_grad: builtins.bool = True) -> Tensor:
        if requires_grad and not self.dtype.is_floating_point:
            raise AutogradError(
                f"requires_grad: only floating point tensors can require "
                f"gradients, got {describe(self)}"
            )
        if not self.is_leaf and not requires_grad:
            raise AutogradError(
                "requires_grad_: cannot turn off gradients of a non-leaf tensor; use .detach()"
            )
        self.requires_grad = requires_grad
        return self

    def retain_grad(self) -> None:
        """Keep this non-leaf tensor's gradient in `.grad` after backward."""
        from anychip.frontend.hooks import retain_grad

        retain_grad(self)

    def backward(
        self,
        gradient: Tensor | None = None,
        retain_graph: builtins.bool | None = None,
        create_graph: builtins.bool = False,
    ) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's `.grad` (the graph is freed unless
        `retain_graph`, as in PyTorch)."""
        from anychip.frontend.autograd import backward

        backward(self, gradient, retain_graph, create_graph)

    def _assign(self, value: Tensor, op: str) -> Tensor:
        """The in-place door: self takes value's value (cast to self's dtype), PyTorch-style;
        a view writes through to its base. Autograd records it; see `views.assign`."""
        return views.assign(self, value, op)

    def _axis(self, dim: builtins.int, op: str) -> builtins.int:
        n = max(self.ndim, 1)
        if not -n <= dim < n:
            raise IndexOutOfRange(
                f"{op}: dimension {dim} out of range (expected in [{-n}, {n - 1}]) "
                f"for a tensor of {describe(self)}"
            )
        return dim % n


def to_tensor(x: Any, like: Tensor | None = None) -> Tensor:
    """Wrap non-tensors (numpy arrays, lists) as tensors on `like`'s device."""
    if isinstance(x, Tensor):
        return x
    return Tensor(x, device=like.device if like is not None else None)


def realize_together(tensors: list[Tensor]) -> None:
    """Realise `tensors` in one schedule (one graph walk, one cached plan, values that
    several of them share computed once), as each one's `.realize()` would.

    >>> import anychip as ac
    >>> a = ac.ones(2)
    >>> b, c = a + 1, a * 3
    >>> realize_together([b, c]); (b.tolist(), c.tolist())
    ([2.0, 2.0], [3.0, 3.0])
    """
    if any(t.is_sparse for t in tensors):  # a sparse tensor is computed as its parts
        tensors = [p for t in tensors for p in (t._parts() if t.is_sparse else (t,))]  # type: ignore[attr-defined]
    todo = list({id(t): t for t in tensors if t.node.op is not Ops.BUFFER}.values())
    by_device: dict[str, list[Tensor]] = {}
    for t in todo:
        by_device.setdefault(t.device, []).append(t)
    for group in by_device.values():
        bufs = rt.realize([t.node for t in group])
        for t, buf in zip(group, bufs, strict=True):
            t.node = Node(Ops.BUFFER, t.dtype, t.shape, t.device, (), buf)
