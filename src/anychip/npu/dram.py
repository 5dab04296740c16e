"""Device memory as the timing model sees it: latency that grows with load, and the rate
one DMA engine can sustain with a bounded number of requests in flight (Little's law).

Burst rounding and page (row) activations are per-transfer costs (`costs.dma_cost`);
docs/npu-timing.md ("Device memory") works an example by hand.
"""

from __future__ import annotations

from anychip.npu.config import NpuConfig

MAX_LOAD = 0.9  # queueing delay is taken at this load when the memory is busier


def loaded_latency(cfg: NpuConfig, load: float) -> float:
    """`dma_latency * (1 + dram_queueing * rho / (1 - rho))`, rho = the share of
    `dram_bandwidth` used over the last `dma_latency` cycles when a transfer starts
    (capped at 0.9).

    >>> from anychip.npu.config import PROFILES
    >>> cfg = PROFILES["edge"]  # dma_latency 200, dram_queueing 0.25
    >>> [round(loaded_latency(cfg, rho), 6) for rho in (0.0, 0.5, 1.0)]
    [200.0, 250.0, 650.0]
    """
    rho = min(max(load, 0.0), MAX_LOAD)
    return cfg.dma_latency * (1.0 + cfg.dram_queueing * rho / (1.0 - rho))


def request_rate(cfg: NpuConfig, request: int, latency: float) -> float:
    """Bytes/cycle an engine sustains with `dma_outstanding` requests of `request` bytes in
    flight, each taking `latency` cycles (Little's law); unbounded at zero latency.

    >>> from anychip.npu.config import PROFILES
    >>> request_rate(PROFILES["edge"], 64, 256.0)  # 128 requests x 64 B / 256 cycles
    32.0
    """
    if latency <= 0:
        return float("inf")
    return cfg.dma_outstanding * request / latency
