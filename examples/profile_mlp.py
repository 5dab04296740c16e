"""A model step for `anychip npu profile`: one Adam step of the demo's 2-64-64-3 MLP on a
batch of 32 spiral points (docs/profiler.md, "Choose a chip").

Run: PYTHONPATH=src python -m anychip npu profile examples/profile_mlp.py \
         --design edge,cube,datacenter [--plot mlp.png]
     (add --device cpu to run the step on the host until the npu backend is present)
"""

from __future__ import annotations

from collections.abc import Callable

import anychip as ac
import anychip.nn.functional as F
from anychip import demo, optim


def make_step(device: str) -> Callable[[], ac.Tensor]:
    """Model, optimiser and one batch on `device`; the returned function trains one step."""
    x_np, y_np = demo.make_spirals(n_per_class=100)
    x = ac.tensor(x_np[:32], device=device)  # (32, 2)
    y = ac.tensor(y_np[:32], device=device)  # (32,)
    model = demo.make_model().to(device)
    opt = optim.Adam(model.parameters(), lr=1e-2)

    def step() -> ac.Tensor:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    return step
