"""The energy model of a design: picojoules per operation and per byte, and static power.

Default constants are per-operation energies from M. Horowitz, "Computing's energy problem
(and what we can do about it)", ISSCC 2014 (45 nm, 0.9 V), left at 45 nm (no node scaling);
HBM2 device memory from O'Connor et al., "Fine-grained DRAM", MICRO 2017 (3.9 pJ/bit).
docs/npu-timing.md ("Energy") lists every constant and how a report adds them up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Horowitz 2014, 45 nm: 16-bit FP multiply 1.1 pJ + 32-bit FP add 0.9 pJ (f32 accumulation);
# 8-bit integer multiply 0.2 pJ + 32-bit integer add 0.1 pJ; 32-bit FP add 0.9 and multiply
# 3.7 pJ (their mean stands for one vector-unit element operation).
MAC_F16_PJ = 1.1 + 0.9
MAC_I8_PJ = 0.2 + 0.1
# Horowitz 2014: 32-bit FP multiply 3.7 pJ + add 0.9 pJ (an f32-input MAC)
MAC_F32_PJ = 3.7 + 0.9
VECTOR_OP_PJ = (0.9 + 3.7) / 2
# Horowitz 2014: a 64-bit SRAM read costs 10 pJ (8 KB), 20 pJ (32 KB), 100 pJ (1 MB);
# DRAM 1.3-2.6 nJ per 64 bits (the low end, 1.3 nJ / 8 B, is the default).
_SRAM_POINTS = ((8 << 10, 10.0 / 8), (32 << 10, 20.0 / 8), (1 << 20, 100.0 / 8))
DDR_PJ_PER_BYTE = 1300.0 / 8
HBM2_PJ_PER_BYTE = 3.9 * 8  # O'Connor et al. MICRO 2017


def sram_pj_per_byte(size: int) -> float:
    """pJ per byte read or written of an SRAM of `size` bytes: Horowitz's three points,
    interpolated linearly in log2(size) (and extended beyond them the same way).

    >>> sram_pj_per_byte(32 << 10), sram_pj_per_byte(1 << 20)
    (2.5, 12.5)
    """
    pts = _SRAM_POINTS
    x = math.log2(max(size, 1))
    lo, hi = (pts[0], pts[1]) if size <= pts[1][0] else (pts[1], pts[2])
    x0, x1 = math.log2(lo[0]), math.log2(hi[0])
    return round(max(0.5, lo[1] + (hi[1] - lo[1]) * (x - x0) / (x1 - x0)), 3)


@dataclass(frozen=True)
class EnergySpec:
    """Energy per operation (pJ), per byte moved at each memory level (pJ/B), static watts.

    A byte counts once per read and once per write of a buffer; device memory counts its
    burst-rounded traffic. Static power burns for the whole run.

    >>> e = EnergySpec()
    >>> round(e.mac_f16, 6), round(e.mac_i8, 6), e.l0a
    (2.0, 0.3, 2.5)
    """

    mac_f16: float = MAC_F16_PJ
    mac_bf16: float = MAC_F16_PJ
    mac_i8: float = MAC_I8_PJ
    mac_f32: float = MAC_F32_PJ
    vector_op: float = VECTOR_OP_PJ
    l1: float = sram_pj_per_byte(1 << 20)
    l0a: float = sram_pj_per_byte(32 << 10)
    l0b: float = sram_pj_per_byte(32 << 10)
    l0c: float = sram_pj_per_byte(32 << 10)
    ub: float = sram_pj_per_byte(32 << 10)
    dram: float = DDR_PJ_PER_BYTE
    static_w: float = 0.0

    def mac(self, dtype: str) -> float:
        """pJ per multiply-accumulate of a matrix input dtype ('f16', 'bf16', 'i8', 'f32')."""
        value: float = getattr(self, "mac_" + dtype)
        return value


def energy_for(sizes: dict[str, int], dram: float, static_w: float) -> EnergySpec:
    """An EnergySpec whose buffer costs follow each buffer's size (Horowitz's SRAM curve).

    >>> energy_for({"l1": 1 << 20, "ub": 32 << 10}, 31.2, 1.0).l1
    12.5
    """
    per = {k: sram_pj_per_byte(v) for k, v in sizes.items() if v}
    return EnergySpec(dram=dram, static_w=static_w, **per)
