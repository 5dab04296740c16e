"""The compiler pipeline as one ordered list: a scheduled Kernel is lowered to kernel IR,
each pass rewrites it (verified after every step), and a renderer turns it into source.

`ANYCHIP_DEBUG=2` prints the IR after each pass and the generated source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from anychip.ir.kernel import KernelIR, render_ir
from anychip.ir.verify import verify
from anychip.passes.blocksum import block_sums
from anychip.passes.contraction import attach_contraction
from anychip.passes.hoist import hoist
from anychip.passes.interchange import interchange
from anychip.passes.lower import lower
from anychip.passes.rangesplit import split_ranges
from anychip.passes.reuse import reuse_rows
from anychip.passes.rowsplit import split_rows
from anychip.passes.simplify import simplify
from anychip.passes.transpose import tile_transposes
from anychip.runtime import device as devmod
from anychip.runtime.device import Kernel

Pass = Callable[[KernelIR], KernelIR]

# The passes after lowering, in order. Each takes and returns verified kernel IR.
PASSES: list[tuple[str, Pass]] = [
    ("simplify", simplify),  # fold index math; views of views become plain strides
    ("contraction", attach_contraction),  # matmul-shaped kernels get a ContractionSpec
    ("interchange", interchange),  # column reductions: tile the output axis, SIMD across it
    ("transpose", tile_transposes),  # reads through a transposed view: square tiles
    ("reuse", reuse_rows),  # a row's costly reduced values (softmax's exp) computed once
    ("hoist", hoist),  # loop-invariant loads (a bag's row id) computed before their loop
    ("rangesplit", split_ranges),  # a cat's or pad's inner loop: one loop per source range
    ("blocksum", block_sums),  # long float sums: short blocks, folded with compensation
    ("rowsplit", split_rows),  # contiguous row reductions: independent partials, tree combine
]


class Renderer(Protocol):
    def render(self, k: KernelIR, name: str | None = None) -> str: ...


def debug_level() -> int:
    return devmod.debug_level()


def lower_kernel(kernel: Kernel, passes: list[tuple[str, Pass]] | None = None) -> KernelIR:
    """Kernel -> verified, optimised kernel IR, printing each stage at ANYCHIP_DEBUG=2.

    >>> import anychip as ac
    >>> from anychip.runtime.realize import plan
    >>> x = ac.ones(8).realize()
    >>> print(render_ir(lower_kernel(plan([(x * 2).node])[0].kernel)).splitlines()[0])
    kernel elementwise_8 [elementwise]
    """
    show = debug_level() >= 2
    ir = verify(lower(kernel))
    if show:
        print(f"--- {kernel.name}: after lower\n{render_ir(ir)}")
    for name, p in PASSES if passes is None else passes:
        ir = verify(p(ir))
        if show:
            print(f"--- {kernel.name}: after {name}\n{render_ir(ir)}")
    return ir


def compile_source(kernel: Kernel, renderer: Renderer, name: str | None = None) -> str:
    """The whole pipeline: Kernel -> IR -> passes -> source text for `renderer`'s target."""
    ir = lower_kernel(kernel)
    src = renderer.render(ir, name)
    if debug_level() >= 2:
        print(f"--- {kernel.name}: source\n{src}")
    return src
