"""The typed errors a user sees.

Every error anychip raises on bad input is a subclass of `anychip.Error` and of the
built-in exceptions PyTorch raises in the same situation (multiple inheritance), so
`except RuntimeError` clauses ported from PyTorch code keep working (docs/errors.md).
"""

from __future__ import annotations

from typing import Any


class Error(Exception):
    """Base class of every anychip error."""


class ShapeError(Error, ValueError, RuntimeError):
    """Shapes that do not fit the op (broadcasting, reshape, matmul, cat...)."""


class DTypeError(Error, TypeError, RuntimeError):
    """A dtype the op does not accept, or a value that does not fit a dtype."""


class IndexOutOfRange(Error, IndexError, RuntimeError):
    """An index outside the bounds of a dimension or of a tensor's data (torch raises
    IndexError for dimensions and subscripts, RuntimeError for topk's k and narrow)."""


class DeviceError(Error, RuntimeError):
    """An unknown or unavailable device, or tensors on different devices."""


class AutogradError(Error, RuntimeError):
    """Misuse of autograd: backward from a non-scalar without `gradient`, and the like."""


class CompileError(Error, RuntimeError):
    """A backend failed to build a kernel (its compiler's message is attached)."""


class OutOfMemoryError(Error, MemoryError):
    """A tensor larger than its device can hold (or than 2^63 - 1 elements): raised when
    it is created, naming the request and the device's limit."""


class DivisionByZeroError(Error, ZeroDivisionError, RuntimeError):
    """An integer division or remainder by a zero scalar (torch raises a RuntimeError
    "ZeroDivisionError" there; both `except` clauses catch this)."""


class InPlaceError(Error, RuntimeError):
    """An in-place update that cannot be done, as in PyTorch: writing a view whose elements
    alias each other (an expanded view) with anything but a fill."""


class ArgumentError(Error, ValueError, RuntimeError):
    """An argument value the function does not accept (a negative learning rate, an
    unknown reduction or mode name, a probability outside [0, 1])."""


class IndexDTypeError(DTypeError, IndexError):
    """A tensor or list of a non-integer dtype used as an index (torch: IndexError)."""


class DTypeNotImplemented(DTypeError, NotImplementedError):
    """An op that has no kernel for a dtype: linspace to bool, bitwise ops on floats
    (torch: NotImplementedError, "... not implemented for 'Bool'")."""


class ModeNotImplemented(ArgumentError, NotImplementedError):
    """An unknown mode name, such as pad(mode="typo") (torch: NotImplementedError)."""


def describe(*tensors: Any) -> str:
    """`shapes (2, 3) and (4,), dtypes float32 and int64, device ref` for error messages."""
    shapes = " and ".join(str(tuple(t.shape)) for t in tensors)
    dtypes = " and ".join(str(t.dtype.name) for t in tensors)
    devices = sorted({str(t.device) for t in tensors})
    return f"shapes {shapes}, dtypes {dtypes}, device {' and '.join(devices)}"
