"""bench/npu_bench.py runs (--quick) and writes the JSON report its readers expect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_bench_quick_writes_its_json(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, str(ROOT / "bench" / "npu_bench.py"), "--quick", "--json", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert set(res["profiles"]) == {"edge", "datacenter", "cube"}  # every profile
    assert res["blas_threads"] == "1"
    for name, prof in res["profiles"].items():
        f = prof["functional"]
        assert f["macs"] == f["size"] ** 3  # the hand GEMM did every multiply-accumulate
        assert f["macs_per_s"] > 0 and f["instructions_per_s"] > 0
        assert f["max_rel_error"] < 1e-6  # f32 accumulation of exact f16 products
        u = prof["utilisation"]
        for kern in ("gemm", "elementwise"):  # utilisation and energy per kernel
            assert u[kern]["energy_joules"] > 0 and u[kern]["average_watts"] > 0, name
        assert 0 < u["gemm"]["utilisation"] <= 1
        assert prof["timing"]["instructions_per_s"] > 0
    assert "(a) functional GEMM" in proc.stdout
