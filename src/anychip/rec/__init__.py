"""`anychip.rec`: the recommendation engine: collisionless dynamic embedding tables
(docs/rec-table.md), row-wise optimizers, and what trains on them."""

from anychip.rec.optim import RowWiseAdagrad
from anychip.rec.table import DynamicEmbedding, TableDelta

__all__ = ["DynamicEmbedding", "RowWiseAdagrad", "TableDelta"]
