"""`anychip.rec`: the recommendation engine: collisionless dynamic embedding tables
(docs/rec-table.md), row-wise optimizers, batches of sparse features, CTR models, data and
training (docs/rec.md)."""

from __future__ import annotations

# batches, tables and models (re-exported one name per line: others add theirs beside)
from anychip.rec import metrics as metrics, models as models, synthetic as synthetic
from anychip.rec.collection import (
    EmbeddingBagCollection as EmbeddingBagCollection,
    EmbeddingBagConfig as EmbeddingBagConfig,
    KeyedTensor as KeyedTensor,
)
from anychip.rec.jagged import JaggedTensor as JaggedTensor, KeyedJaggedTensor as KeyedJaggedTensor
from anychip.rec.movielens import MovieLens as MovieLens, load_movielens as load_movielens
from anychip.rec.optim import RowWiseAdagrad
from anychip.rec.synthetic import synthetic_criteo as synthetic_criteo
from anychip.rec.table import DynamicEmbedding, TableDelta

__all__ = [
    "DynamicEmbedding",
    "EmbeddingBagCollection",
    "EmbeddingBagConfig",
    "JaggedTensor",
    "KeyedJaggedTensor",
    "KeyedTensor",
    "MovieLens",
    "RowWiseAdagrad",
    "TableDelta",
    "load_movielens",
    "metrics",
    "models",
    "synthetic",
    "synthetic_criteo",
]
