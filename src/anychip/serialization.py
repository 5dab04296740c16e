"""Saving and loading tensors in the safetensors format, readable by PyTorch and others.

`save_file(state_dict, path)` / `load_file(path)` mirror `safetensors.torch`; bfloat16 is
written as BF16 from its uint16 bit patterns, so files move both ways without rounding.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from safetensors import TensorSpec, deserialize, serialize_file

from anychip import dtypes
from anychip.errors import DTypeError
from anychip.frontend.tensor import Tensor

PathLike = str | os.PathLike[str]

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
    "BOOL": dtypes.bool_,
}


def _storage(t: Tensor) -> np.ndarray:
    """The tensor's bytes as a C-ordered little-endian array (bfloat16: uint16 bits)."""
    from anychip.runtime import realize as rt

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
    specs: dict[str, Any] = {}
    keep_alive = []  # serialize_file reads raw pointers: hold the arrays until it returns
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            raise DTypeError(f"save_file: value for {name!r} is a {type(t).__name__}, not a Tensor")
        arr = _storage(t)
        keep_alive.append(arr)
        specs[name] = TensorSpec(
            dtype=t.dtype.name,  # anychip's names are safetensors' spec names
            shape=list(t.shape),
            data_ptr=arr.ctypes.data,
            data_len=arr.nbytes,
        )
    serialize_file(specs, os.fspath(filename), metadata=metadata)
    del keep_alive


def _to_tensor(name: str, info: dict[str, Any], device: Any) -> Tensor:
    code = info["dtype"]
    dt = _CODES.get(code)
    if dt is None:
        raise DTypeError(
            f"load_file: tensor {name!r} has dtype {code}, which anychip does not support "
            f"(supported: {', '.join(sorted(_CODES))})"
        )
    raw = np.frombuffer(bytes(info["data"]), dtype=dt.np.newbyteorder("<"))
    arr = raw.astype(dt.np).reshape(info["shape"])
    if dt is dtypes.bfloat16:  # Tensor() takes values: widen the bits to float32 exactly
        arr = dtypes.bf16_to_f32(arr.reshape(-1)).reshape(arr.shape)
    return Tensor(arr, dtype=dt, device=device)


def load_file(filename: PathLike, device: Any = None) -> dict[str, Tensor]:
    """Read every tensor of a .safetensors file, in file order, onto `device`."""
    with open(filename, "rb") as f:
        data = f.read()
    return {name: _to_tensor(name, info, device) for name, info in deserialize(data)}  # type: ignore[no-untyped-call]


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
