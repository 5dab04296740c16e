"""load_file reads tensor by tensor into device memory (no copies of the file), rejects files
it cannot trust with a typed error, and every path into a tensor makes booleans canonical
(issue 9, items 7 and 11)."""

from __future__ import annotations

import json
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as np_save_file

import anychip as ac

RAW = np.array([0, 2, 255, 1, 0, 128], np.uint8)  # bool bytes that are not 0/1
TRUTH = RAW != 0


def test_load_file_peaks_at_the_tensors_size(device: str, tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    rng = np.random.default_rng(0)
    want = {
        "a": rng.standard_normal((500, 2000)).astype(np.float32),
        "b": rng.integers(0, 9, (1000, 500)).astype(np.int64),
    }
    np_save_file(want, str(path))
    size = path.stat().st_size
    tracemalloc.start()
    try:
        got = ac.load_file(path, device=device)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 1.2 * size, f"load_file peaked at {peak / size:.2f}x the file's size"
    for k, v in want.items():
        np.testing.assert_array_equal(got[k].numpy(), v)


def test_load_file_rejects_files_it_cannot_trust(tmp_path: Path) -> None:
    with pytest.raises(ac.ArgumentError, match="not a regular file"):
        ac.load_file("/dev/zero")
    with pytest.raises(ac.ArgumentError, match="not a regular file"):
        ac.load_file(tmp_path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(ac.ArgumentError, match="header"):
        ac.load_file(bad)
    bad.write_bytes(struct.pack("<Q", 5) + b"nope!")
    with pytest.raises(ac.ArgumentError, match="malformed header"):
        ac.load_file(bad)
    head = json.dumps({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    bad.write_bytes(struct.pack("<Q", len(head)) + head + b"\0" * 8)  # 8 of 16 bytes
    with pytest.raises(ac.ArgumentError, match="truncated"):
        ac.load_file(bad)
    head = json.dumps({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}).encode()
    bad.write_bytes(struct.pack("<Q", len(head)) + head + b"\0" * 16)
    with pytest.raises(ac.ArgumentError, match=r"shape \(3,\)"):
        ac.load_file(bad)


def check_canonical(m: ac.Tensor) -> None:
    """m holds TRUTH: ops must see True as 1 whatever byte the source had (vs torch)."""
    t = torch.from_numpy(TRUTH.copy())
    np.testing.assert_array_equal(m.numpy().view(np.uint8), TRUTH.astype(np.uint8))
    np.testing.assert_array_equal((~m).numpy(), (~t).numpy())
    np.testing.assert_array_equal((m & True).numpy(), (t & True).numpy())
    np.testing.assert_array_equal(ac.where(m, 1, 0).numpy(), torch.where(t, 1, 0).numpy())
    np.testing.assert_array_equal(m.to(ac.uint8).numpy(), t.to(torch.uint8).numpy())
    assert m.sum().item() == int(TRUTH.sum())


def test_bools_from_a_numpy_view_of_bytes(device: str) -> None:
    check_canonical(ac.tensor(RAW.view(bool), device=device))
    check_canonical(ac.tensor(RAW.view(bool), device=device, dtype=ac.bool))


def test_bools_from_a_safetensors_file(device: str, tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    head = json.dumps({"m": {"dtype": "BOOL", "shape": [6], "data_offsets": [0, 6]}}).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + RAW.tobytes())
    check_canonical(ac.load_file(path, device=device)["m"])


def test_bools_copied_between_devices(device: str) -> None:
    for other in ac.devices():
        check_canonical(ac.tensor(RAW.view(bool), device=other).to(device))


def test_bools_through_the_contracts_copyin(device: str) -> None:
    from anychip.ir.ops import Node, Ops
    from anychip.runtime.device import Buffer, get_backend

    backend = get_backend(device)
    handle = backend.allocate(RAW.size, ac.bool)
    backend.copyin(handle, RAW.view(bool))
    buf = Buffer(device, ac.bool, RAW.size, handle)
    check_canonical(ac.Tensor._from_node(Node(Ops.BUFFER, ac.bool, RAW.shape, device, (), buf)))
