"""The served model: its scoring function under `anychip.jit`, captured once per batch
size class at start (`warmup`), so a request only replays recorded kernels; its version;
and the two locks that make updates atomic: `lock` is held while one batch is scored and
while an update is swapped in, `update_lock` while an update is checked and prepared.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np

from anychip.errors import ArgumentError
from anychip.frontend.jit import jit
from anychip.frontend.tensor import Tensor, no_grad
from anychip.nn.module import Module
from anychip.rec import store, wire
from anychip.rec.jagged import KeyedJaggedTensor
from anychip.rec.serve import apply
from anychip.rec.serve.features import REQUESTS, Padded, Query, ServingFeatures
from anychip.runtime.replay import at_once

SMALLEST_CLASS = 16  # rows of the smallest batch class


class StaleUpdate(ArgumentError):
    """An update that does not follow the served version (HTTP 409): `version` is the
    served one."""

    def __init__(self, message: str, version: int) -> None:
        super().__init__(message)
        self.version = version


def batch_classes(max_batch: int) -> list[int]:
    """Batch sizes the model is captured for: powers of two from SMALLEST_CLASS up to
    the first >= max_batch, plus one row each (a batch always ends in a padding row)."""
    if max_batch < 1:
        raise ArgumentError(f"rec serve: max_batch must be >= 1, got {max_batch}")
    sizes, n = [], SMALLEST_CLASS
    while True:
        sizes.append(n + 1)
        if n >= max_batch:
            return sizes
        n *= 2


class _Scorer:
    """`model`'s probabilities of the batch in `inputs` (dense features, KeyedJaggedTensor),
    set just before each call under the model's lock. It is called with every tensor it
    reads as one flat argument list (`_flat`: the model's, then the batch's, each once),
    so jit keys a call on their shapes alone (its fast path) instead of walking a nested
    structure on every call; a batch class fixes the batch's other structure (its keys and
    bag counts: features.ServingFeatures.batch)."""

    def __init__(self, model: Module) -> None:
        self.model = model
        self.inputs: tuple[Tensor | None, KeyedJaggedTensor | None] = (None, None)
        self.__name__ = "score"

    def __call__(self, *tensors: Tensor) -> Tensor:
        dense, kjt = self.inputs
        out: Tensor = self.model(dense, kjt).sigmoid()
        return out


def _tensors(model: Module) -> tuple[Tensor, ...]:
    return (*(p for _, p in model.named_parameters()), *(b for _, b in model.named_buffers()))


def _flat(x: Any, out: dict[int, Tensor]) -> None:
    """The tensors in `x` (nested tuples and lists) into `out`, by identity, in order."""
    if isinstance(x, Tensor):
        out.setdefault(id(x), x)
    elif isinstance(x, (tuple, list)):
        for y in x:
            _flat(y, out)


class ServedModel:
    """A saved model directory loaded for serving; see the module docstring."""

    def __init__(self, path: str, device: Any = "cpu", max_batch: int = 1024) -> None:
        self.model, feature_store = store.load(path, device)
        self.model.eval()
        self.device = device
        self.features = ServingFeatures(feature_store)
        self.version = int(feature_store["config"].get("version", 0))
        self.max_batch = max_batch
        self.max_requests = REQUESTS  # requests one batch may hold (features.REQUESTS)
        self.classes = batch_classes(max_batch)
        self.lock = threading.Lock()
        self.update_lock = threading.Lock()
        self._scorer = _Scorer(self.model)
        self._score = jit(self._scorer)
        self._tensors = _tensors(self.model)
        self.path = os.path.abspath(path)
        self.last_swap_s = 0.0  # how long the latest update held the inference lock

    def size_for(self, rows: int) -> int:
        """The batch class `rows` real rows are padded to."""
        for size in self.classes:
            if rows < size:
                return size
        raise ArgumentError(f"rec serve: {rows} rows exceed the largest batch ({self.max_batch})")

    def warmup(self) -> None:
        """Capture the scoring function for every batch class (compiling its kernels)."""
        with self.lock:
            self._capture_all()

    def _capture_all(self) -> None:
        for size in self.classes:
            dense, kjt = self._inputs(self.features.empty(size))
            with no_grad():
                self._call(dense, kjt)

    def _inputs(self, batch: Padded) -> tuple[Tensor | None, KeyedJaggedTensor]:
        dense = Tensor(batch.dense, device=self.device) if batch.dense.shape[1] else None
        keys = list(self.features.keys)
        kjt = KeyedJaggedTensor(
            keys, batch.values, batch.lengths, device=self.device,
            stride_per_key_per_rank=[[s] for s in batch.strides],
            inverse_indices=(keys, batch.inverse),
        )  # fmt: skip
        return dense, kjt

    def _call(self, dense: Tensor | None, kjt: KeyedJaggedTensor) -> Tensor:
        """The scoring function on one batch (under `lock`)."""
        flat: dict[int, Tensor] = {id(t): t for t in self._tensors}
        _flat((dense, kjt.__jit_flatten__()), flat)
        self._scorer.inputs = (dense, kjt)
        try:
            return self._score(*flat.values())
        finally:
            self._scorer.inputs = (None, None)

    def run(self, batch: Padded) -> tuple[int, np.ndarray]:
        """(version, probabilities (batch.rows,)) of a padded batch, one model version."""
        dense, kjt = self._inputs(batch)
        with self.lock, no_grad(), at_once():  # read at once: the replay need not run on
            version = self.version
            probs = self._call(dense, kjt).numpy()
        return version, probs[: batch.rows]

    def score(self, queries: list[Query]) -> tuple[int, list[np.ndarray]]:
        """Each query's candidate probabilities, all from one model version."""
        rows = sum(len(q.items) for q in queries)
        version, probs = self.run(self.features.batch(queries, self.size_for(rows)))
        cuts = np.cumsum([len(q.items) for q in queries])[:-1]
        return version, np.split(probs, cuts)

    def apply_bytes(self, data: bytes) -> int:
        """Decode an update's wire bytes and `apply` it (ArgumentError when they do not
        decode)."""
        return self.apply(wire.decode(data))

    def apply(self, update: wire.Update) -> int:
        """Swap `update` in (atomically between batches) and return the new version.
        Raises StaleUpdate when it does not follow the served version, ArgumentError when
        it does not fit the model; either way nothing changes."""
        with self.update_lock:
            current = self.version
            if update.version <= current:
                raise StaleUpdate(
                    f"rec serve update: version {update.version} is not newer than the "
                    f"served version {current}", current,
                )  # fmt: skip
            if update.kind == "delta" and update.base_version != current:
                raise StaleUpdate(
                    f"rec serve update: a delta from version {update.base_version} does not "
                    f"apply to the served version {current}; send a full update", current,
                )  # fmt: skip
            ready = apply.prepare(self.model, update)
            grows = ready.grows
            with self.lock:
                start = time.perf_counter()
                ready.swap()
                self.version = update.version
                if grows:  # new table shapes: capture each batch class again, now
                    self._capture_all()
                self.last_swap_s = time.perf_counter() - start
            return update.version
