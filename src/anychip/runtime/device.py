"""The device contract every backend implements, and backend discovery.

A backend is one folder under `anychip/backends/` whose `__init__.py` defines `BACKEND`, a
subclass of `Backend`. Nothing else in anychip knows a backend's name: they are found by
scanning that package, so adding a chip never edits a shared file.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import pkgutil
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from anychip.dtypes import DType
from anychip.errors import DeviceError, OutOfMemoryError
from anychip.ir.kernel import KernelKind
from anychip.ir.ops import Node


@dataclass(eq=False)
class Buffer:
    """`size` elements of `dtype` in a device's memory; `handle` is the backend's own."""

    device: str
    dtype: DType
    size: int
    handle: Any = field(repr=False)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


Scalar = bool | int | float  # a runtime argument's value (ARG i of a kernel)


# `LAUNCHED.out`: the id of the output buffer of this thread's last launch of a donated kernel
# (`Kernel.alias`) that ran to its end, set by the backend with no call in between (so a
# KeyboardInterrupt cannot fall between the write and the mark): runtime/realize.py then
# knows the donated input was overwritten even when the launch raises afterwards.
LAUNCHED = threading.local()


@dataclass(frozen=True)
class Kernel:
    """One unit of scheduled work: `ast` computes one output from PARAM i = input i and
    ARG i = runtime scalar i (a launch argument: its value is not part of the kernel).
    `kind` is the scheduler's classification (passes/schedule.py). `alias` j: the output
    is written into input j's buffer (a donated buffer, runtime/donate.py): `launch` gets
    that buffer as `out` and as `ins[j]`."""

    ast: Node
    name: str = "kernel"
    kind: KernelKind = KernelKind.ELEMENTWISE
    alias: int | None = None


class Backend(ABC):
    """The device contract: allocate, copy in and out, compile, launch.

    Data crosses the contract as numpy arrays in the dtype's storage form (bfloat16 as
    uint16 bit patterns), flat and C-ordered.
    """

    name: str = ""

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this backend cannot run on this machine, or None if it can."""
        return None

    @abstractmethod
    def allocate(self, size: int, dtype: DType) -> Any:
        """A handle to uninitialised memory for `size` elements of `dtype`."""

    @abstractmethod
    def copyin(self, handle: Any, data: np.ndarray) -> None:
        """Host -> device: `data` is flat, of the dtype's storage numpy dtype."""

    @abstractmethod
    def copyout(self, handle: Any, size: int, dtype: DType) -> np.ndarray:
        """Device -> host: a flat array of the storage numpy dtype."""

    @abstractmethod
    def compile(self, kernel: Kernel) -> Any:
        """Turn a kernel into something `launch` runs (cached as the backend sees fit)."""

    def compile_many(self, kernels: list[Kernel]) -> list[Any]:
        """`compile` for each kernel; a backend may build the missing ones together."""
        return [self.compile(k) for k in kernels]

    @abstractmethod
    def launch(
        self, program: Any, out: Buffer, ins: list[Buffer], scalars: tuple[Scalar, ...] = ()
    ) -> None:
        """Run a compiled kernel, writing `out` from `ins`; `scalars[i]` is the value of the
        kernel's ARG i (of that ARG's dtype), passed at every launch, never compiled in."""

    def direct(self, program: Any) -> Callable[..., None] | None:
        """For replay loops that prepare arguments once (runtime/replay.py): a callable
        running `program` on raw arguments (each buffer's `handle.ptr`, out first, then the
        runtime scalars), or None (the default) when `launch` must run it. The caller marks
        nothing in `LAUNCHED`: a replay of a whole plan does not resume half done steps."""
        return None

    def sequence(self, fns: list[Callable[..., None]]) -> Any:
        """For a replay (anychip.jit's, or an eager cache plan seen twice) whose launches
        are all `direct` calls into this backend: an object running them as one unit, or
        None (the default: they are called one by one). It has `layout(values) ->
        np.ndarray` (the uint64 argument words of the calls' flat arguments, None for
        those set per run, each call's first word at `offsets[k]`) and `start(words,
        keep)`, which may return before the calls have run (`keep` stays alive until they
        have) and returns an object whose `wait()` returns once they have; `synchronize`
        waits for them too, and every use of a buffer they touch (launch, copies, host
        view and address) waits for them first. cpu: backends/cpu/stream.py."""
        return None

    def synchronize(self) -> None:  # noqa: B027  (optional: synchronous backends need none)
        """Wait for queued work (a no-op for synchronous backends)."""

    def host_view(self, handle: Any) -> np.ndarray | None:
        """A writable flat numpy view of a buffer whose memory is host memory (in the
        dtype's storage form), or None: loaders then read files straight into it."""
        return None

    def host_address(self, handle: Any) -> int | None:
        """The address of a buffer whose memory is host memory (what `host_view` views), or
        None. Host steps written in C (runtime/host_c.py) read and write there directly,
        so it waits for queued work that uses the buffer, as `host_view` does."""
        return None

    def memory_limit(self) -> int | None:
        """Bytes one tensor may take on this device (None: unknown, only the element
        count is checked). Tensor creation and realisation check sizes against it."""
        return None

    def launch_stats(self) -> dict[str, Any] | None:
        """What the latest launch on the calling thread cost, for a backend that knows better
        than the host's clock (a simulator): `{"time_s": simulated seconds, "units": {unit:
        busy fraction}, "flops": int, "bytes": int, "trace": [(unit, start_s, end_s,
        label), ...] (optional)}`; None (the default) when the host's wall time is the truth.
        Asked only while a profiler watches or ANYCHIP_DEBUG is set (docs/profiler.md)."""
        return None

    @classmethod
    def canonical_variant(cls, variant: str) -> str:
        """The canonical form of `variant` in a device name `name:variant` ('' for the
        backend's default); a DeviceError saying why when it names nothing. Backends
        without variants (the default) accept none."""
        raise DeviceError(f"device {cls.name!r} has no variants (got {cls.name}:{variant})")

    @classmethod
    def create(cls, variant: str) -> Backend:
        """The backend instance for device `name:variant` (`variant` canonical, '' for the
        plain name)."""
        return cls()


@functools.cache  # asked at every allocation; physical memory does not change
def host_memory() -> int | None:
    """This machine's physical memory in bytes: the limit of host-memory backends."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


_WARNED: set[str] = set()


def debug_level() -> int:
    """ANYCHIP_DEBUG as a level: unset or empty is 0; a value that is not an integer
    (`yes`, `true`) warns once and counts as 1 (print each launch), never a crash."""
    raw = os.environ.get("ANYCHIP_DEBUG", "").strip()
    if not raw:
        return 0
    try:
        return int(raw)
    except ValueError:
        if raw not in _WARNED:
            _WARNED.add(raw)
            warnings.warn(
                f"ANYCHIP_DEBUG={raw!r} is not an integer level (0, 1 or 2); using 1",
                stacklevel=2,
            )
        return 1


MAX_NUMEL = 2**63 - 1  # elements are indexed with int64


def check_size(device: str, shape: tuple[int, ...], itemsize: int, what: str) -> None:
    """Raise OutOfMemoryError if a tensor of `shape` (`itemsize`-byte elements) cannot exist
    on `device`; `what` (the op, dtype) starts the message."""
    numel = math.prod(shape)
    if numel > MAX_NUMEL:
        raise OutOfMemoryError(
            f"{what}: shape {shape} has {numel} elements, more than the limit of "
            f"2^63 - 1 ({MAX_NUMEL}) on device {device!r}"
        )
    limit = get_backend(device).memory_limit()
    if limit is not None and numel * itemsize > limit:
        raise OutOfMemoryError(
            f"{what}: shape {shape} needs {numel * itemsize} bytes ({numel} elements of "
            f"{itemsize} bytes), more than device {device!r} has ({limit} bytes)"
        )


_BACKENDS: dict[str, type[Backend]] | None = None
_INSTANCES: dict[str, Backend] = {}
_LOCK = threading.RLock()  # one discovery and one instance per backend, whatever the threads


def _discover() -> dict[str, type[Backend]]:
    global _BACKENDS
    if _BACKENDS is not None:
        return _BACKENDS
    with _LOCK:
        if _BACKENDS is not None:
            return _BACKENDS
        import anychip.backends as pkg

        found: dict[str, type[Backend]] = {}
        for info in pkgutil.iter_modules(pkg.__path__):
            mod = importlib.import_module(f"anychip.backends.{info.name}")
            cls = getattr(mod, "BACKEND", None)
            if cls is not None:
                found[cls.name] = cls
        _BACKENDS = found
    return _BACKENDS


def devices() -> list[str]:
    """Names of the devices usable on this machine, e.g. `['ref', 'cpu']`."""
    return [n for n, cls in _discover().items() if cls.unavailable() is None]


def all_backends() -> dict[str, str | None]:
    """Every known backend and why it is unavailable (None when it is available)."""
    return {n: cls.unavailable() for n, cls in _discover().items()}


def canonical(device: Any, op: str = "device", what: str = "") -> str:
    """Check a device name (`'ref'`, `'cpu'`, `'npu:edge'`: a backend, optionally with
    a variant after a colon) and return its canonical form. `op` and `what` (the tensor's
    shape and dtype) go into the error message."""
    name = str(device if device is not None else default_device())
    backends = _discover()
    about = f" for a tensor of {what}" if what else ""
    base, colon, variant = name.partition(":")
    if base not in backends:
        raise DeviceError(
            f"{op}: unknown device {name!r}{about}; known devices: {', '.join(sorted(backends))}"
        )
    why = backends[base].unavailable()
    if why is not None:
        raise DeviceError(f"{op}: device {name!r}{about} is not available on this machine: {why}")
    if colon:
        try:
            variant = backends[base].canonical_variant(variant)
        except DeviceError as e:
            raise DeviceError(f"{op}: bad device {name!r}{about}: {e}") from None
    return f"{base}:{variant}" if variant else base


def get_backend(name: str) -> Backend:
    inst = _INSTANCES.get(name)
    if inst is None:
        with _LOCK:
            if name not in _INSTANCES:
                full = canonical(name)
                base, _, variant = full.partition(":")
                _INSTANCES[name] = _discover()[base].create(variant)
            inst = _INSTANCES[name]
    return inst


_default: list[str] = []


def default_device() -> str:
    """The device new tensors go to when none is given: `ANYCHIP_DEVICE` if set, else the
    last `set_default_device`, else `cpu` where it is available and `ref` (the numpy
    oracle) otherwise. A bad `ANYCHIP_DEVICE` raises DeviceError on every call (it is
    not remembered), so a typo never silently runs on another device."""
    if not _default:
        env = os.environ.get("ANYCHIP_DEVICE")
        if env:
            # canonical raises for an unknown or unavailable name before anything is kept
            _default.append(canonical(env, op="ANYCHIP_DEVICE"))
        else:
            _default.append("cpu" if "cpu" in devices() else "ref")
    return _default[0]


def set_default_device(device: str) -> None:
    """Make `device` the default for new tensors (like ANYCHIP_DEVICE), e.g.
    `set_default_device("ref")` to run everything on the numpy oracle."""
    name = canonical(device)
    if _default:
        _default[0] = name
    else:
        _default.append(name)
