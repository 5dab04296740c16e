"""The chip's first kernel library, written with the builder: GEMM, row softmax, layer norm,
embedding-bag and elementwise kernels, each with a `run_*` helper on the functional simulator.
"""

from __future__ import annotations

from anychip.npu.kernels.common import Kernel
from anychip.npu.kernels.elementwise import elementwise, run_elementwise
from anychip.npu.kernels.embedding import embedding_bag, run_embedding_bag
from anychip.npu.kernels.gemm import GemmPlan, gemm, plan_gemm, run_gemm
from anychip.npu.kernels.rowwise import layer_norm, run_layer_norm, run_softmax, softmax

__all__ = [
    "GemmPlan",
    "Kernel",
    "elementwise",
    "embedding_bag",
    "gemm",
    "layer_norm",
    "plan_gemm",
    "run_elementwise",
    "run_embedding_bag",
    "run_gemm",
    "run_layer_norm",
    "run_softmax",
    "softmax",
]
