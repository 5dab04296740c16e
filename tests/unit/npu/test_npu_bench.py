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
    assert set(res) == {"design", "functional", "timing", "utilisation"}
    f = res["functional"]
    assert f["macs"] == f["size"] ** 3  # the hand GEMM did every multiply-accumulate
    assert f["macs_per_s"] > 0 and f["target_macs_per_s"] == 1e8
    assert f["max_rel_error"] < 1e-6  # f32 accumulation of exact f16 products
    for part in ("timing", "utilisation"):  # measured, or a note saying why not
        assert res[part], part
    assert "(a) functional GEMM" in proc.stdout
