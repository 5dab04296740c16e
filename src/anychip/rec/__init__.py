"""`anychip.rec`: the recommendation engine (tables, features, models, training)."""

from anychip.rec.optim import RowWiseAdagrad

__all__ = ["RowWiseAdagrad"]
