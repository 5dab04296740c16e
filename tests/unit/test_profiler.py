"""`anychip.profile()`: which launches it records (eager, replayed plans, jit; its own
threads; nested blocks), its table and Chrome trace, and a simulated chip's figures through
the optional `Backend.launch_stats` (a fake backend registered only here)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

import anychip as ac
import fakechip
from anychip.errors import ArgumentError
from anychip.profiler import kernel_counts
from anychip.runtime import dispatch, eager_cache
from anychip.runtime.device import get_backend
from anychip.runtime.realize import plan
from fakechip import FakeChip

DEV = "ref"


def test_records_each_launch_with_the_kernels_counts() -> None:
    a = ac.randn(8, 4, device=DEV).realize()
    b = ac.randn(4, 16, device=DEV).realize()
    expected = [kernel_counts(w.kernel) for w in plan([((a @ b).exp()).node]) if w.kernel]
    with ac.profile() as prof:
        y = (a @ b).exp().realize()
    assert [(e.name, e.flops, e.bytes) for e in prof.events] == [
        (c.name, c.flops, c.bytes) for c in expected
    ]
    assert prof.events[0].flops == 2 * 8 * 4 * 16
    assert all(e.device == DEV and e.time_s > 0 and not e.simulated for e in prof.events)
    assert prof.events[-1].shape == (8, 16) and prof.events[-1].dtype == "float32"
    np.testing.assert_allclose(y.numpy(), np.exp(a.numpy() @ b.numpy()), rtol=1e-5)


def test_replayed_plans_and_jit_are_recorded() -> None:
    x = ac.randn(32, device=DEV).realize()
    (x * 3.0).sin().realize()  # the dispatch cache now holds this graph's plan
    hits = eager_cache.cache_info()["hits"]
    with ac.profile() as prof:
        (x * 4.0).sin().realize()  # same structure, another runtime scalar: a replay
    assert eager_cache.cache_info()["hits"] == hits + 1
    assert [(e.name, e.flops) for e in prof.events] == [("elementwise_mul_sin", 64)]

    f = ac.jit(lambda t: (t + 1.0).exp().sum())
    f(x)  # capture
    with ac.profile() as prof:
        f(x)
        f(x)
    assert [(e.name, e.flops) for e in prof.events] == [("reduce_add_exp_sum", 32 + 32 + 31)] * 2


def test_a_launch_without_its_kernel_is_named_by_its_label() -> None:
    x = ac.randn(6, device=DEV).realize()
    (item,) = plan([x.exp().node])
    backend = get_backend(DEV)
    program = backend.compile(item.kernel)  # type: ignore[arg-type]
    with ac.profile() as prof:  # a caller that does not pass the kernel: nothing to count
        dispatch.launch(backend, program, item.out, list(item.ins), "my_exp float32 [6]")
    (e,) = prof.events
    assert (e.name, e.flops, e.bytes, e.shape) == ("my_exp", 0, 6 * 4 + 6 * 4, (6,))
    np.testing.assert_allclose(
        get_backend(DEV).copyout(item.out.handle, 6, item.out.dtype), np.exp(x.numpy()), rtol=1e-6
    )


def test_nothing_is_recorded_outside_and_watching_stops_on_exit() -> None:
    x = ac.randn(16, device=DEV).realize()
    with ac.profile() as prof:
        (x + 1.0).realize()
    (x + 2.0).exp().realize()
    assert len(prof.events) == 1
    assert dispatch._WATCHING[0] == 0  # launches are untimed again


def test_nested_profilers_each_record_their_block() -> None:
    x = ac.randn(16, device=DEV).realize()
    with ac.profile() as outer:
        (x + 1.0).realize()
        with ac.profile() as inner:
            x.exp().realize()
        with outer:  # the same profiler entered again: still one record per launch
            x.sin().realize()
    assert [e.name for e in outer.events] == [
        "elementwise_add",
        "elementwise_exp",
        "elementwise_sin",
    ]
    assert [e.name for e in inner.events] == ["elementwise_exp"]


def test_a_profiler_records_only_the_threads_it_was_entered_on() -> None:
    x = ac.randn(16, device=DEV).realize()
    other = threading.Thread(target=lambda: x.exp().realize(), name="elsewhere")
    with ac.profile() as prof:
        other.start()
        other.join()
        x.sin().realize()
    assert [(e.name, e.thread) for e in prof.events] == [("elementwise_sin", "MainThread")]


def test_other_threads_launches_are_not_timed_while_one_profiles(chip: FakeChip) -> None:
    x = ac.randn(16, device=chip.name).realize()
    asked = []
    other = threading.Thread(target=lambda: asked.append((x.exp().realize(), chip.asked)))
    with ac.profile():
        before = chip.asked
        other.start()
        other.join()
    assert asked[0][1] == before  # the other thread's launch never asked for its stats


def test_leaving_a_profiler_never_entered_is_an_error() -> None:
    with pytest.raises(ArgumentError, match="was not entered on thread 'MainThread'"):
        ac.profile().__exit__(None, None, None)


def test_one_profiler_entered_on_several_threads_records_them_all() -> None:
    prof = ac.profile()
    x = ac.randn(16, device=DEV).realize()
    go = threading.Barrier(4)

    def work(i: int) -> None:
        go.wait()
        with prof:
            for _ in range(5):
                (x * float(i)).realize()

    threads = [threading.Thread(target=work, args=(i,), name=f"t{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(e.thread for e in prof.events) == sorted([f"t{i}" for i in range(4)] * 5)
    assert dispatch._WATCHING[0] == 0


def test_table_groups_by_kernel_with_calls_shares_and_totals() -> None:
    x = ac.randn(64, 64, device=DEV).realize()
    with ac.profile() as prof:
        for _ in range(3):
            (x @ x).realize()
        x.sum().realize()
    rows = prof.key_averages()
    by_name = {r.name: r for r in rows}
    assert by_name["contraction"].calls == 3
    assert by_name["contraction"].flops == 3 * 2 * 64**3
    assert by_name["reduce_sum"].calls == 1
    assert sum(r.share for r in rows) == pytest.approx(1.0)
    assert [r.time_s for r in rows] == sorted((r.time_s for r in rows), reverse=True)
    text = prof.table()
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["Name", "Device", "Calls", "Time"]
    total = next(line for line in lines if line.startswith("Total"))
    assert total.split()[1] == "4"  # launches
    assert "1.58M" in total  # 3 * 2 * 64^3 + 4095 FLOPs
    short = prof.table(row_limit=1).splitlines()
    assert [ln.split()[0] for ln in short[2:4]] == [lines[2].split()[0], "-" * len(lines[0])]
    assert short[-1] == "(1 more kernels not shown)"
    by_calls = prof.table(sort_by="calls").splitlines()
    assert by_calls[2].startswith("contraction")


def test_grouping_by_shape_splits_a_kernel_by_its_output() -> None:
    x = ac.randn(4, 4, device=DEV).realize()
    y = ac.randn(8, device=DEV).realize()
    with ac.profile() as prof:
        x.exp().realize()
        y.exp().realize()
        x.exp().realize()
    assert [(r.name, r.calls) for r in prof.key_averages()] == [("elementwise_exp", 3)]
    rows = {r.shape: (r.calls, r.flops) for r in prof.key_averages(group_by_shape=True)}
    assert rows == {(4, 4): (2, 32), (8,): (1, 8)}
    assert "elementwise_exp [4, 4]" in prof.table(group_by_shape=True)


def test_an_empty_profile_reports_zeros() -> None:
    with ac.profile() as prof:
        pass
    assert prof.events == [] and prof.key_averages() == []
    assert prof.table().splitlines()[-1].split()[:2] == ["Total", "0"]
    assert ac.profiler.chrome_trace(prof.events)["traceEvents"] == []


def test_table_rejects_unknown_sort_keys() -> None:
    with pytest.raises(ArgumentError, match=r"Profiler.table: sort_by='speed' .*time, calls"):
        ac.profile().table(sort_by="speed")


def test_chrome_trace_has_one_slice_per_launch(tmp_path: Path) -> None:
    x = ac.randn(16, device=DEV).realize()
    with ac.profile() as prof:
        x.exp().realize()
        x.sin().realize()
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(str(path))
    trace = json.loads(path.read_text())
    slices = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert [s["name"] for s in slices] == ["elementwise_exp", "elementwise_sin"]
    assert slices[0]["ts"] + slices[0]["dur"] <= slices[1]["ts"]  # in order on one track
    assert all(s["args"]["bytes"] == 16 * 4 * 2 for s in slices)
    names = {e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M"}
    assert names == {DEV, "MainThread"}


# --- a simulated chip: the optional launch_stats of the device contract ------------------------
chip = fakechip.chip  # the fixture registering the fake chip


def test_simulated_time_units_and_bytes_come_from_the_backend(chip: FakeChip) -> None:
    x = ac.randn(1000, device=chip.name).realize()
    y = ac.randn(500, device=chip.name).realize()
    asked = chip.asked
    (x + 1.0).realize()
    assert chip.asked == asked  # not asked while nobody profiles
    with ac.profile() as prof:
        x.exp().realize()
        y.sin().realize()
    e1, e2 = prof.events
    assert (e1.time_s, e2.time_s) == (pytest.approx(1000e-9), pytest.approx(500e-9))
    assert (e1.start_s, e2.start_s) == (0.0, pytest.approx(1000e-9))  # one simulated timeline
    assert e1.simulated and e1.bytes == 1000
    assert e1.flops == 1000  # the counting rule, the same on every device
    assert e1.units["core1.matrix"] == 0.3
    (row,) = [r for r in prof.key_averages() if r.name == "elementwise_exp"]
    assert row.units == {"matrix": pytest.approx(0.4), "vector": pytest.approx(0.3)}
    text = prof.table()
    assert "matrix" in text.splitlines()[0] and "40.0%" in text
    assert "times on fakechip are simulated" in text


def test_simulated_chips_get_a_track_per_unit(chip: FakeChip, tmp_path: Path) -> None:
    x = ac.randn(1000, device=chip.name).realize()
    with ac.profile() as prof:
        x.exp().realize()
        x.sin().realize()
    trace = ac.profiler.chrome_trace(prof.events)
    tracks = {
        e["tid"]: e["args"]["name"]
        for e in trace["traceEvents"]
        if e["ph"] == "M" and e["name"] == "thread_name"
    }
    assert sorted(tracks.values()) == ["core0.dma_in", "core0.vector", "kernels"]
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    dma = [s for s in spans if tracks[s["tid"]] == "core0.dma_in"]
    # the second kernel's load starts where it does: after the first's 1 us
    assert [(s["name"], s["ts"], s["dur"]) for s in dma] == [
        ("load", 0.0, pytest.approx(0.5)),
        ("load", pytest.approx(1.0), pytest.approx(0.5)),
    ]
    procs = [e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "process_name"]
    assert procs == ["fakechip (simulated)"]


def test_without_spans_each_busy_unit_gets_a_slice_per_kernel(chip: FakeChip) -> None:
    x = ac.randn(1000, device=chip.name).realize()
    chip.spans = False
    chip.idle = True
    with ac.profile() as prof:
        x.exp().realize()
    trace = ac.profiler.chrome_trace(prof.events)["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in trace if e["name"] == "thread_name"}
    slices = sorted((names[e["tid"]], e["name"]) for e in trace if e["ph"] == "X")
    assert all(e["dur"] == pytest.approx(1.0) for e in trace if e["ph"] == "X")  # 1000 ns
    assert slices == [  # and none for the idle core0.dma_out
        ("core0.matrix", "elementwise_exp (50%)"),
        ("core0.vector", "elementwise_exp (20%)"),
        ("core1.matrix", "elementwise_exp (30%)"),
        ("core1.vector", "elementwise_exp (40%)"),
        ("kernels", "elementwise_exp"),
    ]


def test_debug_prints_simulated_time_and_units(
    chip: FakeChip, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    x = ac.randn(1000, device=chip.name).realize()
    monkeypatch.setattr(dispatch, "DEBUG", 1)
    x.exp().realize()
    out = capsys.readouterr().out
    assert "simulated 1.000 us" in out and "core0.matrix 50%" in out
