"""Errors as PyTorch raises them: each case runs in PyTorch and in anychip, and anychip's
error must be an instance of the exception class PyTorch raised (so an `except` clause
ported from PyTorch code still catches it) as well as a typed `anychip.Error`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as TF

import anychip as ac
import anychip.nn.functional as AF


@dataclass
class Lib:
    """One library's spelling of what a case needs (torch or anychip on a device)."""

    m: Any
    F: Any
    device: str

    def ones(self, *shape: int, dtype: str = "float32") -> Any:
        return self.m.ones(*shape, dtype=getattr(self.m, dtype), device=self.device)

    def t(self, data: Any, dtype: str | None = None) -> Any:
        dt = getattr(self.m, dtype) if dtype else None
        return self.m.tensor(data, dtype=dt, device=self.device)


# name -> the call, written once for both libraries
CASES: dict[str, Callable[[Lib], Any]] = {
    "matmul": lambda L: L.ones(2, 3) @ L.ones(4, 5),
    "mm": lambda L: L.m.mm(L.ones(3, 4), L.ones(5, 6)),
    "bmm": lambda L: L.m.bmm(L.ones(2, 3, 4), L.ones(2, 5, 6)),
    "linear": lambda L: L.F.linear(L.ones(2, 3), L.ones(4, 5)),
    "einsum_sizes": lambda L: L.m.einsum("ij,jk->ik", L.ones(2, 3), L.ones(4, 5)),
    "einsum_output": lambda L: L.m.einsum("ij->ik", L.ones(2, 3)),
    "roll": lambda L: L.m.roll(L.ones(2, 3), (1, 2), (0,)),
    "gather": lambda L: L.m.gather(L.ones(2, 3), 1, L.ones(2, 3, 4, dtype="int64")),
    "cross_entropy": lambda L: L.F.cross_entropy(L.ones(2, 3), L.ones(3, dtype="int64")),
    "nll_loss": lambda L: L.F.nll_loss(L.ones(2, 3), L.ones(3, dtype="int64")),
    "topk_k": lambda L: L.ones(3).topk(5),
    "float_index": lambda L: L.ones(3)[L.t([0.0, 1.0])],
    "pad_mode": lambda L: L.F.pad(L.ones(1, 2, 3), (1, 1), mode="typo"),
    "linspace_bool": lambda L: L.m.linspace(0, 1, 5, dtype=L.m.bool, device=L.device),
    "int_pow_negative": lambda L: L.t([1, 2]) ** -2,
    "bool_pow_negative": lambda L: L.t([True]) ** -2,
    "cumsum_0d_dim": lambda L: L.t(1.0).cumsum(dim=1),
    "broadcast": lambda L: L.ones(2, 3) + L.ones(4),
    "reshape": lambda L: L.ones(2, 3).reshape(4),
    "view": lambda L: L.ones(2, 3).view(5),
    "expand": lambda L: L.ones(2, 3).expand(4, 4),
    "cat": lambda L: L.m.cat([L.ones(2, 3), L.ones(2, 4)]),
    "stack": lambda L: L.m.stack([L.ones(2, 3), L.ones(2, 4)]),
    "dim_range": lambda L: L.ones(2, 3).sum(5),
    "softmax_dim": lambda L: L.ones(2).softmax(3),
    "index_bounds": lambda L: L.ones(3)[5],
    "index_select": lambda L: L.ones(3).index_select(0, L.t([5])),
    "embedding_row": lambda L: L.F.embedding(L.t([5]), L.ones(3, 2)),
    "one_hot_class": lambda L: L.F.one_hot(L.t([5]), 3),
    "narrow": lambda L: L.ones(3).narrow(0, 2, 5),
    "dot": lambda L: L.m.dot(L.ones(3), L.ones(4)),
    "split": lambda L: L.ones(4).split([1, 2]),
    "chunk_zero": lambda L: L.ones(6).chunk(0),
    "item": lambda L: L.ones(3).item(),
    "bool": lambda L: bool(L.ones(3)),
    "len_0d": lambda L: len(L.t(1.0)),
    "where_condition": lambda L: L.m.where(L.ones(2), L.ones(2), L.ones(2)),
    "masked_fill_mask": lambda L: L.ones(2).masked_fill(L.ones(2), 0.0),
    "bitwise_float": lambda L: L.ones(2) & L.ones(2),
    "sub_bool": lambda L: L.ones(2, dtype="bool") - L.ones(2, dtype="bool"),
    "neg_bool": lambda L: -L.ones(2, dtype="bool"),
    "mean_int": lambda L: L.ones(2, dtype="int64").mean(),
    "requires_grad_int": lambda L: L.ones(3, dtype="int64").requires_grad_(),
    "backward_nonscalar": lambda L: (L.ones(3).requires_grad_() * 2).backward(),
    "inplace_leaf": lambda L: L.ones(2).requires_grad_().add_(1),
    "layer_norm_shape": lambda L: L.F.layer_norm(L.ones(2, 3), (4,)),
    "bce_shape": lambda L: L.F.binary_cross_entropy(L.ones(2) * 0.5, L.ones(3)),
    "tensor_ragged": lambda L: L.m.tensor([[1, 2], [3]]),
    "amax_empty": lambda L: L.ones(0).amax(),
    "arange_step": lambda L: L.m.arange(0, 5, 0),
    "zeros_negative": lambda L: L.m.zeros(-1),
    "device_name": lambda L: L.ones(2).to("nodev"),
    "squeeze_dim": lambda L: L.ones(2, 3).squeeze(4),
    "flatten_dim": lambda L: L.ones(2, 3).flatten(3),
}


def _torch_error(case: Callable[[Lib], Any]) -> type[BaseException]:
    try:
        case(Lib(torch, TF, "cpu"))
    except Exception as e:  # whatever torch raises is the reference
        return type(e)
    raise AssertionError("torch raised nothing: the case is wrong")


@pytest.mark.parametrize("name", sorted(CASES))
def test_error_is_torchs_class(name: str, device: str) -> None:
    case = CASES[name]
    want = _torch_error(case)
    with pytest.raises(ac.Error) as info:
        case(Lib(ac, AF, device))
    assert isinstance(info.value, want), (
        f"{name}: anychip raised {type(info.value).__name__} ({info.value}), which is not "
        f"a {want.__name__} as torch's error is"
    )
    assert device in str(info.value) or name in _NO_DEVICE, str(info.value)


# errors raised before any tensor exists (or about Python values): no device to name
_NO_DEVICE = {
    "linspace_bool",
    "tensor_ragged",
    "arange_step",
    "zeros_negative",
    "requires_grad_int",
    "backward_nonscalar",
    "inplace_leaf",
    "chunk_zero",
}


def test_classes_keep_their_builtins() -> None:
    # ported `except ValueError` / `except TypeError` from before still catch them
    assert issubclass(ac.ShapeError, ValueError) and issubclass(ac.ShapeError, RuntimeError)
    assert issubclass(ac.DTypeError, TypeError) and issubclass(ac.DTypeError, RuntimeError)
    assert issubclass(ac.IndexOutOfRange, IndexError)
    assert issubclass(ac.errors.DTypeNotImplemented, NotImplementedError)
    assert issubclass(ac.errors.ModeNotImplemented, NotImplementedError)
    assert issubclass(ac.errors.IndexDTypeError, IndexError)


def test_valid_edges_do_not_raise(device: str) -> None:
    # the same ops just inside what torch accepts
    x = ac.tensor(1.5, device=device)
    assert x.cumsum(0).item() == x.cumsum(-1).item() == 1.5
    assert (ac.tensor([2, 4], device=device) ** 2).tolist() == [4, 16]
    assert (2 ** ac.tensor([1, 2], device=device)).tolist() == [2, 4]
    assert ac.linspace(0, 1, 3, dtype=ac.float64, device=device).tolist() == [0.0, 0.5, 1.0]
