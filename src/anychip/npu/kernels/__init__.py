"""The chip's first kernel library, written with the builder: GEMM, row softmax, layer norm,
embedding-bag and elementwise kernels, each with a `run_*` helper on the functional simulator.
"""

from __future__ import annotations

from anychip.npu.kernels.common import Kernel
from anychip.npu.kernels.gemm import GemmPlan, gemm, plan_gemm, run_gemm

__all__ = ["GemmPlan", "Kernel", "gemm", "plan_gemm", "run_gemm"]
