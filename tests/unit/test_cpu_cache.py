"""The cpu backend's disk cache: a second process running the same program compiles
nothing, and generated C for a fixed kernel is valid for the system compiler."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import anychip as ac

pytestmark = pytest.mark.skipif("cpu" not in ac.devices(), reason="no C compiler")

PROGRAM = """
import anychip as ac
from anychip.backends.cpu import compiler
a = ac.arange(12, device="cpu").reshape(3, 4).to(ac.float32)
print(((a * 2 + 1).relu().sum(1) + (a @ a.T).sum(0)).tolist())
print("compiles", compiler.COMPILES[0])
"""


def run(cache: Path) -> tuple[str, int]:
    env = {**os.environ, "ANYCHIP_CACHE_DIR": str(cache), "ANYCHIP_DEBUG": "0"}
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    return out[0], int(out[1].split()[1])


def test_second_process_compiles_nothing(tmp_path: Path) -> None:
    first, n_first = run(tmp_path)
    second, n_second = run(tmp_path)
    assert n_first > 0
    assert n_second == 0
    assert first == second
    assert list((tmp_path / "cpu").glob("*.so"))  # content-addressed objects on disk
    assert not [p for p in (tmp_path / "cpu").iterdir() if p.is_dir()]  # no temp leftovers


def test_missing_compiler_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from anychip.backends.cpu import BACKEND

    monkeypatch.setenv("CC", "no-such-compiler-xyz")
    why = BACKEND.unavailable()
    assert why is not None and "no-such-compiler-xyz" in why
    assert "cpu" not in ac.devices()
    with pytest.raises(ac.DeviceError, match="no-such-compiler-xyz"):
        ac.ones(2, device="cpu")
