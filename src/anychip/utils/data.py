"""`anychip.utils.data`: Dataset, TensorDataset and DataLoader, as `torch.utils.data`.

>>> import anychip as ac
>>> from anychip.utils.data import DataLoader, TensorDataset
>>> ds = TensorDataset(ac.arange(10), ac.arange(10) * 2)
>>> [x.tolist() for x, _ in DataLoader(ds, batch_size=4)]
[[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from typing import Any, Generic, TypeVar

import numpy as np

from anychip import dtypes
from anychip.errors import ArgumentError, DTypeError, IndexOutOfRange, ShapeError
from anychip.frontend.creation import stack
from anychip.frontend.tensor import Tensor
from anychip.frontend.torch_api import Generator

T = TypeVar("T")


class Dataset(Generic[T]):
    """A map-style dataset: subclasses give `__getitem__(index)` and `__len__`."""

    def __getitem__(self, index: int) -> T:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def __add__(self, other: Dataset[T]) -> ConcatDataset[T]:
        return ConcatDataset([self, other])


class IterableDataset(Generic[T]):
    """A stream of samples: subclasses give `__iter__`; a DataLoader batches it in order."""

    def __iter__(self) -> Iterator[T]:
        raise NotImplementedError


class ConcatDataset(Dataset[T]):
    """The samples of several datasets, one after another."""

    def __init__(self, datasets: Iterable[Dataset[T]]) -> None:
        self.datasets = list(datasets)
        self.cumulative_sizes = list(np.cumsum([len(d) for d in self.datasets]))

    def __getitem__(self, index: int) -> T:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexOutOfRange(f"ConcatDataset: index {index} out of range for {len(self)}")
        k = int(np.searchsorted(self.cumulative_sizes, index, side="right"))
        start = int(self.cumulative_sizes[k - 1]) if k else 0
        return self.datasets[k][index - start]

    def __len__(self) -> int:
        return int(self.cumulative_sizes[-1]) if self.datasets else 0


class TensorDataset(Dataset[tuple[Tensor, ...]]):
    """Samples are the i-th rows of each tensor (all share their first dimension)."""

    def __init__(self, *tensors: Tensor) -> None:
        if not tensors:
            raise ArgumentError("TensorDataset: needs at least one tensor")
        n = tensors[0].shape[0] if tensors[0].ndim else -1
        if any(t.ndim == 0 or t.shape[0] != n for t in tensors):
            raise ShapeError(
                "TensorDataset: size mismatch between tensors (first dimensions "
                f"{[t.shape[0] if t.ndim else None for t in tensors]})"
            )
        self.tensors = tensors
        self._host: list[np.ndarray] | None = None  # host copies for batching, made once
        self._host_versions: tuple[int, ...] = ()  # the tensors' versions at that copy

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        return tuple(t[index] for t in self.tensors)

    def __len__(self) -> int:
        return self.tensors[0].shape[0]

    def _batch(self, indices: list[int]) -> list[Tensor]:
        """A whole batch, as default_collate of the samples would give: rows taken on the
        host from one copy of the data and uploaded (an epoch of 313 batches: 10 ms, 25x
        less than a device gather per batch, which pays a launch each), or, when a tensor
        requires grad, gathered on the device so autograd sees it."""
        if any(t.requires_grad for t in self.tensors):
            idx = Tensor(np.asarray(indices, dtype=np.int64), device=self.tensors[0].device)
            return [t.index_select(0, idx) for t in self.tensors]
        versions = tuple(t._version for t in self.tensors)
        if self._host is None or versions != self._host_versions:  # changed in place: recopy
            self._host = [t.numpy() for t in self.tensors]
            self._host_versions = versions
        rows = np.asarray(indices, dtype=np.int64)
        return [
            Tensor(h[rows], dtype=t.dtype, device=t.device)
            for h, t in zip(self._host, self.tensors, strict=True)
        ]


class Subset(Dataset[T]):
    """The samples of `dataset` at `indices`."""

    def __init__(self, dataset: Dataset[T], indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __getitem__(self, index: int) -> T:
        return self.dataset[self.indices[index]]

    def __len__(self) -> int:
        return len(self.indices)


def random_split(
    dataset: Dataset[T], lengths: Sequence[int | float], generator: Generator | None = None
) -> list[Subset[T]]:
    """Split into non-overlapping random subsets of the given lengths (or fractions)."""
    n = len(dataset)
    sizes = [int(x) for x in lengths]
    if all(isinstance(x, float) and 0 <= x <= 1 for x in lengths) and sum(lengths) == 1:
        sizes = [int(np.floor(n * float(x))) for x in lengths]
        for i in range(n - sum(sizes)):  # the remainder round-robin, as torch
            sizes[i % len(sizes)] += 1
    if sum(sizes) != n:
        raise ArgumentError(f"random_split: lengths {list(lengths)} do not sum to {n}")
    order = _rng(generator).permutation(n).tolist()
    out, start = [], 0
    for s in sizes:
        out.append(Subset(dataset, order[start : start + s]))
        start += s
    return out


class Sampler(Generic[T]):
    """Yields dataset indices (or batches of them) for a DataLoader."""

    def __iter__(self) -> Iterator[T]:
        raise NotImplementedError


class SequentialSampler(Sampler[int]):
    def __init__(self, data_source: Sized) -> None:
        self.data_source = data_source

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(Sampler[int]):
    """A new random order of the indices each pass (with `replacement`: `num_samples`
    draws), from `generator` or anychip's global seed."""

    def __init__(
        self,
        data_source: Sized,
        replacement: bool = False,
        num_samples: int | None = None,
        generator: Generator | None = None,
    ) -> None:
        self.data_source, self.replacement = data_source, replacement
        self._num_samples, self.generator = num_samples, generator

    @property
    def num_samples(self) -> int:
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self) -> Iterator[int]:
        n, rng = len(self.data_source), _rng(self.generator)
        if self.replacement:
            return iter(rng.integers(0, n, self.num_samples).tolist())
        order = np.concatenate([rng.permutation(n) for _ in range(-(-self.num_samples // n))])
        return iter(order[: self.num_samples].tolist())

    def __len__(self) -> int:
        return self.num_samples


class SubsetRandomSampler(Sampler[int]):
    """The given indices in a random order each pass."""

    def __init__(self, indices: Sequence[int], generator: Generator | None = None) -> None:
        self.indices, self.generator = list(indices), generator

    def __iter__(self) -> Iterator[int]:
        order = _rng(self.generator).permutation(len(self.indices))
        return iter([self.indices[i] for i in order])

    def __len__(self) -> int:
        return len(self.indices)


class BatchSampler(Sampler[list[int]]):
    """Groups another sampler's indices into lists of `batch_size`."""

    def __init__(self, sampler: Iterable[int], batch_size: int, drop_last: bool) -> None:
        if batch_size <= 0:
            raise ArgumentError(f"BatchSampler: batch_size must be positive, got {batch_size}")
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        for i in self.sampler:
            batch.append(i)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


def _rng(generator: Generator | None) -> np.random.Generator:
    """The generator's stream, or one seeded from anychip's global seed (manual_seed)."""
    if generator is not None:
        return generator.rng
    from anychip.frontend.random import randint

    return np.random.default_rng(int(randint(0, 1 << 62, ()).item()))


def default_collate(batch: Sequence[Any]) -> Any:
    """Samples -> a batch: tensors and arrays stacked; Python numbers as a tensor (int64,
    float64, bool); strings as they come; dicts collated key by key; tuples and lists field
    by field into a list (as torch; a namedtuple keeps its type)."""
    first = batch[0]
    if isinstance(first, Tensor):
        return stack(list(batch))
    if isinstance(first, np.ndarray):
        return stack([Tensor(b) for b in batch])
    if isinstance(first, (bool, np.bool_)):
        return Tensor(np.asarray(batch, dtype=np.bool_))
    if isinstance(first, (int, np.integer)):
        return Tensor(np.asarray(batch, dtype=np.int64))
    if isinstance(first, (float, np.floating)):
        return Tensor(np.asarray(batch, dtype=np.float64), dtype=dtypes.float64)
    if isinstance(first, str):
        return batch  # as given (torch: a list from dicts, a tuple from tuple fields)
    if isinstance(first, Mapping):
        return {k: default_collate([b[k] for b in batch]) for k in first}
    if isinstance(first, (tuple, list)):
        if any(len(b) != len(first) for b in batch):
            raise ShapeError("default_collate: each element in the batch must be of equal size")
        fields = [default_collate(col) for col in zip(*batch, strict=True)]
        if hasattr(first, "_fields"):  # a namedtuple keeps its type
            return type(first)(*fields)
        return fields  # tuples become lists, as torch's default_collate does
    raise DTypeError(f"default_collate: cannot collate samples of type {type(first).__name__}")


class DataLoader(Generic[T]):
    """Batches of a dataset: `batch_size`, `shuffle` (seeded by `generator`, or by
    anychip.manual_seed), `drop_last`, `collate_fn` (default_collate). Loading runs in
    the calling process: `num_workers` and `pin_memory` are accepted and change nothing."""

    def __init__(
        self,
        dataset: Dataset[T],
        batch_size: int | None = 1,
        shuffle: bool = False,
        sampler: Iterable[int] | None = None,
        batch_sampler: Iterable[list[int]] | None = None,
        num_workers: int = 0,
        collate_fn: Callable[[list[T]], Any] | None = None,
        pin_memory: bool = False,
        drop_last: bool = False,
        generator: Generator | None = None,
        **ignored: Any,
    ) -> None:
        if batch_size is not None and batch_size <= 0:
            raise ArgumentError(f"DataLoader: batch_size must be positive, got {batch_size}")
        if shuffle and sampler is not None:
            raise ArgumentError("DataLoader: sampler option is mutually exclusive with shuffle")
        self.dataset, self.batch_size, self.shuffle = dataset, batch_size, shuffle
        self.sampler, self.batch_sampler = sampler, batch_sampler
        self.collate_fn = collate_fn or default_collate
        self.drop_last, self.generator = drop_last, generator
        self.num_workers, self.pin_memory = num_workers, pin_memory

    def _indices(self) -> list[int]:
        if self.sampler is not None:
            return list(self.sampler)
        n = len(self.dataset)  # type: ignore[arg-type]
        return _rng(self.generator).permutation(n).tolist() if self.shuffle else list(range(n))

    def _batches(self) -> Iterator[list[int]]:
        if self.batch_sampler is not None:
            yield from (list(b) for b in self.batch_sampler)
            return
        yield from BatchSampler(self._indices(), self.batch_size or 1, self.drop_last)

    def __iter__(self) -> Iterator[Any]:
        if isinstance(self.dataset, IterableDataset):
            yield from self._stream(self.dataset)
            return
        if self.batch_size is None and self.batch_sampler is None:  # no batching
            yield from (self.dataset[i] for i in self._indices())
            return
        fast = isinstance(self.dataset, TensorDataset) and self.collate_fn is default_collate
        for chunk in self._batches():
            if fast:
                yield self.dataset._batch(chunk)  # type: ignore[attr-defined]
            else:
                yield self.collate_fn([self.dataset[i] for i in chunk])

    def _stream(self, samples: Iterable[Any]) -> Iterator[Any]:
        """Batches of an IterableDataset, in its own order."""
        if self.batch_size is None:
            yield from samples
            return
        batch: list[Any] = []
        for s in samples:
            batch.append(s)
            if len(batch) == self.batch_size:
                yield self.collate_fn(batch)
                batch = []
        if batch and not self.drop_last:
            yield self.collate_fn(batch)

    def __len__(self) -> int:
        if self.batch_sampler is not None:
            return len(self.batch_sampler)  # type: ignore[arg-type]
        n = len(self.sampler) if self.sampler is not None else len(self.dataset)  # type: ignore[arg-type]
        if self.batch_size is None:
            return n
        return len(BatchSampler(range(n), self.batch_size, self.drop_last))


__all__ = [
    "BatchSampler",
    "ConcatDataset",
    "DataLoader",
    "Dataset",
    "IterableDataset",
    "RandomSampler",
    "Sampler",
    "SequentialSampler",
    "Subset",
    "SubsetRandomSampler",
    "TensorDataset",
    "default_collate",
    "random_split",
]
