"""Embedding lookups, the recommendation workload's core: rows of a table by id, and bags of
rows reduced to one vector each. Built from GATHER and SCATTER_ADD, so they stay on the device.

torch.nn.functional semantics: `embedding(input, weight)` and `embedding_bag(...)` with 2-d
input (fixed-size bags) or 1-d input plus offsets (variable bags; empty bags give zeros).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from anychip import dtypes
from anychip.errors import DTypeError, IndexOutOfRange, ShapeError, describe
from anychip.frontend.subscript import as_index, check_range, raise_if, range_flag, take
from anychip.ir.ops import Node, Ops
from anychip.runtime import dispatch, host_c

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


def embedding(
    input: Any, weight: Tensor, padding_idx: int | None = None, sparse: bool = False
) -> Tensor:
    """weight's rows at the ids in `input`: shape (*input.shape, dim). The row at
    `padding_idx` is returned as is but gets no gradient. With `sparse`, weight's gradient
    is a row-sparse `SparseTensor` (frontend/sparse.py) instead of a dense table.

    >>> import anychip as ac
    >>> w = ac.tensor([[0.0, 0.0], [1.0, 2.0], [3.0, 4.0]])
    >>> embedding(ac.tensor([[2, 1]]), w).tolist()
    [[[3.0, 4.0], [1.0, 2.0]]]
    """
    idx = _rows("embedding", input, weight)
    pad = _padding("embedding", padding_idx, weight.shape[0])
    out = _take(weight, idx, sparse, pad)  # (*input.shape, D)
    if pad is not None and out.requires_grad:
        out = (idx == pad).unsqueeze(-1)._select(out.detach(), out)
    return out


def _take(weight: Tensor, idx: Tensor, sparse: bool, pad: int | None) -> Tensor:
    """Rows of weight at idx; `sparse`: weight's gradient is row-sparse (frontend/sparse.py),
    without the padding row."""
    if not sparse:
        return take(weight, 0, idx)
    from anychip.frontend.sparse import lookup

    return lookup(weight, idx, pad)


def _lookup(weight: Tensor, idx: Tensor, sparse: bool = False, pad: int | None = None) -> Tensor:
    """Rows of weight at idx, in float32 for half tables (bags accumulate in float32)."""
    rows = _take(weight, idx, sparse, pad)
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
    return _valid_offsets(offsets.numpy(), n, describe(offsets))


def _valid_offsets(off: np.ndarray, n: int, what: str | Callable[[], str]) -> np.ndarray:
    """`off` when it is valid offsets into n ids, else IndexOutOfRange naming `what` (or
    what it returns: a message's text made only for the error)."""
    bad = ""
    if off.size and off[0] != 0:
        bad = f"offsets[0] has to be 0, but got {off[0]}"
    elif off.size and (off[1:] < off[:-1]).any():
        bad = "offsets must be non-decreasing"
    elif off.size and off[-1] > n:
        bad = f"offsets[-1] can not be greater than input's length {n}, but got {off[-1]}"
    if bad:
        raise IndexOutOfRange(f"embedding_bag: {bad} ({what if isinstance(what, str) else what()})")
    return off


def unique_slots(ids: np.ndarray, rows: int) -> np.ndarray:
    """(2n,) int64 for ids (n,) of a table of `rows` rows: the sorted unique ids padded to n
    slots with `rows` (one past the table), then each id's slot among them. The host half
    of a sparse lookup (frontend/sparse.py); padding ids come in as `rows` themselves.

    >>> unique_slots(np.array([5, 2, 5]), 9).tolist()
    [2, 5, 9, 1, 0, 1]
    >>> unique_slots(np.array([70000, 2, 70000]), 9).tolist()  # out of range: sorted too
    [2, 70000, 9, 1, 0, 1]
    """
    n = ids.size
    out = np.full(2 * n, rows, np.int64)
    if n == 0:
        return out
    # a stable argsort of narrow keys is a radix sort: ~20% faster than np.unique's
    narrow = rows < np.iinfo(np.uint16).max and ids.min() >= 0 and ids.max() <= rows
    key = ids.astype(np.uint16) if narrow else ids
    order = np.argsort(key, kind="stable")
    ordered = ids[order]
    first = np.empty(n, np.bool_)  # where each distinct id starts in sorted order
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    uniq = ordered[first]
    out[: uniq.size] = uniq
    out[n + order] = np.cumsum(first) - 1
    return out


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
    sparse: bool = False,
) -> Tensor:
    """Variable bags of a 1-d input (N,): bag b holds idx[offsets[b]:offsets[b+1]].

    The jagged layout is made on the host (`_Layout`, a recorded host step, so
    `anychip.jit` replays it on each new batch), in slots whose sizes are size classes
    (`size_class`): a batch whose bags have other lengths runs the same kernels, nothing
    is compiled for a new bag width. Sum and mean add each id's row into its bag (ids
    padded to the size class of N); max reduces (B, width) slots. With
    per_sample_weights (a device tensor of the ids' length) the kernels follow N."""
    if weighted:
        assert w is not None
        return _offset_bags_weighted(idx, weight, offsets, w, mode, last, sparse, pad)

    dev, n = weight.device, idx.shape[0]
    nb = offsets.shape[0] - 1 if last else offsets.shape[0]
    # what error messages name, formatted only for one (describe reads shape, dtype, device)
    what = tuple(_Meta(t.shape, t.dtype, t.device) for t in (idx, weight))
    layout = _Layout(weight.shape[0], n, last, pad, mode == "max", what)
    layout.sparse = sparse and mode != "max"
    layout.n_off = offsets.shape[0]
    buf = _laid_out(layout, idx, offsets, dev)
    if mode == "max":  # (B, width) slots, -1 where a bag has no element
        width = buf.size // nb if nb else 0
        slots = _tensor.Tensor._from_node(Node(Ops.BUFFER, dtypes.int64, (nb, width), dev, (), buf))
        valid = slots >= 0
        # sparse: empty slots read past the table (zeros), out of the gradient's rows
        empty = weight.shape[0] if sparse else 0
        rows = _lookup(weight, valid._select(slots, empty), sparse, pad)  # (B, W, D)
        return _dense_bags(rows, valid, None, mode)
    size = size_class(n)  # ids padded to it, each with its bag (nb: in no bag)
    parts = 4 if layout.sparse else 2  # sparse: also the unique ids and each id's slot
    lay = _tensor.Tensor._from_node(Node(Ops.BUFFER, dtypes.int64, (parts, size), dev, (), buf))
    ids, bag = (lay._shrink([(i, i + 1), (0, size)])._reshape((size,)) for i in (0, 1))
    if sparse:
        from anychip.frontend.sparse import lookup_unique

        rows = lookup_unique(weight, lay[2], lay[3], pad)  # (size, D)
        if rows.dtype in (dtypes.float16, dtypes.bfloat16):
            rows = rows.to(dtypes.float32)
    else:
        rows = _lookup(weight, ids)  # (size, D)
    dim = weight.shape[1]
    out = _tensor.Tensor._const(0, rows.dtype, (nb + 1, dim), dev)
    at = bag._reshape((size, 1))._broadcast((size, dim))
    out = out._prim(Ops.SCATTER_ADD, at, rows, arg=0)
    out = out._shrink([(0, nb), (0, dim)])
    if mode == "mean":
        ones = _tensor.Tensor._const(1, rows.dtype, (size,), dev)
        count = _tensor.Tensor._const(0, rows.dtype, (nb + 1,), dev)
        count = count._prim(Ops.SCATTER_ADD, bag, ones, arg=0)._shrink([(0, nb)])
        out = out / count.maximum(1).unsqueeze(-1)
    return out


def _window(t: Tensor) -> tuple[Any, int | None]:
    """(buffer, first element) where `t` is a 1-d slice of a realised buffer (a
    KeyedJaggedTensor's packed ids: the host step reads the slice from it, no copy), else
    (t's own realised buffer, None)."""
    n = t.node
    if n.op is Ops.SHRINK and n.srcs[0].op is Ops.BUFFER and len(n.shape) == 1:
        return n.srcs[0].arg, int(n.arg[0][0])
    return t.realize().node.arg, None


_SHARED = threading.local()  # .layouts: id(ids) -> (ids ref, {key: (offsets, recorders, buffer)})


def _laid_out(layout: _Layout, idx: Tensor, offsets: Tensor, dev: str) -> Any:
    """The buffer of `layout` run on (idx, offsets): one host step for every table that
    reads the same bags (DeepFM's first- and second-order tables of a feature, the
    tables of a `KeyedJaggedTensor` key, which hands each table the same tensors). Shared
    while neither tensor changed in place and under the same recorders, so a capture
    never reads a layout made outside it (a replay would keep the first batch's)."""
    recs = tuple(getattr(dispatch._LOCAL, "recorders", ()))
    key = (id(offsets), offsets._version, idx._version, layout.key())
    table: dict[int, tuple[weakref.ref[Tensor], dict[Any, Any]]] | None
    table = getattr(_SHARED, "layouts", None)
    if table is None:
        table = _SHARED.layouts = {}
    entry = table.get(id(idx))
    per = entry[1] if entry is not None and entry[0]() is idx else None
    hit = per.get(key) if per is not None else None
    same = hit is not None and hit[0] is offsets and len(hit[1]) == len(recs)
    if hit is not None and same and all(a is b for a, b in zip(hit[1], recs)):
        return hit[2]
    ins = []
    for at, t in enumerate((idx, offsets)):
        buf, lo = _window(t)
        ins.append(buf)
        layout.starts[at] = lo
    # a sum or mean layout's size is known: the C routine writes it into its buffer
    size = None if layout.slots or layout.sparse else 2 * size_class(layout.n)
    buf = dispatch.host_call(layout, ins, dev, dtypes.int64, size=size)
    if per is None:  # kept while idx lives (tensors compare by value: keyed by identity)
        per = {}
        table[id(idx)] = (weakref.ref(idx, lambda _, k=id(idx), t=table: t.pop(k, None)), per)
    if len(per) >= 8:  # one ids tensor laid out many ways: keep the latest few
        per.clear()
    per[key] = (offsets, recs, buf)
    return buf


def _bag_bounds(off: np.ndarray, n: int, last: bool) -> tuple[int, np.ndarray, np.ndarray]:
    """(bag count, starts, ends) of the bags that offsets `off` cut n ids into; with
    include_last_offset (`last`) the last offset ends the last bag."""
    nb = off.size - 1 if last else off.size
    ends = off[1 : nb + 1] if last else np.append(off[1:], n)[:nb]
    return nb, off[:nb], ends


class _Meta(NamedTuple):
    """A tensor's shape, dtype and device, kept for an error message without the tensor."""

    shape: tuple[int, ...]
    dtype: Any
    device: str


class _Layout:
    """The host step laying a jagged batch out (ids, offsets -> int64 slots), checking
    offsets and ids as torch does. `slots`: (B, width class) element ids, -1 where a bag
    has none; else (2, size class of N): the ids padded with 0, and each one's bag
    (B for padding and padding_idx ids, an extra bag that is dropped); `sparse` adds
    `unique_slots` of the ids in bags (others count as past the table): (4, size)."""

    sparse = False

    def __init__(
        self, rows: int, n: int, last: bool, pad: int | None, slots: bool, what: tuple[Any, ...]
    ) -> None:
        self.starts: list[int | None] = [None, None]  # where ids, offsets start in their buffers
        self.n_off = 0
        self.rows, self.n, self.last, self.pad, self.slots, self.tensors = (
            rows,
            n,
            last,
            pad,
            slots,
            what,
        )

    @property
    def what(self) -> str:
        """The ids and table as error messages name them."""
        return describe(*self.tensors)

    def key(self) -> tuple[Any, ...]:
        """What the laid-out values depend on besides the ids and offsets."""
        return (self.rows, self.n, self.last, self.pad, self.slots, self.sparse)

    def __call__(self, ids: np.ndarray, off: np.ndarray) -> np.ndarray:
        if self.starts[0] is not None:  # slices of packed buffers (`_window`)
            ids = ids[self.starts[0] : self.starts[0] + self.n]
        if self.starts[1] is not None:
            off = off[self.starts[1] : self.starts[1] + self.n_off]
        n = ids.size
        if not self.slots and _contiguous_int64(ids, off):  # the C routine, where built
            out = np.empty((2, size_class(n)), np.int64)
            if host_c.bag_layout(ids, off, self.last, self.rows, self.pad, out.reshape(-1)) == 0:
                nb = off.size - 1 if self.last else off.size
                return self._unique(out, nb) if self.sparse else out
        _valid_offsets(off, n, lambda: self.what)
        # one reduction, no masks: a negative id is a huge unsigned one
        if n and ids.view(np.uint64).max() >= self.rows:
            v = int(ids[(ids < 0) | (ids >= self.rows)][0])
            raise IndexOutOfRange(
                f"embedding_bag: index {v} is out of range for an embedding table of "
                f"{self.rows} rows ({self.what})"
            )
        nb, starts, ends = _bag_bounds(off, n, self.last)
        if self.slots:
            width = size_class(int((ends - starts).max())) if nb else 0
            slot = starts[:, None] + np.arange(width)[None, :]
            valid = slot < ends[:, None]
            got = ids[np.minimum(slot, n - 1)] if n else np.zeros(slot.shape, np.int64)
            if self.pad is not None:
                valid &= got != self.pad
            return np.where(valid, got, -1).astype(np.int64)
        size = size_class(n)
        out = np.empty((2, size), np.int64)
        out[0, :n] = ids
        out[0, n:] = 0
        # each position's bag (the bags tile [0, ends[-1]) in order): nb past the last end
        end = int(ends[-1]) if nb else 0
        if nb:
            out[1, :end] = np.repeat(np.arange(nb), ends - starts)
        out[1, end:] = nb
        if self.pad is not None:
            out[1, :n][ids == self.pad] = nb
        return self._unique(out, nb) if self.sparse else out

    def direct(self, ins: list[dispatch.Address], out: dispatch.Address) -> bool:
        """The replayed layout written by the C routine straight into its buffer, reading
        the ids and offsets where they lie (sum and mean layouts); False leaves it to
        `__call__` (max and sparse layouts, no C routine, another size class: a guard,
        invalid input: the typed error)."""
        if self.slots or self.sparse:
            return False
        (ids_at, ids_size, ids_dt), (off_at, off_size, off_dt), (out_at, out_size, out_dt) = (
            *ins,
            out,
        )
        if not (ids_dt is off_dt is out_dt is dtypes.int64):
            return False
        n = ids_size if self.starts[0] is None else self.n
        n_off = off_size if self.starts[1] is None else self.n_off
        size = size_class(n)
        if out_size != 2 * size:
            return False
        ids_at += 8 * (self.starts[0] or 0)
        off_at += 8 * (self.starts[1] or 0)
        rc = host_c.bag_layout_at(
            ids_at, n, off_at, n_off, self.last, self.rows, self.pad, out_at, size
        )
        return rc == 0

    def _unique(self, out: np.ndarray, nb: int) -> np.ndarray:
        """The layout with `unique_slots` of the ids in bags (not in bag `nb`) appended
        (sparse tables)."""
        ids_in = np.where(out[1] == nb, self.rows, out[0])
        return np.concatenate([out.reshape(-1), unique_slots(ids_in, self.rows)])


def _contiguous_int64(*arrays: np.ndarray) -> bool:
    return all(a.dtype == np.int64 and a.flags.c_contiguous for a in arrays)


def _offset_bags_weighted(
    idx: Tensor,
    weight: Tensor,
    offsets: Tensor,
    w: Tensor,
    mode: str,
    last: bool,
    sparse: bool = False,
    pad: int | None = None,
) -> Tensor:
    """Bags with per_sample_weights `w` (N,) on the device (0 already for padding ids)."""
    from anychip.frontend.tensor import Tensor

    n, dim = idx.shape[0], weight.shape[1]
    off = _check_offsets(offsets, n)
    nb, starts, ends = _bag_bounds(off, n, last)
    width = int((ends - starts).max()) if nb else 0
    if nb * width <= 2 * n + nb:
        slot = starts[:, None] + np.arange(width)[None, :]  # (B, Lmax) element positions
        valid = slot < ends[:, None]
        pos = as_index(idx, np.minimum(slot, max(n - 1, 0)), "embedding_bag")
        vt = Tensor(valid, device=idx.device)
        rows = _lookup(weight, take(idx, 0, pos), sparse, pad) * take(w, 0, pos).unsqueeze(-1)
        return vt.unsqueeze(-1)._select(rows, 0).sum(1)  # per_sample_weights: sum only
    bag = _bag_ids(offsets, n)  # (N,) in [0, len(offsets))
    rows = _lookup(weight, idx, sparse, pad) * w.unsqueeze(-1)  # (N, D)
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
    sparse: bool = False,
) -> Tensor:
    """Sum, mean or max of bags of embedding rows: (B, dim).

    input (B, L) holds B bags of L ids; or input (N,) with offsets (B,) where bag b is
    input[offsets[b]:offsets[b+1]] (with `include_last_offset`, offsets has B+1 entries).
    `per_sample_weights` (input's shape, mode 'sum' only) scales each row; ids equal to
    `padding_idx` are left out (of the mean's count too). Empty bags give zeros. With
    `sparse`, weight's gradient is a row-sparse `SparseTensor` (docs/sparse.md).

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
        out = _dense_bags(_lookup(weight, idx, sparse, pad), valid, w, mode).to(weight.dtype)
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
    out = _offset_bags(idx, weight, off, w, mode, include_last_offset, pad, weighted, sparse)
    out = out.to(weight.dtype)
    if weighted:
        return _check_rows("embedding_bag", out, idx, weight)
    return out  # ids checked on the host


# imported last: anychip.frontend.tensor imports this module (directly or not), so the
# module object may be half made here; the functions above read `_tensor.X` when called,
# where a local import would cost about a microsecond a call (hundreds per training step)
from anychip.frontend import tensor as _tensor  # noqa: E402
