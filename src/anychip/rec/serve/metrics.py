"""The server's counters, gauges and histograms, written in Prometheus' text format
(version 0.0.4) for `GET /metrics`. Updated from the event loop and the inference worker,
so every change takes one lock.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.05, 0.1, 0.25, 1.0)
SWAP_BUCKETS = (1e-5, 3e-5, 1e-4, 3e-4, 0.001, 0.003, 0.01, 0.1, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class Histogram:
    """Cumulative buckets, their sum and count, as Prometheus reads them."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, x: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, x)] += 1
        self.sum += x

    def lines(self, name: str) -> list[str]:
        out, total = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts):
            total += n
            le = "+Inf" if bound == float("inf") else repr(float(bound))
            out.append(f'{name}_bucket{{le="{le}"}} {total}')
        return [*out, f"{name}_sum {self.sum!r}", f"{name}_count {total}"]


class Metrics:
    """What `GET /metrics` reports; see `text()` for the names."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.errors: dict[str, int] = defaultdict(int)
        self.updates: dict[str, int] = defaultdict(int)
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batch_rows = Histogram(BATCH_BUCKETS)
        self.batch_requests = Histogram(BATCH_BUCKETS)
        self.swap = Histogram(SWAP_BUCKETS)
        self.version = 0
        self.queue_depth = 0

    def request(self) -> None:
        with self.lock:
            self.requests += 1

    def error(self, kind: str) -> None:
        with self.lock:
            self.errors[kind] += 1

    def served(self, seconds: float) -> None:
        with self.lock:
            self.latency.observe(seconds)

    def batch(self, requests: int, rows: int) -> None:
        with self.lock:
            self.batch_requests.observe(requests)
            self.batch_rows.observe(rows)

    def update(self, source: str, version: int, swap_s: float) -> None:
        with self.lock:
            self.updates[source] += 1
            self.version = version
            self.swap.observe(swap_s)

    def text(self) -> str:
        p = "anychip_rec_"
        with self.lock:
            lines = [
                f"# HELP {p}requests_total Prediction requests received.",
                f"# TYPE {p}requests_total counter",
                f"{p}requests_total {self.requests}",
                f"# HELP {p}errors_total Requests answered with an error, by kind.",
                f"# TYPE {p}errors_total counter",
                *(f'{p}errors_total{{kind="{k}"}} {n}' for k, n in sorted(self.errors.items())),
                f"# HELP {p}request_latency_seconds Time from a prediction request's arrival "
                "to its answer.",
                f"# TYPE {p}request_latency_seconds histogram",
                *self.latency.lines(f"{p}request_latency_seconds"),
                f"# HELP {p}batch_rows Candidate rows per inference batch.",
                f"# TYPE {p}batch_rows histogram",
                *self.batch_rows.lines(f"{p}batch_rows"),
                f"# HELP {p}batch_requests Requests per inference batch.",
                f"# TYPE {p}batch_requests histogram",
                *self.batch_requests.lines(f"{p}batch_requests"),
                f"# HELP {p}queue_depth Requests waiting for the inference worker.",
                f"# TYPE {p}queue_depth gauge",
                f"{p}queue_depth {self.queue_depth}",
                f"# HELP {p}model_version The version of the served model.",
                f"# TYPE {p}model_version gauge",
                f"{p}model_version {self.version}",
                f"# HELP {p}updates_total Model updates applied, by how they came.",
                f"# TYPE {p}updates_total counter",
                *(f'{p}updates_total{{source="{k}"}} {n}' for k, n in sorted(self.updates.items())),
                f"# HELP {p}update_swap_seconds How long an update held up inference (its swap).",
                f"# TYPE {p}update_swap_seconds histogram",
                *self.swap.lines(f"{p}update_swap_seconds"),
            ]
        return "\n".join(lines) + "\n"
