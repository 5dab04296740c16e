"""Reports of a profile: launches grouped by kernel, a readable table, a Chrome trace.

The table reads like torch.profiler's `key_averages().table()`: one row per kernel name
and device with its calls, total and average time, share of the total, FLOPs and bytes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from anychip.errors import ArgumentError
from anychip.profiler.events import KernelEvent

SORT_KEYS = ("time", "calls", "flops", "bytes")


@dataclass(frozen=True)
class KernelStats:
    """The launches of one kernel `name` on one `device` (and `shape`, when grouped by
    shape): totals, and each unit's busy fraction weighted by time (unit kinds, the
    `coreN.` prefix dropped: the mean over cores)."""

    name: str
    device: str
    calls: int
    time_s: float
    flops: int
    bytes: int
    share: float  # of the profile's total time
    units: dict[str, float] = field(default_factory=dict)
    shape: tuple[int, ...] | None = None
    simulated: bool = False

    @property
    def avg_time_s(self) -> float:
        return self.time_s / self.calls


def unit_kind(unit: str) -> str:
    """`core1.matrix` -> `matrix`: the unit without its core.

    >>> unit_kind("core1.matrix"), unit_kind("vector")
    ('matrix', 'vector')
    """
    return unit.rsplit(".", 1)[-1]


def unit_fractions(events: list[KernelEvent]) -> dict[str, float]:
    """Each unit kind's busy fraction over `events`: time-weighted, averaged over cores."""
    busy: dict[str, float] = defaultdict(float)
    total = sum(e.time_s for e in events if e.units)
    for e in events:
        per_kind: dict[str, list[float]] = defaultdict(list)
        for u, f in e.units.items():
            per_kind[unit_kind(u)].append(f)
        for k, fs in per_kind.items():
            busy[k] += e.time_s * sum(fs) / len(fs)
    return {k: b / total for k, b in busy.items()} if total > 0 else dict(busy)


def key_averages(events: list[KernelEvent], group_by_shape: bool = False) -> list[KernelStats]:
    """`events` grouped by (name, device[, shape]), longest total time first."""
    groups: dict[tuple[Any, ...], list[KernelEvent]] = defaultdict(list)
    for e in events:
        groups[(e.name, e.device, e.shape if group_by_shape else None)].append(e)
    total = sum(e.time_s for e in events)
    rows = [
        KernelStats(
            name=name,
            device=device,
            calls=len(es),
            time_s=(t := sum(e.time_s for e in es)),
            flops=sum(e.flops for e in es),
            bytes=sum(e.bytes for e in es),
            share=t / total if total > 0 else 0.0,
            units=unit_fractions(es),
            shape=shape,
            simulated=any(e.simulated for e in es),
        )
        for (name, device, shape), es in groups.items()
    ]
    return sorted(rows, key=lambda r: r.time_s, reverse=True)


def table(
    events: list[KernelEvent],
    sort_by: str = "time",
    row_limit: int | None = None,
    group_by_shape: bool = False,
) -> str:
    """The rows of `key_averages` as text, sorted by `sort_by`, at most `row_limit` rows
    (the totals still count every launch)."""
    if sort_by not in SORT_KEYS:
        raise ArgumentError(
            f"Profiler.table: sort_by={sort_by!r} is not one of {', '.join(SORT_KEYS)}"
        )
    if row_limit is not None and row_limit < 0:
        raise ArgumentError(f"Profiler.table: row_limit={row_limit} must be >= 0 or None")
    rows = key_averages(events, group_by_shape)
    attr = "time_s" if sort_by == "time" else sort_by
    rows.sort(key=lambda r: getattr(r, attr), reverse=True)
    shown = rows if row_limit is None else rows[:row_limit]
    kinds = sorted({k for r in rows for k in r.units})
    width = max([len("Name"), *(len(_label(r)) for r in shown)])
    dev_w = max([len("Device"), *(len(r.device) for r in shown)])
    head = (
        f"{'Name':<{width}}  {'Device':<{dev_w}}  {'Calls':>6}  {'Time':>10}  {'Share':>6}  "
        f"{'Avg':>10}  {'FLOPs':>8}  {'FLOP/s':>8}  {'Bytes':>8}  {'B/s':>8}"
        + "".join(f"  {k[:8]:>8}" for k in kinds)
    )
    lines = [head, "-" * len(head)]
    for r in shown:
        lines.append(
            f"{_label(r):<{width}}  {r.device:<{dev_w}}  {r.calls:>6}  {fmt_time(r.time_s):>10}  "
            f"{100 * r.share:>5.1f}%  {fmt_time(r.avg_time_s):>10}  {si(r.flops):>8}  "
            f"{si(_rate(r.flops, r.time_s)):>8}  {si(r.bytes, 'B'):>8}  "
            f"{si(_rate(r.bytes, r.time_s), 'B'):>8}"
            + "".join(f"  {_pct(r.units.get(k)):>8}" for k in kinds)
        )
    lines.append("-" * len(head))
    t = sum(e.time_s for e in events)
    fl, nb = sum(e.flops for e in events), sum(e.bytes for e in events)
    lines.append(
        f"{'Total':<{width}}  {'':<{dev_w}}  {len(events):>6}  {fmt_time(t):>10}  "
        f"{100.0 if events else 0.0:>5.1f}%  {'':>10}  {si(fl):>8}  {si(_rate(fl, t)):>8}  "
        f"{si(nb, 'B'):>8}  {si(_rate(nb, t), 'B'):>8}"
        + "".join(f"  {_pct(unit_fractions(events).get(k)):>8}" for k in kinds)
    )
    if len(shown) < len(rows):
        lines.append(f"({len(rows) - len(shown)} more kernels not shown)")
    if any(e.simulated for e in events):
        sim = sorted({e.device for e in events if e.simulated})
        lines.append(f"times on {', '.join(sim)} are simulated (the chip's timing model)")
    return "\n".join(lines)


def _label(r: KernelStats) -> str:
    return r.name if r.shape is None else f"{r.name} {list(r.shape)}"


def _rate(amount: float, seconds: float) -> float:
    return amount / seconds if seconds > 0 else 0.0


def _pct(frac: float | None) -> str:
    return "-" if frac is None else f"{100 * frac:.1f}%"


def fmt_time(seconds: float) -> str:
    """A duration with a readable unit.

    >>> fmt_time(0.0123), fmt_time(4.5e-6), fmt_time(2.0)
    ('12.300 ms', '4.500 us', '2.000 s')
    """
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if seconds >= scale:
            return f"{seconds / scale:.3f} {unit}"
    return f"{seconds * 1e9:.3f} ns"


def si(value: float, unit: str = "") -> str:
    """`value` with an SI prefix (powers of 1000).

    >>> si(1536), si(2.5e9, "B"), si(12)
    ('1.54k', '2.50GB', '12')
    """
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{prefix}{unit}"
    return f"{value:.0f}{unit}" if float(value).is_integer() else f"{value:.2f}{unit}"


# --- Chrome / Perfetto trace ------------------------------------------------------------------
def chrome_trace(events: list[KernelEvent]) -> dict[str, Any]:
    """The trace as JSON-ready data: complete ("X") events in microseconds, one process per
    device; host devices get a track per thread, simulated chips a `kernels` track and a
    track per unit (the timing model's spans, or a slice per kernel naming the unit's busy
    fraction; none where the unit stayed idle)."""
    out: list[dict[str, Any]] = []
    pids: dict[str, int] = {}
    tids: dict[tuple[int, str], int] = {}

    def track(device: str, name: str, simulated: bool) -> tuple[int, int]:
        if device not in pids:
            pids[device] = len(pids) + 1
            label = f"{device} (simulated)" if simulated else device
            out.append(_meta("process_name", pids[device], 0, label))
        pid = pids[device]
        if (pid, name) not in tids:
            tids[(pid, name)] = len([k for k in tids if k[0] == pid])
            out.append(_meta("thread_name", pid, tids[(pid, name)], name))
        return pid, tids[(pid, name)]

    for e in events:
        args = {"flops": e.flops, "bytes": e.bytes, "shape": list(e.shape), "dtype": e.dtype}
        if e.units:
            args["units"] = e.units
        pid, tid = track(e.device, "kernels" if e.simulated else e.thread, e.simulated)
        out.append(_slice(e.name, pid, tid, e.start_s, e.time_s, args))
        if e.trace:
            for unit, a, b, label in e.trace:
                _, utid = track(e.device, unit, True)
                out.append(_slice(label, pid, utid, e.start_s + a, b - a, {"kernel": e.name}))
        else:
            for unit, frac in e.units.items():
                if frac <= 0:  # idle through the kernel: nothing to draw
                    continue
                _, utid = track(e.device, unit, True)
                info = {"kernel": e.name, "busy": frac}
                out.append(_slice(f"{e.name} ({frac:.0%})", pid, utid, e.start_s, e.time_s, info))
    return {"traceEvents": out, "displayTimeUnit": "ms"}


def _meta(what: str, pid: int, tid: int, name: str) -> dict[str, Any]:
    return {"name": what, "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}}


def _slice(
    name: str, pid: int, tid: int, start_s: float, dur_s: float, args: dict[str, Any]
) -> dict[str, Any]:
    return {
        "name": name,
        "ph": "X",
        "cat": "kernel",
        "pid": pid,
        "tid": tid,
        "ts": start_s * 1e6,
        "dur": dur_s * 1e6,
        "args": args,
    }


def write_chrome_trace(events: list[KernelEvent], path: str) -> None:
    with open(path, "w") as f:
        json.dump(chrome_trace(events), f)
