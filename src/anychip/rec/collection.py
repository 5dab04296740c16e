"""Embedding tables for sparse features, as TorchRec names them: `EmbeddingBagConfig`s map
features to tables (a table may serve several features), `EmbeddingBagCollection` pools
each feature's bags of a `KeyedJaggedTensor` into one (B, dim) tensor, handed back as a
`KeyedTensor`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from anychip.errors import ArgumentError, ShapeError
from anychip.frontend.creation import cat
from anychip.frontend.subscript import take
from anychip.frontend.tensor import Tensor, no_grad
from anychip.nn import init
from anychip.nn.containers import ModuleDict
from anychip.nn.layers import EmbeddingBag
from anychip.nn.module import Module
from anychip.rec.jagged import KeyedJaggedTensor

POOLINGS = ("sum", "mean")
GROUP = 6  # inputs joined per kernel by `join`


def join(parts: list[Tensor], dim: int) -> Tensor:
    """cat(parts, dim), in two rounds when there are many parts: a join of n inputs
    compiles to one kernel choosing among n sources per element, so joining groups of
    GROUP first (each realised) and then the groups keeps that near GROUP + n / GROUP
    (3-4x faster for DLRM's 27 features)."""
    if len(parts) > 2 * GROUP:
        parts = [cat(parts[i : i + GROUP], dim).realize() for i in range(0, len(parts), GROUP)]
    return cat(parts, dim)


@dataclass
class EmbeddingBagConfig:
    """One table: `num_embeddings` rows of `embedding_dim`, read by the features named in
    `feature_names`, whose bags it pools by `pooling` ("sum" or "mean")."""

    name: str
    embedding_dim: int
    num_embeddings: int
    feature_names: list[str] = field(default_factory=list)
    pooling: str = "sum"

    def __post_init__(self) -> None:
        self.pooling = str(self.pooling).lower()  # TorchRec's PoolingType.SUM reads "SUM"
        if self.pooling not in POOLINGS:
            raise ArgumentError(
                f"EmbeddingBagConfig {self.name!r}: pooling must be one of {POOLINGS}, "
                f"got {self.pooling!r}"
            )
        if self.embedding_dim <= 0 or self.num_embeddings <= 0:
            raise ShapeError(
                f"EmbeddingBagConfig {self.name!r}: needs a positive embedding_dim and "
                f"num_embeddings, got ({self.num_embeddings}, {self.embedding_dim})"
            )
        if not self.feature_names:
            self.feature_names = [self.name]  # a table of one feature named as the table


class KeyedTensor:
    """Pooled features of one batch: `values()` (B, sum of dims), the features side by side
    in `keys()` order; `kt[key]` is one feature's (B, dim).

    >>> import anychip as ac
    >>> kt = KeyedTensor(["a", "b"], [ac.ones(2, 3), ac.zeros(2, 1)])
    >>> kt.values().shape, kt["b"].shape, kt.length_per_key()
    ((2, 4), (2, 1), [3, 1])
    """

    def __init__(self, keys: list[str], tensors: list[Tensor]) -> None:
        if len(keys) != len(tensors):
            raise ShapeError(f"KeyedTensor: {len(keys)} keys but {len(tensors)} tensors")
        self._keys = list(keys)
        self._tensors = list(tensors)
        self._values: Tensor | None = None

    def keys(self) -> list[str]:
        return list(self._keys)

    def values(self) -> Tensor:
        if self._values is None:
            self._values = join(self._tensors, 1)  # (B, sum of dims)
        return self._values

    def length_per_key(self) -> list[int]:
        return [int(t.shape[1]) for t in self._tensors]

    def offset_per_key(self) -> list[int]:
        out = [0]
        for n in self.length_per_key():
            out.append(out[-1] + n)
        return out

    def __getitem__(self, key: str) -> Tensor:
        try:
            return self._tensors[self._keys.index(key)]
        except ValueError:
            raise ArgumentError(f"KeyedTensor: no key {key!r} (keys: {self._keys})") from None

    def to_dict(self) -> dict[str, Tensor]:
        return dict(zip(self._keys, self._tensors))


def _call_table(module: Any, ids: Tensor, offsets: Tensor, mode: str, w: Tensor | None) -> Tensor:
    """An override table's pooled lookup: its `pooled` method, else the module itself,
    called as `fn(ids, offsets, mode=..., per_sample_weights=...)`."""
    fn = getattr(module, "pooled", module)
    out: Tensor = fn(ids, offsets, mode=mode, per_sample_weights=w)
    return out


class EmbeddingBagCollection(Module):
    """Tables for sparse features: forward(kjt) pools each feature's bags into (B, dim),
    features in table order (each table's `feature_names` in order).

    Each table is an `nn.EmbeddingBag(mode=pooling, include_last_offset=True, sparse=sparse)`
    initialised U(-1/sqrt(rows), 1/sqrt(rows)) as TorchRec does. `modules={name: module}`
    puts any module in a config's place (a `DynamicEmbedding`, a hashed table): it is
    called as `module.pooled(ids, offsets, mode=..., per_sample_weights=...)` (or
    `module(...)` without `pooled`) with a feature's exact ids (N,), its offsets (B+1,)
    and must return (B, embedding_dim); the config still names its features and dim.

    >>> import anychip as ac
    >>> from anychip.rec import EmbeddingBagConfig, KeyedJaggedTensor
    >>> ebc = EmbeddingBagCollection([EmbeddingBagConfig("t", 4, 10, ["f", "g"])])
    >>> kjt = KeyedJaggedTensor(["f", "g"], ac.tensor([1, 2, 3]), ac.tensor([1, 0, 2, 0]))
    >>> kt = ebc(kjt)
    >>> kt.keys(), kt.values().shape
    (['f', 'g'], (2, 8))
    """

    def __init__(
        self,
        tables: list[EmbeddingBagConfig],
        device: Any = None,
        sparse: bool = True,
        modules: dict[str, Module] | None = None,
    ) -> None:
        super().__init__()
        names = [t.name for t in tables]
        if len(set(names)) != len(names):
            raise ArgumentError(f"EmbeddingBagCollection: table names must differ, got {names}")
        features = [f for t in tables for f in t.feature_names]
        if len(set(features)) != len(features):
            raise ArgumentError(
                f"EmbeddingBagCollection: a feature may be read by one table only, got {features}"
            )
        extra = sorted(set(modules or {}) - set(names))
        if extra:
            raise ArgumentError(f"EmbeddingBagCollection: modules {extra} name no table")
        self._configs = list(tables)
        self.sparse = sparse
        bags: dict[str, Module] = {}
        for t in tables:
            if modules and t.name in modules:
                bags[t.name] = modules[t.name]
            else:
                bags[t.name] = _table(t, device, sparse)
        self.embedding_bags = ModuleDict(bags)
        self._overrides = set(modules or {})

    def embedding_bag_configs(self) -> list[EmbeddingBagConfig]:
        return list(self._configs)

    def feature_names(self) -> list[str]:
        return [f for t in self._configs for f in t.feature_names]

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        have = set(features.keys())
        keys, outs = [], []
        for t in self._configs:
            table = self.embedding_bags[t.name]
            for f in t.feature_names:
                if f not in have:
                    raise ArgumentError(
                        f"EmbeddingBagCollection: table {t.name!r} reads feature {f!r}, "
                        f"which the batch lacks (keys: {features.keys()})"
                    )
                if t.name in self._overrides:
                    jt = features[f]
                    out = _call_table(
                        table, jt.values(), jt.offsets(), t.pooling, jt.weights_or_none()
                    )
                else:
                    ids, offsets, w = features.bags(f)
                    out = table(ids, offsets, w)  # (B, dim)
                samples = features.samples(f)
                if samples is not None:  # a variable batch: each sample's pooled bag
                    out = take(out, 0, samples)  # checked in range by the batch
                keys.append(f)
                outs.append(out)
        return KeyedTensor(keys, outs)


def _table(cfg: EmbeddingBagConfig, device: Any, sparse: bool) -> EmbeddingBag:
    table = EmbeddingBag(
        cfg.num_embeddings,
        cfg.embedding_dim,
        mode=cfg.pooling,
        include_last_offset=True,
        sparse=sparse,
        device=device,
    )
    bound = math.sqrt(1.0 / cfg.num_embeddings)
    with no_grad():
        init.uniform_(table.weight, -bound, bound)
    return table
