"""`anychip npu profile SCRIPT.py`: a script's step profiled per design, the rooflines from
the designs' peak rates (hand-derived from npu/config.py's PROFILES), unit utilisation from
a simulated chip's launch_stats, the plot and the errors a user sees."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import anychip as ac
import fakechip
from anychip.cli import main
from anychip.npu.config import PROFILES
from anychip.profiler import KernelEvent
from anychip.profiler_cli import Roofline, profile_designs

chip = fakechip.chip  # the fixture registering the fake chip

# a (64, 32) @ (32, 16) float32 matmul: 2*64*32*16 FLOPs; (2048 + 512 + 1024) * 4 bytes
MATMUL_SCRIPT = """
import anychip as ac

def make_step(device):
    a = ac.randn(64, 32, device=device).realize()
    b = ac.randn(32, 16, device=device).realize()
    return lambda: a @ b
"""
FLOPS, BYTES = 2 * 64 * 32 * 16, (64 * 32 + 32 * 16 + 64 * 16) * 4


@pytest.fixture
def script(tmp_path: Path) -> str:
    path = tmp_path / "step.py"
    path.write_text(MATMUL_SCRIPT)
    return str(path)


def test_rooflines_are_the_designs_peaks() -> None:
    # edge: a 16^3 tile every 4 cycles (1024 MACs/cycle) at 1 GHz, 16 lanes, 16 B/cycle
    assert Roofline.of(PROFILES["edge"]) == Roofline(2 * 1024 * 1e9, 16e9, 16e9)
    # datacenter: 4 cores of 16384 MACs/cycle at 1.5 GHz, 128 lanes each, 1024 B/cycle
    dc = Roofline.of(PROFILES["datacenter"])
    assert dc == Roofline(4 * 2 * 16384 * 1.5e9, 4 * 128 * 1.5e9, 1024 * 1.5e9)


def event(flops: int, matrix: int, nbytes: int) -> KernelEvent:
    return KernelEvent("k", "x", 1.0, flops, nbytes, matrix_flops=matrix)


def test_each_kernel_is_bounded_by_its_slowest_resource() -> None:
    roof = Roofline(matrix_flops=1e12, vector_flops=1e10, bytes_per_s=1e10)
    mm = event(2_000_000_000, 2_000_000_000, 1_000_000)  # 2 ms of matrix, 0.1 ms of memory
    vec = event(1_000_000, 0, 100_000_000)  # 0.1 ms of vector, 10 ms of memory
    assert roof.bound([mm]) == (pytest.approx(2e-3), "matrix")
    assert roof.bound([vec]) == (pytest.approx(1e-2), "memory")
    assert roof.bound([mm, vec]) == (pytest.approx(12e-3), "memory")


def test_profile_runs_the_step_and_bounds_it_on_each_design(script: str) -> None:
    edge, dc = profile_designs(script, ["edge", "datacenter"], device="ref", warmup=1, steps=2)
    assert (edge.design, dc.design, edge.device) == ("edge", "datacenter", "ref")
    assert [e.name for e in edge.events] == ["contraction"] * 2
    assert (edge.flops, edge.traffic) == (FLOPS, BYTES)
    # memory-bound on both: BYTES / 16e9 on edge, BYTES / 1.536e12 on datacenter
    assert edge.bound == (pytest.approx(BYTES / 16e9), "memory")
    assert dc.bound == (pytest.approx(BYTES / 1.536e12), "memory")
    assert edge.utilisation("matrix") is None  # host devices report no units


def test_a_design_file_brings_its_own_peaks(script: str, tmp_path: Path) -> None:
    path = tmp_path / "wide.toml"
    PROFILES["edge"].replace(dram_bandwidth=32.0).save(path)  # twice edge's bandwidth
    (wide,) = profile_designs(script, [str(path)], device="ref", warmup=0)
    assert wide.design == "wide"
    assert wide.bound == (pytest.approx(BYTES / 32e9), "memory")


def test_the_command_prints_the_designs_side_by_side(
    script: str, capsys: pytest.CaptureFixture[str]
) -> None:
    device = "cpu" if "cpu" in ac.devices() else "ref"
    args = ["npu", "profile", script, "--design", "edge,datacenter", "--device", device]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["edge", "datacenter"]
    rows = {line[:22].strip(): line[22:].split() for line in out[2:]}
    assert rows["device"] == [device, device]
    assert rows["FLOPs"] == ["65.54k", "65.54k"]
    assert rows["device-memory traffic"] == ["14.34kB", "14.34kB"]
    assert rows["roofline bound"] == ["896.000", "ns", "(memory)", "9.333", "ns", "(memory)"]
    assert rows["of roofline"] == ["-", "-"]  # host time against a chip's bound: not shown
    assert rows["top kernel 1"] == ["contraction", "100%", "contraction", "100%"]


def test_simulated_chips_report_unit_utilisation(
    chip: fakechip.FakeChip, script: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["npu", "profile", script, "--design", "cube", "--device", chip.name]) == 0
    rows = {line[:22].strip(): line[22:].split() for line in capsys.readouterr().out.splitlines()}
    # the fake chip: matrix 0.5 and 0.3 busy on two cores, vector 0.2 and 0.4; 1 ns/element
    assert rows["matrix utilisation"] == ["40.0%"]
    assert rows["vector utilisation"] == ["30.0%"]
    assert rows["step time"] == ["1.024", "us"]  # 64 * 16 output elements
    assert rows["time from"] == ["timing", "model"]
    assert rows["device-memory traffic"] == ["1.00kB"]  # the chip's own figure
    # cube at 1.8 GHz: FLOPS at 2 cores * 4096 MACs/cycle (2.222 ns) outlast 1000 bytes at
    # 256 B/cycle (2.170 ns); that bound is 0.2% of the 1.024 us step
    assert FLOPS / (2 * 2 * 4096 * 1.8e9) > 1000 / (256 * 1.8e9)
    assert rows["roofline bound"] == ["2.222", "ns", "(matrix)"]
    assert rows["of roofline"] == ["0.2%"]


def test_plot_writes_a_png(script: str, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="--plot needs the plot extra")
    png = tmp_path / "designs.png"
    assert main(["npu", "profile", script, "--device", "ref", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_how_to_get_it(
    script: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    assert main(["npu", "profile", script, "--device", "ref", "--plot", "x.png"]) == 1
    assert "--plot needs matplotlib" in capsys.readouterr().err


def test_a_script_without_make_step_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def step(device):\n    pass\n")
    assert main(["npu", "profile", str(bad), "--device", "ref"]) == 1
    assert f"{bad} defines no make_step(device)" in capsys.readouterr().err


def test_unknown_designs_are_refused_before_running(
    script: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["npu", "profile", script, "--design", "edge,huge", "--device", "ref"]) == 1
    assert "no profile or config file 'huge'" in capsys.readouterr().err


def test_an_absent_npu_device_points_to_the_host(
    script: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if "npu" in ac.devices():
        pytest.skip("the npu backend is present: npu:edge runs")
    assert main(["npu", "profile", script, "--design", "edge"]) == 1
    err = capsys.readouterr().err
    assert "'npu:edge'" in err and "--device cpu runs the step on the host" in err


def test_on_the_npu_each_design_is_simulated(script: str) -> None:
    if "npu" not in ac.devices():
        pytest.skip("no npu backend on this branch: the fake chip covers launch_stats")
    edge, cube = profile_designs(script, ["edge", "cube"], warmup=0)
    assert (edge.device, cube.device) == ("npu:edge", "npu:cube")
    assert edge.simulated and cube.simulated
    assert edge.flops == FLOPS  # the counting rule, the same on every device
    assert edge.utilisation("matrix") is not None
    assert 0 < edge.step_time_s != cube.step_time_s  # two designs, two timing models
