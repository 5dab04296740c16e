"""Embedding lookups, the recommendation workload's core: rows of a table by id, and bags of
rows reduced to one vector each. Built from GATHER and SCATTER_ADD, so they stay on the device.

torch.nn.functional semantics: `embedding(input, weight)` and `embedding_bag(...)` with 2-d
input (fixed-size bags) or 1-d input plus offsets (variable bags; empty bags give zeros).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from anychip import dtypes
from anychip.errors import DTypeError, IndexOutOfRange, ShapeError, describe
from anychip.frontend.subscript import as_index, check_range, raise_if, range_flag, take
from anychip.ir.ops import Ops

if TYPE_CHECKING:
    from anychip.frontend.tensor import Tensor

MODES = ("sum", "mean", "max")


def _rows(op: str, input: Any, weight: Tensor, check: bool = True) -> Tensor:
    """input as int64 ids checked against weight's rows (`check=False`: the caller checks
    them with `_check_rows`, realising the check with its result)."""
    if weight.ndim != 2:
        raise ShapeError(f"{op}: weight must be 2-d (num_embeddings, dim), got {describe(weight)}")
    idx = as_index(weight, input, op)
    if check:
        check_range(idx, 0, weight.shape[0], _out_of_range(op, idx, weight))
    return idx


def _out_of_range(op: str, idx: Tensor, weight: Tensor) -> Callable[[int], str]:
    n = weight.shape[0]
    return lambda v: (
        f"{op}: index {v} is out of range for an embedding table of {n} rows "
        f"({describe(idx, weight)})"
    )


def _check_rows(op: str, out: Tensor, idx: Tensor, weight: Tensor) -> Tensor:
    """`out`, computed with the bounds check of the ids it read in one schedule (one
    realisation and one flag read back instead of two); out-of-range ids read zeros until
    the check raises."""
    from anychip.frontend.tensor import realize_together

    message = _out_of_range(op, idx, weight)
    flag = range_flag(idx, 0, weight.shape[0], message)
    if flag is not None:
        realize_together([out, flag])
        raise_if(flag, idx, 0, weight.shape[0], message)
    return out


def _padding(op: str, padding_idx: int | None, n: int) -> int | None:
    if padding_idx is None:
        return None
    if not -n <= padding_idx < n:
        raise IndexOutOfRange(f"{op}: padding_idx {padding_idx} must be within num_embeddings {n}")
    return padding_idx % n


def embedding(input: Any, weight: Tensor, padding_idx: int | None = None) -> Tensor:
    """weight's rows at the ids in `input`: shape (*input.shape, dim). The row at
    `padding_idx` is returned as is but gets no gradient.

    >>> import anychip as ac
    >>> w = ac.tensor([[0.0, 0.0], [1.0, 2.0], [3.0, 4.0]])
    >>> embedding(ac.tensor([[2, 1]]), w).tolist()
    [[[3.0, 4.0], [1.0, 2.0]]]
    """
    idx = _rows("embedding", input, weight)
    out = take(weight, 0, idx)  # (*input.shape, D)
    pad = _padding("embedding", padding_idx, weight.shape[0])
    if pad is not None and out.requires_grad:
        out = (idx == pad).unsqueeze(-1)._select(out.detach(), out)
    return out


def _lookup(weight: Tensor, idx: Tensor) -> Tensor:
    """Rows of weight at idx, in float32 for half tables (bags accumulate in float32)."""
    rows = take(weight, 0, idx)
    return rows.to(dtypes.float32) if weight.dtype in (dtypes.float16, dtypes.bfloat16) else rows


def _bag_weights(
    idx: Tensor, weight: Tensor, per_sample_weights: Tensor | None, pad: int | None
) -> Tensor | None:
    """Each element's factor in its bag (psw, and 0 for padding ids), or None if all are 1."""
    acc = dtypes.float32 if weight.dtype in (dtypes.float16, dtypes.bfloat16) else weight.dtype
    w = None
    if per_sample_weights is not None:
        if per_sample_weights.shape != idx.shape:
            raise ShapeError(
                "embedding_bag: per_sample_weights must have the shape of input "
                f"({describe(idx, per_sample_weights)})"
            )
        if not per_sample_weights.dtype.is_floating_point:
            raise DTypeError(
                f"embedding_bag: per_sample_weights must be floating point "
                f"({describe(per_sample_weights)})"
            )
        w = per_sample_weights.to(weight.device, acc)
    if pad is not None:
        keep = idx != pad
        w = keep.to(acc) if w is None else keep._select(w, 0)
    return w


def _dense_bags(rows: Tensor, valid: Tensor | None, w: Tensor | None, mode: str) -> Tensor:
    """Reduce (B, L, D) rows over L; `valid` (B, L) marks real elements, `w` (B, L) weighs
    them (0 already for padding). Bags with no valid element give zeros."""
    if mode == "max":
        if valid is None:
            return rows.amax(1) if rows.shape[1] else rows.sum(1)
        masked = valid.unsqueeze(-1)._select(rows, -np.inf)
        top = masked.amax(1) if rows.shape[1] else masked.sum(1)
        return valid.any(1).unsqueeze(-1)._select(top, 0)
    total = (rows * w.unsqueeze(-1)).sum(1) if w is not None else rows.sum(1)
    if mode == "sum":
        return total
    count = w.sum(1) if w is not None else rows.shape[1]
    if isinstance(count, int):
        return total / count if count else total
    return total / count.maximum(1).unsqueeze(-1)


def _bag_ids(offsets: Tensor, n: int) -> Tensor:
    """(N,) bag of each element: how many offsets are <= its position, minus one. A count
    per position (scatter-add of ones at each offset) and a running sum find it."""
    from anychip.frontend.tensor import Tensor

    marks = Tensor._const(0, dtypes.int64, (n + 1,), offsets.device)
    ones = Tensor._const(1, dtypes.int64, offsets.shape, offsets.device)
    return marks._prim(Ops.SCATTER_ADD, offsets, ones, arg=0)._cumsum(0)._shrink([(0, n)]) - 1


def _check_offsets(offsets: Tensor, n: int) -> np.ndarray:
    """offsets on the host (B values, small): they must start at 0, rise, and end <= n."""
    off = offsets.numpy()
    bad = ""
    if off.size and off[0] != 0:
        bad = f"offsets[0] has to be 0, but got {off[0]}"
    elif off.size and np.any(np.diff(off) < 0):
        bad = "offsets must be non-decreasing"
    elif off.size and off[-1] > n:
        bad = f"offsets[-1] can not be greater than input's length {n}, but got {off[-1]}"
    if bad:
        raise IndexOutOfRange(f"embedding_bag: {bad} ({describe(offsets)})")
    return off


def size_class(n: int) -> int:
    """The size kernels over a jagged length `n` are compiled for: the next power of two
    (0 stays 0). Lengths that vary from batch to batch (bag widths, total ids) then reuse
    at most one kernel per octave, and padding costs at most 2x the work."""
    return 0 if n <= 0 else 1 << (n - 1).bit_length()


def _offset_bags(
    idx: Tensor,
    weight: Tensor,
    offsets: Tensor,
    w: Tensor | None,
    mode: str,
    last: bool,
    pad: int | None,
    weighted: bool,
) -> Tensor:
    """Variable bags of a 1-d input (N,): bag b holds idx[offsets[b]:offsets[b+1]].

    The jagged layout is made on the host (offsets and ids are small), in slots whose
    sizes are size classes (`size_class`), so a batch whose bags have other lengths runs
    the same kernels: nothing is compiled for a new total length or bag width. With
    per_sample_weights (a device tensor of the ids' length) the kernels follow N."""
    if weighted:
        assert w is not None
        return _offset_bags_weighted(idx, weight, offsets, w, mode, last)
    n = idx.shape[0]
    off = _check_offsets(offsets, n)
    ids = _host_ids(idx, weight)
    nb = len(off) - 1 if last else len(off)  # with include_last_offset the last one ends bags
    starts = off[:nb]
    ends = np.append(off[1:], n)[:nb] if not last else off[1 : nb + 1]
    lengths = ends - starts
    width = size_class(int(lengths.max())) if nb else 0
    if mode == "max" or nb * width <= 4 * max(n, 1) + nb:
        return _slot_bags(ids, weight, starts, ends, width, mode, pad)
    return _scatter_bags(ids, weight, starts, ends, mode, pad)


def _host_ids(idx: Tensor, weight: Tensor) -> np.ndarray:
    """The ids on the host, checked against the table's rows (IndexOutOfRange)."""
    ids = np.asarray(idx.numpy(), dtype=np.int64)
    bad = (ids < 0) | (ids >= weight.shape[0])
    if bad.any():
        raise IndexOutOfRange(_out_of_range("embedding_bag", idx, weight)(int(ids[bad][0])))
    return ids


def _slot_bags(
    ids: np.ndarray,
    weight: Tensor,
    starts: np.ndarray,
    ends: np.ndarray,
    width: int,
    mode: str,
    pad: int | None,
) -> Tensor:
    """(B, width) slots, one gather-and-reduce kernel parallel over bags; slots past a
    bag's end (and padding ids) are masked out."""
    from anychip.frontend.tensor import Tensor

    dev = weight.device
    slot = starts[:, None] + np.arange(width)[None, :]  # (B, W) element positions
    valid = slot < ends[:, None]
    slot_ids = np.where(valid, ids[np.minimum(slot, max(ids.size - 1, 0))] if ids.size else 0, 0)
    if pad is not None:
        valid &= slot_ids != pad
    rows = _lookup(weight, Tensor(slot_ids.astype(np.int64), device=dev))  # (B, W, D)
    vt = Tensor(valid, device=dev)
    if mode == "max":
        return _dense_bags(rows, vt, None, mode)
    total = vt.unsqueeze(-1)._select(rows, 0).sum(1)  # select: inf * 0 must not leak
    if mode == "sum":
        return total
    count = Tensor(np.maximum(valid.sum(1), 1).astype(rows.dtype.np), device=dev)
    return total / count.unsqueeze(-1)


def _scatter_bags(
    ids: np.ndarray,
    weight: Tensor,
    starts: np.ndarray,
    ends: np.ndarray,
    mode: str,
    pad: int | None,
) -> Tensor:
    """Long-tailed bags: the ids padded to their size class, each added into its bag
    (padding into an extra bag that is dropped), sum or mean."""
    from anychip.frontend.tensor import Tensor

    dev, nb, n = weight.device, len(starts), ids.size
    size = size_class(n)
    bag = np.full(size, nb, np.int64)  # positions in no bag go to the extra one
    pos = np.arange(n)
    owner = np.searchsorted(ends, pos, side="right")  # first bag ending after pos
    inside = (owner < nb) & (pos >= starts[np.minimum(owner, nb - 1)])
    if pad is not None:
        inside &= ids != pad
    bag[:n] = np.where(inside, owner, nb)
    padded = np.zeros(size, np.int64)
    padded[:n] = ids
    rows = _lookup(weight, Tensor(padded, device=dev))  # (size, D)
    dim = weight.shape[1]
    out = Tensor._const(0, rows.dtype, (nb + 1, dim), dev)
    bags = Tensor(bag, device=dev)
    out = out._prim(Ops.SCATTER_ADD, bags.unsqueeze(-1)._broadcast((size, dim)), rows, arg=0)
    out = out._shrink([(0, nb), (0, dim)])
    if mode == "mean":
        counts = np.bincount(bag[:n][inside], minlength=nb + 1)[:nb]
        count = Tensor(np.maximum(counts, 1).astype(rows.dtype.np), device=dev)
        out = out / count.unsqueeze(-1)
    return out


def _offset_bags_weighted(
    idx: Tensor, weight: Tensor, offsets: Tensor, w: Tensor, mode: str, last: bool
) -> Tensor:
    """Bags with per_sample_weights `w` (N,) on the device (0 already for padding ids)."""
    from anychip.frontend.tensor import Tensor

    n, dim = idx.shape[0], weight.shape[1]
    off = _check_offsets(offsets, n)
    nb = len(off) - 1 if last else len(off)
    starts = off[:nb]
    ends = np.append(off[1:], n)[:nb] if not last else off[1 : nb + 1]
    width = int((ends - starts).max()) if nb else 0
    if nb * width <= 2 * n + nb:
        slot = starts[:, None] + np.arange(width)[None, :]  # (B, Lmax) element positions
        valid = slot < ends[:, None]
        pos = as_index(idx, np.minimum(slot, max(n - 1, 0)), "embedding_bag")
        vt = Tensor(valid, device=idx.device)
        rows = _lookup(weight, take(idx, 0, pos)) * take(w, 0, pos).unsqueeze(-1)
        return vt.unsqueeze(-1)._select(rows, 0).sum(1)  # per_sample_weights: sum only
    bag = _bag_ids(offsets, n)  # (N,) in [0, len(offsets))
    rows = _lookup(weight, idx) * w.unsqueeze(-1)  # (N, D)
    out = Tensor._const(0, rows.dtype, (len(off), dim), weight.device)
    out = out._prim(Ops.SCATTER_ADD, bag.unsqueeze(-1)._broadcast((n, dim)), rows, arg=0)
    return out._shrink([(0, nb), (0, dim)])  # drops what follows include_last_offset's end


def embedding_bag(
    input: Any,
    weight: Tensor,
    offsets: Any = None,
    mode: str = "mean",
    per_sample_weights: Tensor | None = None,
    include_last_offset: bool = False,
    padding_idx: int | None = None,
) -> Tensor:
    """Sum, mean or max of bags of embedding rows: (B, dim).

    input (B, L) holds B bags of L ids; or input (N,) with offsets (B,) where bag b is
    input[offsets[b]:offsets[b+1]] (with `include_last_offset`, offsets has B+1 entries).
    `per_sample_weights` (input's shape, mode 'sum' only) scales each row; ids equal to
    `padding_idx` are left out (of the mean's count too). Empty bags give zeros.

    >>> import anychip as ac
    >>> w = ac.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    >>> embedding_bag(ac.tensor([0, 2, 1]), w, ac.tensor([0, 2]), mode="sum").tolist()
    [[6.0, 8.0], [3.0, 4.0]]
    """
    if mode not in MODES:
        raise ShapeError(f"embedding_bag: mode has to be one of {MODES}, got {mode!r}")
    if per_sample_weights is not None and mode != "sum":
        raise ShapeError(
            f"embedding_bag: per_sample_weights is only supported for mode='sum' (got {mode!r})"
        )
    idx = _rows("embedding_bag", input, weight, check=False)
    pad = _padding("embedding_bag", padding_idx, weight.shape[0])
    w = _bag_weights(idx, weight, per_sample_weights, pad)
    if idx.ndim == 2:
        if offsets is not None:
            raise ShapeError(
                "embedding_bag: if input is 2-d (fixed-size bags), offsets has to be None"
            )
        valid = (idx != pad) if pad is not None else None
        out = _dense_bags(_lookup(weight, idx), valid, w, mode).to(weight.dtype)
        return _check_rows("embedding_bag", out, idx, weight)
    if idx.ndim != 1 or offsets is None:
        raise ShapeError(
            f"embedding_bag: input has to be 2-d, or 1-d with 1-d offsets ({describe(idx)})"
        )
    off = as_index(idx, offsets, "embedding_bag")
    if off.ndim != 1 or (include_last_offset and off.shape[0] == 0):
        raise ShapeError(
            f"embedding_bag: offsets has to be a non-empty 1-d tensor ({describe(off)})"
        )
    weighted = per_sample_weights is not None
    out = _offset_bags(idx, weight, off, w, mode, include_last_offset, pad, weighted)
    out = out.to(weight.dtype)
    if weighted:
        return _check_rows("embedding_bag", out, idx, weight)
    return out  # ids checked on the host
