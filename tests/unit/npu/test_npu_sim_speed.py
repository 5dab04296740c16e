"""bench/npu_sim_speed.py: its instruction stream computes what it says, and it runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench"))

from npu_sim_speed import ROW, vector_stream  # noqa: E402 - bench/ is not a package

from anychip.npu.config import PROFILES  # noqa: E402
from anychip.npu.isa import DT, VBin  # noqa: E402
from anychip.npu.simulator import Simulator  # noqa: E402


def test_the_vector_stream_adds_its_rows():
    cfg = PROFILES["edge"]
    prog = vector_stream(cfg, 7)
    sim = Simulator(cfg)
    rng = np.random.default_rng(0)
    arrays = {}
    for d in prog.data:
        sim.dram.ensure(d.addr + d.nbytes)
        if d.init != "none":
            arrays[d.name] = rng.standard_normal(d.shape).astype(np.float32)
            sim.write(d.addr, arrays[d.name])
    stats = sim.run(prog)
    out = next(d for d in prog.data if d.name == "out")
    np.testing.assert_array_equal(sim.get(out.addr, (7, ROW), DT.F32), arrays["x"] + arrays["y"])
    assert sum(isinstance(i, VBin) for i in prog.cores[0]) == 7
    assert sum(stats.instructions.values()) > 7 * 5  # dma in, flags, vadd, flags, dma out


def test_the_bench_runs_and_writes_its_json(tmp_path):
    out = tmp_path / "speed.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, str(ROOT / "bench" / "npu_sim_speed.py"), "--size", "128",
           "--rows", "50", "--repeat", "1", "--designs", "edge", "--json", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (res,) = json.loads(out.read_text())
    assert res["macs"] == 128**3 and res["macs_per_s"] > 0
    assert res["instructions"] > 50 * 5 and res["instructions_per_s"] > 0
    assert "OPENBLAS_NUM_THREADS=1" in proc.stdout


def test_the_bench_times_a_float32_tensor_matmul_on_edge(tmp_path):
    """--matmul float32: a Tensor API a @ b on npu:edge (float16 pieces on its matrix
    unit), its error against float64 within float32's, the matrix unit busy."""
    out = tmp_path / "mm.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "ANYCHIP_CACHE_DIR": str(tmp_path)}
    cmd = [sys.executable, str(ROOT / "bench" / "npu_sim_speed.py"), "--matmul", "float32",
           "--size", "48", "--repeat", "1", "--designs", "edge", "--json", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (res,) = json.loads(out.read_text())
    assert res["macs_per_s"] > 0 and res["sim_time_s"] > 0
    assert res["units"]["matrix"] > 0
    assert res["max_err_rel_to_abs_products"] < 2.0**-20
