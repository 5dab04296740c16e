"""`anychip npu run | emit | sweep` on the example programs and a small kernel sweep."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

from anychip.cli import main
from anychip.npu.asm import assemble

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "npu"
HAVE_TIMING = importlib.util.find_spec("anychip.npu.timing") is not None


def test_run_saxpy_example_prints_the_result_summary(capsys):
    assert main(["npu", "run", str(EXAMPLES / "saxpy.s"), "--design", "edge"]) == 0
    out = capsys.readouterr().out
    # x = y = 0..255, out = 2x + y = 3i: min 0, max 765, mean 382.5, sum 3 * 255 * 256 / 2
    assert "output out f32[256]: min 0 max 765 mean 382.5 sum 97920" in out
    assert "no faults" in out
    if HAVE_TIMING:
        assert "cycles" in out
    else:
        assert "no timing model" in out


def test_run_gemm_example_on_every_profile(capsys):
    for design in ("edge", "cube", "datacenter"):
        assert main(["npu", "run", str(EXAMPLES / "gemm_edge.s"), "--design", design]) == 0
    out = capsys.readouterr().out
    assert out.count("output c f32[100, 70]") == 3


def test_run_binary_program(tmp_path, capsys):
    prog = assemble((EXAMPLES / "saxpy.s").read_text())
    path = tmp_path / "saxpy.bin"
    path.write_bytes(prog.to_bytes())
    assert main(["npu", "run", str(path), "--no-timing"]) == 0
    assert "sum 97920" in capsys.readouterr().out


def test_emit_then_run(tmp_path, capsys):
    path = tmp_path / "sm.s"
    assert (
        main(["npu", "emit", "softmax", "--design", "cube", "--shape", "5,33", "-o", str(path)])
        == 0
    )
    assert main(["npu", "run", str(path), "--design", "cube", "--no-timing"]) == 0
    out = capsys.readouterr().out
    # each softmax row sums to 1: five rows of 33 values sum to 5, their mean is 1/33
    line = next(x for x in out.splitlines() if "output out" in x)
    assert float(line.split("sum ")[1]) == pytest.approx(5.0, rel=1e-5)


def test_run_reports_a_missing_file(tmp_path, capsys):
    assert main(["npu", "run", str(tmp_path / "nope.s")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_run_reports_a_fault_in_a_broken_program(tmp_path, capsys):
    text = (
        (EXAMPLES / "saxpy.s").read_text().replace("    waitf src=dma_in dst=vector flag=0\n", "")
    )
    path = tmp_path / "racy.s"
    path.write_text(text.replace("    setf src=dma_in dst=vector flag=0\n", ""))
    assert main(["npu", "run", str(path), "--no-timing"]) == 1
    assert "race on ub byte" in capsys.readouterr().err


@pytest.mark.skipif(not HAVE_TIMING, reason="the timing model (anychip.npu.timing) is not here")
def test_sweep_writes_one_row_per_design_point(tmp_path, capsys):
    out = tmp_path / "gemm.csv"
    args = ["npu", "sweep", "gemm", "--design", "cube", "--shape", "64,64,64",
            "--param", "matrix_unit=16,32", "--param", "dram_bandwidth=64,128,256",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6
    assert {(r["matrix_unit"], r["dram_bandwidth"]) for r in rows} == {
        (u, b) for u in ("16", "32") for b in ("64", "128", "256")
    }
    for r in rows:
        assert int(r["cycles"]) > 0 and 0 < float(r["utilisation"]) <= 1
        # performance per watt: achieved FLOP/s over average watts
        watts, tflops = float(r["average_watts"]), float(r["achieved_tflops"])
        assert float(r["gflops_per_watt"]) == pytest.approx(1e3 * tflops / watts, rel=1e-6)
        assert float(r["energy_uj"]) == pytest.approx(watts * float(r["time_us"]), rel=1e-3)
    # the 16^3 tile, 256 B/cycle point is at least as fast as the 64 B/cycle one
    t = {(r["matrix_unit"], r["dram_bandwidth"]): float(r["time_us"]) for r in rows}
    assert t[("16", "256")] <= t[("16", "64")]
    if importlib.util.find_spec("matplotlib") is not None:
        assert out.with_suffix(".png").stat().st_size > 0


@pytest.mark.skipif(HAVE_TIMING, reason="checks the message shown without a timing model")
def test_sweep_without_timing_model_says_so(tmp_path, capsys):
    assert main(["npu", "sweep", "gemm", "--out", str(tmp_path / "x.csv")]) == 1
    assert "needs the timing model" in capsys.readouterr().err


def test_demo_command_still_registered():
    from anychip.cli import COMMANDS, build_parser

    build_parser()
    assert {"demo", "npu"} <= set(COMMANDS)
