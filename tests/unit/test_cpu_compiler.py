"""The cpu backend's compiler invocation: `CC` with arguments, the compile time limit, the
resolved target in cache keys, parallel builds of a schedule's kernels and their progress."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

import anychip as ac
from anychip.backends.cpu import cache, compiler

pytestmark = pytest.mark.skipif("cpu" not in ac.devices(), reason="no C compiler")


@pytest.fixture(autouse=True)
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache folder for each test, the process's folder choice forgotten."""
    monkeypatch.setenv("ANYCHIP_CACHE_DIR", str(tmp_path / "cache"))
    cache.forget()
    yield tmp_path / "cache"
    cache.forget()


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_cc_may_carry_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`CC="ccache gcc"`: a wrapper and the compiler it runs, split like a shell would."""
    log = tmp_path / "calls.log"
    wrapper = script(tmp_path / "my wrapper", f'echo run >> "{log}"\nexec "$@"\n')
    monkeypatch.setenv("CC", f"'{wrapper}' cc -DANSWER=42")
    assert "cpu" in ac.devices()
    lib = compiler.build("int k(void) { return ANSWER; }\n", ["-O1"])
    assert lib.k() == 42  # the argument reached the compiler
    assert log.read_text().count("run") >= 2  # version and target probes, then the build
    from anychip.codegen import gemm

    assert "#define" in gemm._compiler_macros()  # host detection runs it the same way
    x = ac.tensor([1.0, -2.0, 3.0], device="cpu")
    np.testing.assert_array_equal((x * 2).relu().numpy(), [2.0, 0.0, 6.0])


def test_unbalanced_cc_quotes_make_cpu_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "'gcc")
    assert "cpu" not in ac.devices()
    with pytest.raises(ac.DeviceError, match="'gcc"):
        ac.ones(2, device="cpu")


def test_compile_timeout_is_a_typed_error(
    tmp_path: Path, fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hang = script(tmp_path / "hangcc", 'case "$*" in *kernel.c*) sleep 120;; esac\nexec cc "$@"\n')
    monkeypatch.setenv("CC", str(hang))
    compiler.compiler_identity(str(hang))  # its quick probes, before the short limit
    monkeypatch.setenv("ANYCHIP_COMPILE_TIMEOUT", "1")
    with pytest.raises(compiler.CompileTimeout, match="ANYCHIP_COMPILE_TIMEOUT") as e:
        compiler.build("int k(void) { return 1; }\n", ["-O1"])
    assert isinstance(e.value, ac.CompileError)
    assert not list((fresh / "cpu").glob(".tmp-*"))  # its build folder went with it
    assert not list((fresh / "cpu").glob("*.so"))


def test_compile_timeout_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANYCHIP_COMPILE_TIMEOUT", raising=False)
    assert compiler.timeout_s() == compiler.DEFAULT_TIMEOUT_S
    for bad in ("soon", "0", "-3", "nan"):
        monkeypatch.setenv("ANYCHIP_COMPILE_TIMEOUT", bad)
        with pytest.raises(ac.ArgumentError, match="ANYCHIP_COMPILE_TIMEOUT"):
            compiler.timeout_s()


def test_keys_name_the_resolved_target(monkeypatch: pytest.MonkeyPatch) -> None:
    cc = compiler.find_compiler()
    assert cc is not None
    target = compiler.resolved_target(cc)
    assert "native" not in target  # what -march=native resolved to, never the literal
    assert target in compiler.compiler_identity(cc)
    job = compiler.Job("int k(void) { return 1; }\n", ("-O3", "-march=native"))
    here = compiler._key(job, compiler.compiler_identity(cc))
    # the same source and flags for another CPU (a shared home, a CI cache) is another entry
    elsewhere = compiler.compiler_identity(cc).replace(target, "-march=znver4 -mavx512f")
    assert compiler._key(job, elsewhere) != here


def test_gcc_target_is_parsed_from_the_driver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fake driver printing gcc's `-###` line: the resolved words are kept, paths are not."""
    line = (
        ' /usr/lib/gcc/x86_64-linux-gnu/12/cc1 -E -quiet /dev/null "-march=rocketlake" -mmmx '
        '-mavx2 -mno-sse4a --param "l1-cache-size=48" "-mtune=rocketlake" -dumpbase null'
    )
    fake = script(tmp_path / "fakecc", f"echo '{line}' >&2\n")
    target = compiler.resolved_target(str(fake))
    assert target == (
        "-march=rocketlake -mmmx -mavx2 -mno-sse4a --param l1-cache-size=48 -mtune=rocketlake"
    )


def test_progress_line_only_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        p = compiler.Progress(3, stream)
        for _ in range(3):
            p.step()
        p.close()
    assert pipe.getvalue() == ""  # quiet when not a terminal
    shown = tty.getvalue()
    assert "compiling 1/3 kernels" in shown and "compiling 3/3 kernels" in shown
    assert "\n" not in shown and shown.endswith("\r\x1b[K")  # one line, erased when done


@pytest.mark.parametrize("jobs", [1, 3])
def test_independent_kernels_compile_in_parallel_processes(
    jobs: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each build notes how many builds run beside it (a 1 s overlap window): up to
    ANYCHIP_COMPILE_JOBS at once, and only one when it is 1."""
    runs = tmp_path / "runs"
    runs.mkdir()
    body = (
        'case "$*" in *kernel.c*)\n'
        f'  touch "{runs}/$$"; sleep 1; ls "{runs}" | wc -l > "{tmp_path}/seen.$$"\n'
        f'  rm "{runs}/$$";;\n'
        'esac\nexec cc "$@"\n'
    )
    monkeypatch.setenv("CC", str(script(tmp_path / "countcc", body)))
    monkeypatch.setenv("ANYCHIP_COMPILE_JOBS", str(jobs))
    work = [compiler.Job(f"int k(void) {{ return {v}; }}\n", ("-O1",)) for v in range(4)]
    before = compiler.COMPILES[0]
    libs = compiler.build_many(work)
    assert [lib.k() for lib in libs] == [0, 1, 2, 3]
    assert compiler.COMPILES[0] - before == 4
    seen = [int(p.read_text()) for p in tmp_path.glob("seen.*")]
    assert len(seen) == 4 and 1 <= max(seen) <= jobs
    if jobs > 1:
        assert max(seen) >= 2


def test_parallel_jobs_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANYCHIP_COMPILE_JOBS", raising=False)
    assert compiler.parallel_jobs() == (os.cpu_count() or 1)
    for bad in ("0", "-1", "two", "1.5"):
        monkeypatch.setenv("ANYCHIP_COMPILE_JOBS", bad)
        with pytest.raises(ac.ArgumentError, match="ANYCHIP_COMPILE_JOBS"):
            compiler.parallel_jobs()


def test_launch_compiles_a_plans_kernels_together(monkeypatch: pytest.MonkeyPatch) -> None:
    from anychip.backends.cpu import CpuBackend

    calls: list[int] = []
    original = CpuBackend.compile_many

    def spy(self: CpuBackend, kernels: list) -> list:
        calls.append(len(kernels))
        return original(self, kernels)

    monkeypatch.setattr(CpuBackend, "compile_many", spy)
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    t = ac.tensor(x, device="cpu")
    got = ((t - t.amax(1, keepdim=True)).exp().sum(1) + t.sum(0).sum()).numpy()
    e = np.exp(x - x.max(1, keepdims=True)).sum(1) + x.sum()
    np.testing.assert_allclose(got, e, rtol=1e-5)
    assert calls and max(calls) >= 2  # one call for several kernels of one schedule


def test_target_falls_back_to_the_host_cpu(tmp_path: Path) -> None:
    """A driver that cannot resolve -march=native: the host's CPU and flags name the target."""
    fake = script(
        tmp_path / "oldcc", "echo \"error: unknown argument '-march=native'\" >&2\nexit 1\n"
    )
    target = compiler.resolved_target(str(fake))
    assert target.startswith("host: ") and "native" not in target


def test_a_failed_build_stops_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One kernel fails while another compiles on: the error comes at once and the other
    compiler is stopped, not waited for."""
    finished = tmp_path / "finished"
    body = (
        'for a; do case "$a" in *kernel.c) if grep -q HANG "$a"; then\n'
        f'  sleep 120; touch "{finished}"; fi;; esac; done\nexec cc "$@"\n'
    )
    monkeypatch.setenv("CC", str(script(tmp_path / "cc", body)))
    jobs = [
        compiler.Job("/* HANG */ int k(void) { return 1; }\n", ("-O1",)),
        compiler.Job("int k(void) { return }\n", ("-O1",)),
    ]
    with pytest.raises(ac.CompileError, match="failed to compile") as e:
        compiler.build_many(jobs)
    assert not isinstance(e.value, compiler.CompileTimeout)
    assert not finished.exists()
