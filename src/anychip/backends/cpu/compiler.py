"""The system C compiler behind the cpu backend: finding it (`$CC` may carry arguments),
naming what it builds for, running it with a time limit, and building shared objects
through the disk cache (`cache.py`), many at once in parallel processes.

A cache key hashes the source, the flags, the compiler's version and the target
`-march=native` resolves to on this machine, so objects built for another CPU (a shared home
or CI cache) are never loaded here.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from anychip.backends.cpu import cache
from anychip.codegen import gemm
from anychip.errors import ArgumentError, CompileError


class CompileTimeout(CompileError):
    """The C compiler ran past ANYCHIP_COMPILE_TIMEOUT seconds and was stopped."""


def _wide_vectors() -> list[str]:
    """GCC and Clang vectorise loops 256 bits wide on AVX-512 hosts unless told otherwise;
    512 bits measured 1.4-1.7x faster on softmax rows (exp-bound) and max reductions on a
    Sapphire Rapids-class Xeon. The GEMM spells its vector width out, so it is unaffected."""
    return ["-mprefer-vector-width=512"] if gemm.host_info().vec_bytes == 64 else []


# flag sets tried in order until one builds: the first is the fast one, the rest degrade
GENERIC_FLAGS = ["-O3", "-march=native", *_wide_vectors(), "-fopenmp", "-ffp-contract=off"]
GENERIC_FLAGS.append("-fno-math-errno")
GEMM_FLAGS = ["-O3", "-march=native", "-fopenmp"]  # gemm relies on FMA contraction
_ALWAYS = ["-fPIC", "-shared", "-fwrapv", "-std=gnu11"]
_DROPPABLE = ("-mprefer-vector-width=512", "-march=native", "-fopenmp")
DEFAULT_TIMEOUT_S = 300.0  # ANYCHIP_COMPILE_TIMEOUT: one compiler run, seconds
COMPILES = [0]  # compiler invocations in this process (tests check a warm cache makes none)
_COUNT_LOCK = threading.Lock()


# ---------------------------------------------------------------- the compiler


def compiler_command() -> list[str] | None:
    """The compiler as an argument list: `$CC` split like a shell would (`CC="ccache gcc"`),
    its first word found on PATH; else cc, gcc or clang. None when there is none."""
    found = _find_compiler(os.environ.get("CC"), os.environ.get("PATH"))
    return list(found) if found else None


def find_compiler() -> str | None:
    """The compiler command line to use (None if none), e.g. '/usr/bin/gcc'."""
    cmd = compiler_command()
    return shlex.join(cmd) if cmd else None


@functools.cache  # asked on every device lookup: search PATH once per (CC, PATH)
def _find_compiler(cc: str | None, path: str | None) -> tuple[str, ...] | None:
    if cc:
        try:
            words = shlex.split(cc)
        except ValueError:
            return None
        exe = shutil.which(words[0]) if words else None
        return (exe, *words[1:]) if exe else None
    for name in ("cc", "gcc", "clang"):
        exe = shutil.which(name)
        if exe:
            return (exe,)
    return None


def missing_compiler() -> str | None:
    """Why no C compiler can be used, or None when one is there."""
    if compiler_command() is not None:
        return None
    cc = os.environ.get("CC")
    if cc:
        return f"the C compiler $CC={cc!r} was not found on PATH"
    return "no C compiler found: install cc, gcc or clang (or set CC)"


def timeout_s() -> float:
    """`ANYCHIP_COMPILE_TIMEOUT` seconds (default DEFAULT_TIMEOUT_S) for one compiler run."""
    raw = os.environ.get("ANYCHIP_COMPILE_TIMEOUT", "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        value = -1.0
    if not value > 0:  # also NaN
        raise ArgumentError(f"ANYCHIP_COMPILE_TIMEOUT={raw!r}: a number of seconds > 0 expected")
    return value


class Runs:
    """One batch's compiler runs in flight, stopped together on a failure or Ctrl-C."""

    def __init__(self) -> None:
        self.live: set[subprocess.Popen[str]] = set()
        self.stopped = False
        self._lock = threading.Lock()

    def add(self, proc: subprocess.Popen[str]) -> None:
        with self._lock:
            self.live.add(proc)
            if self.stopped:  # started as the batch was being stopped
                _stop(proc)

    def discard(self, proc: subprocess.Popen[str]) -> None:
        with self._lock:
            self.live.discard(proc)

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            for proc in self.live:
                _stop(proc)


def _stop(proc: subprocess.Popen[str]) -> None:
    """Kill a compiler run and its children (its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()


def parallel_jobs() -> int:
    """How many compiler processes may run at once: `ANYCHIP_COMPILE_JOBS`, default the
    machine's CPU count."""
    raw = os.environ.get("ANYCHIP_COMPILE_JOBS", "")
    if not raw:
        return os.cpu_count() or 1
    if not (raw.strip().isdigit() and int(raw) >= 1):
        raise ArgumentError(f"ANYCHIP_COMPILE_JOBS={raw!r}: a whole number >= 1 expected")
    return int(raw)


def run(argv: list[str], what: str, runs: Runs | None = None) -> subprocess.CompletedProcess[str]:
    """Run a compiler command with the time limit. It gets a process group of its own so a
    timeout stops the whole tree (a `ccache` wrapper's compiler, a script's children);
    while it runs it is in `runs`, for the caller to stop with the rest of its batch."""
    runs = runs or Runs()
    limit = timeout_s()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except OSError as e:
        raise CompileError(f"cpu: cannot run the C compiler {shlex.join(argv[:1])}: {e}") from e
    runs.add(proc)
    try:
        out, err = proc.communicate(timeout=limit)
    except BaseException as e:  # the time limit, or Ctrl-C: leave no compiler running
        _stop(proc)
        proc.communicate()
        if isinstance(e, subprocess.TimeoutExpired):
            raise CompileTimeout(
                f"cpu: the C compiler ({shlex.join(argv[:2])} ...) ran past {limit:g} s "
                f"{what} and was stopped; set ANYCHIP_COMPILE_TIMEOUT (seconds) to allow longer"
            ) from None
        raise
    finally:
        runs.discard(proc)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


@functools.cache
def compiler_identity(cc: str) -> str:
    """The compiler's command, version line and resolved target: part of every cache key."""
    cmd = shlex.split(cc)
    out = run([*cmd, "--version"], "printing its version")
    version = out.stdout.splitlines()[0] if out.stdout else ""
    return f"{cc}\n{version}\n{resolved_target(cc)}"


_TARGET_WORD = re.compile(r"^(-m\S+|--param|-target-cpu|-target-feature)$")


@functools.cache  # once per process per compiler
def resolved_target(cc: str) -> str:
    """What `-march=native` means here: the CPU and features the compiler resolves it to
    (read from the driver's `-###` output: gcc's cc1 line, clang's -target-* words), e.g.
    `-march=rocketlake -mmmx ... --param l1-cache-size=48 ...`. Falls back to the host's
    CPU model and flags when the driver says nothing usable."""
    cmd = shlex.split(cc)
    out = run([*cmd, "-march=native", "-###", "-E", "-x", "c", os.devnull], "resolving -march")
    words: list[str] = []
    for line in out.stderr.splitlines() if out.returncode == 0 else []:
        if "-march=" not in line and "-target-cpu" not in line:
            continue
        toks = shlex.split(line) if line.count('"') % 2 == 0 else line.split()
        for i, tok in enumerate(toks):
            if _TARGET_WORD.match(tok) or (i and toks[i - 1] in _VALUED):
                words.append(tok)
    return " ".join(words) if words else f"host: {_host_cpu()}"


_VALUED = ("--param", "-target-cpu", "-target-feature")


def _host_cpu() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        import platform

        return platform.processor() or platform.machine()
    keep = [ln for ln in text.splitlines() if ln.split(":")[0].strip() in ("model name", "flags")]
    return "\n".join(dict.fromkeys(keep))  # the first core's lines, once


def target_name() -> str:
    """The CPU name `-march=native` resolves to (e.g. 'rocketlake'), for messages and docs."""
    cc = find_compiler()
    if cc is None:
        return "unknown"
    found = re.search(r'-march=(\S+?)"?(\s|$)|-target-cpu (\S+)', resolved_target(cc))
    return (found.group(1) or found.group(3)) if found else "unknown"


# ---------------------------------------------------------------- building


@dataclass(frozen=True)
class Job:
    """One shared object to build: C source, wanted flags, and the kernel signature (e.g.
    `elementwise_4(void*,void*)`) its cache entry records."""

    source: str
    flags: tuple[str, ...]
    signature: str = ""


_WORKING: dict[tuple[str, ...], list[str]] = {}  # wanted flags -> flags that built


def build(source: str, flags: list[str], signature: str = "") -> ctypes.CDLL:
    """The shared object of `source`, from the disk cache or freshly compiled."""
    return build_many([Job(source, tuple(flags), signature)])[0]


def build_many(jobs: list[Job]) -> list[ctypes.CDLL]:
    """Each job's shared object: cached entries are checked and loaded, missing ones are
    compiled in parallel processes (at most `parallel_jobs()` at once) with a progress line
    on a terminal's stderr."""
    cc = find_compiler()
    if cc is None:
        raise CompileError(f"cpu: {missing_compiler()}")
    folder = cache.cache_dir()
    ident = compiler_identity(cc)
    keyed = [(_key(job, ident), job) for job in jobs]
    found: dict[str, Path] = {}
    todo: dict[str, Job] = {}
    for key, job in keyed:
        if key in found or key in todo:
            continue
        hit = cache.lookup(folder, key, cache.sha256(job.source.encode()), job.signature)
        if hit is None:
            todo[key] = job
        else:
            found[key] = hit
    found.update(_compile_all(shlex.split(cc), folder, todo, ident))
    return [ctypes.CDLL(str(found[key])) for key, _ in keyed]


def _key(job: Job, ident: str) -> str:
    """Keyed by the flags asked for (the record names those that built), so every process
    finds the entry whichever flags it fell back to."""
    parts = [job.source, ident, *job.flags, *_ALWAYS, job.signature]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def _compile_all(cmd: list[str], folder: Path, todo: dict[str, Job], ident: str) -> dict[str, Path]:
    if not todo:
        return {}
    done: dict[str, Path] = {}
    show = Progress(len(todo))
    if len(todo) == 1:  # no thread for the common single kernel
        ((key, job),) = todo.items()
        done[key] = _compile_entry(cmd, folder, key, job, ident)
        show.step()
        show.close()
        return done
    # threads only wait on compiler processes: the compiles themselves run in parallel
    pool = ThreadPoolExecutor(min(len(todo), parallel_jobs()), "anychip-cc")
    runs = Runs()
    try:
        futures = {
            pool.submit(_compile_entry, cmd, folder, key, job, ident, runs): key
            for key, job in todo.items()
        }
        for fut in as_completed(futures):
            done[futures[fut]] = fut.result()  # the first failure raises
            show.step()
    except BaseException:  # a failure or Ctrl-C: start no more, stop the running ones
        pool.shutdown(wait=False, cancel_futures=True)
        runs.stop()
        raise
    finally:
        pool.shutdown(wait=True)
        show.close()
    return done


def _compile_entry(
    cmd: list[str],
    folder: Path,
    key: str,
    job: Job,
    ident: str,
    runs: Runs | None = None,
) -> Path:
    """Compile one job in a build folder and store it as cache entry `key`. On failure,
    retry without the optional flags (vector width, -march=native, OpenMP)."""
    try:
        return _compile_in(cmd, folder, key, job, ident, runs)
    except OSError as e:  # a full disk, a folder gone read-only or removed meanwhile
        raise CompileError(
            f"cpu: cannot write to the kernel cache {folder}: {e}; free space there or set "
            "ANYCHIP_CACHE_DIR to a writable folder"
        ) from e


def _compile_in(
    cmd: list[str], folder: Path, key: str, job: Job, ident: str, runs: Runs | None
) -> Path:
    flags = _WORKING.get(job.flags, list(job.flags))
    tries = [flags] + [
        [f for f in flags if f not in _DROPPABLE[: i + 1]] for i in range(len(_DROPPABLE))
    ]
    errors = ""
    with cache.build_folder(folder) as tmp:
        c_file = tmp / "kernel.c"
        c_file.write_text(job.source)
        out = tmp / "kernel.so"
        for fl in tries:
            if runs is not None and runs.stopped:  # the batch failed: build no more
                raise CompileError("cpu: build stopped with its batch")
            with _COUNT_LOCK:
                COMPILES[0] += 1
            argv = [*cmd, *fl, *_ALWAYS, "-o", str(out), str(c_file), "-lm"]
            r = run(argv, f"building {job.signature or 'a kernel'}", runs)
            if r.returncode == 0 and out.exists():
                _WORKING[job.flags] = fl
                record = {
                    "source_sha256": cache.sha256(job.source.encode()),
                    "signature": job.signature,
                    "flags": fl,
                    "compiler": ident,
                }
                return cache.store(folder, key, out, record)
            errors = r.stderr
    raise CompileError(f"cpu: {shlex.join(cmd)} failed to compile a kernel:\n{errors[-3000:]}")


class Progress:
    """`anychip: compiling 3/12 kernels [######      ]` on stderr, redrawn in place and
    erased when done; only when stderr is a terminal and more than one kernel is built."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total, self.done = total, 0
        self.stream = stream if stream is not None else sys.stderr
        self.on = total > 1 and self.stream.isatty()
        self._draw()

    def step(self) -> None:
        self.done += 1
        self._draw()

    def _draw(self) -> None:
        if self.on:
            bar = "#" * (20 * self.done // self.total)
            self._write(f"\ranychip: compiling {self.done}/{self.total} kernels [{bar:<20}]")

    def close(self) -> None:
        if self.on:
            self._write("\r\x1b[K")
            self.on = False

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
