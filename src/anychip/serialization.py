"""Saving and loading tensors in the safetensors format, readable by PyTorch and others.

`save_file(state_dict, path)` / `load_file(path)` mirror `safetensors.torch`; bfloat16 is
written as BF16 from its uint16 bit patterns, so files move both ways without rounding.
"""

from __future__ import annotations

import io
import json
import math
import operator
import os
import stat
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
from safetensors import TensorSpec, serialize_file

from anychip import dtypes
from anychip.errors import ArgumentError, DTypeError
from anychip.frontend.tensor import Tensor
from anychip.ir.ops import Node, Ops
from anychip.runtime import device as devmod, realize as rt
from anychip.runtime.device import get_backend

PathLike = str | os.PathLike[str]
_MAX_HEADER = 100 << 20  # bytes: safetensors' own limit on the JSON header

# safetensors header names <-> anychip dtypes
_CODES = {
    "F64": dtypes.float64,
    "F32": dtypes.float32,
    "F16": dtypes.float16,
    "BF16": dtypes.bfloat16,
    "I64": dtypes.int64,
    "I32": dtypes.int32,
    "I16": dtypes.int16,
    "I8": dtypes.int8,
    "U8": dtypes.uint8,
    "U32": dtypes.uint32,
    "U64": dtypes.uint64,
    "BOOL": dtypes.bool_,
}


def _storage(t: Tensor) -> np.ndarray:
    """The tensor's bytes as a C-ordered little-endian array (bfloat16: uint16 bits)."""
    t.realize()
    flat = rt.to_host(t.node.arg)
    return np.ascontiguousarray(flat.astype(flat.dtype.newbyteorder("<"), copy=False))


def save_file(
    tensors: Mapping[str, Tensor], filename: PathLike, metadata: dict[str, str] | None = None
) -> None:
    """Write `tensors` (e.g. a model's state_dict) to a .safetensors file.

    >>> import anychip as ac, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> ac.save_file({"w": ac.ones(2, dtype=ac.bfloat16)}, path)
    >>> ac.load_file(path)["w"].dtype
    anychip.bfloat16
    """
    specs, keep_alive = _specs(tensors, "save_file")
    serialize_file(specs, os.fspath(filename), metadata=metadata)
    del keep_alive


def _specs(tensors: Mapping[str, Tensor], op: str) -> tuple[dict[str, Any], list[np.ndarray]]:
    """safetensors' TensorSpec of each tensor, and the host arrays they point into (the
    serializer reads raw pointers: hold the arrays until it returns)."""
    specs: dict[str, Any] = {}
    keep_alive = []
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            raise DTypeError(f"{op}: value for {name!r} is a {type(t).__name__}, not a Tensor")
        arr = _storage(t)
        keep_alive.append(arr)
        specs[name] = TensorSpec(
            dtype=t.dtype.name,  # anychip's names are safetensors' spec names
            shape=list(t.shape),
            data_ptr=arr.ctypes.data,
            data_len=arr.nbytes,
        )
    return specs, keep_alive


def load_file(filename: PathLike, device: Any = None) -> dict[str, Tensor]:
    """Read every tensor of a .safetensors file, in file order, onto `device`.

    Tensors are read one by one straight into their device buffers where the device's
    memory is host memory (`Backend.host_view`), so loading needs no memory beyond the
    tensors themselves; elsewhere through one tensor-sized host array at a time. A path
    that is not a regular file, or a malformed or truncated file, raises ArgumentError."""
    name = os.fspath(filename)
    if not stat.S_ISREG(os.stat(name).st_mode):  # /dev/zero, a pipe, a directory: no end
        raise ArgumentError(f"load_file: {name!r} is not a regular file")
    with open(name, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):  # replaced since: still check what was opened
            raise ArgumentError(f"load_file: {name!r} is not a regular file")
        entries, start = _header(f, st.st_size, name)
        return {key: _read(f, name, key, info, start, device) for key, info in entries}


def _header(f: io.BufferedReader, size: int, name: str) -> tuple[list[tuple[str, Any]], int]:
    """The file's tensor entries in file order, and where their data starts."""
    head = f.read(8)
    if len(head) < 8:
        raise ArgumentError(f"load_file: {name!r} ({size} bytes) is too short for a header")
    n = int.from_bytes(head, "little")
    if n > min(size - 8, _MAX_HEADER):
        raise ArgumentError(f"load_file: {name!r} declares a {n}-byte header in a {size}-byte file")
    try:
        header = json.loads(f.read(n))
        assert isinstance(header, dict)
        entries = [(k, v) for k, v in header.items() if k != "__metadata__"]
        entries.sort(key=lambda kv: int(kv[1]["data_offsets"][0]))
    except (ValueError, AssertionError, KeyError, TypeError, IndexError) as e:
        raise ArgumentError(f"load_file: {name!r} has a malformed header ({e})") from None
    return entries, 8 + n


def _read(f: io.BufferedReader, name: str, key: str, info: Any, start: int, device: Any) -> Tensor:
    code = info.get("dtype") if isinstance(info, dict) else None
    dt = _CODES.get(code) if isinstance(code, str) else None
    if dt is None:
        raise DTypeError(
            f"load_file: tensor {key!r} has dtype {code}, which anychip does not support "
            f"(supported: {', '.join(sorted(_CODES))})"
        )
    try:
        shape = tuple(operator.index(d) for d in info["shape"])
        begin, end = (operator.index(o) for o in info["data_offsets"])
    except (KeyError, TypeError, ValueError) as e:
        raise ArgumentError(f"load_file: tensor {key!r} in {name!r}: bad entry ({e})") from None
    numel = math.prod(shape)
    if min(shape, default=0) < 0 or begin < 0 or end - begin != numel * dt.itemsize:
        raise ArgumentError(
            f"load_file: tensor {key!r} in {name!r}: shape {shape} of {dt.name} does not "
            f"match its data offsets [{begin}, {end})"
        )
    dev = devmod.canonical(device, "load_file", f"shape {shape}, dtype {dt.name}")
    devmod.check_size(dev, shape, dt.itemsize, f"load_file {key!r} ({dt.name})")
    buf = rt.allocate(dev, numel, dt)
    f.seek(start + begin)
    backend = get_backend(dev)
    view = backend.host_view(buf.handle) if sys.byteorder == "little" else None
    if view is not None:
        _read_into(f, view[:numel].view(np.uint8), name, key)
        if dt is dtypes.bool_:  # any nonzero byte is True, stored as 1
            np.not_equal(view[:numel].view(np.uint8), 0, out=view[:numel])
    else:
        raw = np.empty(numel, dt.np.newbyteorder("<"))
        _read_into(f, raw.view(np.uint8), name, key)
        data = raw.astype(dt.np, copy=False)
        backend.copyin(buf.handle, rt.canonical_bool(data) if dt is dtypes.bool_ else data)
    return Tensor._from_node(Node(Ops.BUFFER, dt, shape, dev, (), buf))


def _read_into(f: io.BufferedReader, out: np.ndarray, name: str, key: str) -> None:
    mv = memoryview(out)  # type: ignore[arg-type]
    done = 0
    while done < len(mv):
        got = f.readinto(mv[done:])
        if not got:
            raise ArgumentError(
                f"load_file: {name!r} is truncated: tensor {key!r} needs {len(mv)} bytes, "
                f"the file has {done}"
            )
        done += got


def save(obj: Any, filename: PathLike) -> None:
    """`anychip.save(obj, path)`: nested checkpoints in the safetensors format (see
    anychip.checkpoint)."""
    from anychip import checkpoint

    checkpoint.save(obj, filename)


def load(filename: PathLike, device: Any = None) -> Any:
    """`anychip.load(path)`: what `save` wrote (a plain safetensors file: a dict of tensors)."""
    from anychip import checkpoint

    return checkpoint.load(filename, device=device)


__all__ = ["load", "load_file", "save", "save_file"]
