"""Row-sparse tensors: the gradient a table gets from `embedding(..., sparse=True)` and
`embedding_bag(..., sparse=True)`, as torch's sparse COO gradients with one sparse dim.

A `SparseTensor` of shape (R, *rest) holds `indices` (n,) int64 row ids and `values`
(n, *rest). Its slot count n is fixed by the batch's shape, not its contents (a jitted
step replays on every batch): slots beyond the real entries hold row id R, out of range,
so a gather reads zeros there and a scatter adds nothing, and no kernel needs a mask.
The unique ids of a lookup come from the host (numpy's unique, a recorded host step that
`anychip.jit` replays on each batch); every value is computed by compiled kernels.
"""

from __future__ import annotations

import builtins
from typing import Any

import numpy as np

from anychip import dtypes
from anychip.errors import ArgumentError, InPlaceError, ShapeError, describe
from anychip.frontend.autograd import Version
from anychip.frontend.embedding import unique_slots
from anychip.frontend.hooks import set_grad_rule
from anychip.frontend.tensor import Tensor, is_grad_enabled, no_grad, realize_together
from anychip.ir.ops import Node, Ops
from anychip.runtime import dispatch


class _Unique:
    """The host step of a lookup or a coalesce: ids (n,) -> `unique_slots` (2n,)."""

    def __init__(self, rows: int) -> None:
        self.rows = rows

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        return unique_slots(ids, self.rows)


def _unique(ids: Tensor, rows: int) -> tuple[Tensor, Tensor]:
    """(unique ids padded with `rows`, each id's slot): two (n,) int64 tensors."""
    n = ids.numel()
    flat = ids.reshape(n).realize()
    buf = dispatch.host_call(_Unique(rows), [flat.node.arg], ids.device, dtypes.int64)
    lay = Tensor._from_node(Node(Ops.BUFFER, dtypes.int64, (2 * n,), ids.device, (), buf))
    return lay._shrink([(0, n)]), lay._shrink([(n, 2 * n)])


def _rows_at(idx: Tensor, like: tuple[int, ...]) -> Tensor:
    """idx (n,) broadcast over a (n, *rest) block of rows: a GATHER/SCATTER_ADD index."""
    return idx.reshape((idx.shape[0],) + (1,) * (len(like) - 1))._broadcast(like)


def gather_rows(t: Tensor, idx: Tensor) -> Tensor:
    """t's rows at idx (n,): (n, *rest); ids out of range read zeros."""
    return t._prim(Ops.GATHER, _rows_at(idx, (idx.shape[0], *t.shape[1:])), arg=0)


def scatter_rows(t: Tensor, idx: Tensor, rows: Tensor) -> Tensor:
    """t with rows (n, *rest) added at the row ids idx (n,); ids out of range add nothing.
    One scatter kernel; the computation of `rows` fuses into it."""
    return t._prim(Ops.SCATTER_ADD, _rows_at(idx, rows.shape), rows.to(t.dtype), arg=0)


def lookup(weight: Tensor, ids: Tensor, pad: int | None = None) -> Tensor:
    """weight's rows at `ids` (any shape; ids past the table read zeros), recorded so that
    weight's gradient is a `SparseTensor` over the unique ids (`lookup_unique`)."""
    if not (weight.requires_grad and is_grad_enabled()):
        return gather_rows(weight, ids.reshape(ids.numel())).reshape(ids.shape + weight.shape[1:])
    uniq, inv = _unique(ids, weight.shape[0])
    return lookup_unique(weight, uniq, inv.reshape(ids.shape), pad)


def lookup_unique(weight: Tensor, uniq: Tensor, inv: Tensor, pad: int | None = None) -> Tensor:
    """weight's rows at uniq[inv]: (*inv.shape, *rest), where uniq (n,) are unique row ids
    (padded with ids past the table) and inv their slots. The rows of the unique ids are
    gathered once and the ids read them; backward sums each id's gradient into its row's
    slot (a scatter over n slots, never over the table), and weight gets a coalesced
    `SparseTensor` of those rows (without `pad`, a padding row, as torch)."""
    urows = gather_rows(weight, uniq)  # (n, *rest)
    ctx = urows._ctx
    if ctx is not None:
        shape = weight.shape
        if pad is not None:  # the padding row's slot points out of the table
            uniq = (uniq == pad)._select(shape[0], uniq)
        set_grad_rule(ctx, lambda g: SparseTensor(uniq, g, shape, coalesced=True))
    flat = gather_rows(urows, inv.reshape(inv.numel()))
    return flat.reshape(inv.shape + weight.shape[1:])


class SparseTensor(Tensor):
    """A row-sparse COO tensor (one sparse dim), as torch's sparse gradients of embedding
    tables: `is_sparse`, `coalesce()`, `_indices()` (1, nnz), `_values()` (nnz, *rest),
    `to_dense()`. Used as a dense tensor (arithmetic with a dense tensor, `.numpy()`),
    it reads as its dense value, built lazily by one scatter kernel.

    >>> import anychip as ac
    >>> g = SparseTensor(ac.tensor([2, 0]), ac.tensor([[1.0], [2.0]]), (3, 1))
    >>> g.to_dense().tolist(), g._indices().tolist()
    ([[2.0], [0.0], [1.0]], [[2, 0]])
    """

    __slots__ = ("_coalesced", "_dense", "_idx", "_size", "_vals")
    is_sparse = True

    def __init__(
        self,
        indices: Tensor,
        values: Tensor,
        size: tuple[int, ...],
        coalesced: builtins.bool = False,
    ) -> None:
        if indices.ndim != 1 or values.shape[:1] != indices.shape or values.shape[1:] != size[1:]:
            raise ShapeError(
                f"sparse tensor: indices (n,) and values (n, *size[1:]) do not match size "
                f"{tuple(size)} ({describe(indices, values)})"
            )
        self._idx, self._vals, self._size = indices, values, tuple(size)
        self._coalesced = coalesced
        self._dense: tuple[Node, Node, Node] | None = None
        self.requires_grad, self.grad, self._ctx = False, None, None
        self._vc = Version()
        self._view = self._views = None
        self._seq = self._vc.seq

    # --- the dense value, for code that reads it as a Tensor -------------------------
    @property  # type: ignore[override]
    def node(self) -> Node:
        i, v = self._idx.node, self._vals.node
        if self._dense is None or self._dense[0] is not i or self._dense[1] is not v:
            zeros = Tensor._const(0, v.dtype, self._size, v.device)
            with no_grad():
                dense = scatter_rows(zeros, Tensor._from_node(i), Tensor._from_node(v))
            self._dense = (i, v, dense.node)
        return self._dense[2]

    @node.setter
    def node(self, value: Node) -> None:
        raise InPlaceError(
            f"sparse tensor of size {self._size}: cannot be changed in place; build a new one"
        )

    # metadata from the parts, without building the dense value
    @property
    def shape(self) -> tuple[int, ...]:
        return self._size

    @property
    def dtype(self) -> dtypes.DType:
        return self._vals.dtype

    @property
    def device(self) -> str:
        return self._vals.device

    @property
    def ndim(self) -> int:
        return len(self._size)

    def _parts(self) -> tuple[Tensor, Tensor]:
        return self._idx, self._vals

    def to_dense(self) -> Tensor:
        return Tensor._from_node(self.node)

    def realize(self) -> Tensor:
        """Compute the indices and values (not the dense value); returns self."""
        realize_together([self._idx, self._vals])
        return self

    def numpy(self) -> np.ndarray:
        return self.to_dense().numpy()

    def __repr__(self) -> str:
        return (
            f"tensor(indices={self._indices().tolist()}, values={self._values().tolist()}, "
            f"size={self._size}, nnz={self._nnz()}, layout=sparse_coo)"
        )

    # --- torch's sparse API ----------------------------------------------------------
    def _real(self) -> np.ndarray:
        """Positions of the real (in-range) entries, read on the host."""
        ids = self._idx.numpy()
        return np.nonzero(ids < self._size[0])[0]

    def _indices(self) -> Tensor:
        """The row ids of the stored entries, (1, nnz) int64."""
        ids = self._idx.numpy()
        return Tensor(ids[ids < self._size[0]].reshape(1, -1), device=self.device)

    def _values(self) -> Tensor:
        """The stored rows, (nnz, *rest)."""
        pos = Tensor(self._real(), device=self.device)
        return gather_rows(self._vals.reshape((-1, *self._size[1:])), pos).reshape(
            (pos.shape[0], *self._size[1:])
        )

    def indices(self) -> Tensor:
        self._need_coalesced("indices")
        return self._indices()

    def values(self) -> Tensor:
        self._need_coalesced("values")
        return self._values()

    def _need_coalesced(self, op: str) -> None:
        if not self._coalesced:
            raise ArgumentError(
                f"{op}: cannot get {op} of an uncoalesced sparse tensor of size {self._size}; "
                "call .coalesce() first"
            )

    def _nnz(self) -> builtins.int:
        return builtins.int(self._real().size)

    def is_coalesced(self) -> builtins.bool:
        return self._coalesced

    def sparse_dim(self) -> builtins.int:
        return 1

    def dense_dim(self) -> builtins.int:
        return len(self._size) - 1

    def coalesce(self) -> SparseTensor:
        """Each row once, ids sorted, duplicates summed: self if already so. The unique
        ids come from a recorded host step; the sums are one scatter kernel."""
        if self._coalesced:
            return self
        uniq, inv = _unique(self._idx, self._size[0])
        with no_grad():
            vals = scatter_rows(self._vals.zeros_like(), inv, self._vals)
        return SparseTensor(uniq, vals, self._size, coalesced=True)

    def detach(self) -> SparseTensor:
        return SparseTensor(self._idx, self._vals, self._size, self._coalesced)

    def clone(self) -> SparseTensor:
        return self.detach()

    def zeros_like(self) -> SparseTensor:
        """No entries (every slot out of range), with self's slot count."""
        none = Tensor._const(self._size[0], dtypes.int64, self._idx.shape, self.device)
        return SparseTensor(none, self._vals.zeros_like(), self._size, True)

    def __add__(self, other: Any) -> Tensor:  # type: ignore[override]
        if isinstance(other, SparseTensor):  # as torch: the entries of both, uncoalesced
            if other._size != self._size:
                raise ShapeError(f"add: sparse sizes {self._size} and {other._size} differ")
            from anychip.frontend.creation import cat

            vals = cat([self._vals, other._vals.to(self._vals.dtype)], 0)
            return SparseTensor(cat([self._idx, other._idx], 0), vals, self._size)
        return self.to_dense() + other

    def __radd__(self, other: Any) -> Tensor:  # type: ignore[override]
        return other + self.to_dense()

    def __mul__(self, other: Any) -> Tensor:  # type: ignore[override]
        scalar = isinstance(other, Tensor) and not other.is_sparse and other.ndim == 0
        if isinstance(other, int | float) or scalar:  # stays sparse: g * scale
            return SparseTensor(self._idx, self._vals * other, self._size, self._coalesced)
        return self.to_dense() * other

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> Tensor:  # type: ignore[override]
        if isinstance(other, int | float):
            return SparseTensor(self._idx, self._vals / other, self._size, self._coalesced)
        return self.to_dense() / other

    def norm(self, p: Any = 2, dim: Any = None, keepdim: builtins.bool = False) -> Tensor:  # type: ignore[override]
        """The norm of the dense value, from the coalesced rows alone (`clip_grad_norm_`)."""
        if dim is None and not keepdim:
            return self.coalesce()._vals.norm(p)
        return self.to_dense().norm(p, dim, keepdim)

    def _assign(self, value: Tensor, op: str) -> Tensor:
        """In place (`g.mul_(c)`, as `clip_grad_norm_` scales gradients): a sparse value of
        the same size takes over the entries; anything else would make self dense."""
        if not isinstance(value, SparseTensor) or value._size != self._size:
            raise InPlaceError(
                f"{op}: a sparse tensor of size {self._size} can only be changed in place "
                "by a sparse result of its size (scale it, or use .to_dense())"
            )
        self._idx, self._vals, self._coalesced = value._idx, value._vals, value._coalesced
        self._vc.bump()
        return self

    def __neg__(self) -> SparseTensor:
        return SparseTensor(self._idx, -self._vals, self._size, self._coalesced)


def sparse_coo_tensor(indices: Any, values: Any, size: Any = None) -> SparseTensor:
    """A row-sparse tensor from indices (1, n) and values (n, *rest), as
    `torch.sparse_coo_tensor` with one sparse dim.

    >>> import anychip as ac
    >>> sparse_coo_tensor([[1, 1]], [[1.0], [2.0]], (2, 1)).coalesce().to_dense().tolist()
    [[0.0], [3.0]]
    """
    idx = indices if isinstance(indices, Tensor) else Tensor(np.asarray(indices, np.int64))
    vals = values if isinstance(values, Tensor) else Tensor(values)
    if idx.ndim != 2 or idx.shape[0] != 1:
        raise ShapeError(
            f"sparse_coo_tensor: indices must be (1, n): one sparse dim ({describe(idx)})"
        )
    idx = idx.reshape(idx.shape[1]).to(vals.device, dtypes.int64)
    if size is None:
        top = builtins.int(idx.numpy().max()) + 1 if idx.numel() else 0
        size = (top, *vals.shape[1:])
    return SparseTensor(idx, vals, tuple(size))


__all__ = ["SparseTensor", "gather_rows", "lookup", "scatter_rows", "sparse_coo_tensor"]
