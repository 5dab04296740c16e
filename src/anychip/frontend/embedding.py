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


def _offset_bags(
    idx: Tensor, weight: Tensor, offsets: Tensor, w: Tensor | None, mode: str, last: bool
) -> Tensor:
    """Variable bags of a 1-d input (N,): bag b holds idx[offsets[b]:offsets[b+1]]."""
    from anychip.frontend.tensor import Tensor

    n, dim = idx.shape[0], weight.shape[1]
    off = _check_offsets(offsets, n)
    nb = len(off) - 1 if last else len(off)  # with include_last_offset the last one ends bags
    starts = off[:nb]
    ends = np.append(off[1:], n)[:nb] if not last else off[1 : nb + 1]
    width = int((ends - starts).max()) if nb else 0
    if nb and width and np.all(ends - starts == width) and ends[-1] == nb * width == n:
        # every bag `width` long, back to back, covering the whole input (include_last_offset
        # may end the bags early): the (B, L) slots are input itself seen as a matrix
        rows, wb = _lookup(weight, idx.reshape(nb, width)), None
        if w is not None:
            wb = w.reshape(nb, width)  # per-sample weights, 0 for padding ids
        if mode == "max":  # padding ids are no candidates for the max
            return _dense_bags(rows, None if wb is None else wb != 0, None, mode)
        return _dense_bags(rows, None, wb, mode)
    # (B, Lmax) slots: one gather-and-reduce kernel parallel over bags. Sum and mean take
    # this layout while padding wastes little; max always (no scatter-max primitive).
    if mode == "max" or nb * width <= 2 * n + nb:
        slot = starts[:, None] + np.arange(width)[None, :]  # (B, Lmax) element positions
        valid = slot < ends[:, None]
        pos = as_index(idx, np.minimum(slot, max(n - 1, 0)), "embedding_bag")
        vt = Tensor(valid, device=idx.device)
        rows = _lookup(weight, take(idx, 0, pos))  # (B, Lmax, D)
        if mode == "max":
            if w is not None:  # padding ids (w == 0) are not candidates for the max
                vt = vt & (take(w, 0, pos) != 0)
            return _dense_bags(rows, vt, None, mode)
        wb = take(w, 0, pos) if w is not None else None
        if wb is not None:
            rows = rows * wb.unsqueeze(-1)
        total = vt.unsqueeze(-1)._select(rows, 0).sum(1)  # select: inf * 0 must not leak
        if mode == "sum":
            return total
        if wb is None:
            count = Tensor((ends - starts).astype(rows.dtype.np), device=idx.device)
        else:
            count = vt._select(wb, 0).sum(1)
        return total / count.maximum(1).unsqueeze(-1)
    bag = _bag_ids(offsets, n)  # (N,) in [0, len(offsets))
    rows = _lookup(weight, idx)  # (N, D)
    if w is not None:
        rows = rows * w.unsqueeze(-1)
    out = Tensor._const(0, rows.dtype, (len(off), dim), weight.device)
    out = out._prim(Ops.SCATTER_ADD, bag.unsqueeze(-1)._broadcast((n, dim)), rows, arg=0)
    out = out._shrink([(0, nb), (0, dim)])  # drops what follows include_last_offset's end
    if mode == "mean":
        ones = w if w is not None else Tensor._const(1, rows.dtype, (n,), weight.device)
        count = Tensor._const(0, rows.dtype, (len(off),), weight.device)
        count = count._prim(Ops.SCATTER_ADD, bag, ones, arg=0)._shrink([(0, nb)])
        out = out / count.maximum(1).unsqueeze(-1)
    return out


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
    out = _offset_bags(idx, weight, off, w, mode, include_last_offset).to(weight.dtype)
    return _check_rows("embedding_bag", out, idx, weight)
