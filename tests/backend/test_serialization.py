"""safetensors files: exact round trips of every dtype, and files moving both ways between
anychip and PyTorch (safetensors.torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file as torch_load_file, save_file as torch_save_file

import anychip as ac
from anychip import nn

DTYPES = [
    "float32",
    "float64",
    "float16",
    "bfloat16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint8",
    "bool",
]


def _values(dtype: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype == "bool":
        return torch.rand(shape, generator=g) > 0.5
    if dtype in ("uint8", "int8", "int16", "int32", "int64"):
        return torch.randint(0 if dtype == "uint8" else -100, 100, shape, generator=g).to(
            getattr(torch, dtype)
        )
    return (torch.randn(shape, generator=g) * 100).to(getattr(torch, dtype))


def _bits(t: torch.Tensor) -> np.ndarray:
    """Raw bit patterns, so float comparisons are exact (NaN-safe, bf16 included)."""
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy()
    return t.numpy()


def _ac_bits(t: ac.Tensor) -> np.ndarray:
    if t.dtype is ac.bfloat16:  # values are exact in float32: take their top 16 bits
        return (t.numpy().astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).view(np.int16)
    return t.numpy()


def test_round_trip_every_dtype(tmp_path: Path, device: str) -> None:
    tensors = {
        f"t_{d}": ac.tensor(
            _values(d, (3, 4), i).float().numpy()
            if d == "bfloat16"
            else _values(d, (3, 4), i).numpy(),
            dtype=getattr(ac, "bool_" if d == "bool" else d),
            device=device,
        )
        for i, d in enumerate(DTYPES)
    }
    tensors["scalar"] = ac.tensor(2.5, device=device)
    tensors["empty"] = ac.zeros(0, 3, device=device)
    path = tmp_path / "all.safetensors"
    ac.save_file(tensors, path, metadata={"format": "pt"})
    back = ac.load_file(path, device=device)
    assert set(back) == set(tensors)
    for k, t in tensors.items():
        assert back[k].dtype is t.dtype and back[k].shape == t.shape and back[k].device == device
        np.testing.assert_array_equal(_ac_bits(back[k]), _ac_bits(t), err_msg=k)


def test_torch_file_loads_here(tmp_path: Path, device: str) -> None:
    want = {d: _values(d, (2, 5), i) for i, d in enumerate(DTYPES)}
    path = tmp_path / "torch.safetensors"
    torch_save_file(want, str(path))
    got = ac.load(path, device=device)
    for d, t in want.items():
        assert got[d].dtype.name == d
        np.testing.assert_array_equal(_ac_bits(got[d]), _bits(t), err_msg=d)


def test_our_file_loads_in_torch(tmp_path: Path, device: str) -> None:
    src = {d: _values(d, (4, 3), 10 + i) for i, d in enumerate(DTYPES)}
    ours = {
        d: ac.tensor(
            t.float().numpy() if d == "bfloat16" else t.numpy(),
            dtype=getattr(ac, "bool_" if d == "bool" else d),
            device=device,
        )
        for d, t in src.items()
    }
    path = tmp_path / "ours.safetensors"
    ac.save(ours, path)
    got = torch_load_file(str(path))
    for d, t in src.items():
        assert got[d].dtype == t.dtype
        np.testing.assert_array_equal(_bits(got[d]), _bits(t), err_msg=d)


def test_model_state_dict_round_trip_with_torch(tmp_path: Path, device: str) -> None:
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    path = tmp_path / "model.safetensors"
    torch_save_file(theirs.state_dict(), str(path))
    ours = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).to(device)
    ours.load_state_dict(ac.load_file(path, device=device))
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    got = ours(ac.tensor(x, device=device)).numpy()
    np.testing.assert_allclose(
        got, theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6
    )
    # and back: our weights into a fresh torch model give our outputs
    ac.save_file(ours.state_dict(), path)
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    fresh.load_state_dict(torch_load_file(str(path)))
    np.testing.assert_allclose(
        fresh(torch.from_numpy(x)).detach().numpy(), got, rtol=1e-5, atol=1e-6
    )


def test_save_rejects_non_tensors(tmp_path: Path) -> None:
    with pytest.raises(ac.DTypeError, match="value for 'w' is a ndarray, not a Tensor"):
        ac.save_file({"w": np.zeros(2)}, tmp_path / "x.safetensors")  # type: ignore[dict-item]
