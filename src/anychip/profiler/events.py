"""`anychip.profile()`: record every kernel launch of a block of code as a KernelEvent.

The profiler watches the runtime's one launch door (`runtime.dispatch.launch`), which eager
ops, replayed plans and `anychip.jit` all pass through. Threads: a profiler records the
launches of the threads it was entered on, each from its own `with`; nested profilers each
record what ran inside them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from anychip.errors import ArgumentError
from anychip.profiler.counts import kernel_counts
from anychip.runtime import dispatch

Span = tuple[str, float, float, str]  # (unit, start_s, end_s, label) within a launch


@dataclass(frozen=True)
class KernelEvent:
    """One kernel launch.

    `time_s` is measured wall time on host devices and the timing model's simulated time
    where the backend reports it (`simulated` True: the npu). `start_s` is the launch's start
    since the profiler was entered, on that device's timeline (simulated launches follow each
    other). `flops` and `matrix_flops` follow the counting rules of docs/profiler.md; `bytes`
    is device-memory traffic: the backend's own figure where it reports one, else the
    counting rule. `units` maps each unit of a simulated chip to its busy fraction; `trace`
    holds the timing model's (unit, start_s, end_s, label) spans, relative to the launch.
    """

    name: str
    device: str
    time_s: float
    flops: int
    bytes: int
    units: dict[str, float] = field(default_factory=dict)
    matrix_flops: int = 0
    start_s: float = 0.0
    simulated: bool = False
    shape: tuple[int, ...] = ()
    dtype: str = ""
    thread: str = ""
    trace: tuple[Span, ...] = ()


class Profiler:
    """Records kernel launches while entered (see `profile`). Thread-safe: one profiler may
    be entered on several threads at once, each recording its own launches."""

    def __init__(self) -> None:
        self._events: list[KernelEvent] = []
        self._lock = threading.Lock()
        self._t0 = 0.0  # perf_counter() when first entered: host timelines start there
        self._clocks: dict[str, float] = {}  # device -> simulated time so far
        self._open: dict[int, tuple[int, contextlib.ExitStack]] = {}  # thread -> depth, exit

    def __enter__(self) -> Profiler:
        tid = threading.get_ident()
        with self._lock:
            depth, stack = self._open.get(tid, (0, contextlib.ExitStack()))
            self._open[tid] = (depth + 1, stack)
            if not self._t0:
                self._t0 = time.perf_counter()
        if depth == 0:  # entered again on the same thread: already watching
            stack.enter_context(dispatch.watching(self._on_launch))
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tid = threading.get_ident()
        with self._lock:
            if tid not in self._open:
                raise ArgumentError(
                    f"Profiler.__exit__: this profiler was not entered on thread "
                    f"{threading.current_thread().name!r}"
                )
            depth, stack = self._open[tid]
            if depth > 1:
                self._open[tid] = (depth - 1, stack)
                return
            del self._open[tid]
        stack.close()

    @property
    def events(self) -> list[KernelEvent]:
        """The launches recorded so far, in the order they finished."""
        with self._lock:
            return list(self._events)

    def _on_launch(self, launch: dispatch.Launch) -> None:
        out, stats = launch.out, launch.stats
        counts = kernel_counts(launch.kernel) if launch.kernel is not None else None
        flops = counts.flops if counts else int((stats or {}).get("flops", 0))
        nbytes = counts.bytes if counts else out.nbytes + sum(b.nbytes for b in launch.ins)
        name = counts.name if counts else (launch.label.split() or ["kernel"])[0]
        node_shape: tuple[int, ...] = launch.kernel.ast.shape if launch.kernel else (out.size,)
        common: dict[str, Any] = {
            "name": name,
            "device": out.device,
            "flops": flops,
            "matrix_flops": counts.matrix_flops if counts else 0,
            "shape": node_shape,
            "dtype": out.dtype.name,
            "thread": threading.current_thread().name,
        }
        with self._lock:
            if stats is None:
                start = launch.start - self._t0
                event = KernelEvent(time_s=launch.wall_s, bytes=nbytes, start_s=start, **common)
            else:
                sim = float(stats["time_s"])
                start = self._clocks.get(out.device, 0.0)
                self._clocks[out.device] = start + sim
                event = KernelEvent(
                    time_s=sim,
                    bytes=int(stats.get("bytes", nbytes)),
                    units={str(u): float(f) for u, f in stats.get("units", {}).items()},
                    start_s=start,
                    simulated=True,
                    trace=tuple(
                        (str(u), float(a), float(b), str(t))
                        for u, a, b, t in stats.get("trace") or ()
                    ),
                    **common,
                )
            self._events.append(event)

    # the reports live in report.py; these are the methods users call
    def key_averages(self, group_by_shape: bool = False) -> list[Any]:
        """One KernelStats per kernel name and device (and output shape if asked), by
        total time, longest first."""
        from anychip.profiler.report import key_averages

        return key_averages(self.events, group_by_shape)

    def table(
        self, sort_by: str = "time", row_limit: int | None = None, group_by_shape: bool = False
    ) -> str:
        """A readable table of the launches grouped by kernel (calls, total and average
        time, share of the total, FLOPs and bytes with their rates, unit busy fractions on
        simulated chips), sorted by `sort_by` ('time', 'calls', 'flops' or 'bytes'), with a
        totals row."""
        from anychip.profiler.report import table

        return table(self.events, sort_by, row_limit, group_by_shape)

    def export_chrome_trace(self, path: str) -> None:
        """Write the launches as a Chrome/Perfetto trace (JSON with "traceEvents"): one
        process per device, a track per thread on host devices, and on a simulated chip a
        kernel track plus one track per unit of its timing model."""
        from anychip.profiler.report import write_chrome_trace

        write_chrome_trace(self.events, path)

    @property
    def total_time_s(self) -> float:
        """The sum of every launch's time (host wall and simulated time added as they are)."""
        return sum(e.time_s for e in self.events)


def profile() -> Profiler:
    """A profiler to use as a context manager: each kernel launch inside the block becomes
    an event in `prof.events`.

    >>> import anychip as ac
    >>> x = ac.ones(1000)
    >>> with ac.profile() as prof:
    ...     y = (x * 2 + 1).sum().realize()
    >>> [(e.name, e.flops) for e in prof.events]  # one fused kernel: 1000 mul, 1000 add, 999 sum
    [('reduce_mul_add_sum', 2999)]
    """
    return Profiler()
