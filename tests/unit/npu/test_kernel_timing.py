"""The library GEMM under the honest timing model reaches the issue's targets: >= 85% of
matrix peak for 2048^3 on `datacenter`, >= 80% on `cube` (its 2048^3 GEMM stages A and B
through L1). Timing these programs takes seconds: marked slow."""

from __future__ import annotations

import pytest

from anychip.npu.config import PROFILES
from anychip.npu.kernels import elementwise, gemm
from anychip.npu.timing import simulate_timing


@pytest.mark.slow
@pytest.mark.parametrize("name,target", [("datacenter", 0.85), ("cube", 0.80)])
def test_gemm_2048_reaches_its_target(name, target):
    cfg = PROFILES[name]
    kern = gemm(cfg, 2048, 2048, 2048)
    r = simulate_timing(kern.program, cfg)
    assert r.flops == kern.flops == 2 * 2048**3
    assert r.utilisation >= target, r.utilisation
    assert r.energy_joules > 0 and r.average_watts > cfg.energy.static_w


@pytest.mark.slow
@pytest.mark.parametrize("name", ["datacenter", "cube"])
def test_elementwise_streams_near_device_memory_bandwidth(name):
    # Streaming pays a page activation per 1 KiB page (8/9 of peak at best) and the
    # loaded latency; with results in their own slots the kernel stays above 80%.
    cfg = PROFILES[name]
    kern = elementwise(cfg, "fma", 1 << 22)
    r = simulate_timing(kern.program, cfg)
    assert r.dram_traffic == kern.dram_bytes
    assert 0.8 <= r.bandwidth_utilisation <= 8 / 9
