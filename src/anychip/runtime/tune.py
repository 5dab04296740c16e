"""Autotuning of generated GEMMs, cached per machine: what the cpu backend asks for a tiling.

`tuned_tiling(spec)`: the cached tuned tiling for the spec's shape class, a fresh search
first when ANYCHIP_TUNE=1, else the generator's default. `anychip tune` fills the cache.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import platform
import shlex
import subprocess
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from anychip.codegen import gemm
from anychip.codegen.gemm import GemmSpec, GemmTiling
from anychip.dtypes import to_dtype
from anychip.errors import CompileError, ShapeError
from anychip.runtime.tune_search import (
    TileChoice,
    TuneResult,
    search,
    shape_class,
    tune_spec,
)

__all__ = ["TileChoice", "TuneResult", "cache_path", "search", "shape_class", "tune_spec"]
__all__ += ["tune_workload", "tuned_tiling", "workload"]
CACHE_VERSION = 1


@functools.cache
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def _compiler_version(cc: str) -> str:
    try:
        argv = [*shlex.split(cc), "--version"]  # CC may carry arguments: "ccache gcc"
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return "missing"
    lines = r.stdout.splitlines()
    return lines[0].strip() if r.returncode == 0 and lines else "missing"


def machine_fingerprint() -> dict[str, str]:
    """What a tuning result depends on: CPU model, cores, compiler and its version, ISA.

    >>> sorted(machine_fingerprint())
    ['compiler', 'cores', 'cpu', 'vector']
    """
    host = gemm.host_info()
    cc = os.environ.get("CC", "cc")
    return {
        "cpu": _cpu_model(),
        "cores": str(host.cores),
        "compiler": f"{cc}: {_compiler_version(cc)}",
        "vector": f"{host.vec_bytes} bytes x {host.vec_regs} registers",
    }


def cache_path() -> Path:
    """`$ANYCHIP_CACHE_DIR/tune/gemm-<machine fingerprint hash>.json` (default cache dir:
    ~/.cache/anychip)."""
    root = os.environ.get("ANYCHIP_CACHE_DIR") or str(Path.home() / ".cache" / "anychip")
    fp = json.dumps(machine_fingerprint(), sort_keys=True).encode()
    return Path(root) / "tune" / f"gemm-{hashlib.sha256(fp).hexdigest()[:16]}.json"


# ---------------------------------------------------------------- the cache file

_MEMO: dict[Path, tuple[int, dict[str, Any]]] = {}  # path -> (mtime_ns, entries)


def _warn(path: Path, why: str) -> None:
    warnings.warn(f"anychip tune: ignoring the cache {path}: {why}", RuntimeWarning, stacklevel=3)


def _read(path: Path, quiet: bool = False) -> dict[str, Any]:
    """The entries of a cache file; {} with a warning when it is corrupt or foreign."""
    warn = (lambda p, w: None) if quiet else _warn
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as e:  # bad JSON or bytes, nesting too deep
        warn(path, f"unreadable ({type(e).__name__}: {str(e)[:200]})")
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        warn(path, f"not a version-{CACHE_VERSION} anychip tuning cache")
        return {}
    if data.get("machine") != machine_fingerprint():
        warn(path, f"tuned on another machine or compiler: {data.get('machine')}")
        return {}
    entries = data.get("entries")
    if not isinstance(entries, dict):
        warn(path, "no 'entries' table")
        return {}
    return entries


def _entries(path: Path) -> dict[str, Any]:
    """`_read`, once per version of the file in this process (one warning, cheap lookups)."""
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return {}
    memo = _MEMO.get(path)
    if memo is None or memo[0] != mtime:
        memo = _MEMO[path] = (mtime, _read(path))
    return memo[1]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of the cache between processes (flock where it exists)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic rename still keeps the file whole
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def save(result: TuneResult, path: Path | None = None) -> Path:
    """Record `result` under its shape class in the machine's cache file; return its path."""
    path = path or cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.with_suffix(".lock")):
        entries = _read(path, quiet=True)  # a corrupt or foreign file is replaced
        entries[result.shape_class] = {
            "choice": asdict(result.choice),
            "tiling": asdict(result.tiling),
            "default_gflops": round(result.default_gflops, 2),
            "tuned_gflops": round(result.tuned_gflops, 2),
        }
        data = {"version": CACHE_VERSION, "machine": machine_fingerprint(), "entries": entries}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)  # readers see the old file or the new one, never half of one
    _MEMO.pop(path, None)
    return path


# what a cached choice may hold: the search never leaves these ranges, and a hostile file
# must not make the generator divide by zero or unroll a register tile of a billion rows
_INT_RANGES = {"mr": (1, 32), "nr": (1, 256), "vec_bytes": (0, 64), "kc": (0, 1 << 16)}
_INT_RANGES["unroll"] = (1, 16)


def parse_choice(raw: Any) -> TileChoice:
    """A TileChoice from a cache entry's `choice` table, its fields checked (type and
    range); ValueError says what is wrong.

    >>> parse_choice({"mr": 6, "nr": 16, "vec_bytes": 32}).nr
    16
    """
    if not isinstance(raw, dict):
        raise ValueError(f"'choice' is not a table: {raw!r}")
    for name, value in raw.items():
        if name == "l2_share":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (ok and 0.0 < value <= 1.0):
                raise ValueError(f"l2_share={value!r}: a number in (0, 1] expected")
        elif name in _INT_RANGES:
            lo, hi = _INT_RANGES[name]
            if not (isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi):
                raise ValueError(f"{name}={value!r}: an integer in [{lo}, {hi}] expected")
        else:
            raise ValueError(f"unknown field {name!r}")
    return TileChoice(**raw)


def cached_choice(spec: GemmSpec, path: Path | None = None) -> TileChoice | None:
    """The cached choice for `spec`'s shape class, or None (a bad entry warns)."""
    path = path or cache_path()
    entry = _entries(path).get(shape_class(spec))
    if entry is None:
        return None
    try:
        if not isinstance(entry, dict):
            raise ValueError(f"the entry is not a table: {entry!r}")
        choice = parse_choice(entry.get("choice"))
        t = choice.tiling(gemm.fold_broadcast_batch(spec))
        lanes = t.vec_bytes // spec.acc_dtype.itemsize
        if t.vec_bytes and (lanes == 0 or t.nr % lanes):
            raise ShapeError(f"nr={t.nr} is not a multiple of {lanes} lanes")
    # ShapeError is a ValueError; ArithmeticError: zeros or overflows the checks missed
    except (KeyError, TypeError, ValueError, ArithmeticError) as e:
        _warn(path, f"bad entry for {shape_class(spec)!r}: {e}")
        return None
    return choice


def tuned_tiling(spec: GemmSpec) -> GemmTiling:
    """The tiling the cpu backend should render `spec` with: the cached tuned one for its
    shape class; else, with ANYCHIP_TUNE=1, the result of a search now (cached for next
    time); else `gemm.default_tiling`. Pass it on as `gemm_source(spec, tiling, name)`.

    >>> spec = GemmSpec(1, 64, 64, 64, "float32")
    >>> isinstance(tuned_tiling(spec), GemmTiling)
    True
    """
    folded = gemm.fold_broadcast_batch(spec)
    choice = cached_choice(folded)
    if choice is not None:
        return choice.tiling(folded)
    if os.environ.get("ANYCHIP_TUNE") == "1" and folded.flops > 0:  # empty: nothing to time
        try:
            result = tune_spec(folded)
        except CompileError as e:
            warnings.warn(f"anychip tune: using the default tiling: {e}", RuntimeWarning, 2)
        else:
            try:
                save(result)
            except OSError as e:  # a read-only cache: the result still serves this process
                warnings.warn(
                    f"anychip tune: cannot save to {cache_path()}: {e}", RuntimeWarning, 2
                )
            return result.tiling
    return gemm.default_tiling(folded)


# ---------------------------------------------------------------- `anychip tune`


def workload(
    sizes: Sequence[int] = (256, 512, 1024, 2048),
    mlp: tuple[int, int, int] = (256, 1024, 1024),
    dtype: str = "float32",
) -> list[tuple[str, GemmSpec]]:
    """The GEMMs a typical workload runs: squares, and one Linear layer's training step
    (batch, in, out): y = x @ W.T, dx = dy @ W, dW = dy.T @ x, W stored (out, in).

    >>> [name for name, _ in workload([64], (8, 16, 32))]
    ['64x64x64', 'mlp y=x@W.T', 'mlp dx=dy@W', 'mlp dW=dy.T@x']
    """
    dt = to_dtype(dtype)
    specs = [(f"{n}x{n}x{n}", GemmSpec(1, n, n, n, dt)) for n in sizes]
    b, i, o = mlp
    specs += [
        ("mlp y=x@W.T", GemmSpec(1, b, o, i, dt, b_strides=(0, 1, i))),
        ("mlp dx=dy@W", GemmSpec(1, b, i, o, dt)),
        ("mlp dW=dy.T@x", GemmSpec(1, o, i, b, dt, a_strides=(0, 1, o))),
    ]
    return specs


def _brief(t: GemmTiling) -> str:
    split = "batch" if t.batch_parallel else "rows/cols"
    return (
        f"mr={t.mr} nr={t.nr} vec={t.vec_bytes}B kc={t.kc} mc={t.mc} nc={t.nc} "
        f"unroll={t.unroll} threads={t.threads} ({split})"
    )


def tune_workload(
    specs: Sequence[tuple[str, GemmSpec]],
    force: bool = False,
    out: Callable[[str], object] = print,
) -> list[TuneResult]:
    """Tune each (label, spec) not yet cached (all with `force`), save, print a table."""
    path = cache_path()
    out(f"machine: {machine_fingerprint()}")
    out(f"{'shape':<16} {'default GFLOP/s':>15} {'tuned GFLOP/s':>13} {'':>8}  chosen tiling")
    results = []
    for label, spec in specs:
        entry = None if force else _entries(path).get(shape_class(spec))
        choice = None if entry is None else cached_choice(spec, path)
        if entry is not None and choice is not None:
            speeds = [entry.get(k) for k in ("default_gflops", "tuned_gflops")]
            speeds = [float(v) if isinstance(v, (int, float)) else math.nan for v in speeds]
            tiling = choice.tiling(gemm.fold_broadcast_batch(spec))
            r = TuneResult(shape_class(spec), choice, tiling, *speeds)
            note = "cached"
        else:
            r = tune_spec(spec)
            save(r, path)
            note = f"{r.tuned_gflops / r.default_gflops:.2f}x" if r.default_gflops else "-"
        results.append(r)
        out(
            f"{label:<16} {r.default_gflops:>15.1f} {r.tuned_gflops:>13.1f} {note:>8}  "
            f"{_brief(r.tiling)}"
        )
    out(f"saved to {path}")
    return results
