"""`cpu`: kernels rendered as C with OpenMP, built by the system C compiler into shared
objects (cached on disk) and called in-process through ctypes on host numpy buffers.

Without a C compiler the backend reports itself unavailable with the reason, so
`anychip.devices()` leaves it out and `device='cpu'` raises a DeviceError saying why.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

from anychip.backends.cpu import compiler, memory
from anychip.backends.cpu.renderer import CpuRenderer
from anychip.codegen.c import c_name
from anychip.dtypes import DType
from anychip.ir.ops import Ops, toposort
from anychip.runtime.device import Backend, Buffer, Kernel, host_memory


@dataclass(frozen=True, slots=True)
class Program:
    fn: Any  # the ctypes function: void name(void *b0, ...)
    source: str
    gemm: bool


def kernel_key(kernel: Kernel) -> tuple[Any, ...]:
    """The kernel's structure (what its code depends on) as a hashable tuple."""
    order = toposort([kernel.ast])
    pos = {id(n): i for i, n in enumerate(order)}
    parts: list[Any] = [kernel.kind]
    for n in order:
        arg = n.arg.hex() if isinstance(n.arg, float) else n.arg  # -0.0 and 0.0 differ
        parts.append((n.op, n.dtype, n.shape, arg, tuple(pos[id(s)] for s in n.srcs)))
    return tuple(parts)


class CpuBackend(Backend):
    name = "cpu"

    def __init__(self) -> None:
        self.programs: dict[tuple[Any, ...], Program] = {}

    @classmethod
    def unavailable(cls) -> str | None:
        return compiler.missing_compiler()

    def host_view(self, handle: Any) -> np.ndarray | None:
        return handle.array  # type: ignore[no-any-return]

    def memory_limit(self) -> int | None:
        return host_memory()

    def allocate(self, size: int, dtype: DType) -> Any:
        return memory.allocate(size, dtype)

    def copyin(self, handle: Any, data: np.ndarray) -> None:
        if data.dtype == np.bool_:  # kernels compute on the byte: store only 0 and 1
            data = data.view(np.uint8) != 0
        handle.array[: data.size] = data

    def copyout(self, handle: Any, size: int, dtype: DType) -> np.ndarray:
        return np.array(handle.array[:size], copy=True)

    def compile(self, kernel: Kernel) -> Any:
        key = kernel_key(kernel)
        prog = self.programs.get(key)
        if prog is None:
            prog = self.programs[key] = self._build(kernel)
        return prog

    def _build(self, kernel: Kernel) -> Program:
        from anychip.passes.pipeline import compile_source  # passes sit above backends

        name = c_name(kernel.name)
        source = compile_source(kernel, CpuRenderer(), name)
        gemm = "anychip GEMM" in source
        flags = compiler.GEMM_FLAGS if gemm else compiler.GENERIC_FLAGS
        fn = getattr(compiler.build(source, flags), name)
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p] * (
            1 + len({n.arg for n in toposort([kernel.ast]) if n.op is Ops.PARAM})
        )
        return Program(fn, source, gemm)

    def launch(self, program: Any, out: Buffer, ins: list[Buffer]) -> None:
        program.fn(out.handle.ptr, *[b.handle.ptr for b in ins])


BACKEND = CpuBackend
