"""The bytes a trainer publishes to a server: one model update (a delta or a full snapshot).

An update is a safetensors file (so it is framed, typed and checked by a well-kept
library, and never unpickled). Its metadata holds the versions, its tensors the values:

    metadata  format = "anychip.rec.update/1", kind = "delta" | "full",
              version = V (the version the server is at after applying it),
              base_version = B (the version the delta was taken against; "full": -1)
              info.<key> = free-form strings (e.g. info.events_upto: the log id of
              the last event this version learned from, info.published_at)
    dense/<state key>          a dense parameter's new value (MLPs, cross layers, biases)
    rows/<table>/ids           int64 (n,): the rows changed, as the table's own ids
                               (row numbers of a plain table, raw ids of a DynamicEmbedding)
    rows/<table>/values        float32 (n, dim): their new values
    rows/<table>/evicted       int64 (m,): ids removed from a DynamicEmbedding

`<table>` is the table's state key without its trailing ".weight" (e.g.
"embedding_bags.user_id"). docs/rec-serving.md states the protocol around it (versions,
atomicity, authentication, recovery).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load, save as st_save

from anychip.errors import ArgumentError

FORMAT = "anychip.rec.update/1"
KINDS = ("delta", "full")


@dataclass(frozen=True)
class TableRows:
    """Rows of one table in an update: `values[i]` is the new row of id `ids[i]`;
    `evicted` ids leave the table."""

    ids: np.ndarray
    values: np.ndarray
    evicted: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass(frozen=True)
class Update:
    """One model update: `version` after applying it, taken against `base_version`."""

    version: int
    base_version: int
    kind: str = "delta"
    dense: dict[str, np.ndarray] = field(default_factory=dict)
    tables: dict[str, TableRows] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)  # e.g. the last event it learned


def encode(update: Update) -> bytes:
    """The update as the bytes of a safetensors file."""
    _check(update)
    tensors: dict[str, np.ndarray] = {}
    for key, value in update.dense.items():
        tensors[f"dense/{key}"] = np.ascontiguousarray(value)
    for name, t in update.tables.items():
        tensors[f"rows/{name}/ids"] = np.ascontiguousarray(t.ids, np.int64)
        tensors[f"rows/{name}/values"] = np.ascontiguousarray(t.values, np.float32)
        tensors[f"rows/{name}/evicted"] = np.ascontiguousarray(t.evicted, np.int64)
    meta = {
        **{f"info.{k}": str(v) for k, v in update.info.items()},
        "format": FORMAT,
        "kind": update.kind,
        "version": str(update.version),
        "base_version": str(update.base_version),
    }
    return bytes(st_save(tensors, metadata=meta))


def decode(data: bytes) -> Update:
    """The update in `data`; malformed or foreign bytes raise `ArgumentError`."""
    try:
        tensors = st_load(data)
        meta = _metadata(data)
    except (SafetensorError, ValueError, UnicodeDecodeError) as e:
        raise ArgumentError(f"rec.wire.decode: not a model update ({e})") from None
    if meta.get("format") != FORMAT:
        raise ArgumentError(f"rec.wire.decode: format {meta.get('format')!r}, expected {FORMAT!r}")
    try:
        version, base = int(meta["version"]), int(meta["base_version"])
    except (KeyError, ValueError):
        raise ArgumentError("rec.wire.decode: the update names no integer versions") from None
    dense: dict[str, np.ndarray] = {}
    parts: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        if key.startswith("dense/"):
            dense[key[len("dense/") :]] = value
        elif key.startswith("rows/") and key.count("/") >= 2:
            name, part = key[len("rows/") :].rsplit("/", 1)
            parts.setdefault(name, {})[part] = value
        else:
            raise ArgumentError(f"rec.wire.decode: unexpected tensor {key!r}")
    tables = {}
    for name, p in parts.items():
        if set(p) != {"ids", "values", "evicted"}:
            raise ArgumentError(
                f"rec.wire.decode: table {name!r} has parts {sorted(p)}, "
                "expected ids, values and evicted"
            )
        tables[name] = TableRows(p["ids"], p["values"], p["evicted"])
    info = {k[len("info.") :]: v for k, v in meta.items() if k.startswith("info.")}
    update = Update(version, base, meta.get("kind", ""), dense, tables, info)
    _check(update)
    return update


def _metadata(data: bytes) -> dict[str, str]:
    if len(data) < 8:
        raise ValueError("shorter than a safetensors header")
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n].decode("utf-8"))
    meta = header.get("__metadata__", {})
    return meta if isinstance(meta, dict) else {}


def _check(update: Update) -> None:
    op = "rec.wire"
    if update.kind not in KINDS:
        raise ArgumentError(f"{op}: kind {update.kind!r}, expected one of {KINDS}")
    if update.version < 0 or (update.kind == "delta" and update.base_version >= update.version):
        raise ArgumentError(
            f"{op}: version {update.version} must be >= 0 and above base_version "
            f"{update.base_version}"
        )
    for name, t in update.tables.items():
        ids, values, evicted = t.ids, t.values, t.evicted
        if ids.ndim != 1 or evicted.ndim != 1 or values.ndim != 2 or len(values) != len(ids):
            raise ArgumentError(
                f"{op}: table {name!r} has ids {ids.shape}, values {values.shape} and "
                f"evicted {evicted.shape}; expected (n,), (n, dim) and (m,)"
            )
        for what, a in (("ids", ids), ("evicted", evicted)):
            if a.dtype.kind not in "iu":
                raise ArgumentError(f"{op}: table {name!r} {what} are {a.dtype}, expected int64")
