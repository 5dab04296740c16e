"""Batches of sparse features as TorchRec lays them out: `KeyedJaggedTensor` holds, for
K features (keys) and B samples, each sample's ids of each feature in one flat `values`
array, key-major (all B bags of key 0, then key 1, ...), with one length per (key, sample).

A single-valued feature (a user id) has lengths of 1; a multi-valued one (a movie's
genres) any length, 0 included. The lengths stay on the host as well, so the per-feature
bags an `EmbeddingBagCollection` reads are cut there, padded to size classes (see
`anychip.frontend.embedding.size_class`), and a jitted training step replays on every
batch: `anychip.jit` sees a KeyedJaggedTensor's tensors through `__jit_flatten__`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from anychip import dtypes
from anychip.errors import ArgumentError, DTypeError, IndexOutOfRange, ShapeError
from anychip.frontend.embedding import size_class
from anychip.frontend.tensor import Tensor
from anychip.ir.ops import Node, Ops
from anychip.runtime import realize as rt
from anychip.runtime.dispatch import JitError


def _host(x: Any, what: str, integer: bool = True) -> np.ndarray:
    """`x` (Tensor, ndarray or list) as a 1-d host array: int64, or float32 weights."""
    a = x.numpy() if isinstance(x, Tensor) else np.asarray(x)
    if a.ndim != 1:
        raise ShapeError(f"KeyedJaggedTensor: {what} must be 1-d, got shape {a.shape}")
    if integer:
        if a.size and a.dtype.kind not in "iu":
            raise DTypeError(f"KeyedJaggedTensor: {what} must be integers, got dtype {a.dtype}")
        return a.astype(np.int64, copy=False)
    if a.size and a.dtype.kind != "f":
        raise DTypeError(f"KeyedJaggedTensor: {what} must be floating point, got {a.dtype}")
    return a.astype(np.float32, copy=False)


def _device_of(*xs: Any, device: Any = None) -> str:
    from anychip.runtime.device import canonical

    if device is not None:
        return canonical(device)
    for x in xs:
        if isinstance(x, Tensor):
            return x.device
    return canonical(None)


class JaggedTensor:
    """One feature's bags: `values()` (N,), `lengths()` (B,), `offsets()` (B+1,), and
    optional per-id `weights()`.

    >>> import anychip as ac
    >>> jt = JaggedTensor(ac.tensor([5, 6, 7]), lengths=ac.tensor([2, 0, 1]))
    >>> jt.offsets().tolist(), jt.to_dense()
    ([0, 2, 2, 3], [[5, 6], [], [7]])
    """

    def __init__(
        self,
        values: Any,
        lengths: Any = None,
        offsets: Any = None,
        weights: Any = None,
        *,
        device: Any = None,
    ) -> None:
        dev = _device_of(values, lengths, offsets, device=device)
        vals = _host(values, "values")
        if (lengths is None) == (offsets is None):
            raise ArgumentError("JaggedTensor: give exactly one of lengths and offsets")
        if lengths is not None:
            lens = _host(lengths, "lengths")
        else:
            off = _host(offsets, "offsets")
            if off.size == 0 or off[0] != 0 or np.any(np.diff(off) < 0):
                raise ShapeError(f"JaggedTensor: offsets must start at 0 and rise, got {off}")
            lens = np.diff(off)
        _check_lengths("JaggedTensor", lens, vals.size)
        self._lens = lens
        self._vals = vals
        self._values = _tensor(values, vals, dev)
        self._lengths = Tensor(lens, device=dev)
        self._offsets = Tensor(_offsets(lens), device=dev)
        self._weights = None if weights is None else _weights(weights, vals.size, dev)

    def values(self) -> Tensor:
        return self._values

    def lengths(self) -> Tensor:
        return self._lengths

    def offsets(self) -> Tensor:
        return self._offsets

    def weights(self) -> Tensor:
        if self._weights is None:
            raise ArgumentError("JaggedTensor: this feature has no weights")
        return self._weights

    def weights_or_none(self) -> Tensor | None:
        return self._weights

    def to_dense(self) -> list[list[int]]:
        """Each bag's ids as a Python list."""
        off = _offsets(self._lens)
        return [self._vals[off[i] : off[i + 1]].tolist() for i in range(self._lens.size)]

    def __repr__(self) -> str:
        return f"JaggedTensor(values={self._vals.tolist()}, lengths={self._lens.tolist()})"


def _offsets(lens: np.ndarray) -> np.ndarray:
    out = np.zeros(lens.size + 1, np.int64)
    np.cumsum(lens, out=out[1:])
    return out


def _check_lengths(who: str, lens: np.ndarray, n: int) -> None:
    if lens.size and lens.min() < 0:
        raise ArgumentError(f"{who}: lengths must be non-negative, got {int(lens.min())}")
    total = int(lens.sum())
    if total != n:
        raise ShapeError(
            f"{who}: lengths sum to {total} but values has {n} entries "
            f"(lengths shape ({lens.size},), values shape ({n},))"
        )


def _tensor(given: Any, host: np.ndarray, device: str) -> Tensor:
    """The given tensor if it already lives on `device` as int64, else one from `host`."""
    if isinstance(given, Tensor) and given.device == device and given.dtype == dtypes.int64:
        return given
    return Tensor(host, device=device)


def _on(device: str, ids: np.ndarray) -> Tensor:
    """int64 host ids as a tensor on `device` (a canonical name already: a batch makes
    dozens of these, so without `Tensor()`'s checks of the name)."""
    buf = rt.from_host(device, ids, dtypes.int64)
    return Tensor._from_node(Node(Ops.BUFFER, dtypes.int64, ids.shape, device, (), buf))


def _variable(
    keys: list[str],
    lens: np.ndarray,
    strides: list[list[int]] | None,
    inverse: tuple[list[str], Any] | None,
) -> tuple[list[int], np.ndarray]:
    """A variable batch's bags per key and its (K, B) inverse indices, checked: key i has
    its own number of bags, and sample b reads its bag inverse[i, b]."""
    who = "KeyedJaggedTensor"
    if strides is None or inverse is None:
        raise ArgumentError(f"{who}: stride_per_key_per_rank and inverse_indices come together")
    if len(strides) != len(keys) or any(len(r) != 1 or r[0] < 0 for r in strides):
        raise ShapeError(
            f"{who}: stride_per_key_per_rank must hold one non-negative stride (one rank) "
            f"for each of the {len(keys)} keys, got {strides}"
        )
    per = [int(r[0]) for r in strides]
    if sum(per) != lens.size:
        raise ShapeError(f"{who}: strides {per} sum to {sum(per)} but lengths has {lens.size}")
    inv_keys, inv = inverse
    if list(inv_keys) != keys:
        raise ArgumentError(f"{who}: inverse_indices keys {list(inv_keys)} are not {keys}")
    a = inv.numpy() if isinstance(inv, Tensor) else np.asarray(inv)
    if a.ndim != 2 or a.shape[0] != len(keys) or (a.size and a.dtype.kind not in "iu"):
        raise ShapeError(
            f"{who}: inverse_indices must be integers of shape ({len(keys)}, B), got "
            f"shape {a.shape} dtype {a.dtype}"
        )
    a = a.astype(np.int64)
    bad = (a < 0) | (a >= np.asarray(per)[:, None])
    if bad.any():
        i, b = (int(x[0]) for x in np.nonzero(bad))
        raise IndexOutOfRange(
            f"{who}: inverse_indices[{i}, {b}] = {a[i, b]} is outside key {keys[i]!r}'s "
            f"{per[i]} bags"
        )
    return per, a


def _weights(weights: Any, n: int, device: str) -> Tensor:
    w = _host(weights, "weights", integer=False)
    if w.size != n:
        raise ShapeError(
            f"KeyedJaggedTensor: weights has shape ({w.size},) but values has shape ({n},)"
        )
    if isinstance(weights, Tensor) and weights.device == device:
        return weights.to(dtypes.float32)
    return Tensor(w, device=device)


def _not_in_capture(what: str) -> None:
    from anychip.frontend.jit import capturing

    if capturing():
        raise JitError(
            f"KeyedJaggedTensor.{what}: the exact ids change length from batch to batch, so "
            "a jitted function can not replay on them; read them through bags(key) (as "
            "EmbeddingBagCollection does), or call this outside anychip.jit"
        )


class KeyedJaggedTensor:
    """K sparse features of B samples, key-major: `lengths` (K*B,) holds the B bag lengths
    of key 0, then of key 1, ...; `values` (sum of lengths,) the ids in that order; optional
    `weights` one float per id (per-sample weights of a weighted bag).

    A variable batch (TorchRec's variable batch per feature) gives each key its own number
    of bags, `stride_per_key_per_rank=[[n_0], [n_1], ...]`, and `inverse_indices=(keys,
    (K, B))` telling which of key i's bags sample b reads: B candidates of one user hold
    the user's features once, an EmbeddingBagCollection pools that one bag and hands each
    sample its row.

    >>> import anychip as ac
    >>> kjt = KeyedJaggedTensor(["user", "genres"], ac.tensor([7, 9, 1, 4, 2]),
    ...                         ac.tensor([1, 1, 2, 1]))
    >>> kjt.stride(), kjt["genres"].to_dense()
    (2, [[1, 4], [2]])
    >>> vb = KeyedJaggedTensor(["user", "item"], ac.tensor([7, 1, 4, 2]), ac.tensor([1, 1, 1, 1]),
    ...     stride_per_key_per_rank=[[1], [3]], inverse_indices=(["user", "item"],
    ...     ac.tensor([[0, 0, 0], [0, 1, 2]])))
    >>> vb.stride(), vb.stride_per_key(), vb["user"].to_dense()
    (3, [1, 3], [[7]])
    """

    def __init__(
        self,
        keys: list[str],
        values: Any,
        lengths: Any,
        weights: Any = None,
        *,
        device: Any = None,
        stride_per_key_per_rank: list[list[int]] | None = None,
        inverse_indices: tuple[list[str], Any] | None = None,
    ) -> None:
        self._keys = [str(k) for k in keys]
        if len(set(self._keys)) != len(self._keys):
            raise ArgumentError(f"KeyedJaggedTensor: keys must be distinct, got {self._keys}")
        dev = _device_of(values, lengths, weights, device=device)
        vals, lens = _host(values, "values"), _host(lengths, "lengths")
        k = len(self._keys)
        self._inverse: np.ndarray | None = None
        if stride_per_key_per_rank is not None or inverse_indices is not None:
            strides, self._inverse = _variable(self._keys, lens, stride_per_key_per_rank,
                                               inverse_indices)  # fmt: skip
        elif k == 0 or lens.size % k:
            raise ShapeError(
                f"KeyedJaggedTensor: lengths of shape ({lens.size},) must hold the same "
                f"number of bags for each of the {k} keys {self._keys}"
            )
        else:
            strides = [lens.size // k] * k
        _check_lengths("KeyedJaggedTensor", lens, vals.size)
        self._device = dev
        self._vals, self._lens = vals, lens
        self._strides = strides
        self._first = [0, *np.cumsum(strides).tolist()]  # key i's bags: first[i]..first[i+1]
        self._stride = strides[0] if self._inverse is None else self._inverse.shape[1]
        self._inv_cache: dict[str, Tensor | None] = {}
        self._pack: tuple[Tensor, Tensor] | None = None  # see `_packed`
        self._windows: list[tuple[tuple[int, int], tuple[int, int]]] = []
        self._given = values  # values() made from it when first asked for (bags() do not)
        self._values_t: Tensor | None = None
        self._lengths = _on(dev, lens)
        self._offsets = _on(dev, _offsets(lens))
        self._weights = None if weights is None else _weights(weights, vals.size, dev)
        self._w_host: np.ndarray | None = None
        self._bag_cache: dict[str, tuple[Tensor, Tensor, Tensor | None]] = {}

    # --- constructors as TorchRec names them -------------------------------------------
    @staticmethod
    def from_lengths_sync(
        keys: list[str], values: Any, lengths: Any, weights: Any = None, *, device: Any = None
    ) -> KeyedJaggedTensor:
        return KeyedJaggedTensor(keys, values, lengths, weights, device=device)

    @staticmethod
    def from_offsets_sync(
        keys: list[str], values: Any, offsets: Any, weights: Any = None, *, device: Any = None
    ) -> KeyedJaggedTensor:
        off = _host(offsets, "offsets")
        if off.size == 0 or off[0] != 0 or np.any(np.diff(off) < 0):
            raise ShapeError(
                f"KeyedJaggedTensor: offsets of shape ({off.size},) must start at 0 and rise"
            )
        return KeyedJaggedTensor(keys, values, np.diff(off), weights, device=device)

    @staticmethod
    def from_jt_dict(jt_dict: dict[str, JaggedTensor]) -> KeyedJaggedTensor:
        """One KeyedJaggedTensor from features of the same batch size."""
        keys = list(jt_dict)
        jts = [jt_dict[k] for k in keys]
        weighted = [jt.weights_or_none() is not None for jt in jts]
        if any(weighted) and not all(weighted):
            raise ArgumentError("KeyedJaggedTensor.from_jt_dict: weights on some keys only")
        values = np.concatenate([jt._vals for jt in jts]) if jts else np.zeros(0, np.int64)
        lengths = np.concatenate([jt._lens for jt in jts]) if jts else np.zeros(0, np.int64)
        w = np.concatenate([jt.weights().numpy() for jt in jts]) if all(weighted) else None
        dev = jts[0].values().device if jts else None
        return KeyedJaggedTensor(keys, values, lengths, w, device=dev)

    # --- accessors ---------------------------------------------------------------------
    def keys(self) -> list[str]:
        return list(self._keys)

    def values(self) -> Tensor:
        _not_in_capture("values()")
        return self._values

    @property
    def _values(self) -> Tensor:
        if self._values_t is None:
            self._values_t = _tensor(self._given, self._vals, self._device)
            self._given = None
        return self._values_t

    def lengths(self) -> Tensor:
        return self._lengths

    def offsets(self) -> Tensor:
        return self._offsets

    def weights(self) -> Tensor:
        if self._weights is None:
            raise ArgumentError("KeyedJaggedTensor: this batch has no weights")
        _not_in_capture("weights()")
        return self._weights

    def weights_or_none(self) -> Tensor | None:
        return None if self._weights is None else self.weights()

    def stride(self) -> int:
        """The batch size B (with variable strides: the inverse indices' width)."""
        return self._stride

    def stride_per_key(self) -> list[int]:
        """Bags of each key: B each, or each key's own count (a variable batch)."""
        return list(self._strides)

    def variable_stride_per_key(self) -> bool:
        return self._inverse is not None

    def inverse_indices(self) -> tuple[list[str], Tensor]:
        """(keys, (K, B) int64): sample b of key i reads that key's bag [i, b]."""
        if self._inverse is None:
            raise ArgumentError("KeyedJaggedTensor: this batch has no inverse indices")
        _not_in_capture("inverse_indices()")
        return list(self._keys), Tensor(self._inverse, device=self._device)

    def inverse_indices_or_none(self) -> tuple[list[str], Tensor] | None:
        return None if self._inverse is None else self.inverse_indices()

    def samples(self, key: str) -> Tensor | None:
        """Which of key's bags each of the B samples reads ((B,) int64), None where sample
        b reads bag b (every key of a fixed batch; a variable batch's key of B bags in
        order). What an EmbeddingBagCollection gathers its pooled rows by; made outside a
        capture, as `bags`."""
        if self._inverse is None:
            return None
        if key in self._inv_cache:
            return self._inv_cache[key]
        i = self._index(key)
        rows = self._inverse[i]
        same = self._strides[i] == rows.size and np.array_equal(rows, np.arange(rows.size))
        got = None
        if not same:  # keys with the same map (a request's features) share one tensor
            got = next((t for k, t in self._inv_cache.items() if t is not None
                        and np.array_equal(self._inverse[self._index(k)], rows)), None)  # fmt: skip
            got = got if got is not None else _on(self._device, rows)
        self._inv_cache[key] = got
        return got

    def device(self) -> str:
        return self._device

    def length_per_key(self) -> list[int]:
        f = self._first
        return [int(self._lens[f[i] : f[i + 1]].sum()) for i in range(len(self._keys))]

    def offset_per_key(self) -> list[int]:
        return [0, *np.cumsum(self.length_per_key()).tolist()]

    def _index(self, key: str) -> int:
        try:
            return self._keys.index(key)
        except ValueError:
            raise ArgumentError(f"KeyedJaggedTensor: no key {key!r} (keys: {self._keys})") from None

    def _span(self, key: str) -> tuple[int, int, np.ndarray]:
        """(start, end) of key's ids in values, and its (B,) lengths."""
        i = self._index(key)
        lens = self._lens[self._first[i] : self._first[i + 1]]
        start = int(self._lens[: self._first[i]].sum())
        return start, start + int(lens.sum()), lens

    def __getitem__(self, key: str) -> JaggedTensor:
        _not_in_capture(f"[{key!r}]")
        start, end, lens = self._span(key)
        w = self._weights[start:end] if self._weights is not None else None
        return JaggedTensor(self._values[start:end], lens, weights=w, device=self._device)

    def to_dict(self) -> dict[str, JaggedTensor]:
        return {k: self[k] for k in self._keys}

    def to(self, device: Any) -> KeyedJaggedTensor:
        w = self._weights.to(device) if self._weights is not None else None
        if self._inverse is None:
            return KeyedJaggedTensor(self._keys, self._vals, self._lens, w, device=device)
        return KeyedJaggedTensor(
            self._keys, self._vals, self._lens, w, device=device,
            stride_per_key_per_rank=[[s] for s in self._strides],
            inverse_indices=(self._keys, self._inverse),
        )  # fmt: skip

    # --- what an EmbeddingBagCollection reads ------------------------------------------
    def bags(self, key: str) -> tuple[Tensor, Tensor, Tensor | None]:
        """key's bags as `embedding_bag(..., include_last_offset=True)` takes them: ids
        (size class of N,) padded with 0 past the last offset, offsets (B+1,), and the
        weights padded alike (or None). The padded shapes depend on N's size class only,
        so a jitted step replays on batches whose bags have other lengths."""
        got = self._bag_cache.get(key)
        if got is None:
            ids, offs = self._packed()
            (a, b), (c, d) = self._windows[self._index(key)]
            w = None
            if self._weights is not None:
                start, end, _ = self._span(key)
                wh = np.zeros(b - a, np.float32)
                wh[: end - start] = self._weights_np()[start:end]
                w = Tensor(wh, device=self._device)
            got = (ids._shrink([(a, b)]), offs._shrink([(c, d)]), w)
            self._bag_cache[key] = got
        return got

    def _packed(self) -> tuple[Tensor, Tensor]:
        """Every key's padded ids in one tensor and its offsets in another (two uploads
        a batch, not two a key); `bags` hands out slices of them, which the embedding
        layout step reads in place."""
        if self._pack is None:
            ids, offs, windows = [], [], []
            at_i = at_o = 0
            for key in self._keys:
                start, end, lens = self._span(key)
                part = np.zeros(size_class(end - start), np.int64)
                part[: end - start] = self._vals[start:end]
                ids.append(part)
                offs.append(_offsets(lens))
                windows.append(((at_i, at_i + part.size), (at_o, at_o + lens.size + 1)))
                at_i, at_o = at_i + part.size, at_o + lens.size + 1
            self._windows = windows
            self._pack = (_on(self._device, np.concatenate(ids)),
                          _on(self._device, np.concatenate(offs)))  # fmt: skip
        return self._pack

    def _weights_np(self) -> np.ndarray:
        if self._w_host is None:
            assert self._weights is not None
            self._w_host = self._weights.numpy()
        return self._w_host

    def __jit_flatten__(self) -> tuple[Any, ...]:
        """What `anychip.jit` keys a call on and maps onto a capture's buffers: the keys,
        lengths and offsets ((K*B,) and (K*B+1,)), each key's bags and, for a variable
        batch, its `samples`: made now so none is made inside a capture (where a replay
        would see the first batch's). The exact values (N,) are left out: their length
        changes from batch to batch; inside a capture, read ids through `bags`."""
        bags = [self.bags(k) for k in self._keys]  # slices of the packed tensors
        packed = self._packed()
        sizes = "|".join(f"{a},{b},{c},{d}" for (a, b), (c, d) in self._windows)
        weights = tuple(w for _, _, w in bags) if self._weights is not None else ()
        samples = tuple(self.samples(k) for k in self._keys) if self._inverse is not None else ()
        keys = "\0".join(self._keys)  # one string: one step of jit's walk, not one a key
        return (keys, sizes, self._lengths, self._offsets, packed, weights, samples)

    def __repr__(self) -> str:
        return (
            f"KeyedJaggedTensor(keys={self._keys}, stride={self._stride}, "
            f"length_per_key={self.length_per_key()}, device={self._device!r})"
        )
