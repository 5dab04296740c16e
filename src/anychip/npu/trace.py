"""Chrome / Perfetto trace files of a timed run: one track per unit per core, one slice each.

Trace Event Format JSON (open it in ui.perfetto.dev or chrome://tracing): a process per
core, a thread per unit, complete ('X') events in microseconds at the design's clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from anychip.npu.asm import format_instr
from anychip.npu.isa import Unit, WaitFlag, mnemonic
from anychip.npu.report import Event, TimingReport


def trace_events(events: Iterable[Event], clock_ghz: float = 1.0) -> list[dict[str, Any]]:
    """Trace Event Format dicts: track names first, then a slice per instruction.

    >>> from anychip.npu.isa import Finish
    >>> evs = trace_events([(0, Unit.SCALAR, 3, Finish(), 3.0, 10.0, 10.0)], clock_ghz=2.0)
    >>> [(e["ph"], e["name"]) for e in evs][-1], evs[-1]["ts"], evs[-1]["dur"]
    (('X', 'finish'), 0.0015, 0.0035)
    """
    us = 1.0 / (clock_ghz * 1e3)  # microseconds per cycle
    out: list[dict[str, Any]] = []
    tracks: set[tuple[int, Unit]] = set()
    slices: list[dict[str, Any]] = []
    for core, unit, index, inst, start, end, complete in events:
        tracks.add((core, unit))
        name = mnemonic(inst)
        if isinstance(inst, WaitFlag):
            name = f"waitf {inst.src.name.lower()}#{inst.flag}"
        slices.append(
            {
                "name": name,
                "cat": unit.name.lower(),
                "ph": "X",
                "pid": core,
                "tid": int(unit),
                "ts": start * us,
                "dur": (end - start) * us,
                "args": {
                    "index": index,
                    "instr": format_instr(inst),
                    "start_cycle": start,
                    "end_cycle": end,
                    "complete_cycle": complete,
                },
            }
        )
    for core in sorted({c for c, _ in tracks}):
        out.append(_meta("process_name", core, 0, {"name": f"core {core}"}))
        out.append(_meta("process_sort_index", core, 0, {"sort_index": core}))
    for core, unit in sorted(tracks):
        out.append(_meta("thread_name", core, int(unit), {"name": unit.name.lower()}))
        out.append(_meta("thread_sort_index", core, int(unit), {"sort_index": int(unit)}))
    return out + slices


def _meta(name: str, pid: int, tid: int, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "ph": "M", "pid": pid, "tid": tid, "args": args}


def write_trace(
    report_or_events: TimingReport | Iterable[Event], path: str | Path, clock_ghz: float = 1.0
) -> Path:
    """Writes a Chrome/Perfetto JSON trace; events alone are timed at `clock_ghz`.

    >>> import tempfile, os
    >>> from anychip.npu.isa import Finish
    >>> from anychip.npu.program import Program
    >>> from anychip.npu.timing import simulate_timing
    >>> report = simulate_timing(Program(((Finish(),),)), "edge")
    >>> p = write_trace(report, os.path.join(tempfile.mkdtemp(), "t.json"))
    >>> json.loads(p.read_text())["otherData"]["design"]
    'edge'
    """
    other: dict[str, Any] = {}
    if isinstance(report_or_events, TimingReport):
        clock_ghz = report_or_events.config.clock_ghz
        events: Iterable[Event] = report_or_events.events
        other = {"design": report_or_events.config.name, "cycles": report_or_events.cycles}
    else:
        events = report_or_events
    other["clock_ghz"] = clock_ghz
    doc = {
        "traceEvents": trace_events(events, clock_ghz),
        "displayTimeUnit": "ns",
        "otherData": other,
    }
    p = Path(path)
    p.write_text(json.dumps(doc))
    return p
