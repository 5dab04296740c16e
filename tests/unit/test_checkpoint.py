"""ac.save / ac.load of nested checkpoints, and optimizer state that resumes a run bit for
bit: 3 steps, save, load into a fresh model and optimizer, 3 more == 6 straight steps."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file as np_load_file

import anychip as ac
from anychip import nn, optim
from anychip.checkpoint import STRUCTURE_KEY

OPTIMIZERS: list[tuple[str, dict[str, Any]]] = [
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    ("Adam", {"lr": 0.01, "amsgrad": True}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.1}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.01}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.9, "centered": True}),
    ("SparseAdam", {"lr": 0.01}),
]


def test_nested_round_trip(tmp_path: Path) -> None:
    w = ac.tensor([[1.5, -2.0], [3.0, 4.25]])
    obj = {
        "model": {"fc.weight": w, "fc.bias": ac.tensor([1, 2], dtype=ac.int32)},
        "list": [ac.tensor(7.0, dtype=ac.float64), 3, "x", None, True, 2.5, (1, "a")],
        "step": 3,
        5: {"inf": math.inf, "nan": math.nan, "dtype": ac.bfloat16},
        "half": ac.tensor([0.5, 1.0], dtype=ac.bfloat16),
    }
    path = tmp_path / "ckpt.pt"
    ac.save(obj, path)
    got = ac.load(path)
    assert list(got) == ["model", "list", "step", 5, "half"]
    np.testing.assert_array_equal(got["model"]["fc.weight"].numpy(), w.numpy())
    assert got["model"]["fc.bias"].dtype is ac.int32 and got["model"]["fc.bias"].tolist() == [1, 2]
    lst = got["list"]
    assert lst[0].dtype is ac.float64 and lst[0].shape == () and lst[0].item() == 7.0
    assert lst[1:] == [3, "x", None, True, 2.5, (1, "a")]
    assert type(lst[1]) is int and type(lst[5]) is float
    assert got["step"] == 3 and got[5]["inf"] == math.inf and math.isnan(got[5]["nan"])
    assert got[5]["dtype"] is ac.bfloat16
    assert got["half"].dtype is ac.bfloat16 and got["half"].tolist() == [0.5, 1.0]


def test_file_is_plain_safetensors_with_json_structure(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.safetensors"
    ac.save({"a": {"b": ac.ones(2)}, "c": [ac.zeros(1)], "n": 1}, path)
    # any safetensors reader sees the tensors under dotted names; the tree is JSON text
    arrays = np_load_file(str(path))
    assert sorted(arrays) == ["a.b", "c.0"]
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    tree = json.loads(header["__metadata__"][STRUCTURE_KEY])
    assert tree["tree"]["dict"][2] == ["n", 1]


def test_file_objects_and_shared_tensors() -> None:
    t = ac.arange(4)
    buf = io.BytesIO()
    ac.save([t, t, {"again": t}], buf)
    buf.seek(0)
    a, b, c = ac.load(buf)
    assert a.tolist() == b.tolist() == c["again"].tolist() == [0, 1, 2, 3]
    assert a is b is c["again"]  # one tensor in the file, as torch keeps sharing


def test_requires_grad_and_load_device(tmp_path: Path) -> None:
    p = tmp_path / "x"
    ac.save({"w": ac.ones(2, requires_grad=True)}, p)
    got = ac.load(p, map_location=ac.devices()[-1])
    assert got["w"].requires_grad and got["w"].device == ac.devices()[-1]


def test_unsupported_values_raise(tmp_path: Path) -> None:
    with pytest.raises(ac.DTypeError, match="object"):
        ac.save({"ok": 1, "bad": object()}, tmp_path / "x")
    with pytest.raises(ac.ArgumentError, match="map_location"):
        ac.save({"w": ac.ones(1)}, tmp_path / "y")
        ac.load(tmp_path / "y", map_location={"cpu": "ref"})


def test_a_torch_pickle_is_refused_not_executed(tmp_path: Path) -> None:
    import torch

    torch.save({"w": torch.ones(2)}, tmp_path / "t.pt")
    with pytest.raises(ac.ArgumentError, match="never pickles"):
        ac.load(tmp_path / "t.pt")


def test_a_plain_safetensors_file_loads_as_a_dict(tmp_path: Path) -> None:
    ac.save_file({"w": ac.ones(2)}, tmp_path / "w.safetensors")
    got = ac.load(tmp_path / "w.safetensors")
    assert list(got) == ["w"] and got["w"].tolist() == [1.0, 1.0]


# --- resuming training bit for bit ----------------------------------------------------------
class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(6, 3)
        self.fc = nn.Linear(3, 2)

    def forward(self, ids: ac.Tensor) -> ac.Tensor:
        return self.fc(self.emb(ids).tanh())


def _batches(n: int) -> list[tuple[ac.Tensor, ac.Tensor]]:
    rng = np.random.default_rng(7)
    return [
        (ac.tensor(rng.integers(0, 6, 4)), ac.tensor(rng.standard_normal((4, 2)), dtype=ac.float32))
        for _ in range(n)
    ]


def _fresh(name: str, kw: dict[str, Any]) -> tuple[Net, optim.Optimizer]:
    ac.manual_seed(0)
    model = Net()
    return model, getattr(optim, name)(model.parameters(), **kw)


def _train(model: Net, opt: optim.Optimizer, batches: list[Any]) -> None:
    for ids, y in batches:
        opt.zero_grad()
        ((model(ids) - y) ** 2).mean().backward()
        opt.step()


@pytest.mark.parametrize(("name", "kw"), OPTIMIZERS, ids=[n for n, _ in OPTIMIZERS])
def test_resume_is_bit_for_bit(name: str, kw: dict[str, Any], tmp_path: Path) -> None:
    batches = _batches(6)
    straight, sopt = _fresh(name, kw)
    _train(straight, sopt, batches)

    first, fopt = _fresh(name, kw)
    _train(first, fopt, batches[:3])
    path = tmp_path / "ckpt.safetensors"
    ac.save({"model": first.state_dict(), "optim": fopt.state_dict(), "step": 3}, path)
    del first, fopt

    ckpt = ac.load(path)
    assert ckpt["step"] == 3
    ac.manual_seed(123)  # a different initialisation: everything must come from the file
    resumed = Net()
    ropt = getattr(optim, name)(resumed.parameters(), **kw)
    resumed.load_state_dict(ckpt["model"])
    ropt.load_state_dict(ckpt["optim"])
    _train(resumed, ropt, batches[3:])
    for (k, a), (_, b) in zip(
        straight.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)
    for p, q in zip(straight.parameters(), resumed.parameters(), strict=True):
        for key, v in sopt.state[p].items():
            np.testing.assert_array_equal(np.asarray(v), np.asarray(ropt.state[q][key]), key)
