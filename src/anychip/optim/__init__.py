"""`anychip.optim`: optimizers (SGD, Adam, AdamW, Adagrad, RMSprop, SparseAdam) and
learning-rate schedules.

>>> import anychip as ac
>>> model = ac.nn.Linear(2, 1)
>>> opt = ac.optim.Adam(model.parameters(), lr=1e-2)
>>> len(opt.param_groups[0]["params"])
2
"""

from __future__ import annotations

from anychip.optim import lr_scheduler
from anychip.optim.adagrad import Adagrad
from anychip.optim.adam import Adam, AdamW
from anychip.optim.optimizer import Optimizer
from anychip.optim.sgd import SGD

__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "Optimizer", "lr_scheduler"]

# PyTorch habits (issue 10)
from anychip.optim.rmsprop import RMSprop
from anychip.optim.sparse_adam import SparseAdam

__all__ += ["RMSprop", "SparseAdam"]
