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

from anychip.backends.cpu import cache, compiler, memory, stream
from anychip.backends.cpu.renderer import CpuRenderer
from anychip.codegen.c import c_name
from anychip.codegen.c_chunk import Chunking, chunk_work
from anychip.dtypes import DType
from anychip.ir.ops import Ops, toposort
from anychip.runtime.device import LAUNCHED, Backend, Buffer, Kernel, Scalar, host_memory

# ctypes types of runtime scalar arguments (ir.ops.RUNTIME_SCALAR_DTYPES)
_SCALAR_CTYPES = {
    "float32": ctypes.c_float,
    "float64": ctypes.c_double,
    "int32": ctypes.c_int32,
    "int64": ctypes.c_int64,
}


@dataclass(frozen=True, slots=True)
class Program:
    fn: Any  # the ctypes function: void name(void *b0, ..., scalars[, lo_, hi_, st_])
    source: str
    gemm: bool
    chunking: Chunking | None = None  # set: a long kernel, called once per chunk
    donated: bool = False  # writes over an input (Kernel.alias): never left half done


def kernel_key(kernel: Kernel) -> tuple[Any, ...]:
    """The kernel's structure (what its code depends on) as a hashable tuple."""
    order = toposort([kernel.ast])
    pos = {id(n): i for i, n in enumerate(order)}
    parts: list[Any] = [kernel.kind, kernel.alias]
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
        return compiler.missing_compiler() or cache.problem()

    # every use of the memory waits for the stream's sequence in flight (cpu/stream.py)
    def synchronize(self) -> None:
        stream.wait_all()

    def sequence(self, fns: list[Any]) -> Any:
        return stream.sequence(fns)

    def host_view(self, handle: Any) -> np.ndarray | None:
        stream.wait_for(handle)
        return handle.array  # type: ignore[no-any-return]

    def host_address(self, handle: Any) -> int | None:
        stream.wait_for(handle)
        return handle.ptr  # type: ignore[no-any-return]

    def memory_limit(self) -> int | None:
        return host_memory()

    def allocate(self, size: int, dtype: DType) -> Any:
        return memory.allocate(size, dtype)

    def copyin(self, handle: Any, data: np.ndarray) -> None:
        stream.wait_for(handle)
        if data.dtype == np.bool_:  # kernels compute on the byte: store only 0 and 1
            data = data.view(np.uint8) != 0
        handle.array[: data.size] = data

    def copyout(self, handle: Any, size: int, dtype: DType) -> np.ndarray:
        stream.wait_for(handle)
        return np.array(handle.array[:size], copy=True)

    def compile(self, kernel: Kernel) -> Any:
        return self.compile_many([kernel])[0]

    def compile_many(self, kernels: list[Kernel]) -> list[Any]:
        """Programs for `kernels`: the missing ones are rendered, then compiled together
        (in parallel processes, with a progress line on a terminal)."""
        work = chunk_work()  # programs rendered under another chunk size are others
        keys = [(work, *kernel_key(k)) for k in kernels]
        new: dict[tuple[Any, ...], tuple[str, compiler.Job, list[Any], Chunking | None]] = {}
        for key, kernel in zip(keys, kernels, strict=True):
            if key not in self.programs and key not in new:
                new[key] = self._render(kernel)
        if new:
            libs = compiler.build_many([job for _, job, _, _ in new.values()])
            for (key, (name, job, types, chunks)), lib in zip(new.items(), libs, strict=True):
                fn = getattr(lib, name)
                fn.restype = None
                fn.argtypes = types
                gemm = "anychip GEMM" in job.source
                donated = key[2] is not None  # kernel_key: (kind, alias, ...)
                self.programs[key] = Program(fn, job.source, gemm, chunks, donated)
        return [self.programs[key] for key in keys]

    def _render(self, kernel: Kernel) -> tuple[str, compiler.Job, list[Any], Chunking | None]:
        """(symbol, build job, ctypes argument types, chunking) of a kernel's C."""
        from anychip.passes.pipeline import compile_source  # passes sit above backends

        name = c_name(kernel.name)
        renderer = CpuRenderer()
        source = compile_source(kernel, renderer, name)
        flags = compiler.GEMM_FLAGS if "anychip GEMM" in source else compiler.GENERIC_FLAGS
        nodes = toposort([kernel.ast])
        args = {n.arg: n.dtype for n in nodes if n.op is Ops.ARG}
        nargs = 1 + len({n.arg for n in nodes if n.op is Ops.PARAM})
        types: list[Any] = [ctypes.c_void_p] * nargs
        types += [_SCALAR_CTYPES[args[i].name] for i in range(len(args))]
        names = ["void*"] * nargs + [args[i].name for i in range(len(args))]
        chunks = renderer.chunking
        if chunks is not None:  # lo_, hi_, st_
            types += [ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
            names += ["int64", "int64", "void*"]
        signature = f"{name}({','.join(names)})"
        return name, compiler.Job(source, tuple(flags), signature), types, chunks

    def direct(self, program: Any) -> Any:
        # a chunked kernel needs `launch`'s calls per chunk (Ctrl-C between them)
        return program.fn if program.chunking is None else None

    def launch(
        self, program: Any, out: Buffer, ins: list[Buffer], scalars: tuple[Scalar, ...] = ()
    ) -> None:
        stream.wait_for(out.handle)
        for b in ins:
            stream.wait_for(b.handle)
        args = (out.handle.ptr, *[b.handle.ptr for b in ins], *scalars)
        chunks = program.chunking
        if program.donated:  # marked before the call: nothing between can raise
            LAUNCHED.out = id(out)
        if chunks is None:
            program.fn(*args)
            return
        # one call per chunk: ctypes lets go of the GIL in each call and Python runs its
        # signal handlers between them, so Ctrl-C raises KeyboardInterrupt here within a
        # chunk; `out` is then half written, and the caller never records it as realised
        state = np.zeros(chunks.state_bytes // 8 + 8, np.int64)  # 64-byte aligned inside
        at = state.ctypes.data
        st = at + (-at) % 64
        n, step = chunks.extent, chunks.step
        if program.donated:  # its input is being overwritten: finish, then raise
            spans = [
                (base + lo, base + min(lo + step, n))
                for base in range(0, chunks.outer * n, n)
                for lo in range(0, n, step)
            ]
            run_all(program.fn, args, spans, st)
            return
        for base in range(0, chunks.outer * n, n):  # outer iterations run one at a time
            for lo in range(0, n, step):
                program.fn(*args, base + lo, base + min(lo + step, n), st)


def run_all(fn: Any, args: tuple[Any, ...], spans: list[tuple[int, int]], st: int) -> None:
    """Call `fn` on every span even if KeyboardInterrupt arrives between the calls (a kernel
    writing over its own input must not stop half way), then raise it. The count moves on
    before each call: an interrupt raised after a call returns leaves it right."""
    pending: BaseException | None = None
    i = 0
    while i < len(spans):
        try:
            while i < len(spans):
                lo, hi = spans[i]
                i += 1
                fn(*args, lo, hi, st)
        except KeyboardInterrupt as e:
            pending = e
    if pending is not None:
        raise pending


BACKEND = CpuBackend
