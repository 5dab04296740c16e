"""The specification of an npu GEMM (operand views, epilogue, precision) and its planner:
the tile sizes that fit a design's buffers with the fewest estimated cycles.

Used by `codegen/npu_gemm.py`, which emits the program; see that module for the launch
convention and docs/npu-gemm.md for the schedule and the float32 precisions.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from anychip.codegen.npu_gemm_split import SCALE_SLOTS
from anychip.errors import ArgumentError, DTypeNotImplemented, ShapeError
from anychip.npu.builder import round_up
from anychip.npu.config import NpuConfig
from anychip.npu.isa import DT, UnOp
from anychip.precision import PRECISIONS

STORE_BLOCKS = 4  # row blocks of a finished tile, handed on one by one (a short drain)
MAX_TILE = 1024  # largest tm/tn tried
DRAM_EFFICIENCY = 0.6  # the share of peak device-memory bandwidth the planner counts on
# (piece of a, piece of b) products per precision, smallest first (they are added first)
PASSES = {
    "medium": ((0, 0),),
    "high": ((1, 0), (0, 1), (0, 0)),
    "highest": ((2, 0), (1, 1), (0, 2), (1, 0), (0, 1), (0, 0)),
}
# float16 pieces hold 11 bits each: three keep all 24 of float32's ("highest", the
# bfloat16 passes: the three dropped products are below 2^-33 of |x||y|), two keep 22
# ("high": all four products, in two mmas of depth 2 tk, `blocks`)
PASSES_F16 = {
    "medium": ((0, 0),),
    "high": ((1, 1), (1, 0), (0, 1), (0, 0)),
    "highest": PASSES["highest"],
}


@dataclass(frozen=True)
class GemmView:
    """A strided view of a device buffer whose base address is in register `reg`:
    element (batch..., r, c) at offset + sum(batch_i * batch_strides_i) + r*rows + c*cols
    (elements of `dtype`; strides >= 0, 0 broadcasts)."""

    reg: int
    dtype: DT
    offset: int
    batch_strides: tuple[int, ...]
    rows: int
    cols: int


@dataclass(frozen=True)
class Bias:
    """acc += view[b, i, j] (f32 arithmetic; a (N,) bias is rows=0, cols=1)."""

    view: GemmView


@dataclass(frozen=True)
class Scale:
    """acc *= value (rounded to f32)."""

    value: float


@dataclass(frozen=True)
class Unary:
    """acc = op(acc), an f32 vector op (relu, gelu, sigmoid, tanh, exp, ...)."""

    op: UnOp


EpilogueOp = Bias | Scale | Unary


@dataclass(frozen=True)
class GemmSpec:
    """out = epilogue(a @ b) over `batch` (a shape), m x n outputs, depth k; the output
    view's dtype is the cast after the epilogue (f32, f16 or bf16)."""

    batch: tuple[int, ...]
    m: int
    n: int
    k: int
    a: GemmView
    b: GemmView
    out: GemmView
    epilogue: tuple[EpilogueOp, ...] = ()
    precision: str = "highest"  # float32 inputs only


@dataclass(frozen=True)
class GemmPlan:
    """Tile sizes (multiples of the matrix tile) and accumulator slots of one GEMM;
    `native`: float32 operands go to the matrix unit as they are (its quarter-rate f32
    mode), not split into 16-bit pieces."""

    tm: int
    tn: int
    tk: int
    acc_slots: int
    native: bool = False


Pairs = tuple[tuple[int, int], ...]


def passes(
    config: NpuConfig, dtype: DT, precision: str, native: bool = False
) -> tuple[DT, int, Pairs]:
    """(matrix-unit dtype, pieces per operand, piece products) for inputs of `dtype`:
    float32 runs as bfloat16 pieces, or as float16 pieces of scaled values on a design
    whose matrix unit has f16 but no bf16 (`edge`), or (`native`) as itself."""
    if precision not in PRECISIONS:
        raise ArgumentError(f"npu gemm: precision {precision!r} is not one of {PRECISIONS}")
    if native:
        if not native_f32(config, dtype, precision):
            raise DTypeNotImplemented(
                f"npu gemm: no native float32 path on design {config.name!r} for "
                f"{dtype.name.lower()} inputs at precision {precision!r}"
            )
        return DT.F32, 1, ((0, 0),)
    mdt = dtype
    if dtype == DT.F32:
        mdt = DT.BF16 if "bf16" in config.matrix_dtypes else DT.F16
    if mdt not in (DT.F16, DT.BF16):
        raise DTypeNotImplemented(f"npu gemm: no matrix path for {dtype.name.lower()} inputs")
    if mdt.name.lower() not in config.matrix_dtypes:
        raise DTypeNotImplemented(
            f"npu gemm: the matrix unit of design {config.name!r} has no "
            f"{mdt.name.lower()} inputs ({', '.join(config.matrix_dtypes)}), needed for "
            f"{dtype.name.lower()} matmuls"
        )
    if dtype != DT.F32:
        return mdt, 1, ((0, 0),)
    pairs = (PASSES if mdt == DT.BF16 else PASSES_F16)[precision]
    return mdt, 1 + max(max(pq) for pq in pairs), pairs


def native_f32(config: NpuConfig, dtype: DT, precision: str) -> bool:
    """Whether float32 operands may go to the matrix unit unsplit: its f32 mode sums
    exact products (docs/npu-isa.md), as accurate as "highest" asks; the planner takes
    it where its estimate is the faster (`plan_npu_gemm`)."""
    return dtype == DT.F32 and precision == "highest" and "f32" in config.matrix_dtypes


def splits(s: GemmSpec, p: GemmPlan) -> bool:
    """Whether float32 operands are split into 16-bit pieces on the vector unit."""
    return s.a.dtype == DT.F32 and not p.native


def l0_itemsize(p: GemmPlan) -> int:
    """Bytes of an element (of a piece) in L0A/L0B: 4 for native float32, else 2."""
    return 4 if p.native else 2


def blocks(config: NpuConfig, dtype: DT, pieces: int) -> tuple[int, int]:
    """16-bit (rows, cols) blocks per element of A's and B's L0 tiles: one per piece, but
    two float16 pieces ("high") lie side by side in A's rows, [x0 x1] (tm, 2 tk), against
    B's stack [y0; y1; y0] (3 blocks of (tk, tn)), whose windows [y1; y0] and [y0; y1] give
    the four products in two mmas of depth 2 tk (window j pairs x_i with y_(i+j mod 2)):
    an output-stationary array streams a deeper k better. (Three pieces so would need five
    blocks of B: narrower tiles, more device-memory traffic, slower on `edge`.)"""
    return (2, 3) if scaled(config, dtype) and pieces == 2 else (pieces, pieces)


def scaled(config: NpuConfig, dtype: DT) -> bool:
    """Whether float32 operands run as float16 pieces of power-of-two scaled values (the
    scales from each row of A's and column of B's largest magnitude; npu_gemm_split.py)."""
    return dtype == DT.F32 and "bf16" not in config.matrix_dtypes


def check_spec(config: NpuConfig, s: GemmSpec) -> None:
    what = f"npu gemm (batch {s.batch}, m {s.m}, n {s.n}, k {s.k}) on {config.name!r}"
    if min(s.m, s.n, s.k, *s.batch, 1) < 1:
        raise ShapeError(f"{what}: sizes must be >= 1")
    if s.a.dtype != s.b.dtype:
        raise DTypeNotImplemented(
            f"{what}: operands must share a dtype, got {s.a.dtype.name.lower()} and "
            f"{s.b.dtype.name.lower()}"
        )
    if s.out.dtype not in (DT.F32, DT.F16, DT.BF16):
        raise DTypeNotImplemented(f"{what}: no {s.out.dtype.name.lower()} output")
    views = [s.a, s.b, s.out] + [e.view for e in s.epilogue if isinstance(e, Bias)]
    for v in views:
        if len(v.batch_strides) != len(s.batch):
            raise ShapeError(f"{what}: a view has batch strides {v.batch_strides}")
        if min(v.offset, v.rows, v.cols, *v.batch_strides) < 0:
            raise ShapeError(f"{what}: negative strides or offsets are not supported ({v})")
        if not 3 <= v.reg < 32:
            raise ArgumentError(f"{what}: base register r{v.reg} must be in r3..r31")
    o = s.out
    dims = sorted((st, n) for st, n in ((o.rows, s.m), (o.cols, s.n),
                  *zip(o.batch_strides, s.batch, strict=True)) if n > 1)  # fmt: skip
    span = 1  # each dimension's stride must clear everything inside it
    for st, n in dims:
        if st < span:
            raise ShapeError(f"{what}: the output view writes an element twice ({o})")
        span = st * n


# ---- planning ------------------------------------------------------------------------
def bias_elems(v: GemmView, p: GemmPlan) -> int:
    """Elements of one tile of an epilogue operand: a broadcast dimension holds one."""
    return (1 if v.rows == 0 else p.tm) * (1 if v.cols == 0 else p.tn)


def bias_slots(v: GemmView) -> int:
    """Two slots for a broadcast operand (a row or a column), one for a full tile."""
    return 2 if 0 in (v.rows, v.cols) else 1


def block_rows(cfg: NpuConfig, rows: int) -> int:
    """Rows of each block the last k-step of a (rows, tn) tile is handed on in."""
    return round_up(-(-rows // STORE_BLOCKS), cfg.matrix_m)


def ub_bytes(cfg: NpuConfig, s: GemmSpec, p: GemmPlan, pieces: int) -> int:
    """Unified-buffer bytes: the float32 split's slots, bias slots, down-cast slots."""
    need = 0
    for e in s.epilogue:
        if isinstance(e, Bias):
            elems = bias_elems(e.view, p)
            need += bias_slots(e.view) * round_up(elems * e.view.dtype.itemsize, 64)
            need += round_up(4 * elems, 64) if e.view.dtype != DT.F32 else 0
    if s.out.dtype != DT.F32:
        need += 2 * round_up(block_rows(cfg, p.tm) * p.tn * s.out.dtype.itemsize, 64)
    if splits(s, p):
        a, b = p.tm * p.tk, p.tk * p.tn
        need += 2 * (round_up(4 * a, 64) + round_up(4 * b, 64))  # raw f32 tiles
        pa, pb = blocks(cfg, s.a.dtype, pieces)
        need += 2 * (round_up(2 * pa * a, 64) + round_up(2 * pb * b, 64))
        need += 2 * round_up(4 * max(a, b), 64)  # the split's temporaries
    if splits(s, p) and scaled(cfg, s.a.dtype):
        vecs = round_up(4 * p.tm, 64) + round_up(4 * p.tn, 64)
        need += (2 * SCALE_SLOTS + 2) * vecs  # scales and inverses; maxima, reductions
        need += round_up(4 * block_rows(cfg, p.tm) * p.tn, 64)  # the unscale factors
    return need


def fits(cfg: NpuConfig, s: GemmSpec, p: GemmPlan, pieces: int) -> bool:
    pa, pb = blocks(cfg, s.a.dtype, pieces)
    size = l0_itemsize(p)
    a = round_up(size * pa * p.tm * p.tk, 64)
    b = round_up(size * pb * p.tk * p.tn, 64)
    return (
        2 * a <= cfg.l0a.size
        and 2 * b <= cfg.l0b.size
        and p.acc_slots * round_up(4 * p.tm * p.tn, 64) <= cfg.l0c.size
        and ub_bytes(cfg, s, p, pieces) <= cfg.ub.size
    )


def estimate(cfg: NpuConfig, s: GemmSpec, p: GemmPlan, npass: int) -> float:
    """Rough cycles: the slowest of matrix work, device-memory traffic and the float32
    split, plus the fill and drain that no overlap hides. `npass`: the matrix unit's
    passes over each tile (piece products, or `matrix_f32_cycles` for native float32)."""
    bat = math.prod(s.batch)
    tiles = bat * math.ceil(s.m / p.tm) * math.ceil(s.n / p.tn)
    per_core = math.ceil(tiles / cfg.cores)
    steps = math.ceil(s.k / p.tk)
    hw = (p.tm // cfg.matrix_m) * (p.tn // cfg.matrix_n) * (p.tk // cfg.matrix_k)
    compute = per_core * steps * hw * cfg.tile_cycles * npass
    size = s.a.dtype.itemsize
    passes_of = PASSES_F16 if scaled(cfg, s.a.dtype) else PASSES  # (f16 inputs too: as before)
    pieces = 1 if p.native else 1 + max(max(pq) for pq in passes_of[s.precision])
    # A's tiles are loaded (and split) once per output tile, or once per row of tiles
    # when the float32 split keeps them in L1
    a_reuse = math.ceil(s.n / p.tn) if caches_a(cfg, s, p, pieces) else 1
    a_loads = s.m * math.ceil(s.n / p.tn) / a_reuse
    traffic = bat * (size * s.k * (a_loads + s.n * math.ceil(s.m / p.tm))
                     + s.out.dtype.itemsize * s.m * s.n)  # fmt: skip
    if splits(s, p) and scaled(cfg, s.a.dtype) and steps > 1:  # the maxima's pass over A, B
        table = math.ceil(s.n / p.tn) <= SCALE_SLOTS  # B's maxima once per column block
        traffic += bat * size * s.k * (s.m + s.n * (1 if table else math.ceil(s.m / p.tm)))
    mem = traffic / (DRAM_EFFICIENCY * cfg.dram_bandwidth)
    vector = 0.0
    if splits(s, p):
        # the split's vector ops per element (f16: scale, split, and |x| and its maximum)
        ops = 3 * pieces + 1 if scaled(cfg, s.a.dtype) else 5 * pieces - 4
        vector = per_core * steps * ops * (p.tm / a_reuse + p.tn) * p.tk / cfg.vector_lanes
    share = cfg.dram_bandwidth / min(cfg.cores, tiles)
    fill = (size * p.tk * (p.tm + p.tn) + 4 * p.tm * p.tn) / share + 2 * cfg.dma_latency
    stall = 0.0 if p.acc_slots == 2 else per_core * 4 * p.tm * p.tn / share
    # a step shorter than a load's round trip leaves the matrix unit waiting on its loads
    step = hw * cfg.tile_cycles * npass
    short = max(0, 2 * cfg.dma_latency - step)
    return max(compute, mem, vector) + fill + stall + per_core * steps * (8 * npass + short)


def stage_depth(cfg: NpuConfig, s: GemmSpec, p: GemmPlan, pieces: int) -> int:
    """k-steps of A that a plan taking A unsplit (16-bit, or native f32) loads at once
    into the unified buffer, in one DMA of rows `g * tk` long, and copies to L0A step by
    step (0: none): where A's rows are not kept in L1 and a (tm, tk) tile's rows are runs
    shorter than a device-memory page (each run opens a page: on `edge`, 128 bytes then
    cost 384 bytes' time; 512 cost 768)."""
    steps = math.ceil(s.k / p.tk)
    size = l0_itemsize(p)
    if splits(s, p) or caches_a(cfg, s, p, pieces) or size * p.tk >= cfg.dram_page:
        return 0
    free = cfg.ub.size - ub_bytes(cfg, s, p, pieces)
    for g in (4, 2):
        if g <= steps and size * p.tm * g * p.tk <= min(free, cfg.ub.size // 2):
            return g
    return 0


def caches_a(cfg: NpuConfig, s: GemmSpec, p: GemmPlan, pieces: int) -> bool:
    """Whether a core keeps a row of A's (tm, K) tiles (a float32 A's bf16 pieces) in
    L1, so that the row's other output tiles copy them on chip instead of loading (and
    splitting) A again: when they fit and a row has more than one output tile."""
    depth = math.ceil(s.k / p.tk) * p.tk
    a_bytes = l0_itemsize(p) * blocks(cfg, s.a.dtype, pieces)[0] * p.tm * depth
    return s.n > p.tn and a_bytes <= cfg.l1.size


def plan_npu_gemm(config: NpuConfig, s: GemmSpec) -> GemmPlan:
    """The tile sizes with the fewest estimated cycles that fit the design's buffers, and
    for float32 at "highest" on a matrix unit with f32 inputs, whether they go to it
    natively or split into 16-bit pieces (the faster by the same estimate).

    >>> from anychip.npu.config import PROFILES
    >>> v = GemmView(3, DT.F16, 0, (), 2048, 1)
    >>> plan_npu_gemm(PROFILES["datacenter"], GemmSpec((), 2048, 2048, 2048, v, v, v))
    GemmPlan(tm=512, tn=512, tk=256, acc_slots=2, native=False)
    """
    mm, mn, mk = config.matrix_m, config.matrix_n, config.matrix_k
    pm, pn, pk = round_up(s.m, mm), round_up(s.n, mn), round_up(s.k, mk)
    best: tuple[float, int, GemmPlan] | None = None
    modes = (False, True) if native_f32(config, s.a.dtype, s.precision) else (False,)
    for native in modes:
        _, pieces, pairs = passes(config, s.a.dtype, s.precision, native)
        npass = config.matrix_f32_cycles if native else len(pairs)
        pa, pb = blocks(config, s.a.dtype, pieces)
        both = 2 * (4 if native else 2)  # two slots of L0A/L0B elements
        for tm in range(mm, min(pm, max(MAX_TILE, mm)) + 1, mm):
            for tn in range(mn, min(pn, max(MAX_TILE, mn)) + 1, mn):
                tk = min(pk, config.l0a.size // (both * pa * tm),
                         config.l0b.size // (both * pb * tn))  # fmt: skip
                tk -= tk % mk
                for slots, depth in itertools.product((2, 1), range(tk, 0, -mk)):
                    plan = GemmPlan(tm, tn, depth, slots, native)
                    if fits(config, s, plan, pieces):
                        key = (estimate(config, s, plan, npass), -depth, plan)
                        if best is None or key[:2] < best[:2]:
                            best = key
                        break
    if best is None:
        raise ShapeError(
            f"npu gemm: design {config.name!r} cannot hold one {mm}x{mk} A tile, one "
            f"{mk}x{mn} B tile and an f32 accumulator (with this epilogue) in its buffers"
        )
    return best[2]
