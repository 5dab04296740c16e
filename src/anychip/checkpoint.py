"""`anychip.save` / `anychip.load`: checkpoints of nested dicts, lists and tuples of tensors,
numbers and strings, in one safetensors file (tensors) with a JSON structure in its metadata.

Loading never runs code from the file (no pickle): the structure is plain JSON, and a file
written by another tool with no structure loads as a flat dict of tensors.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from safetensors import SafetensorError, deserialize, serialize

from anychip import dtypes
from anychip.errors import ArgumentError, DTypeError
from anychip.frontend.tensor import Tensor
from anychip.serialization import _CODES, PathLike, _specs

STRUCTURE_KEY = "anychip.structure"  # the safetensors metadata entry holding the JSON tree
_FORMAT = 1


class _Writer:
    """Turns a Python object into a JSON tree, collecting its tensors under dotted names."""

    def __init__(self) -> None:
        self.tensors: dict[str, Tensor] = {}
        self.names: dict[int, str] = {}  # id(tensor) -> name: a shared tensor is saved once

    def tensor_name(self, t: Tensor, path: str) -> str:
        if id(t) in self.names:
            return self.names[id(t)]
        name, n = path or "tensor", 1
        while name in self.tensors:  # {"a.b": x, "a": {"b": y}} both want "a.b"
            name, n = f"{path}#{n}", n + 1
        self.tensors[name], self.names[id(t)] = t, name
        return name

    def encode(self, obj: Any, path: str) -> Any:
        if isinstance(obj, Tensor):
            node: dict[str, Any] = {"tensor": self.tensor_name(obj, path)}
            if obj.requires_grad:
                node["requires_grad"] = True
            return node
        if obj is None or isinstance(obj, (bool, int, str)):
            return obj
        if isinstance(obj, float):  # JSON has no inf or nan: spell them as strings
            return obj if math.isfinite(obj) else {"float": repr(obj)}
        if isinstance(obj, np.generic):
            return self.encode(obj.item(), path)
        if isinstance(obj, dtypes.DType):
            return {"dtype": obj.name}
        if isinstance(obj, Mapping):
            items = [[self.encode(k, ""), self.encode(v, _join(path, k))] for k, v in obj.items()]
            return {"dict": items}
        if isinstance(obj, (list, tuple)):
            kind = "list" if isinstance(obj, list) else "tuple"
            return {kind: [self.encode(v, _join(path, i)) for i, v in enumerate(obj)]}
        raise DTypeError(
            f"save: cannot save a value of type {type(obj).__name__} at {path or 'the top'!r}; "
            "checkpoints hold tensors, numbers, strings, None, dtypes, and dicts, lists and "
            "tuples of them"
        )


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _decode(node: Any, tensors: dict[str, Tensor]) -> Any:
    if not isinstance(node, dict):
        return node
    ((kind, body), *rest) = node.items()
    if kind == "tensor":
        t = tensors[body]
        return t.requires_grad_() if rest and rest[0] == ("requires_grad", True) else t
    if kind == "dict":
        return {_decode(k, tensors): _decode(v, tensors) for k, v in body}
    if kind == "list":
        return [_decode(v, tensors) for v in body]
    if kind == "tuple":
        return tuple(_decode(v, tensors) for v in body)
    if kind == "float":
        return float(body)
    if kind == "dtype":
        return dtypes.BY_NAME[body]
    raise ArgumentError(f"load: unknown entry {kind!r} in the checkpoint's structure")


def save(obj: Any, f: PathLike | io.IOBase, metadata: dict[str, str] | None = None) -> None:
    """Write `obj` (a tensor, or nested dicts/lists/tuples of tensors, numbers, strings) to
    `f` (a path or a binary file object), as `torch.save` does.

    >>> import anychip as ac, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.safetensors")
    >>> ac.save({"w": ac.ones(2), "step": 3, "name": "run1"}, path)
    >>> ckpt = ac.load(path)
    >>> ckpt["w"].tolist(), ckpt["step"], ckpt["name"]
    ([1.0, 1.0], 3, 'run1')
    """
    writer = _Writer()
    tree = writer.encode(obj, "")
    specs, keep_alive = _specs(writer.tensors, "save")
    meta = dict(metadata or {})
    meta[STRUCTURE_KEY] = json.dumps({"format": _FORMAT, "tree": tree})
    data = serialize(specs, metadata=meta)
    del keep_alive
    if isinstance(f, (str, os.PathLike)):
        with open(f, "wb") as out:
            out.write(data)
    else:
        f.write(data)


def _metadata(data: bytes) -> dict[str, str]:
    """The safetensors header's `__metadata__` (8-byte little-endian length, then JSON)."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    meta: dict[str, str] = header.get("__metadata__") or {}
    return meta


def load(
    f: PathLike | io.IOBase,
    map_location: Any = None,
    *,
    weights_only: bool = True,
    device: Any = None,
) -> Any:
    """Read what `save` wrote (a plain safetensors file gives a dict of tensors); tensors
    go to `map_location` (or `device`): a device name, or None for the default device.
    Nothing in the file is executed, so `weights_only` is accepted and always holds."""
    if map_location is not None and not isinstance(map_location, str):
        raise ArgumentError(
            f"load: map_location must be a device name, got {type(map_location).__name__}"
        )
    where = map_location if map_location is not None else device
    if isinstance(f, (str, os.PathLike)):
        with open(f, "rb") as src:
            data = src.read()
    else:
        data = f.read()
    try:
        entries = deserialize(data)  # type: ignore[no-untyped-call]
    except SafetensorError as e:
        kind = "a zip archive (a torch.save pickle?)" if data[:2] == b"PK" else "not safetensors"
        raise ArgumentError(
            f"load: the file is {kind} ({e}); anychip reads only safetensors, never pickles "
            "(convert a PyTorch checkpoint with safetensors.torch.save_file)"
        ) from None
    tensors = {name: _to_tensor(name, info, where) for name, info in entries}
    structure = _metadata(data).get(STRUCTURE_KEY)
    if structure is None:
        return tensors
    return _decode(json.loads(structure)["tree"], tensors)


__all__ = ["load", "save"]


def _to_tensor(name: str, info: dict[str, Any], device: Any) -> Tensor:
    """One entry of a deserialised safetensors blob as a tensor on `device`."""
    code = info["dtype"]
    dt = _CODES.get(code)
    if dt is None:
        raise DTypeError(
            f"load: tensor {name!r} has dtype {code}, which anychip does not support "
            f"(supported: {', '.join(sorted(_CODES))})"
        )
    raw = np.frombuffer(bytes(info["data"]), dtype=dt.np.newbyteorder("<"))
    arr = raw.astype(dt.np).reshape(info["shape"])
    if dt is dtypes.bfloat16:  # Tensor() takes values: widen the bits to float32 exactly
        arr = dtypes.bf16_to_f32(arr.reshape(-1)).reshape(arr.shape)
    return Tensor(arr, dtype=dt, device=device)
