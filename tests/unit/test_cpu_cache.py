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


# ---------------------------------------------------------------- a cache that heals

TWO_KERNELS = """
import warnings
warnings.simplefilter("always")
from anychip.backends.cpu import compiler
for value in (1, 2):
    lib = compiler.build(f"int k(void) {{ return {value}; }}\\n", ["-O1"], "k()")
    print(lib.k())
print("compiles", compiler.COMPILES[0])
"""


def run_py(code: str, cache: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter: a SIGBUS or SIGILL fails the test, not pytest."""
    full = {**os.environ, "ANYCHIP_CACHE_DIR": str(cache), "ANYCHIP_DEBUG": "0", **env}
    src = str(Path(__file__).resolve().parents[2] / "src")
    full["PYTHONPATH"] = src + os.pathsep + full.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-2000:]}"
    return r


def objects(cache: Path) -> list[Path]:
    return sorted((cache / "cpu").glob("*.so"))


def test_truncated_object_is_rebuilt_not_loaded(tmp_path: Path) -> None:
    expected, _ = run(tmp_path)
    for so in objects(tmp_path):  # an interrupted copy, a full disk: half an object
        so.write_bytes(so.read_bytes()[: so.stat().st_size // 2])
    r = run_py(PROGRAM, tmp_path)  # dlopen of these would die with SIGBUS
    lines = r.stdout.splitlines()
    assert lines[0] == expected
    assert int(lines[1].split()[1]) == len(objects(tmp_path))  # each one rebuilt
    assert "rebuilding" in r.stderr and "truncated" in r.stderr
    assert run(tmp_path) == (expected, 0)  # healed: the next run compiles nothing


def test_empty_and_unrecorded_objects_are_rebuilt(tmp_path: Path) -> None:
    expected, _ = run(tmp_path)
    first, second, *_ = objects(tmp_path)
    first.write_bytes(b"")
    second.with_suffix(".json").unlink()  # a crash between writing the two files
    r = run_py(PROGRAM, tmp_path)
    assert r.stdout.splitlines()[0] == expected
    assert int(r.stdout.splitlines()[1].split()[1]) == 2
    assert r.stderr.count("rebuilding") == 2


def test_swapped_objects_compute_their_own_kernel(tmp_path: Path) -> None:
    assert run_py(TWO_KERNELS, tmp_path).stdout.split()[:2] == ["1", "2"]
    a, b = objects(tmp_path)
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)  # another kernel's object with the same symbol name `k`
    b.write_bytes(data_a)
    r = run_py(TWO_KERNELS, tmp_path)
    assert r.stdout.split() == ["1", "2", "compiles", "2"]
    assert r.stderr.count("checksum does not match") == 2


def test_swapped_whole_entries_are_foreign(tmp_path: Path) -> None:
    run_py(TWO_KERNELS, tmp_path)
    a, b = objects(tmp_path)
    for suffix in (".so", ".json"):  # object and record moved together under other keys
        pa, pb = a.with_suffix(suffix), b.with_suffix(suffix)
        data_a, data_b = pa.read_bytes(), pb.read_bytes()
        pa.write_bytes(data_b)
        pb.write_bytes(data_a)
    r = run_py(TWO_KERNELS, tmp_path)
    assert r.stdout.split() == ["1", "2", "compiles", "2"]
    assert r.stderr.count("rebuilding") == 2


def test_entries_record_source_signature_and_resolved_target(tmp_path: Path) -> None:
    import hashlib
    import json

    run_py(TWO_KERNELS, tmp_path)
    so = objects(tmp_path)[0]
    record = json.loads(so.with_suffix(".json").read_text())
    assert record["sha256"] == hashlib.sha256(so.read_bytes()).hexdigest()
    assert record["size"] == so.stat().st_size
    assert record["signature"] == "k()"
    sources = [
        hashlib.sha256(f"int k(void) {{ return {v}; }}\n".encode()).hexdigest() for v in (1, 2)
    ]
    assert record["source_sha256"] in sources
    assert "-march=native" not in record["compiler"]  # what native meant on this machine
    if "gcc" in record["compiler"].lower() or "clang" in record["compiler"].lower():
        assert "-march=" in record["compiler"] or "-target-cpu" in record["compiler"]
