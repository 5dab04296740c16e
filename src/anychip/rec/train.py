"""Train and evaluate a CTR model on MovieLens-100k under a protocol: the engine behind
`anychip rec train`. `Trainer` is the `protocol.Learner` for anychip models: it turns a
numpy `Batch` into (dense tensor, KeyedJaggedTensor), steps the optimizers, predicts.
The example takes about a minute on cpu, so the doctests skip it.

>>> res = train("deepfm", "online")   # doctest: +SKIP
>>> round(res.metrics["auc"], 3)       # doctest: +SKIP
0.74
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from anychip import optim
from anychip.errors import ArgumentError
from anychip.frontend.embedding import size_class
from anychip.frontend.random import manual_seed
from anychip.frontend.tensor import Tensor, no_grad
from anychip.nn.losses import binary_cross_entropy_with_logits
from anychip.nn.module import Module
from anychip.rec import models, protocol
from anychip.rec.collection import EmbeddingBagConfig
from anychip.rec.features import Batch, MovieLensFeatures
from anychip.rec.jagged import KeyedJaggedTensor
from anychip.rec.movielens import load_movielens
from anychip.rec.table import DynamicEmbedding
from anychip.runtime.device import canonical

DATASETS = ("ml-100k",)
MakeOptimizers = Callable[[Module], Sequence[optim.Optimizer]]


@dataclass(frozen=True)
class Settings:
    """Model and training hyper-parameters (shared with the PyTorch twins in bench/)."""

    dim: int = 16  # embedding width of every table
    lr: float = 1e-3  # Adam
    history: bool = True  # behaviour features from the stream (anychip.rec.history)
    hash_fraction: float | None = None  # hashed id tables of this fraction of the rows
    dynamic: bool = False  # user and item ids in DynamicEmbedding tables (collisionless)
    seed: int = 0
    hparams: dict[str, Any] | None = None  # for models.build (default: hparams_for)
    run: protocol.Config = field(default_factory=protocol.Config)


def hparams_for(name: str, dim: int) -> dict[str, Any]:
    """MovieLens-sized layers (the models' defaults are Criteo-sized)."""
    table: dict[str, dict[str, Any]] = {
        "dlrm": {"bottom_mlp": (64, dim), "top_mlp": (128, 64, 1)},
        "dcn": {"num_cross_layers": 2, "deep_mlp": (128, 64)},
        "deepfm": {"deep_mlp": (128, 64)},
        "wide_deep": {"deep_mlp": (128, 64)},
        "mf": {},
    }
    return table[name]


def table_configs(features: MovieLensFeatures, dim: int) -> list[EmbeddingBagConfig]:
    """The EmbeddingBagCollection configs of a feature set's tables."""
    return [
        EmbeddingBagConfig(t.name, dim, t.rows, list(t.features), t.pooling)
        for t in features.tables()
    ]


def build(name: str, features: MovieLensFeatures, settings: Settings, device: Any = None) -> Module:
    """Model `name` (one of anychip.rec.models.MODELS) over the feature set's tables."""
    manual_seed(settings.seed)
    tables = table_configs(features, settings.dim)
    hp = hparams_for(name, settings.dim) if settings.hparams is None else settings.hparams
    modules: dict[str, Module] | None = None
    if settings.dynamic:  # collisionless growing tables for the raw user and item ids
        modules = {t: DynamicBag(settings.dim, device) for t in ("user_id", "item_id")}
    return models.build(
        name, tables, features.dense_in, device=device, sparse=False, modules=modules, **hp
    )


class DynamicBag(Module):
    """A `DynamicEmbedding` in an EmbeddingBagCollection's place (`modules=`): a bag's exact
    ids are padded to a size class (with the batch's first id, which only adds sightings
    of an id already there) so compiled kernels see few shapes."""

    def __init__(self, dim: int, device: Any = None) -> None:
        super().__init__()
        self.table = DynamicEmbedding(dim, device=device, sparse=False)

    def pooled(
        self, ids: Tensor, offsets: Tensor, mode: str = "sum", per_sample_weights: Any = None
    ) -> Tensor:
        host = ids.numpy()
        padded = np.full(size_class(len(host)), host[0] if len(host) else 0, np.int64)
        padded[: len(host)] = host
        out: Tensor = self.table.bag(
            padded, offsets, mode=mode, per_sample_weights=per_sample_weights,
            include_last_offset=True,
        )  # fmt: skip
        return out


def adam(lr: float) -> MakeOptimizers:
    def make(model: Module) -> list[optim.Optimizer]:
        return [optim.Adam(model.parameters(), lr=lr)]

    return make


class Trainer:
    """A `protocol.Learner` over an anychip model: batches are padded to `batch_size`
    rows (or a multiple of it for prediction) so each step sees the same shapes."""

    def __init__(
        self,
        model: Module,
        make_optimizers: MakeOptimizers,
        features: MovieLensFeatures,
        batch_size: int,
        device: Any = None,
    ) -> None:
        self.model, self.features = model, features
        self.optimizers = list(make_optimizers(model))
        self.batch_size, self.device = batch_size, canonical(device)

    def inputs(self, b: Batch) -> tuple[Tensor | None, KeyedJaggedTensor]:
        keys = self.features.keys
        values, lengths = b.lengths(keys)
        kjt = KeyedJaggedTensor(list(keys), values, lengths, device=self.device)
        dense = Tensor(b.dense, device=self.device) if b.dense.shape[1] else None
        return dense, kjt

    def _pad(self, n: int) -> int:
        return -(-n // self.batch_size) * self.batch_size

    def fit(self, rows: np.ndarray) -> None:
        b = self.features.batch(rows, pad_to=self._pad(len(rows)))
        self.model.train()
        dense, kjt = self.inputs(b)
        logits = self.model(dense, kjt)
        w = Tensor(b.weights, device=self.device)
        y = Tensor(b.labels, device=self.device)
        # padding rows weigh 0: the loss is the mean over the batch's real events
        loss = binary_cross_entropy_with_logits(logits, y, weight=w, reduction="sum") / len(rows)
        for opt in self.optimizers:
            opt.zero_grad()
        loss.backward()
        for opt in self.optimizers:
            opt.step()

    def predict(self, rows: np.ndarray) -> np.ndarray:
        b = self.features.batch(rows, pad_to=self._pad(len(rows)))
        self.model.eval()
        with no_grad():
            dense, kjt = self.inputs(b)
            p = self.model(dense, kjt).sigmoid().numpy()
        return np.asarray(p[: len(rows)], np.float64)

    def snapshot(self) -> Any:
        return (
            {k: v.numpy().copy() for k, v in self.model.state_dict().items()},
            [copy.deepcopy(_host_state(o.state_dict())) for o in self.optimizers],
        )

    def restore(self, state: Any) -> None:
        params, opt_states = state
        self.model.load_state_dict({k: Tensor(v, device=self.device) for k, v in params.items()})
        for o, s in zip(self.optimizers, opt_states):
            o.load_state_dict(_device_state(s, self.device))


def _host_state(x: Any) -> Any:
    """An optimizer state dict with its tensors as numpy arrays (a snapshot that later
    in-place updates cannot reach)."""
    if isinstance(x, Tensor):
        return x.numpy().copy()
    if isinstance(x, dict):
        return {k: _host_state(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(_host_state(v) for v in x)
    return x


def _device_state(x: Any, device: str) -> Any:
    if isinstance(x, np.ndarray):
        return Tensor(x, device=device)
    if isinstance(x, dict):
        return {k: _device_state(v, device) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(_device_state(v, device) for v in x)
    return x


def load_dataset(name: str, path: str | None = None) -> Any:
    if name not in DATASETS:
        raise ArgumentError(f"rec train: unknown dataset {name!r}; choose one of {DATASETS}")
    return load_movielens(path)


def train(
    model_name: str,
    protocol_name: str,
    *,
    device: Any = None,
    settings: Settings = Settings(),
    dataset: str = "ml-100k",
    path: str | None = None,
    limit: int | None = None,
    progress: protocol.Progress | None = None,
) -> tuple[protocol.Result, Trainer]:
    """Train `model_name` on `dataset` under `protocol_name` ('static' or 'online');
    `limit` keeps only the first events of the stream."""
    if model_name not in models.MODELS:
        raise ArgumentError(
            f"rec train: unknown model {model_name!r}; choose one of {models.MODELS}"
        )
    ml = load_dataset(dataset, path)
    if limit is not None:
        ml = ml.first(limit)
    features = MovieLensFeatures(ml, settings.history, hash_fraction=settings.hash_fraction)
    model = build(model_name, features, settings, device)
    trainer = Trainer(model, adam(settings.lr), features, settings.run.batch_size, device)
    kwargs = {} if progress is None else {"progress": progress}
    result = protocol.run(protocol_name, trainer, ml.label, ml.user, settings.run, **kwargs)
    return result, trainer
