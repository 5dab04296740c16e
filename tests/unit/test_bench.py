"""Smoke test of bench/run.py: it runs (tiny sizes, one benchmark) and writes the JSON
layout the README documents. Timings are not checked: they belong to bench/, not tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_quick_tiny_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--only", "tiny"]
    proc = subprocess.run(
        [*cmd, "--repeat", "1", "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert {"host", "device", "blas", "numpy", "torch", "notes", "results"} <= doc.keys()
    assert list(doc["results"]) == ["tiny"]
    tiny = doc["results"]["tiny"]
    assert {"anychip", "anychip_jit", "numpy"} <= tiny.keys()
    assert all(isinstance(v, float) and v > 0 for v in tiny.values())
    assert "tiny" in proc.stdout and "vs numpy" in proc.stdout
