"""`anychip.optim`: optimizers (SGD, Adam, AdamW, Adagrad) and learning-rate schedules.

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
