"""A fake simulated chip for the profiler's tests: the ref interpreter registered as device
`fakechip`, reporting made-up figures through the optional `Backend.launch_stats`."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from anychip.backends.ref import RefBackend
from anychip.runtime import device as devmod, eager_cache
from anychip.runtime.device import Buffer, Scalar


class FakeChip(RefBackend):
    """The ref interpreter reporting made-up simulated figures for each launch: 1 ns per
    output element, two cores' matrix and vector units, 1000 bytes, a two-span trace
    (`spans = False`: no trace, as a backend without one)."""

    name = "fakechip"

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()
        self.asked = 0
        self.spans = True
        self.idle = False  # also report core0.dma_out, idle (busy 0)

    def launch(
        self, program: Any, out: Buffer, ins: list[Buffer], scalars: tuple[Scalar, ...] = ()
    ) -> None:
        super().launch(program, out, ins, scalars)
        t = out.size * 1e-9
        self.local.stats = {
            "time_s": t,
            "units": {
                "core0.matrix": 0.5,
                "core1.matrix": 0.3,
                "core0.vector": 0.2,
                "core1.vector": 0.4,
            },
            "flops": 7,
            "bytes": 1000,
        }
        if self.idle:
            self.local.stats["units"]["core0.dma_out"] = 0.0
        if self.spans:
            trace = [("core0.dma_in", 0.0, t / 2, "load"), ("core0.vector", t / 2, t, "exp")]
            self.local.stats["trace"] = trace

    def launch_stats(self) -> dict[str, Any] | None:
        self.asked += 1
        stats: dict[str, Any] | None = getattr(self.local, "stats", None)
        return stats


@pytest.fixture
def chip(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeChip]:
    monkeypatch.setitem(devmod._discover(), FakeChip.name, FakeChip)
    try:
        yield devmod.get_backend(FakeChip.name)  # type: ignore[misc]
    finally:
        devmod._INSTANCES.pop(FakeChip.name, None)
        eager_cache.clear_cache()
