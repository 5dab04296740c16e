"""anychip.rec: the recommendation engine: embedding tables, CTR models, data, training."""

from __future__ import annotations

from anychip.rec import metrics
from anychip.rec.movielens import MovieLens, load_movielens

__all__ = ["MovieLens", "load_movielens", "metrics"]
