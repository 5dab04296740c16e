"""Indexing and data-dependent ops: x[...], gather/scatter, masks, nonzero, sort and topk.

Everything reads through GATHER, writes through SCATTER_ADD and orders through ARGSORT, so
values keep their gradients; subscripts themselves are parsed in `subscript.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from anychip import dtypes
from anychip.errors import DTypeError, IndexOutOfRange, ShapeError, describe
from anychip.frontend import views
from anychip.frontend.reduce import ValuesIndices
from anychip.frontend.subscript import (
    as_index,
    check_range,
    getitem,
    index_range,
    iota,
    setitem,
    take,
    true_positions,
)
from anychip.ir.ops import Ops

if TYPE_CHECKING:
    from anychip.frontend.tensor import Tensor


def _same_rank(x: Tensor, idx: Tensor, op: str) -> None:
    if idx.ndim != x.ndim:
        raise ShapeError(
            f"{op}: index tensor must have the same number of dimensions as the input "
            f"tensor ({describe(x, idx)})"
        )


def _in_range(idx: Tensor, n: int, d: int, op: str, *ts: Tensor) -> None:
    check_range(
        idx,
        0,
        n,
        lambda v: (
            f"{op}: index {v} is out of bounds for dimension {d} with size {n} ({describe(*ts)})"
        ),
    )


class IndexingMixin:
    __slots__ = ()

    def __getitem__(self: Tensor, index: Any) -> Tensor:
        """PyTorch indexing: ints, slices (positive steps), None, Ellipsis, integer tensors
        or lists (broadcast together) and boolean masks.

        >>> import anychip as ac
        >>> x = ac.arange(12).reshape(3, 4)
        >>> x[1:, ::2].tolist(), x[[0, 2], -1].tolist(), x[x > 9].tolist()
        ([[4, 6], [8, 10]], [3, 11], [10, 11])
        """
        return getitem(self, index)

    def __setitem__(self: Tensor, index: Any, value: Any) -> None:
        """x[index] = value (a scalar or a tensor broadcast to x[index]'s shape).

        >>> import anychip as ac
        >>> x = ac.zeros(4)
        >>> x[x == 0] = 2.0
        >>> x[1::2] = ac.tensor([5.0, 6.0])
        >>> x.tolist()
        [2.0, 5.0, 2.0, 6.0]
        """
        setitem(self, index, value)

    # --- gather and scatter ---------------------------------------------------------
    def gather(self: Tensor, dim: int, index: Any) -> Tensor:
        """out[i][j] = self[index[i][j]][j] for dim 0 (and likewise for other dims); index
        has self's rank and is no larger than self apart from `dim`.

        >>> import anychip as ac
        >>> ac.tensor([[1, 2], [3, 4]]).gather(1, ac.tensor([[1], [0]])).tolist()
        [[2], [3]]
        """
        idx = as_index(self, index, "gather")
        if self.ndim + idx.ndim == 1 or (self.ndim == 0 and idx.ndim == 0):
            self._axis(dim, "gather")  # torch lets a 0-d tensor stand for a 1-d one here
            flat = self.reshape(-1).gather(0, idx.reshape(-1))
            return flat.reshape(idx.shape)
        _same_rank(self, idx, "gather")
        d = self._axis(dim, "gather")
        if any(i > s for a, (i, s) in enumerate(zip(idx.shape, self.shape, strict=True)) if a != d):
            raise ShapeError(
                f"gather: index {list(idx.shape)} must be no larger than the input "
                f"{list(self.shape)} apart from dimension {d} ({describe(self, idx)})"
            )
        _in_range(idx, self.shape[d], d, "gather", self, idx)
        box = [
            (0, s) if a == d else (0, i)
            for a, (i, s) in enumerate(zip(idx.shape, self.shape, strict=True))
        ]
        return self._shrink(box)._prim(Ops.GATHER, idx, arg=d)

    def take_along_dim(self: Tensor, indices: Any, dim: int | None = None) -> Tensor:
        """numpy's take_along_axis: gather with the non-`dim` dims broadcast together
        (flattened input and indices when dim is None).

        >>> import anychip as ac
        >>> x = ac.tensor([[3.0, 1.0], [0.0, 2.0]])
        >>> x.take_along_dim(x.argsort(1), 1).tolist()
        [[1.0, 3.0], [0.0, 2.0]]
        """
        idx = as_index(self, indices, "take_along_dim")
        if dim is None:
            return self.reshape(-1).gather(0, idx.reshape(-1))
        _same_rank(self, idx, "take_along_dim")
        d = self._axis(dim, "take_along_dim")
        x_sh = tuple(1 if a == d else s for a, s in enumerate(self.shape))
        i_sh = tuple(1 if a == d else s for a, s in enumerate(idx.shape))
        try:
            common = np.broadcast_shapes(x_sh, i_sh)
        except ValueError:
            raise ShapeError(
                f"take_along_dim: input and indices should be broadcastable apart from "
                f"dimension {d} ({describe(self, idx)})"
            ) from None
        x = self._broadcast(tuple(self.shape[d] if a == d else s for a, s in enumerate(common)))
        i = idx._broadcast(tuple(idx.shape[d] if a == d else s for a, s in enumerate(common)))
        return x.gather(d, i)

    def index_select(self: Tensor, dim: int, index: Any) -> Tensor:
        """The slices of `self` along `dim` at the positions in the 1-d `index`.

        >>> import anychip as ac
        >>> ac.tensor([[1, 2], [3, 4]]).index_select(0, ac.tensor([1, 1])).tolist()
        [[3, 4], [3, 4]]
        """
        idx = as_index(self, index, "index_select")
        if idx.ndim > 1:
            raise ShapeError(f"index_select: index must be 0-d or 1-d ({describe(self, idx)})")
        x = self.reshape(1) if self.ndim == 0 else self
        d = x._axis(dim, "index_select")
        _in_range(idx, x.shape[d], d, "index_select", self, idx)
        out = take(x, d, idx.reshape(-1))
        return out.reshape(()) if self.ndim == 0 else out

    def scatter_add(self: Tensor, dim: int, index: Any, src: Tensor) -> Tensor:
        """out = self; out[index[i][j]][j] += src[i][j] for dim 0 (likewise for other dims).

        >>> import anychip as ac
        >>> ac.zeros(3).scatter_add(0, ac.tensor([0, 2, 0]), ac.ones(3)).tolist()
        [2.0, 0.0, 1.0]
        """
        idx = as_index(self, index, "scatter_add")
        if src.dtype is not self.dtype:
            raise DTypeError(
                f"scatter_add: self and src must have the same dtype ({describe(self, src)})"
            )
        if self.ndim == 0:
            self._axis(dim, "scatter_add")
            out = self.reshape(1).scatter_add(0, idx.reshape(-1), src.reshape(-1))
            return out.reshape(())
        _same_rank(self, idx, "scatter_add")
        _same_rank(src, idx, "scatter_add")
        d = self._axis(dim, "scatter_add")
        if any(
            i > s or (a != d and i > n)
            for a, (i, s, n) in enumerate(zip(idx.shape, src.shape, self.shape, strict=True))
        ):
            raise ShapeError(
                f"scatter_add: index {list(idx.shape)} must be no larger than src "
                f"{list(src.shape)}, nor than self {list(self.shape)} apart from dimension "
                f"{d} ({describe(self, idx, src)})"
            )
        if idx.numel() == 0:  # nothing added: a copy all the same (a new node)
            return views.fresh(self)
        _in_range(idx, self.shape[d], d, "scatter_add", self, idx, src)
        part = src._shrink([(0, i) for i in idx.shape])
        window = tuple(
            n if a == d else i for a, (i, n) in enumerate(zip(idx.shape, self.shape, strict=True))
        )
        if window == self.shape:
            return self._prim(Ops.SCATTER_ADD, idx, part, arg=d)
        # index covers only a corner of self: scatter into that corner, then pad into place
        corner = self.zeros_like()._shrink([(0, w) for w in window])
        added = corner._prim(Ops.SCATTER_ADD, idx, part, arg=d)
        return self + added._pad_zero([(0, n - w) for w, n in zip(window, self.shape, strict=True)])

    def index_add(
        self: Tensor, dim: int, index: Any, source: Tensor, *, alpha: float = 1
    ) -> Tensor:
        """out = self; out[..., index[i], ...] += alpha * source[..., i, ...] along `dim`.

        >>> import anychip as ac
        >>> ac.zeros(3, 1).index_add(0, ac.tensor([2, 2]), ac.ones(2, 1)).tolist()
        [[0.0], [0.0], [2.0]]
        """
        idx = as_index(self, index, "index_add").reshape(-1)
        x, src = (self.reshape(1), source.reshape(-1)) if self.ndim == 0 else (self, source)
        d = x._axis(dim, "index_add")
        if (
            src.ndim != x.ndim
            or src.shape[d] != idx.shape[0]
            or any(
                a != b for i, (a, b) in enumerate(zip(src.shape, x.shape, strict=True)) if i != d
            )
        ):
            raise ShapeError(
                f"index_add: source must match self apart from dimension {d}, where its size "
                f"must be the number of indices ({describe(self, idx, source)})"
            )
        if alpha != 1:
            src = src * alpha
        full = idx.reshape((1,) * d + (-1,) + (1,) * (x.ndim - d - 1))._broadcast(src.shape)
        out = x.scatter_add(d, full, src)
        return out.reshape(self.shape)

    # --- masks ------------------------------------------------------------------------
    def masked_fill(self: Tensor, mask: Tensor, value: Any) -> Tensor:
        """self with `value` where the boolean `mask` (broadcast) holds.

        >>> import anychip as ac
        >>> x = ac.tensor([1.0, -2.0, 3.0])
        >>> x.masked_fill(x < 0, 0.0).tolist()
        [1.0, 0.0, 3.0]
        """
        from anychip.frontend.tensor import Tensor

        if mask.dtype is not dtypes.bool_:
            raise DTypeError(f"masked_fill: mask must be a bool tensor ({describe(self, mask)})")
        if isinstance(value, Tensor):
            if value.ndim != 0:
                raise ShapeError(
                    f"masked_fill: only a 0-dimensional value tensor is supported, got shape "
                    f"{value.shape}"
                )
            value = value.to(self.dtype)
        return mask.to(self.device)._select(value, self).to(self.dtype)

    def masked_select(self: Tensor, mask: Tensor) -> Tensor:
        """The elements where `mask` (broadcast with self) holds, as a 1-d tensor.

        >>> import anychip as ac
        >>> x = ac.tensor([[1, -2], [-3, 4]])
        >>> x.masked_select(x > 0).tolist()
        [1, 4]
        """
        if mask.dtype is not dtypes.bool_:
            raise DTypeError(f"masked_select: mask must be a bool tensor ({describe(self, mask)})")
        from anychip.frontend.elementwise import broadcast_shapes

        shape = broadcast_shapes("masked_select", self, mask)
        return self._broadcast(shape).reshape(-1)[mask._broadcast(shape).reshape(-1)]

    def nonzero(self: Tensor, *, as_tuple: bool = False) -> Any:
        """Indices of the nonzero elements: a (count, ndim) int64 tensor, or with
        `as_tuple=True` one 1-d tensor per dimension.

        >>> import anychip as ac
        >>> ac.tensor([[0, 1], [2, 0]]).nonzero().tolist()
        [[0, 1], [1, 0]]
        """
        from anychip.frontend.tensor import Tensor

        flat = self.reshape(-1)
        pos = true_positions(flat if flat.dtype is dtypes.bool_ else flat.to(dtypes.bool_))
        cols, stride = [], 1
        for n in reversed(self.shape):  # unravel the flat positions, last dim first
            q = pos._binary(Ops.DIV, stride) if stride != 1 else pos
            cols.append(q._binary(Ops.MOD, n))
            stride *= n
        cols.reverse()
        if as_tuple:
            return tuple(cols) if cols else (pos * 0,)
        if not cols:
            return Tensor._const(0, dtypes.int64, (pos.shape[0], 0), self.device)
        from anychip.frontend.creation import stack

        return stack(cols, 1)

    # --- ordering ---------------------------------------------------------------------
    def argsort(
        self: Tensor, dim: int = -1, descending: bool = False, stable: bool = False
    ) -> Tensor:
        """Indices that sort `self` along `dim` (always stable; NaN sorts as the largest).

        >>> import anychip as ac
        >>> ac.tensor([3.0, 1.0, 2.0]).argsort().tolist()
        [1, 2, 0]
        """
        if self.ndim == 0:
            self._axis(dim, "argsort")
            return self.reshape(1).argsort(0, descending).reshape(())
        return self._prim(Ops.ARGSORT, arg=(self._axis(dim, "argsort"), bool(descending)))

    def sort(
        self: Tensor, dim: int = -1, descending: bool = False, stable: bool = False
    ) -> ValuesIndices:
        """(values, indices) sorted along `dim`; values carry gradients back to self.

        >>> import anychip as ac
        >>> ac.tensor([3.0, 1.0, 2.0]).sort(descending=True).values.tolist()
        [3.0, 2.0, 1.0]
        """
        idx = self.argsort(dim, descending)
        if self.ndim == 0:
            return ValuesIndices(self.reshape(1).gather(0, idx.reshape(1)).reshape(()), idx)
        return ValuesIndices(self._prim(Ops.GATHER, idx, arg=self._axis(dim, "sort")), idx)

    def topk(
        self: Tensor, k: int, dim: int = -1, largest: bool = True, sorted: bool = True
    ) -> ValuesIndices:
        """The k largest (or smallest) values along `dim` with their indices, in order.

        >>> import anychip as ac
        >>> ac.tensor([1.0, 5.0, 3.0]).topk(2).indices.tolist()
        [1, 2]
        """
        x = self.reshape(1) if self.ndim == 0 else self
        d = x._axis(dim, "topk")
        if not 0 <= k <= x.shape[d]:
            raise IndexOutOfRange(
                f"topk: k={k} is out of range for dimension {d} of size {x.shape[d]} "
                f"(tensor of {describe(self)})"
            )
        # the first k positions of the stable order: backends select them without a full sort
        idx = x._prim(Ops.ARGSORT, arg=(d, bool(largest), k))
        vals = x._prim(Ops.GATHER, idx, arg=d)
        if self.ndim == 0:
            return ValuesIndices(vals.reshape(()), idx.reshape(()))
        return ValuesIndices(vals, idx)


def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """int64 one-hot encoding: shape (*tensor.shape, num_classes); -1 infers max + 1.

    >>> import anychip as ac
    >>> ac.one_hot(ac.tensor([0, 2]), 3).tolist()
    [[1, 0, 0], [0, 0, 1]]
    """
    if tensor.dtype.kind not in "iu":
        raise DTypeError(
            f"one_hot: expects an integer (class index) tensor, got {describe(tensor)}"
        )
    idx = tensor.to(dtypes.int64)
    if num_classes == -1:
        if idx.numel() == 0:
            raise ShapeError("one_hot: cannot infer the number of classes from an empty tensor")
        num_classes = index_range(idx)[1] + 1
    c = num_classes
    check_range(
        idx,
        0,
        c,
        lambda v: (
            f"one_hot: class value {v} is out of range for num_classes={c} "
            f"(expected values in [0, {c}); tensor of {describe(tensor)})"
        ),
    )
    return (idx.unsqueeze(-1) == iota(c, idx.device)).to(dtypes.int64)


# embedding ops live in their own module; re-exported here for `frontend.indexing` users
from anychip.frontend.embedding import embedding, embedding_bag  # noqa: E402

__all__ = ["IndexingMixin", "embedding", "embedding_bag", "one_hot"]
