"""The typed errors of the simulated chip: bad designs, bad programs, and faults at run time.

Every fault names the instruction (its index on its core and its text) and the address.
"""

from __future__ import annotations

from anychip.errors import DTypeError, Error, IndexOutOfRange


class NpuError(Error):
    """Base class of every error raised by `anychip.npu`."""


class ConfigError(NpuError, ValueError):
    """A design that is not valid: a negative size, an unknown key, an unsupported dtype."""


class AsmError(NpuError, ValueError):
    """Assembly text or binary code that does not parse; names the line when there is one."""


class IllegalInstruction(NpuError, ValueError):
    """An instruction whose fields break the ISA's rules (or this design's limits)."""


class UnsupportedDType(IllegalInstruction, DTypeError):
    """An instruction asks a unit for a dtype the design does not support."""


class Fault(NpuError):
    """A run-time fault: carries the instruction that caused it."""

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(f"{message}{' at ' + where if where else ''}")
        self.where = where


class OutOfBounds(Fault, IndexOutOfRange):
    """An access outside a buffer, outside device memory, or a gather index out of range."""


class UninitializedRead(Fault, RuntimeError):
    """A read of on-chip buffer (or device) memory that nothing has written."""


class RaceError(Fault, RuntimeError):
    """Two units touch the same bytes, one of them writing, with no synchronisation between."""


class SyncError(Fault, RuntimeError):
    """A deadlock (a wait no set can ever satisfy), a flag set and never waited on, or a
    runaway program (over its instruction budget, or a loop that can never end)."""


class OverlapError(Fault, RuntimeError):
    """A destination that partly overlaps a source of the same instruction (read while being
    written, in an order the ISA leaves open)."""


def where(core: int, index: int, text: str) -> str:
    """`core 0 instruction #12 `vadd ...``: how every fault names its instruction."""
    return f"core {core} instruction #{index} `{text}`"
