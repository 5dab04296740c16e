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


@pytest.mark.slow  # fresh interpreters that compile
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


@pytest.mark.slow  # fresh interpreters that compile
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


@pytest.mark.slow  # fresh interpreters that compile
def test_empty_and_unrecorded_objects_are_rebuilt(tmp_path: Path) -> None:
    expected, _ = run(tmp_path)
    first, second, third, *_ = objects(tmp_path)
    first.write_bytes(b"")
    second.with_suffix(".json").unlink()  # a crash between writing the two files
    third.with_suffix(".json").write_bytes(b"\x00garbage{")  # an unreadable record
    r = run_py(PROGRAM, tmp_path)
    assert r.stdout.splitlines()[0] == expected
    assert int(r.stdout.splitlines()[1].split()[1]) == 3
    assert r.stderr.count("rebuilding") == 3
    assert "record is missing" in r.stderr and "unreadable" in r.stderr


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


# ---------------------------------------------------------------- where the cache lives


@pytest.fixture()
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache folder for this test, the process's folder choice forgotten."""
    from anychip.backends.cpu import cache

    monkeypatch.setenv("ANYCHIP_CACHE_DIR", str(tmp_path / "cache"))
    cache.forget()
    yield tmp_path / "cache"
    cache.forget()


@pytest.mark.slow  # fresh interpreters that compile
def test_unwritable_cache_dir_falls_back_to_a_private_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # so no folder can be made below it, even by root
    code = PROGRAM + "print(ac.devices())\n"
    r = run_py(code, blocker / "cache")
    expected, _ = run(tmp_path / "good")
    assert r.stdout.splitlines()[0] == expected
    assert "'cpu'" in r.stdout.splitlines()[2]
    warning = [ln for ln in r.stderr.splitlines() if "ANYCHIP_CACHE_DIR" in ln]
    assert warning and "private temporary folder" in warning[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_cache_dir_falls_back(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = run_py(PROGRAM, ro)
    finally:
        ro.chmod(0o755)
    assert r.stdout.splitlines()[0] == run(tmp_path / "good")[0]
    assert "ANYCHIP_CACHE_DIR" in r.stderr


def test_noexec_cache_dir_falls_back(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from anychip.backends.cpu import cache, compiler

    monkeypatch.setattr(cache, "_noexec", lambda p: Path(p) == fresh / "cpu")
    with pytest.warns(RuntimeWarning, match=r"noexec.*ANYCHIP_CACHE_DIR"):
        folder = cache.cache_dir()
    assert folder != fresh / "cpu" and folder.is_dir()
    assert "cpu" in ac.devices()
    assert compiler.build("int k(void) { return 7; }\n", ["-O1"]).k() == 7
    assert list(folder.glob("*.so"))


def test_no_usable_folder_makes_cpu_unavailable_with_a_hint(
    fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anychip.backends.cpu import BACKEND, cache

    monkeypatch.setattr(cache, "_noexec", lambda p: True)  # the temporary folder too
    why = BACKEND.unavailable()
    assert why is not None and "ANYCHIP_CACHE_DIR" in why and "noexec" in why
    assert "cpu" not in ac.devices()  # never listed-but-broken
    with pytest.raises(ac.DeviceError, match="ANYCHIP_CACHE_DIR"):
        ac.ones(2, device="cpu")


def test_leftovers_of_killed_compiles_are_removed(fresh: Path) -> None:
    import socket
    import time

    from anychip.backends.cpu import cache

    folder = fresh / "cpu"
    folder.mkdir(parents=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid with no process behind it
    host = socket.gethostname()
    dead = folder / f".tmp-{host}-{gone.pid}-abc123"
    alive = folder / f".tmp-{host}-{os.getpid()}-def456"  # a compile still running
    stale = folder / ".tmp-elsewhere-1-ghi789"
    for d in (dead, alive, stale):
        d.mkdir()
        (d / "kernel.c").write_text("int x;")
    old = time.time() - 2 * cache.STALE_S
    os.utime(stale, (old, old))  # another host's, too old to be running
    cache.cache_dir()
    assert not dead.exists() and not stale.exists()
    assert alive.exists()


@pytest.mark.slow  # fresh interpreters that compile
def test_kill_during_compile_leaves_nothing_for_long(tmp_path: Path) -> None:
    """`kill -9` in the middle of a compile, then a new process: no temporary folder left."""
    import time

    slow = tmp_path / "slowcc"
    slow.write_text('#!/bin/sh\ncase "$*" in *kernel.c*) sleep 60;; esac\nexec cc "$@"\n')
    slow.chmod(0o755)
    env = {**os.environ, "ANYCHIP_CACHE_DIR": str(tmp_path), "CC": str(slow)}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2] / "src")
    proc = subprocess.Popen([sys.executable, "-c", PROGRAM], env=env, stderr=subprocess.DEVNULL)
    folder = tmp_path / "cpu"
    for _ in range(600):  # wait (up to a minute) for the compile to start
        if list(folder.glob(".tmp-*")) or proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    assert list(folder.glob(".tmp-*"))  # the killed compile's folder
    run_py("from anychip.backends.cpu import cache; cache.cache_dir()", tmp_path)
    assert not list(folder.glob(".tmp-*"))


# ---------------------------------------------------------------- size cap


def test_least_recently_used_entries_are_evicted(
    fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from anychip.backends.cpu import cache, compiler

    def src(v: int) -> str:
        return f"int k(void) {{ return {v}; }}\n"

    for v in (1, 2, 3):
        compiler.build(src(v), ["-O1"])
    folder = fresh / "cpu"
    by_value = {}
    for so in folder.glob("*.so"):
        by_value[compiler.ctypes.CDLL(str(so)).k()] = so.stem
    now = time.time()
    for v, age in ((1, 300), (2, 200), (3, 100)):  # 1 is oldest...
        os.utime(folder / f"{by_value[v]}.so", (now - age, now - age))
    compiler.build(src(1), ["-O1"])  # ...until used again: now 2 is the least recent
    per_entry = cache.usage(folder) / 3
    monkeypatch.setenv("ANYCHIP_CACHE_MB", str(3.5 * per_entry / 2**20))
    compiler.build(src(4), ["-O1"])  # four entries > 3.5: evict down to 3/4 of the cap
    left = {p.stem for p in folder.glob("*.so")}
    assert by_value[1] in left and by_value[2] not in left and by_value[3] not in left
    assert len(left) == 2 and len(list(folder.glob("*.json"))) == 2
    assert cache.usage(folder) <= 3.5 * per_entry
    before = compiler.COMPILES[0]
    assert compiler.build(src(2), ["-O1"]).k() == 2  # an evicted kernel is simply rebuilt
    assert compiler.COMPILES[0] == before + 1


def test_cache_size_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from anychip.backends.cpu import cache

    monkeypatch.delenv("ANYCHIP_CACHE_MB", raising=False)
    assert cache.cap_bytes() == int(cache.DEFAULT_MB * 2**20)
    monkeypatch.setenv("ANYCHIP_CACHE_MB", "lots")
    with pytest.raises(ac.ArgumentError, match="ANYCHIP_CACHE_MB"):
        cache.cap_bytes()


def test_fallback_folders_of_killed_processes_are_removed(
    fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket
    import tempfile

    from anychip.backends.cpu import cache

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = Path(tempfile.gettempdir()) / f"anychip-cache-{socket.gethostname()}-{gone.pid}-x1"
    dead.mkdir()
    monkeypatch.setattr(cache, "_noexec", lambda p: Path(p) == fresh / "cpu")
    with pytest.warns(RuntimeWarning, match="ANYCHIP_CACHE_DIR"):
        private = cache.cache_dir()
    assert not dead.exists()
    assert private.exists() and str(os.getpid()) in private.name


def test_a_full_disk_is_a_typed_error_with_a_hint(
    fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from anychip.backends.cpu import cache, compiler

    def full(*args: object, **kwargs: object) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache, "store", full)
    with pytest.raises(ac.CompileError, match=r"No space left.*ANYCHIP_CACHE_DIR"):
        compiler.build("int k(void) { return 5; }\n", ["-O1"])
    assert not list(cache.cache_dir().glob(".tmp-*"))  # the build folder went with it


def test_cache_folder_removed_while_running(fresh: Path) -> None:
    import shutil

    from anychip.backends.cpu import cache, compiler

    shutil.rmtree(cache.cache_dir())  # `rm -rf ~/.cache/anychip` in another terminal
    assert compiler.build("int k(void) { return 6; }\n", ["-O1"]).k() == 6
    assert list(cache.cache_dir().glob("*.so"))
