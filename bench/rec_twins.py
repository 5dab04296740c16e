"""PyTorch twins of anychip.rec's tables and models (DLRM, DCN-v2, DeepFM, Wide & Deep,
logistic MF): the same layers, parameter names and initialisation as src/anychip/rec/
models.py, in plain torch, so a twin's `state_dict()` loads into the anychip model and
the two compute the same logits. Benchmarks and tests build both from one config.

A twin's forward is `forward(dense (B, dense_in) or None, feats) -> logits (B,)` where
`feats` maps each feature to `(ids, offsets)` (offsets (B+1,), include_last_offset) as
`torch_features(kjt)` makes from an anychip KeyedJaggedTensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

Feats = dict[str, tuple[torch.Tensor, torch.Tensor]]


def torch_features(kjt: Any) -> Feats:
    """An anychip KeyedJaggedTensor's features as torch (ids, offsets) per key."""
    out = {}
    for k, jt in kjt.to_dict().items():
        out[k] = (torch.from_numpy(jt.values().numpy()), torch.from_numpy(jt.offsets().numpy()))
    return out


def mlp(sizes: Sequence[int], last_relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if last_relu or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class EBC(nn.Module):
    """EmbeddingBagCollection's twin: `embedding_bags[name]` an nn.EmbeddingBag per
    config, U(-1/sqrt(rows), 1/sqrt(rows)); forward gives {feature: (B, dim)} in order."""

    def __init__(self, tables: Sequence[Any], sparse: bool = True) -> None:
        super().__init__()
        self.configs = list(tables)
        self.embedding_bags = nn.ModuleDict()
        for t in tables:
            bag = nn.EmbeddingBag(
                t.num_embeddings,
                t.embedding_dim,
                mode=t.pooling,
                include_last_offset=True,
                sparse=sparse,
            )
            bound = math.sqrt(1.0 / t.num_embeddings)
            nn.init.uniform_(bag.weight, -bound, bound)
            self.embedding_bags[t.name] = bag

    def dims(self) -> list[int]:
        return [t.embedding_dim for t in self.configs for _ in t.feature_names]

    def forward(self, feats: Feats) -> dict[str, torch.Tensor]:
        out = {}
        for t in self.configs:
            for f in t.feature_names:
                ids, offsets = feats[f]
                out[f] = self.embedding_bags[t.name](ids, offsets)
        return out


class FusedEBC(nn.Module):
    """TorchRec's `FusedEmbeddingBagCollection` (FBGEMM's table-batched embeddings, its
    row-wise Adagrad applied inside backward) behind `EBC`'s interface: the issue-13
    TorchRec peer. Needs `torchrec` and `fbgemm-gpu-cpu` (bench only, not installed by
    the project)."""

    def __init__(self, tables: Sequence[Any], lr: float) -> None:
        super().__init__()
        from torchrec import EmbeddingBagConfig
        from torchrec.modules.fused_embedding_modules import FusedEmbeddingBagCollection
        from torchrec.optim import RowWiseAdagrad

        self.configs = list(tables)
        self.keys = [f for t in tables for f in t.feature_names]
        cfgs = [
            EmbeddingBagConfig(name=t.name, embedding_dim=t.embedding_dim,
                               num_embeddings=t.num_embeddings, feature_names=list(t.feature_names))
            for t in tables
        ]  # fmt: skip
        self.fused = FusedEmbeddingBagCollection(
            tables=cfgs,
            optimizer_type=RowWiseAdagrad,
            optimizer_kwargs={"lr": lr},
            device=torch.device("cpu"),
        )

    def dims(self) -> list[int]:
        return [t.embedding_dim for t in self.configs for _ in t.feature_names]

    def forward(self, feats: Feats) -> dict[str, torch.Tensor]:
        from torchrec import KeyedJaggedTensor

        values = torch.cat([feats[k][0][: int(feats[k][1][-1])] for k in self.keys])
        lengths = torch.cat([feats[k][1][1:] - feats[k][1][:-1] for k in self.keys])
        kjt = KeyedJaggedTensor(keys=self.keys, values=values, lengths=lengths)
        out: dict[str, torch.Tensor] = self.fused(kjt).to_dict()
        return out


def _linear_tables(ebc: EBC) -> EBC:
    cfgs = [
        SimpleNamespace(name=t.name, embedding_dim=1, num_embeddings=t.num_embeddings,
                        feature_names=list(t.feature_names), pooling="sum")
        for t in ebc.configs
    ]  # fmt: skip
    return EBC(cfgs, sparse=ebc.embedding_bags[ebc.configs[0].name].sparse)


class DLRM(nn.Module):
    def __init__(
        self,
        ebc: EBC,
        dense_in: int,
        bottom_mlp: Sequence[int] = (512, 256, 64),
        top_mlp: Sequence[int] = (512, 256, 1),
    ) -> None:
        super().__init__()
        d = ebc.dims()[0]
        self.ebc, self.dense_in = ebc, dense_in
        n = len(ebc.dims()) + (1 if dense_in else 0)
        if dense_in:
            self.bottom = mlp([dense_in, *bottom_mlp])
        i, j = np.triu_indices(n, 1)
        self.pairs = torch.from_numpy(i * n + j)
        self.top = mlp([(d if dense_in else 0) + len(i), *top_mlp], last_relu=False)

    def forward(self, dense: torch.Tensor | None, feats: Feats) -> torch.Tensor:
        pooled = self.ebc(feats)
        vecs = list(pooled.values())
        b = vecs[0].shape[0]
        x = None
        if self.dense_in:
            x = self.bottom(dense)
            vecs = [x, *vecs]
        t = torch.stack(vecs, 1)  # (B, n, D)
        inter = torch.bmm(t, t.transpose(1, 2)).reshape(b, -1)[:, self.pairs]
        top_in = inter if x is None else torch.cat([x, inter], 1)
        return self.top(top_in).reshape(b)


class CrossLayer(nn.Module):
    def __init__(self, d: int, low_rank: int | None) -> None:
        super().__init__()
        if low_rank is None:
            self.w = nn.Linear(d, d)
        else:
            self.v = nn.Linear(d, low_rank, bias=False)
            self.w = nn.Linear(low_rank, d)
        self.low_rank = low_rank

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.w(x if self.low_rank is None else self.v(x)) + x


def _flat(pooled: dict[str, torch.Tensor], dense: torch.Tensor | None) -> torch.Tensor:
    parts = list(pooled.values())
    return torch.cat(parts if dense is None else [dense, *parts], 1)


class DCN(nn.Module):
    def __init__(
        self,
        ebc: EBC,
        dense_in: int,
        num_cross_layers: int = 3,
        low_rank: int | None = None,
        deep_mlp: Sequence[int] = (512, 256),
    ) -> None:
        super().__init__()
        self.ebc, self.dense_in = ebc, dense_in
        d0 = dense_in + sum(ebc.dims())
        self.cross = nn.Sequential(*[CrossLayer(d0, low_rank) for _ in range(num_cross_layers)])
        self.deep = mlp([d0, *deep_mlp])
        self.head = nn.Linear([d0, *deep_mlp][-1], 1)

    def forward(self, dense: torch.Tensor | None, feats: Feats) -> torch.Tensor:
        x0 = _flat(self.ebc(feats), dense if self.dense_in else None)
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        return self.head(self.deep(x)).reshape(-1)


class DeepFM(nn.Module):
    def __init__(self, ebc: EBC, dense_in: int, deep_mlp: Sequence[int] = (400, 400)) -> None:
        super().__init__()
        self.ebc, self.dense_in = ebc, dense_in
        self.linear = _linear_tables(ebc)
        if dense_in:
            self.dense_linear = nn.Linear(dense_in, 1)
        d0 = dense_in + sum(ebc.dims())
        self.deep = mlp([d0, *deep_mlp])
        self.head = nn.Linear([d0, *deep_mlp][-1], 1)

    def forward(self, dense: torch.Tensor | None, feats: Feats) -> torch.Tensor:
        pooled = self.ebc(feats)
        v = torch.stack(list(pooled.values()), 1)  # (B, F, D)
        second = 0.5 * (v.sum(1) ** 2 - (v * v).sum(1)).sum(1)
        first = torch.cat(list(self.linear(feats).values()), 1).sum(1)
        if self.dense_in:
            first = first + self.dense_linear(dense).reshape(-1)
        deep = self.head(self.deep(_flat(pooled, dense if self.dense_in else None))).reshape(-1)
        return first + second + deep


class WideDeep(nn.Module):
    def __init__(self, ebc: EBC, dense_in: int, deep_mlp: Sequence[int] = (512, 256)) -> None:
        super().__init__()
        self.ebc, self.dense_in = ebc, dense_in
        self.wide = _linear_tables(ebc)
        if dense_in:
            self.dense_linear = nn.Linear(dense_in, 1)
        d0 = dense_in + sum(ebc.dims())
        self.deep = mlp([d0, *deep_mlp])
        self.head = nn.Linear([d0, *deep_mlp][-1], 1)

    def forward(self, dense: torch.Tensor | None, feats: Feats) -> torch.Tensor:
        wide = torch.cat(list(self.wide(feats).values()), 1).sum(1)
        if self.dense_in:
            wide = wide + self.dense_linear(dense).reshape(-1)
        deep = self.head(self.deep(_flat(self.ebc(feats), dense if self.dense_in else None)))
        return wide + deep.reshape(-1)


class MF(nn.Module):
    def __init__(
        self, ebc: EBC, dense_in: int = 0, user: str | None = None, item: str | None = None
    ) -> None:
        super().__init__()
        feats = [f for t in ebc.configs for f in t.feature_names]
        self.user = user if user is not None else feats[0]
        self.item = item if item is not None else feats[1]
        self.ebc, self.dense_in = ebc, dense_in
        self.biases = _linear_tables(ebc)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, dense: torch.Tensor | None, feats: Feats) -> torch.Tensor:
        p, q = self.ebc(feats), self.biases(feats)
        u, i = p[self.user], p[self.item]
        return (u * i).sum(1) + (q[self.user] + q[self.item]).reshape(-1) + self.bias


CLASSES: dict[str, type[nn.Module]] = {
    "dlrm": DLRM,
    "dcn": DCN,
    "deepfm": DeepFM,
    "wide_deep": WideDeep,
    "mf": MF,
}


def build(
    name: str,
    tables: Sequence[Any],
    dense_in: int,
    *,
    sparse: bool = True,
    fused_lr: float | None = None,
    **hparams: Any,
) -> nn.Module:
    """The twin of `anychip.rec.models.build(name, tables, dense_in, **hparams)`; with
    `fused_lr`, its tables are TorchRec's fused ones (`FusedEBC`, row-wise Adagrad)."""
    ebc: Any = FusedEBC(tables, fused_lr) if fused_lr is not None else EBC(tables, sparse=sparse)
    return CLASSES[name](ebc, dense_in, **hparams)


def copy_into(twin: nn.Module, model: Any) -> None:
    """Load the twin's parameters into the anychip model (same names), on its device."""
    import anychip as ac

    dev = next(iter(model.parameters())).device
    state = {
        k: ac.tensor(v.detach().numpy().copy(), device=dev) for k, v in twin.state_dict().items()
    }
    model.load_state_dict(state)
