"""The profiler: `with anychip.profile() as prof:` records each kernel launch on every device
(`events.py`), counted from its primitive graph (`counts.py`), reported as a table or a
Chrome trace (`report.py`). docs/profiler.md is the guide.
"""

from anychip.profiler.counts import Counts, kernel_counts
from anychip.profiler.events import KernelEvent, Profiler, profile
from anychip.profiler.report import KernelStats, chrome_trace, key_averages

__all__ = [
    "Counts",
    "KernelEvent",
    "KernelStats",
    "Profiler",
    "chrome_trace",
    "kernel_counts",
    "key_averages",
    "profile",
]
