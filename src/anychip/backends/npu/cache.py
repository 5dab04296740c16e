"""Compiled npu programs on disk, through the cpu cache's entry machinery (checked
records, crash-safe writes, the size cap): `$ANYCHIP_CACHE_DIR/npu/<key>.so` holds the
program's bytes (the suffix is the shared machinery's), keyed by the kernel's structure,
the design, the float32 matmul precision and the lowering's own source, so a changed
compiler (or setting) never reads old code.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import pickle
import struct
from pathlib import Path

from anychip import dtypes
from anychip.backends.cpu import cache as shared, kernel_key
from anychip.backends.npu.lower import Compiled
from anychip.ir.kernel import KernelIR
from anychip.precision import get_float32_matmul_precision
from anychip.runtime.device import Kernel

MAGIC = b"ANPUK3"
SIGNATURE = "npu-program-1"

# the passes of passes/pipeline.py the npu runs: index folding and contraction specs;
# the cpu's loop-shape passes (interchange, blocking, row splits) are its tiling's business
NPU_PASSES = ("simplify", "contraction")


def kernel_ir(kernel: Kernel) -> KernelIR:
    from anychip.passes.pipeline import PASSES, lower_kernel

    passes = [p for p in PASSES if p[0] in NPU_PASSES]
    return lower_kernel(kernel, [*passes, ("rangesplit", _split_plain)])


def _split_plain(k: KernelIR) -> KernelIR:
    """`rangesplit` for kernels of plain loads and stores (a cat, a pad: one DMA box per
    source instead of guarded element loads; 2048x160 cat 6642 -> 8.7 us); kernels with
    accumulators, scans, sorts or combining stores keep the loops their lowering knows."""
    from anychip.ir.kernel import Acc, KernelKind, SortRow, Store, Update, walk_stmts
    from anychip.passes.rangesplit import split_ranges

    if k.kind is not KernelKind.ELEMENTWISE:  # a scan's serial loop stays one
        return k
    for s in walk_stmts(k.body):
        if isinstance(s, Acc | Update | SortRow) or (isinstance(s, Store) and s.combine):
            return k
    return split_ranges(k)


@functools.cache
def _compiler_sha() -> str:
    here = Path(__file__).parent
    codegen = here.parent.parent / "codegen"
    h = hashlib.sha256()
    # every module of the lowering (lower.py, lower_steps.py, ...) and the GEMM generator
    for path in (*sorted(here.glob("*.py")), *sorted(codegen.glob("npu_gemm*.py"))):
        h.update(path.read_bytes())
    return h.hexdigest()


def key_of(kernel: Kernel, design: str) -> str:
    """The cache key of `kernel` lowered for the design whose TOML text is `design`."""
    h = hashlib.sha256()
    h.update(repr(kernel_key(kernel)).encode())
    h.update(design.encode())
    h.update(get_float32_matmul_precision().encode())  # a float32 GEMM's passes
    h.update(_compiler_sha().encode())
    return "npu-" + h.hexdigest()[:40]


def _folder() -> Path | None:
    try:
        return shared.cache_dir().parent / "npu"
    except Exception:
        return None


def to_bytes(c: Compiled) -> bytes:
    """The entry's bytes: a pickle of the program's parts (decoding the binary
    instruction form instruction by instruction would cost more than lowering again).
    Entries are checksummed by the shared machinery before they are read."""
    parts = (c.name, c.cores, c.consts, c.nbufs, [d.name for d in c.scalars], c.flops,
             c.tile_elems, c.scratch, c.regs, c.relocs)  # fmt: skip
    return MAGIC + pickle.dumps(parts, protocol=pickle.HIGHEST_PROTOCOL)


def from_bytes(raw: bytes) -> Compiled:
    if raw[: len(MAGIC)] != MAGIC:
        raise ValueError("not an npu program entry")
    parts = pickle.loads(raw[len(MAGIC) :])
    name, cores, consts, nbufs, scalars, flops, tile, scratch, regs, relocs = parts
    return Compiled(name, cores, consts, nbufs, tuple(getattr(dtypes, n) for n in scalars),
                    flops, tile, scratch, regs, relocs)  # fmt: skip


def load(key: str) -> Compiled | None:
    folder = _folder()
    if folder is None or not folder.exists():
        return None
    path = shared.lookup(folder, key, key, SIGNATURE)
    if path is None:
        return None
    try:
        return from_bytes(path.read_bytes())
    except (OSError, ValueError, struct.error, pickle.UnpicklingError, EOFError) as e:
        shared.warn(f"rebuilding {path.name}: {e}")
        return None


def save(key: str, c: Compiled) -> None:
    folder = _folder()
    if folder is None:
        return
    with contextlib.suppress(OSError), shared.build_folder(folder) as tmp:
        built = tmp / f"{key}.so"
        built.write_bytes(to_bytes(c))
        shared.store(folder, key, built, {"source_sha256": key, "signature": SIGNATURE})
