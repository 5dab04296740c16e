"""The system C compiler behind the cpu backend: finding it, building shared objects, and
the content-addressed disk cache (hash of source + compiler identity + flags).

Builds write to a temporary file and `os.replace` it into place, so processes compiling
the same kernel at once never see a half-written object.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from anychip.codegen import gemm
from anychip.errors import CompileError


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
COMPILES = [0]  # compiler invocations in this process (tests check a warm cache makes none)


def find_compiler() -> str | None:
    """The C compiler to use: $CC if set, else cc, gcc or clang on PATH (None if none)."""
    return _find_compiler(os.environ.get("CC"), os.environ.get("PATH"))


@functools.cache  # asked on every device lookup: search PATH once per (CC, PATH)
def _find_compiler(cc: str | None, path: str | None) -> str | None:
    if cc:
        return shutil.which(cc)
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    return None


def missing_compiler() -> str | None:
    """Why no C compiler can be used, or None when one is there."""
    if find_compiler() is not None:
        return None
    cc = os.environ.get("CC")
    if cc:
        return f"the C compiler $CC={cc!r} was not found on PATH"
    return "no C compiler found: install cc, gcc or clang (or set CC)"


@functools.cache
def compiler_identity(cc: str) -> str:
    """The compiler's path and version line: part of every cache key."""
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
        return f"{cc}\n{out.stdout.splitlines()[0] if out.stdout else ''}"
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CompileError(f"cpu: cannot run the C compiler {cc}: {e}") from e


def cache_dir() -> Path:
    root = os.environ.get("ANYCHIP_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "anychip"
    )
    path = Path(root) / "cpu"
    path.mkdir(parents=True, exist_ok=True)
    return path


_WORKING: dict[tuple[str, ...], list[str]] = {}  # wanted flags -> flags that built


def build(source: str, flags: list[str]) -> ctypes.CDLL:
    """The shared object of `source`, from the disk cache or freshly compiled."""
    cc = find_compiler()
    if cc is None:
        raise CompileError(f"cpu: {missing_compiler()}")
    use = _WORKING.get(tuple(flags), flags)
    key = hashlib.sha256(
        "\0".join([source, compiler_identity(cc), *use, *_ALWAYS]).encode()
    ).hexdigest()[:32]
    path = cache_dir() / f"{key}.so"
    if not path.exists():
        use = _compile(cc, source, use, path)
        _WORKING[tuple(flags)] = use
    return ctypes.CDLL(str(path))


def _compile(cc: str, source: str, flags: list[str], path: Path) -> list[str]:
    """Compile to a temporary file beside `path`, then move it there; on failure retry
    without the optional flags (vector width, -march=native, OpenMP). Returns the flags
    that worked."""
    tries = [flags] + [
        [f for f in flags if f not in _DROPPABLE[: i + 1]] for i in range(len(_DROPPABLE))
    ]
    errors = ""
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        c_file = Path(tmp) / "kernel.c"
        c_file.write_text(source)
        out = Path(tmp) / "kernel.so"
        for fl in tries:
            COMPILES[0] += 1
            r = subprocess.run(
                [cc, *fl, *_ALWAYS, "-o", str(out), str(c_file), "-lm"],
                capture_output=True,
                text=True,
            )
            if r.returncode == 0:
                os.replace(out, path)
                return fl
            errors = r.stderr
    raise CompileError(f"cpu: {cc} failed to compile a kernel:\n{errors[-3000:]}")
