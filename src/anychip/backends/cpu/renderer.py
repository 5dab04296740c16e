"""The cpu target's renderer: the shared C renderer (long kernels chunked, codegen/c_chunk.py),
plus matrix products handed to our own GEMM generator (codegen/gemm.py) when the kernel
carries a ContractionSpec.
"""

from __future__ import annotations

from anychip.codegen.c import c_name
from anychip.codegen.c_chunk import ChunkedCRenderer
from anychip.codegen.gemm import GemmSpec, gemm_source
from anychip.ir.kernel import ContractionSpec, KernelIR, arg_name
from anychip.runtime.tune import tuned_tiling


def gemm_spec(c: ContractionSpec) -> GemmSpec:
    """The generator's spec for a contraction (its batch already folded to one axis)."""
    (batch,) = c.batch
    return GemmSpec(
        batch,
        c.m,
        c.n,
        c.k,
        c.a.dtype,
        c.out.dtype,
        a_strides=(c.a.batch_strides[0], c.a.rows, c.a.cols),
        b_strides=(c.b.batch_strides[0], c.b.rows, c.b.cols),
        c_strides=(c.out.batch_strides[0], c.out.rows, c.out.cols),
    )


class CpuRenderer(ChunkedCRenderer):
    """C for the host: generic kernels as loops, contractions through the GEMM generator.

    >>> from anychip.ir.kernel import *
    >>> from anychip import dtypes
    >>> k = KernelIR("k", KernelKind.ELEMENTWISE,
    ...     (BufDecl("out", dtypes.float32, 4, BufRole.OUT),),
    ...     (Loop("i", 4, (Store(0, Var("i", INDEX), const(1.0, dtypes.float32)),)),))
    >>> "void k(" in CpuRenderer().render(k)
    True
    """

    def render(self, k: KernelIR, name: str | None = None) -> str:
        c = k.contraction
        if c is None or len(c.batch) != 1:
            return super().render(k, name)
        self.chunking = None
        fname = c_name(name or k.name)
        inner = f"{fname}_gemm"
        spec = gemm_spec(c)
        # the tuned tiling when `anychip tune` / ANYCHIP_TUNE=1 found one, else the default
        body = gemm_source(spec, tuned_tiling(spec), name=inner)
        args = ", ".join(
            f"({'const ' if op.buf else ''}char *)b{op.buf} + {op.offset * op.dtype.itemsize}"
            for op in (c.out, c.a, c.b)
        )
        params = ", ".join(
            [f"{'const ' if i else ''}void *b{i}" for i in range(len(k.bufs))]
            + [f"{self.vtype(d)} {arg_name(i)}" for i, d in enumerate(k.scalars)]
        )
        return f"{body}\nvoid {fname}({params}) {{\n  {inner}({args});\n}}\n"
