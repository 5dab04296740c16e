"""CTR models on one batch format: `forward(dense (B, dense_in) or None, sparse:
KeyedJaggedTensor) -> logits (B,)`, each a plain `nn.Module` built around an
`EmbeddingBagCollection` (`ebc`), whose pooled features they read in the ebc's order.

- `DLRM`: bottom MLP on dense features, pairwise dot products of all feature vectors, top MLP.
- `DCN` (DCN-v2): a cross network (full or low rank) stacked with a deep MLP.
- `DeepFM`: a factorisation machine (first- and second-order terms) plus a deep MLP.
- `WideDeep`: a wide linear part (a dim-1 table per feature) plus a deep MLP.
- `MF`: logistic matrix factorisation, <user, item> + biases.

`build(name, tables, dense_in, **hparams)` makes any of them from table configs. Their
PyTorch twins (same parameter names and layout) are in bench/rec_twins.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from anychip.errors import ArgumentError, ShapeError
from anychip.frontend.creation import cat
from anychip.frontend.tensor import Tensor
from anychip.nn.activation import ReLU
from anychip.nn.containers import Sequential
from anychip.nn.layers import Linear
from anychip.nn.module import Module, Parameter
from anychip.rec.collection import (
    EmbeddingBagCollection,
    EmbeddingBagConfig,
    KeyedTensor,
    join,
)
from anychip.rec.jagged import KeyedJaggedTensor

MODELS = ("dlrm", "dcn", "deepfm", "wide_deep", "mf")


def mlp(sizes: Sequence[int], last_relu: bool = True, device: Any = None) -> Sequential:
    """Linear layers sizes[0] -> sizes[1] -> ..., a ReLU after each (after the last one
    only with `last_relu`)."""
    layers: list[Module] = []
    for i in range(len(sizes) - 1):
        layers.append(Linear(sizes[i], sizes[i + 1], device=device))
        if last_relu or i < len(sizes) - 2:
            layers.append(ReLU())
    return Sequential(*layers)


def stack_features(vecs: Sequence[Tensor]) -> Tensor:
    """n tensors (B, D) -> (B, n, D), joined as `join` does."""
    return join([v.unsqueeze(1) for v in vecs], 1)


def _dims(ebc: EmbeddingBagCollection) -> list[int]:
    return [t.embedding_dim for t in ebc.embedding_bag_configs() for _ in t.feature_names]


def _device(ebc: EmbeddingBagCollection) -> str:
    """The device of ebc's tables (the default device for tables without parameters)."""
    from anychip.runtime.device import canonical

    for p in ebc.parameters():
        return p.device
    return canonical(None)


def _same_dim(model: str, ebc: EmbeddingBagCollection) -> int:
    dims = set(_dims(ebc))
    if len(dims) != 1:
        raise ShapeError(f"{model}: every feature needs the same embedding_dim, got {_dims(ebc)}")
    return dims.pop()


def _check_dense(model: str, dense: Tensor | None, dense_in: int, batch: int) -> None:
    if dense_in == 0:
        return
    if dense is None or tuple(dense.shape) != (batch, dense_in):
        got = None if dense is None else tuple(dense.shape)
        raise ShapeError(f"{model}: dense must have shape ({batch}, {dense_in}), got {got}")


def linear_tables(ebc: EmbeddingBagCollection) -> EmbeddingBagCollection:
    """Dim-1 tables over ebc's features (one weight per id: a linear model of the ids),
    on ebc's device; each table sums its bags. They are plain tables of each config's
    num_embeddings rows, also for a table ebc takes from `modules` (DeepFM, WideDeep and
    MF need ids below num_embeddings there; DLRM and DCN have no linear tables)."""
    cfgs = [
        EmbeddingBagConfig(t.name, 1, t.num_embeddings, list(t.feature_names), "sum")
        for t in ebc.embedding_bag_configs()
    ]
    return EmbeddingBagCollection(cfgs, device=_device(ebc), sparse=ebc.sparse)


class DLRM(Module):
    """Bottom MLP dense_in -> bottom_mlp (its last size = the embedding dim D), then the
    dot products of every pair among [dense, features] (F+1 vectors of D), then the top
    MLP over [dense, the (F+1)F/2 products] -> top_mlp (its last size 1)."""

    def __init__(
        self,
        ebc: EmbeddingBagCollection,
        dense_in: int,
        bottom_mlp: Sequence[int] = (512, 256, 64),
        top_mlp: Sequence[int] = (512, 256, 1),
    ) -> None:
        super().__init__()
        d, dev = _same_dim("DLRM", ebc), _device(ebc)
        self.ebc, self.dense_in = ebc, dense_in
        n = len(_dims(ebc)) + (1 if dense_in else 0)  # vectors that interact
        if dense_in:
            if bottom_mlp[-1] != d:
                raise ShapeError(
                    f"DLRM: bottom_mlp must end at the embedding dim {d}, got {list(bottom_mlp)}"
                )
            self.bottom = mlp([dense_in, *bottom_mlp], device=dev)
        if top_mlp[-1] != 1:
            raise ShapeError(f"DLRM: top_mlp must end at 1, got {list(top_mlp)}")
        i, j = np.triu_indices(n, 1)
        # host indices: a gather by them needs no bounds check read back from the device
        # (frontend/subscript.py as_index), which would stop a jit replay's sequence there
        self.pairs = (i * n + j).astype(np.int64)
        top_in = (d if dense_in else 0) + len(i)
        self.top = mlp([top_in, *top_mlp], last_relu=False, device=dev)

    def forward(self, dense: Tensor | None, sparse: KeyedJaggedTensor) -> Tensor:
        kt = self.ebc(sparse)
        b = sparse.stride()
        _check_dense("DLRM", dense, self.dense_in, b)
        vecs = list(kt.to_dict().values())  # F of (B, D)
        x = None
        if self.dense_in:
            assert dense is not None
            x = self.bottom(dense)  # (B, D)
            vecs = [x, *vecs]
        t = stack_features(vecs)  # (B, n, D)
        z = (t @ t.transpose(1, 2)).reshape(b, -1)  # (B, n*n)
        inter = z[:, self.pairs]  # (B, n(n-1)/2): the pairs above the diagonal
        top_in = inter if x is None else cat([x, inter], 1)
        out: Tensor = self.top(top_in).reshape(b)
        return out


class CrossLayer(Module):
    """x0 * (W x + b) + x, W full (d, d) or low rank U V^T with V (r, d), U (d, r)."""

    def __init__(self, d: int, low_rank: int | None, device: Any) -> None:
        super().__init__()
        if low_rank is None:
            self.w = Linear(d, d, device=device)
        else:
            self.v = Linear(d, low_rank, bias=False, device=device)
            self.w = Linear(low_rank, d, device=device)
        self.low_rank = low_rank

    def forward(self, x0: Tensor, x: Tensor) -> Tensor:
        h = x if self.low_rank is None else self.v(x)
        out: Tensor = x0 * self.w(h) + x
        return out


class DCN(Module):
    """DCN-v2, stacked: x0 = [dense, features] (B, d0); num_cross_layers cross layers;
    deep_mlp on their output; a final Linear to one logit."""

    def __init__(
        self,
        ebc: EmbeddingBagCollection,
        dense_in: int,
        num_cross_layers: int = 3,
        low_rank: int | None = None,
        deep_mlp: Sequence[int] = (512, 256),
    ) -> None:
        super().__init__()
        dev = _device(ebc)
        self.ebc, self.dense_in = ebc, dense_in
        d0 = dense_in + sum(_dims(ebc))
        self.cross = Sequential(*[CrossLayer(d0, low_rank, dev) for _ in range(num_cross_layers)])
        self.deep = mlp([d0, *deep_mlp], device=dev)
        self.head = Linear(([d0, *deep_mlp])[-1], 1, device=dev)

    def forward(self, dense: Tensor | None, sparse: KeyedJaggedTensor) -> Tensor:
        b = sparse.stride()
        _check_dense("DCN", dense, self.dense_in, b)
        x0 = _flat_input(self.ebc, dense, self.dense_in, sparse)
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        out: Tensor = self.head(self.deep(x)).reshape(b)
        return out


def _flat_input(
    ebc: EmbeddingBagCollection, dense: Tensor | None, dense_in: int, sparse: KeyedJaggedTensor
) -> Tensor:
    """[dense, every pooled feature] side by side: (B, dense_in + sum of dims)."""
    kt: KeyedTensor = ebc(sparse)
    if not dense_in:
        return kt.values()
    assert dense is not None
    return join([dense, *list(kt.to_dict().values())], 1)


class DeepFM(Module):
    """logit = bias + first order (a dim-1 table per feature, a Linear on dense) + second
    order (FM: 0.5 * sum over dims of (sum_f v_f)^2 - sum_f v_f^2, over the F feature
    vectors of one dim D) + deep (deep_mlp on [dense, features], then a Linear to 1)."""

    def __init__(
        self, ebc: EmbeddingBagCollection, dense_in: int, deep_mlp: Sequence[int] = (400, 400)
    ) -> None:
        super().__init__()
        _same_dim("DeepFM", ebc)
        dev = _device(ebc)
        self.ebc, self.dense_in = ebc, dense_in
        self.linear = linear_tables(ebc)
        if dense_in:
            self.dense_linear = Linear(dense_in, 1, device=dev)
        d0 = dense_in + sum(_dims(ebc))
        self.deep = mlp([d0, *deep_mlp], device=dev)
        self.head = Linear(([d0, *deep_mlp])[-1], 1, device=dev)

    def forward(self, dense: Tensor | None, sparse: KeyedJaggedTensor) -> Tensor:
        b = sparse.stride()
        _check_dense("DeepFM", dense, self.dense_in, b)
        kt = self.ebc(sparse)
        v = stack_features(list(kt.to_dict().values()))  # (B, F, D)
        second = 0.5 * (v.sum(1) ** 2 - (v * v).sum(1)).sum(1)  # (B,)
        first = self.linear(sparse).values().sum(1)  # (B,)
        parts = list(kt.to_dict().values())
        if self.dense_in:
            assert dense is not None
            first = first + self.dense_linear(dense).reshape(b)
            parts = [dense, *parts]
        deep = self.head(self.deep(join(parts, 1))).reshape(b)
        out: Tensor = first + second + deep
        return out


class WideDeep(Module):
    """logit = wide (a dim-1 table per feature over the sparse ids, a Linear on dense)
    + deep (deep_mlp on [dense, features], then a Linear to 1)."""

    def __init__(
        self, ebc: EmbeddingBagCollection, dense_in: int, deep_mlp: Sequence[int] = (512, 256)
    ) -> None:
        super().__init__()
        dev = _device(ebc)
        self.ebc, self.dense_in = ebc, dense_in
        self.wide = linear_tables(ebc)
        if dense_in:
            self.dense_linear = Linear(dense_in, 1, device=dev)
        d0 = dense_in + sum(_dims(ebc))
        self.deep = mlp([d0, *deep_mlp], device=dev)
        self.head = Linear(([d0, *deep_mlp])[-1], 1, device=dev)

    def forward(self, dense: Tensor | None, sparse: KeyedJaggedTensor) -> Tensor:
        b = sparse.stride()
        _check_dense("WideDeep", dense, self.dense_in, b)
        wide = self.wide(sparse).values().sum(1)  # (B,)
        if self.dense_in:
            assert dense is not None
            wide = wide + self.dense_linear(dense).reshape(b)
        deep = self.head(self.deep(_flat_input(self.ebc, dense, self.dense_in, sparse)))
        out: Tensor = wide + deep.reshape(b)
        return out


class MF(Module):
    """Logistic matrix factorisation: logit = <user, item> + b_user + b_item + b, the
    user and item vectors pooled from features `user` and `item` (default: the ebc's
    first two features). Dense features are not used."""

    def __init__(
        self,
        ebc: EmbeddingBagCollection,
        dense_in: int = 0,
        user: str | None = None,
        item: str | None = None,
    ) -> None:
        super().__init__()
        feats = ebc.feature_names()
        if len(feats) < 2 and (user is None or item is None):
            raise ArgumentError(f"MF: needs a user and an item feature, got features {feats}")
        self.user = user if user is not None else feats[0]
        self.item = item if item is not None else feats[1]
        for f in (self.user, self.item):
            if f not in feats:
                raise ArgumentError(f"MF: feature {f!r} is read by no table ({feats})")
        self.ebc, self.dense_in = ebc, dense_in
        self.biases = linear_tables(ebc)
        self.bias = Parameter(Tensor(np.zeros(1, np.float32), device=_device(ebc)))

    def forward(self, dense: Tensor | None, sparse: KeyedJaggedTensor) -> Tensor:
        kt, bt = self.ebc(sparse), self.biases(sparse)
        u, i = kt[self.user], kt[self.item]
        if u.shape != i.shape:
            raise ShapeError(f"MF: user and item vectors differ in shape ({u.shape}, {i.shape})")
        out: Tensor = (u * i).sum(1) + (bt[self.user] + bt[self.item]).reshape(-1) + self.bias
        return out


_CLASSES: dict[str, Callable[..., Module]] = {
    "dlrm": DLRM,
    "dcn": DCN,
    "deepfm": DeepFM,
    "wide_deep": WideDeep,
    "mf": MF,
}


def build(
    name: str,
    ebc_tables: list[EmbeddingBagConfig],
    dense_in: int,
    *,
    device: Any = None,
    sparse: bool = True,
    modules: dict[str, Module] | None = None,
    **hparams: Any,
) -> Module:
    """Model `name` (one of MODELS) over new tables `ebc_tables`; hparams go to its class.

    >>> import anychip as ac
    >>> tables = [EmbeddingBagConfig("t", 8, 100, ["user", "item"])]
    >>> m = build("mf", tables, 0)
    >>> kjt = KeyedJaggedTensor(["user", "item"], ac.tensor([3, 4, 5, 6]), ac.tensor([1, 1, 1, 1]))
    >>> m(None, kjt).shape
    (2,)
    """
    cls = _CLASSES.get(name)
    if cls is None:
        raise ArgumentError(f"rec.models.build: unknown model {name!r}; choose one of {MODELS}")
    ebc = EmbeddingBagCollection(ebc_tables, device=device, sparse=sparse, modules=modules)
    return cls(ebc, dense_in, **hparams)
