"""How float32 matrix products trade accuracy for speed on matrix units without float32
inputs, as `torch.set_float32_matmul_precision`: one process-wide setting.

"highest" keeps float32 accuracy, "high" and "medium" allow faster reduced-precision
passes (on the npu: three and one bfloat16 or float16 passes, docs/npu-gemm.md). The cpu computes
float32 products in float32 whatever the setting.

>>> import anychip as ac
>>> ac.get_float32_matmul_precision()
'highest'
>>> ac.set_float32_matmul_precision("medium"); ac.get_float32_matmul_precision()
'medium'
>>> ac.set_float32_matmul_precision("highest")
"""

from __future__ import annotations

import threading

from anychip.errors import ArgumentError

PRECISIONS = ("highest", "high", "medium")

_lock = threading.Lock()
_precision = "highest"


def set_float32_matmul_precision(precision: str) -> None:
    """Sets the precision of float32 matrix products for every thread of the process
    (as torch: a setting made in one thread is seen by all). It is read when a matmul
    is compiled (the npu GEMM's spec carries it and the npu program cache keys on it; a
    change clears the eager plan cache, whose plans hold compiled programs)."""
    global _precision
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ArgumentError(
            f"set_float32_matmul_precision: {precision!r} is not one of "
            f"'highest', 'high' or 'medium'"
        )
    with _lock:
        changed, _precision = precision != _precision, precision
    if changed:  # the eager cache's plans hold programs compiled under the old setting
        from anychip.runtime import eager_cache

        eager_cache.clear_cache()


def get_float32_matmul_precision() -> str:
    """The current setting: 'highest' (the default), 'high' or 'medium'."""
    with _lock:
        return _precision
