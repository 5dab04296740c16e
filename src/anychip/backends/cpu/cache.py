"""The cpu backend's disk cache of shared objects: content-addressed entries that are checked
before they are loaded, rebuilt when bad, written crash-safely and kept under a size cap.

An entry is `<key>.so` and `<key>.json`; the JSON records the object's SHA-256 and size, the
hash of the C source and the kernel signature it was built from. `lookup` checks all of them
before anything is dlopen'ed (dlopen of a truncated object dies with SIGBUS), so a corrupt,
truncated, foreign or unreadable entry is rebuilt with a one-line warning. See docs/cache.md.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from anychip.errors import ArgumentError, CompileError

FORMAT = 1  # bump when the entry layout changes: older entries then read as foreign
DEFAULT_MB = 2048.0  # ANYCHIP_CACHE_MB: the disk cache's default cap
STALE_S = 24 * 3600  # a temporary folder this old is a leftover whoever made it
_TMP = ".tmp-"  # prefix of build folders: .tmp-<host>-<pid>-<random>
_PRIVATE = "anychip-cache-"  # prefix of fallback folders: anychip-cache-<host>-<pid>-<random>


def _owned(prefix: str) -> str:
    """A temporary name's prefix saying whose it is, so leftovers can be told apart."""
    return f"{prefix}{socket.gethostname()}-{os.getpid()}-"


def warn(msg: str) -> None:
    warnings.warn(f"anychip cpu cache: {msg}", RuntimeWarning, stacklevel=3)


# ---------------------------------------------------------------- where the cache lives


def configured_dir() -> Path:
    """`$ANYCHIP_CACHE_DIR/cpu`, default `~/.cache/anychip/cpu`."""
    root = os.environ.get("ANYCHIP_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "anychip"
    )
    return Path(root) / "cpu"


def _noexec(path: Path) -> bool:
    """True on a filesystem mounted noexec: objects there could not be loaded."""
    flag = getattr(os, "ST_NOEXEC", 0)
    return bool(flag and os.statvfs(path).f_flag & flag)


def _unusable(path: Path) -> str | None:
    """Why `path` cannot hold loadable objects (created if missing), or None if it can."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=_TMP + "probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
        if _noexec(path):
            return "its filesystem is mounted noexec"
    except OSError as e:
        return f"{type(e).__name__}: {e.strerror or e}"
    return None


@functools.cache  # once per process per configured folder
def _resolve(wanted: Path) -> tuple[Path | None, str | None]:
    """(the folder to use, None) or (None, why no folder is usable)."""
    why = _unusable(wanted)
    if why is None:
        remove_leftovers(wanted)
        remove_leftovers(wanted, "tmp")  # earlier versions' build folders (by age only)
        return wanted, None
    private: Path | None = None
    # killed processes' fallback folders (by pid only: a live process may idle for days)
    remove_leftovers(Path(tempfile.gettempdir()), _PRIVATE, max_age=None)
    try:
        private = Path(tempfile.mkdtemp(prefix=_owned(_PRIVATE)))
    except OSError as e:
        fallback_why: str | None = f"{type(e).__name__}: {e.strerror or e}"
    else:
        fallback_why = _unusable(private)
        atexit.register(_remove_private, private, os.getpid())
    if private is None or fallback_why is not None:
        return None, (
            f"the kernel cache folder {wanted} is unusable ({why}) and so is a temporary "
            f"folder ({fallback_why}); set ANYCHIP_CACHE_DIR to a writable folder on a "
            "filesystem that allows executables"
        )
    warn(
        f"{wanted} is unusable ({why}); using the private temporary folder {private} for "
        "this process (set ANYCHIP_CACHE_DIR to a writable folder to keep compiled kernels)"
    )
    return private, None


def _remove_private(folder: Path, owner: int) -> None:
    """At exit, the fallback folder goes with its process (not with a forked child)."""
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)


@functools.cache  # asked on every device lookup: a dict hit, not a path computation
def _resolve_env(env: str | None, home: str | None) -> tuple[Path | None, str | None]:
    return _resolve(configured_dir())


def forget() -> None:
    """Forget which folder this process chose (tests that change the folder's state)."""
    _resolve.cache_clear()
    _resolve_env.cache_clear()


def problem() -> str | None:
    """Why no cache folder can be used (so `cpu` is unavailable), or None."""
    return _resolve_env(os.environ.get("ANYCHIP_CACHE_DIR"), os.environ.get("HOME"))[1]


def cache_dir() -> Path:
    """The folder entries live in: the configured one, or a private temporary one (with a
    warning naming ANYCHIP_CACHE_DIR) when that is not writable or is mounted noexec."""
    path, why = _resolve_env(os.environ.get("ANYCHIP_CACHE_DIR"), os.environ.get("HOME"))
    if path is None:
        raise CompileError(f"cpu: {why}")
    return path


def remove_leftovers(folder: Path, prefix: str = _TMP, max_age: float | None = STALE_S) -> None:
    """Remove build folders left by killed compiles: this host's whose process is gone,
    and anyone's older than `max_age` seconds."""
    host = socket.gethostname()
    now = time.time()
    for p in folder.glob(prefix + "*"):
        owner, _, rest = p.name[len(prefix) :].rpartition("-")[0].rpartition("-")
        pid = int(rest) if rest.isdigit() else -1
        try:
            old = max_age is not None and now - p.lstat().st_mtime > max_age
        except OSError:
            continue
        if old or (owner == host and pid > 0 and not _alive(pid)):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    p.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


@contextlib.contextmanager
def build_folder(folder: Path) -> Iterator[Path]:
    """A temporary folder inside the cache (same filesystem: moves out of it are atomic),
    named so `remove_leftovers` can tell whether its owner is still alive."""
    folder.mkdir(parents=True, exist_ok=True)  # removed while we ran: make it again
    tmp = Path(tempfile.mkdtemp(prefix=_owned(_TMP), dir=folder))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- entries


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def lookup(folder: Path, key: str, source_sha: str, signature: str) -> Path | None:
    """The entry's object if it is whole and was built from this source for this signature;
    None when there is none. A bad entry warns and is left for the caller's rebuild to
    replace (not removed: another process may have just replaced it with a good one)."""
    so, meta = folder / f"{key}.so", folder / f"{key}.json"
    if not so.exists():
        return None
    why = _check(so, meta, key, source_sha, signature)
    if why is None:
        with contextlib.suppress(OSError):
            os.utime(so)  # least-recently-used order for eviction
        return so
    warn(f"rebuilding {so.name}: {why}")
    return None


def _check(so: Path, meta: Path, key: str, source_sha: str, signature: str) -> str | None:
    try:
        info = json.loads(meta.read_text())
        data = so.read_bytes()
    except FileNotFoundError:
        return "its record is missing (an interrupted write)"
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return f"unreadable ({e})"
    if not isinstance(info, dict) or info.get("format") != FORMAT or info.get("key") != key:
        return "its record is not this entry's"
    if info.get("source_sha256") != source_sha or info.get("signature") != signature:
        return "built from another kernel's source"
    if info.get("size") != len(data):
        return f"truncated or padded ({len(data)} bytes, {info.get('size')} recorded)"
    if info.get("sha256") != sha256(data):
        return "its checksum does not match (corrupt, or another kernel's object)"
    return None


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def store(folder: Path, key: str, built: Path, record: dict[str, Any]) -> Path:
    """Move the object `built` (inside a `build_folder`) into the cache as entry `key`,
    with its record; both files are fsynced before their rename, the record first (an
    object without a record reads as an interrupted write). Returns the object's path."""
    data = built.read_bytes()
    record = {**record, "format": FORMAT, "key": key, "size": len(data), "sha256": sha256(data)}
    meta_tmp = built.with_suffix(".json")
    _write_synced(meta_tmp, json.dumps(record, indent=1).encode())
    with open(built, "rb") as f:
        os.fsync(f.fileno())
    so = folder / f"{key}.so"
    os.replace(meta_tmp, folder / f"{key}.json")
    os.replace(built, so)
    _sync_dir(folder)
    _account(folder, len(data))
    return so


def _sync_dir(folder: Path) -> None:
    """Make the renames durable (a crash after an un-fsynced rename can leave junk)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---------------------------------------------------------------- size cap (LRU)


def cap_bytes() -> int:
    """`ANYCHIP_CACHE_MB` (default DEFAULT_MB) in bytes."""
    raw = os.environ.get("ANYCHIP_CACHE_MB", "")
    try:
        mb = float(raw) if raw else DEFAULT_MB
    except ValueError:
        mb = -1.0
    if not mb >= 0:  # also NaN
        raise ArgumentError(f"ANYCHIP_CACHE_MB={raw!r}: a size in megabytes >= 0 expected")
    return int(mb * 2**20)


_USAGE: dict[Path, int] = {}  # folder -> bytes this process believes it holds
_LOCK = threading.Lock()


def usage(folder: Path) -> int:
    return sum(p.stat().st_size for p in _entries(folder) if p.exists())


def _entries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.suffix in (".so", ".json")]


def _account(folder: Path, added: int) -> None:
    """Count a new entry; past the cap, evict (a full scan only then, so stores stay cheap)."""
    cap = cap_bytes()
    with _LOCK, contextlib.suppress(OSError):  # eviction is best effort: never fail a build
        if folder not in _USAGE:
            _USAGE[folder] = usage(folder)
        else:
            _USAGE[folder] += added
        if _USAGE[folder] > cap:
            _USAGE[folder] = evict(folder, cap)


def evict(folder: Path, cap: int) -> int:
    """Remove least-recently-used entries (oldest object mtime: `lookup` touches objects it
    serves) until the folder holds at most 3/4 of `cap` (room before the next scan); the
    newest entry always stays. Returns the bytes left."""
    sizes: dict[str, int] = {}
    used: dict[str, float] = {}
    for p in _entries(folder):
        try:
            st = p.stat()
        except OSError:  # removed by another process meanwhile
            continue
        sizes[p.stem] = sizes.get(p.stem, 0) + st.st_size
        if p.suffix == ".so":
            used[p.stem] = st.st_mtime
    total = sum(sizes.values())
    order = sorted(sizes, key=lambda k: used.get(k, 0.0))  # record-only leftovers go first
    for key in order[:-1]:
        if total <= cap * 3 // 4:
            break
        for suffix in (".so", ".json"):
            with contextlib.suppress(OSError):
                (folder / f"{key}{suffix}").unlink()
        total -= sizes[key]
    return total
