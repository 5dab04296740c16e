"""`anychip.rec`: the recommendation engine: collisionless dynamic embedding tables
(docs/rec-table.md) and what trains on them."""

from anychip.rec.table import DynamicEmbedding, TableDelta

__all__ = ["DynamicEmbedding", "TableDelta"]
