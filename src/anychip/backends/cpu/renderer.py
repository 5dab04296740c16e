"""The cpu target's renderer: the shared C renderer (long kernels chunked, codegen/c_chunk.py),
plus matrix products handed to our own GEMM generator (codegen/gemm.py) when the kernel
carries a ContractionSpec.
"""

from __future__ import annotations

from dataclasses import replace

from anychip.codegen.c import c_name
from anychip.codegen.c_chunk import ChunkedCRenderer, Chunking, chunk_work, split_count
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
        k_dims=c.k_dims,
        n_dims=c.n_dims,
        b_bounds=c.b_bounds,
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
        fname = c_name(name or k.name)
        inner = f"{fname}_gemm"
        spec = gemm_spec(c)
        split = _split(spec)
        self.chunking = None if split is None else Chunking(split[3], 1, 8)
        if split is not None:
            spec = split[0]
        # the tuned tiling when `anychip tune` / ANYCHIP_TUNE=1 found one, else the default
        body = gemm_source(spec, tuned_tiling(spec), name=inner)
        args = []
        for op in (c.out, c.a, c.b):
            ptr = f"({'const ' if op.buf else ''}char *)b{op.buf} + {op.offset * op.dtype.itemsize}"
            if split is not None:  # chunk c_: entries b_ * pb.., rows r_ * pm.. (B: all rows)
                _, pb, pm, _ = split
                nm = c.m // pm  # row chunks per batch entry
                per_b = pb * op.batch_strides[0] * op.dtype.itemsize
                per_m = 0 if op is c.b else pm * op.rows * op.dtype.itemsize
                ptr += f" + (c_ / {nm}) * {per_b} + (c_ % {nm}) * {per_m}"
            args.append(ptr)
        params = [f"{'const ' if i else ''}void *b{i}" for i in range(len(k.bufs))]
        params += [f"{self.vtype(d)} {arg_name(i)}" for i, d in enumerate(k.scalars)]
        call = f"{inner}({', '.join(args)});"
        if split is None:
            return f"{body}\nvoid {fname}({', '.join(params)}) {{\n  {call}\n}}\n"
        params += ["int64_t lo_", "int64_t hi_", "char *st_"]
        loop = f"for (int64_t c_ = lo_; c_ < hi_; c_++) {call}"
        return f"{body}\nvoid {fname}({', '.join(params)}) {{\n  {loop}\n}}\n"


def _split(spec: GemmSpec) -> tuple[GemmSpec, int, int, int] | None:
    """How a long product runs in chunks (codegen/c_chunk.py): (the spec of one chunk, batch
    entries per chunk, rows per chunk, how many chunks), each count a divisor of the whole;
    whole batch entries when that works, else rows of one entry; None for one call."""
    work = chunk_work()
    if spec.batch > 1:
        pb = split_count(spec.batch, spec.m * spec.n * spec.k, work)
        if pb is not None:
            return replace(spec, batch=pb), pb, spec.m, spec.batch // pb
    pm = split_count(spec.m, spec.n * spec.k, work)
    if pm is None:
        return None
    return replace(spec, batch=1, m=pm), 1, pm, spec.batch * (spec.m // pm)
